//! Frames and configurations for the unit tests of the writers.

use bytes::Bytes;

use crate::frame::{Codec, CodecConfig, MediaFrame};
use crate::time::MediaTime;

/// A real sequence header from x264 (320x240, High profile), as FFmpeg sends it.
pub const AVC_RECORD_320X240: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41,
    0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99,
    0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
];

/// An H.264 configuration (320x240).
pub fn avc_config() -> CodecConfig {
    CodecConfig::new(Codec::H264, Bytes::from_static(AVC_RECORD_320X240), MediaTime::ZERO)
}

/// An AAC-LC 44.1 kHz stereo configuration.
pub fn aac_config() -> CodecConfig {
    CodecConfig::new(Codec::Aac, Bytes::from_static(&[0x12, 0x10]), MediaTime::ZERO)
}

/// A video frame at `dts_ms` (presented `cts_ms` later) whose payload is one NAL unit
/// (IDR when `key`) tagged with its time, so tests can find it again.
pub fn video(config: &CodecConfig, dts_ms: i64, cts_ms: i64, key: bool) -> MediaFrame {
    let nal_type = if key { 0x65 } else { 0x41 };
    let mut payload = vec![0, 0, 0, 9, nal_type];
    payload.extend_from_slice(&dts_ms.to_be_bytes());
    MediaFrame::video(
        Codec::H264,
        MediaTime::from_millis(dts_ms),
        MediaTime::from_millis(dts_ms + cts_ms),
        key,
        Bytes::from(payload),
        Some(config.clone()),
    )
}

/// An AAC frame at `pts` (nanoseconds, so 1024-sample steps are exact enough).
pub fn audio(config: &CodecConfig, pts: MediaTime) -> MediaFrame {
    let payload = Bytes::from(vec![0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]);
    MediaFrame::audio(Codec::Aac, pts, payload, Some(config.clone()))
}

/// `seconds` of 30 fps video (a keyframe every second) and 44.1 kHz AAC from `from_ms`,
/// interleaved by time.
pub fn av(
    video_config: &CodecConfig,
    audio_config: &CodecConfig,
    from_ms: i64,
    seconds: i64,
) -> Vec<MediaFrame> {
    let mut frames = Vec::new();
    for i in 0..seconds * 30 {
        let dts = from_ms + i * 1000 / 30;
        frames.push(video(video_config, dts, 0, i % 30 == 0));
    }
    let start = MediaTime::from_millis(from_ms);
    let mut n = 0;
    loop {
        let pts = start + MediaTime::from_ticks(n * 1024, 44_100);
        if pts >= start + MediaTime::from_millis(seconds * 1000) {
            break;
        }
        frames.push(audio(audio_config, pts));
        n += 1;
    }
    frames.sort_by_key(|f| f.dts());
    frames
}
