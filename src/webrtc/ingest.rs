//! One received WebRTC track → neutral frames ([`MediaFrame`]), sans-IO: RTP packets (their
//! sequence number, timestamp, marker bit, payload) and the time they arrived go in;
//! codec configurations, frames and keyframe requests come out.
//!
//! - H.264: depacketized into access units ([`H264Depacketizer`]); a new SPS/PPS becomes a
//!   new [`CodecConfig`] (an `AVCDecoderConfigurationRecord`), announced before the frame
//!   that uses it, and every frame points at the configuration in force, as RTMP ingest does.
//! - Opus: one packet is one frame, with an `OpusHead` configuration (48 kHz, stereo, as
//!   WebRTC negotiates it). Outputs that cannot carry Opus (RTMP, HTTP-FLV, HLS, recording)
//!   skip the track; transcoding to AAC is not done yet.
//!
//! Times: each track's RTP clock ([`RtpClock`]) is anchored at its first packet's arrival
//! on the session's clock, so video and audio start aligned to within their arrival jitter
//! (RTCP sender reports would align them exactly; not used yet).

use bytes::Bytes;
use zenlive_media::rtp_clock::RtpClock;
use zenlive_media::rtp_h264::{Depacketized, DropCounts, H264Depacketizer};
use zenlive_media::{Codec, CodecConfig, MediaFrame, MediaTime};

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackCodec {
    /// H.264 video (90 kHz).
    H264,
    /// Opus audio (48 kHz).
    Opus,
}

impl TrackCodec {
    /// The codec of a negotiated MIME type (`video/H264`, `audio/opus`), if ingested.
    pub fn from_mime(mime: &str) -> Option<Self> {
        if mime.eq_ignore_ascii_case("video/h264") {
            Some(Self::H264)
        } else if mime.eq_ignore_ascii_case("audio/opus") {
            Some(Self::Opus)
        } else {
            None
        }
    }

    fn clock_rate(self) -> u32 {
        match self {
            Self::H264 => 90_000,
            Self::Opus => 48_000,
        }
    }
}

/// What a track produced from a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// The track's configuration from now on (before the first frame that uses it).
    Config(CodecConfig),
    /// A frame.
    Frame(MediaFrame),
    /// Video was lost: ask the publisher for a keyframe.
    KeyframeNeeded,
}

/// One track's ingest. See the module docs.
#[derive(Debug)]
pub struct TrackIngest {
    codec: TrackCodec,
    clock: RtpClock,
    depacketizer: Option<H264Depacketizer>,
    config: Option<CodecConfig>,
}

/// `OpusHead` (RFC 7845 §5.1) for WebRTC's Opus: version 1, 2 channels, no pre-skip,
/// 48 kHz, no gain, mapping family 0.
const OPUS_HEAD: [u8; 19] =
    [b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 1, 2, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0];

impl TrackIngest {
    /// A track of `codec` that has received nothing yet.
    pub fn new(codec: TrackCodec) -> Self {
        let depacketizer = (codec == TrackCodec::H264).then(H264Depacketizer::new);
        Self { codec, clock: RtpClock::new(codec.clock_rate()), depacketizer, config: None }
    }

    /// The track's codec.
    pub fn codec(&self) -> TrackCodec {
        self.codec
    }

    /// What the depacketizer dropped so far (video only).
    pub fn dropped(&self) -> DropCounts {
        self.depacketizer.as_ref().map(H264Depacketizer::dropped).unwrap_or_default()
    }

    /// Takes one RTP packet that arrived at `arrival` (on the session's clock), appending
    /// what it produced to `out`.
    pub fn packet(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &Bytes,
        arrival: MediaTime,
        out: &mut Vec<Ingested>,
    ) {
        match self.codec {
            TrackCodec::Opus => {
                let at = self.clock.time(timestamp, arrival);
                let config = self.config.get_or_insert_with(|| {
                    let config = CodecConfig::new(Codec::Opus, Bytes::from_static(&OPUS_HEAD), at);
                    out.push(Ingested::Config(config.clone()));
                    config
                });
                let frame =
                    MediaFrame::audio(Codec::Opus, at, payload.clone(), Some(config.clone()));
                out.push(Ingested::Frame(frame));
            }
            TrackCodec::H264 => {
                let Some(depacketizer) = self.depacketizer.as_mut() else { return };
                depacketizer.push(seq, timestamp, marker, payload);
                while let Some(output) = depacketizer.poll() {
                    match output {
                        Depacketized::KeyframeNeeded => out.push(Ingested::KeyframeNeeded),
                        Depacketized::AccessUnit(unit) => {
                            let at = self.clock.time(unit.timestamp, arrival);
                            if let Some(record) = unit.config {
                                let config = CodecConfig::new(Codec::H264, record.to_record(), at);
                                out.push(Ingested::Config(config.clone()));
                                self.config = Some(config);
                            }
                            let frame = MediaFrame::video(
                                Codec::H264,
                                at,
                                at,
                                unit.keyframe,
                                unit.avcc,
                                self.config.clone(),
                            );
                            out.push(Ingested::Frame(frame));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use zenlive_media::avc::AvcDecoderConfig;

    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84, 0x00];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn stap_a(nals: &[&[u8]]) -> Bytes {
        let mut out = vec![0x78];
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            out.extend_from_slice(nal);
        }
        Bytes::from(out)
    }

    #[test]
    fn h264_packets_become_a_configuration_and_frames_on_the_session_clock() {
        let mut track = TrackIngest::new(TrackCodec::H264);
        let mut out = Vec::new();
        let arrival = MediaTime::from_millis(250);
        track.packet(7, 1_000_000, true, &stap_a(&[SPS, PPS, &[0x65, 1, 2, 3]]), arrival, &mut out);
        track.packet(8, 1_003_000, true, &Bytes::from_static(&[0x41, 9, 9]), arrival, &mut out);
        let [Ingested::Config(config), Ingested::Frame(key), Ingested::Frame(delta)] = &out[..]
        else {
            panic!("a config and two frames: {out:?}");
        };
        let record = AvcDecoderConfig::parse(config.record()).expect("a valid record");
        assert_eq!((record.sps[0].as_ref(), record.pps[0].as_ref()), (SPS, PPS));
        assert!(key.keyframe() && !delta.keyframe());
        assert_eq!(key.payload().as_ref(), &[0, 0, 0, 4, 0x65, 1, 2, 3]);
        let next = arrival + MediaTime::from_ticks(3_000, 90_000);
        assert_eq!((key.dts(), delta.dts()), (arrival, next));
        assert!(delta.config().is_some_and(|c| c.same(config)));
    }

    #[test]
    fn opus_packets_are_frames_with_an_opus_head() {
        let mut track = TrackIngest::new(TrackCodec::Opus);
        let mut out = Vec::new();
        for (i, ts) in [5_000u32, 5_960].into_iter().enumerate() {
            let payload = Bytes::from_static(&[0xfc, 0xff, 0xfe]);
            track.packet(i as u16, ts, false, &payload, MediaTime::ZERO, &mut out);
        }
        assert!(matches!(&out[0], Ingested::Config(c) if c.record().starts_with(b"OpusHead")));
        let times: Vec<MediaTime> = out
            .iter()
            .filter_map(|o| match o {
                Ingested::Frame(f) => Some(f.pts()),
                _ => None,
            })
            .collect();
        assert_eq!(times, [MediaTime::ZERO, MediaTime::from_millis(20)]);
    }

    #[test]
    fn only_h264_and_opus_are_ingested() {
        assert_eq!(TrackCodec::from_mime("video/H264"), Some(TrackCodec::H264));
        assert_eq!(TrackCodec::from_mime("audio/OPUS"), Some(TrackCodec::Opus));
        assert_eq!(TrackCodec::from_mime("video/VP8"), None);
    }
}
