//! One received WebRTC track → neutral frames ([`MediaFrame`]), sans-IO: RTP packets (their
//! sequence number, timestamp, marker bit, payload) and the time they arrived go in;
//! codec configurations, frames and keyframe requests come out.
//!
//! - H.264: depacketized into access units ([`H264Depacketizer`]); a new SPS/PPS becomes a
//!   new [`CodecConfig`] (an `AVCDecoderConfigurationRecord`), announced before the frame
//!   that uses it, and every frame points at the configuration in force, as RTMP ingest does.
//! - VP8, VP9, AV1: depacketized into whole frames ([`FrameDepacketizer`]). None has an
//!   out-of-band configuration in WebRTC, so the track's [`CodecConfig`] is made here and
//!   announced before the first frame that uses it: VP8's is an empty record (nothing
//!   else carries VP8); VP9's is the `vpcC` record read from a key frame's header, and
//!   AV1's the `av1C` record made from the sequence header a key frame carries, each
//!   announced anew when it changes, so fMP4 (LL-HLS, recordings) and Enhanced RTMP
//!   outputs carry them as they carry a record an RTMP publisher sent.
//! - Opus: one packet is one frame, with an `OpusHead` configuration (48 kHz, stereo, as
//!   WebRTC negotiates it), which goes on as it came for WebRTC viewers. Each packet is
//!   also transcoded to AAC-LC (48 kHz stereo, [`OpusToAac`]): the AAC configuration and
//!   frames follow the Opus frames into the stream, so RTMP, HTTP-FLV, HLS, recordings and
//!   relays, which skip Opus, carry AAC. The transcoder runs inline, for every WHIP
//!   publish that sends audio (every non-WebRTC output needs it, and HLS runs for every
//!   stream): about 0.17 ms per 20 ms packet (BENCHMARKS.md, "Audio transcoding"), on
//!   the session's own task.
//!
//! Times: each track's RTP clock ([`RtpClock`]) is anchored at its first packet's arrival
//! on the session's clock, so video and audio start aligned to within their arrival jitter
//! (RTCP sender reports would align them exactly; not used yet).

use super::av1_rtp::Av1;
use super::rtp_frames::{self, FrameDepacketizer, Vp8, Vp9};
use bytes::Bytes;
use zenlive_media::av1;
use zenlive_media::rtp_clock::RtpClock;
use zenlive_media::rtp_h264::{Depacketized, DropCounts, H264Depacketizer};
use zenlive_media::vp9::{self, FrameHeader};
use zenlive_media::{Codec, CodecConfig, MediaFrame, MediaTime};
use zenlive_transcode::{Counters, OpusToAac, OpusToAacSettings, Transcoded, OPUS_HEAD};

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackCodec {
    /// H.264 video (90 kHz).
    H264,
    /// VP8 video (90 kHz).
    Vp8,
    /// VP9 video (90 kHz).
    Vp9,
    /// AV1 video (90 kHz).
    Av1,
    /// Opus audio (48 kHz).
    Opus,
}

impl TrackCodec {
    /// The codec of a negotiated MIME type (`video/H264`, `audio/opus`), if ingested.
    pub fn from_mime(mime: &str) -> Option<Self> {
        if mime.eq_ignore_ascii_case("video/h264") {
            Some(Self::H264)
        } else if mime.eq_ignore_ascii_case("video/vp8") {
            Some(Self::Vp8)
        } else if mime.eq_ignore_ascii_case("video/vp9") {
            Some(Self::Vp9)
        } else if mime.eq_ignore_ascii_case("video/av1") {
            Some(Self::Av1)
        } else if mime.eq_ignore_ascii_case("audio/opus") {
            Some(Self::Opus)
        } else {
            None
        }
    }

    /// Whether it is a video track.
    pub fn is_video(self) -> bool {
        !matches!(self, Self::Opus)
    }

    fn clock_rate(self) -> u32 {
        match self {
            Self::H264 | Self::Vp8 | Self::Vp9 | Self::Av1 => 90_000,
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
    frames: Option<Frames>,
    config: Option<CodecConfig>,
    /// The last video frame's time in whole milliseconds (see [`monotonic_millis`]).
    last_video_ms: Option<i64>,
    /// Opus → AAC (Opus tracks; `None` if the encoder could not start).
    transcoder: Option<OpusToAac>,
    transcode_error: Option<String>,
}

impl TrackIngest {
    /// A track of `codec` that has received nothing yet.
    pub fn new(codec: TrackCodec) -> Self {
        let depacketizer = (codec == TrackCodec::H264).then(H264Depacketizer::new);
        let frames = match codec {
            TrackCodec::Vp8 => Some(Frames::Vp8(FrameDepacketizer::new())),
            TrackCodec::Vp9 => Some(Frames::Vp9(FrameDepacketizer::new())),
            TrackCodec::Av1 => Some(Frames::Av1(FrameDepacketizer::new())),
            TrackCodec::H264 | TrackCodec::Opus => None,
        };
        let (transcoder, transcode_error) = match codec {
            TrackCodec::H264 | TrackCodec::Vp8 | TrackCodec::Vp9 | TrackCodec::Av1 => (None, None),
            TrackCodec::Opus => match OpusToAac::new(OpusToAacSettings::default()) {
                Ok(transcoder) => (Some(transcoder), None),
                Err(error) => (None, Some(error.to_string())),
            },
        };
        Self {
            codec,
            clock: RtpClock::new(codec.clock_rate()),
            depacketizer,
            frames,
            config: None,
            last_video_ms: None,
            transcoder,
            transcode_error,
        }
    }

    /// Whether the track is transcoded (Opus → AAC), or why not.
    pub fn transcoding(&self) -> Result<bool, &str> {
        match (&self.transcoder, &self.transcode_error) {
            (Some(_), _) => Ok(true),
            (None, Some(error)) => Err(error),
            (None, None) => Ok(false),
        }
    }

    /// What the transcoder did so far (Opus tracks).
    pub fn transcode_counters(&self) -> Option<Counters> {
        self.transcoder.as_ref().map(OpusToAac::counters)
    }

    /// The track's codec.
    pub fn codec(&self) -> TrackCodec {
        self.codec
    }

    /// What the depacketizer dropped so far (video only).
    pub fn dropped(&self) -> DropCounts {
        match (&self.depacketizer, &self.frames) {
            (Some(h264), _) => h264.dropped(),
            (_, Some(frames)) => frames.dropped(),
            _ => DropCounts::default(),
        }
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
            TrackCodec::Opus if payload.is_empty() => {} // padding only
            TrackCodec::Opus => {
                let at = self.clock.time(timestamp, arrival);
                let config = self.config.get_or_insert_with(|| {
                    let config = CodecConfig::new(Codec::Opus, Bytes::from_static(&OPUS_HEAD), at);
                    out.push(Ingested::Config(config.clone()));
                    config
                });
                let frame =
                    MediaFrame::audio(Codec::Opus, at, payload.clone(), Some(config.clone()));
                if let Some(transcoder) = &mut self.transcoder {
                    let mut aac = Vec::new();
                    transcoder.push(&frame, &mut aac);
                    out.push(Ingested::Frame(frame));
                    out.extend(aac.into_iter().map(|t| match t {
                        Transcoded::Config(config) => Ingested::Config(config),
                        Transcoded::Frame(frame) => Ingested::Frame(frame),
                    }));
                } else {
                    out.push(Ingested::Frame(frame));
                }
            }
            TrackCodec::Vp8 | TrackCodec::Vp9 | TrackCodec::Av1 => {
                let Some(frames) = self.frames.as_mut() else { return };
                frames.push(seq, timestamp, marker, payload);
                while let Some(output) = frames.poll() {
                    match output {
                        rtp_frames::Depacketized::KeyframeNeeded => {
                            out.push(Ingested::KeyframeNeeded)
                        }
                        rtp_frames::Depacketized::Frame(frame) => {
                            let at = self.clock.time(frame.timestamp, arrival);
                            let at = monotonic_millis(&mut self.last_video_ms, at);
                            let codec = frames.codec();
                            if let Some(record) = new_record(codec, &frame, self.config.as_ref()) {
                                let config = CodecConfig::new(codec, record, at);
                                out.push(Ingested::Config(config.clone()));
                                self.config = Some(config);
                            }
                            if self.config.is_none() {
                                // AV1 before its first sequence header: nothing can decode it.
                                continue;
                            }
                            out.push(Ingested::Frame(MediaFrame::video(
                                codec,
                                at,
                                at,
                                frame.keyframe,
                                frame.data,
                                self.config.clone(),
                            )));
                        }
                    }
                }
            }
            TrackCodec::H264 => {
                let Some(depacketizer) = self.depacketizer.as_mut() else { return };
                depacketizer.push(seq, timestamp, marker, payload);
                while let Some(output) = depacketizer.poll() {
                    match output {
                        Depacketized::KeyframeNeeded => out.push(Ingested::KeyframeNeeded),
                        Depacketized::AccessUnit(unit) => {
                            let at = self.clock.time(unit.timestamp, arrival);
                            let at = monotonic_millis(&mut self.last_video_ms, at);
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

/// The frame depacketizer of a VP8, VP9 or AV1 track.
#[derive(Debug)]
enum Frames {
    Vp8(FrameDepacketizer<Vp8>),
    Vp9(FrameDepacketizer<Vp9>),
    Av1(FrameDepacketizer<Av1>),
}

impl Frames {
    fn codec(&self) -> Codec {
        match self {
            Self::Vp8(_) => Codec::Vp8,
            Self::Vp9(_) => Codec::Vp9,
            Self::Av1(_) => Codec::Av1,
        }
    }

    fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &Bytes) {
        match self {
            Self::Vp8(d) => d.push(seq, timestamp, marker, payload),
            Self::Vp9(d) => d.push(seq, timestamp, marker, payload),
            Self::Av1(d) => d.push(seq, timestamp, marker, payload),
        }
    }

    fn poll(&mut self) -> Option<rtp_frames::Depacketized> {
        match self {
            Self::Vp8(d) => d.poll(),
            Self::Vp9(d) => d.poll(),
            Self::Av1(d) => d.poll(),
        }
    }

    fn dropped(&self) -> DropCounts {
        match self {
            Self::Vp8(d) => d.dropped(),
            Self::Vp9(d) => d.dropped(),
            Self::Av1(d) => d.dropped(),
        }
    }
}

/// The configuration record `frame` brings when it differs from the one in force
/// (`current`): VP8's empty record before its first frame; for a VP9 key frame, the
/// `vpcC` its header describes; for an AV1 unit with a sequence header, its `av1C`.
fn new_record(
    codec: Codec,
    frame: &rtp_frames::Frame,
    current: Option<&CodecConfig>,
) -> Option<Bytes> {
    let record = match codec {
        Codec::Vp8 => Bytes::new(),
        Codec::Vp9 => match vp9::read_header(&frame.data) {
            Ok(FrameHeader::Key(info)) => info.record(),
            _ => return None,
        },
        Codec::Av1 => av1::config_record(av1::sequence_header(&frame.data)?).ok()?,
        _ => return None,
    };
    match current {
        Some(config) if config.record() == &record => None,
        _ => Some(record),
    }
}

/// How far back a video frame may be and still be moved just after the previous one.
const NUDGE_LIMIT_MS: i64 = 100;

/// A video frame's time, moved to a millisecond after the previous frame's when it would
/// round to the same millisecond or just before it: RTMP, FLV and their players count in
/// milliseconds and refuse two frames with one timestamp, and a browser's first frames can
/// come less than a millisecond apart. A frame further back (a new timeline) is left as it
/// is.
fn monotonic_millis(last: &mut Option<i64>, at: MediaTime) -> MediaTime {
    let ms = at.as_millis();
    let at = match *last {
        Some(previous) if ms <= previous && previous - ms < NUDGE_LIMIT_MS => {
            MediaTime::from_millis(previous + 1)
        }
        _ => at,
    };
    *last = Some(at.as_millis());
    at
}

#[cfg(test)]
mod tests {
    #[test]
    fn video_times_are_a_millisecond_apart_at_least() {
        use super::monotonic_millis;
        use zenlive_media::MediaTime;
        let mut last = None;
        let micros = |us: i64| MediaTime::from_nanos(us * 1000);
        assert_eq!(monotonic_millis(&mut last, micros(5_000)).as_millis(), 5);
        // 0.3 ms later rounds to the same millisecond: moved to the next.
        assert_eq!(monotonic_millis(&mut last, micros(5_300)).as_millis(), 6);
        // Normal spacing is left alone.
        assert_eq!(monotonic_millis(&mut last, micros(38_333)), micros(38_333));
        // A jump back of 100 ms or more is a new timeline, left as it is.
        assert_eq!(monotonic_millis(&mut last, micros(500_000)), micros(500_000));
        assert_eq!(monotonic_millis(&mut last, micros(1_000)), micros(1_000));
    }

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
    fn opus_packets_are_frames_with_an_opus_head_followed_by_their_aac() {
        let mut track = TrackIngest::new(TrackCodec::Opus);
        assert_eq!(track.transcoding(), Ok(true));
        let mut out = Vec::new();
        // 100 packets of 20 ms: the Opus "silence" frame (CELT, 20 ms, stereo).
        let payload = Bytes::from_static(&[0xfc, 0xff, 0xfe]);
        let start = MediaTime::from_millis(500);
        for i in 0..100u32 {
            track.packet(i as u16, 5_000 + 960 * i, false, &payload, start, &mut out);
        }
        assert!(matches!(&out[0], Ingested::Config(c) if c.record().starts_with(b"OpusHead")));
        let times = |codec| -> Vec<MediaTime> {
            out.iter()
                .filter_map(|o| match o {
                    Ingested::Frame(f) if f.codec() == codec => Some(f.pts()),
                    _ => None,
                })
                .collect()
        };
        let opus = times(Codec::Opus);
        assert_eq!(opus.len(), 100);
        assert_eq!((opus[0], opus[1]), (start, start + MediaTime::from_millis(20)));
        // AAC: its configuration before its first frame, then 1024-sample frames from the
        // same clock (the first one 2048 samples early: the encoder's priming).
        let first_aac =
            out.iter().position(|o| matches!(o, Ingested::Frame(f) if f.codec() == Codec::Aac));
        let aac_config =
            out.iter().position(|o| matches!(o, Ingested::Config(c) if c.codec() == Codec::Aac));
        assert!(aac_config.is_some() && aac_config < first_aac, "{aac_config:?} {first_aac:?}");
        let aac = times(Codec::Aac);
        assert_eq!(aac.len(), 100 * 960 / 1024);
        assert_eq!(aac[0], start - MediaTime::from_ticks(2048, 48_000));
        let counters = track.transcode_counters().expect("transcoding");
        assert_eq!((counters.frames_in, counters.errors), (100, 0));
    }

    #[test]
    fn vp8_packets_become_a_configuration_and_frames() {
        let mut track = TrackIngest::new(TrackCodec::Vp8);
        let mut out = Vec::new();
        let arrival = MediaTime::from_millis(100);
        let key = Bytes::from_static(&[0x10, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01]);
        track.packet(1, 9_000, true, &key, arrival, &mut out);
        track.packet(2, 12_000, true, &Bytes::from_static(&[0x10, 0x51, 1, 2]), arrival, &mut out);
        let [Ingested::Config(config), Ingested::Frame(k), Ingested::Frame(d)] = &out[..] else {
            panic!("a config and two frames: {out:?}");
        };
        assert_eq!((config.codec(), k.codec(), d.codec()), (Codec::Vp8, Codec::Vp8, Codec::Vp8));
        assert!(k.keyframe() && !d.keyframe());
        assert_eq!(k.payload().as_ref(), &key[1..]);
        assert_eq!(d.dts(), arrival + MediaTime::from_ticks(3_000, 90_000));
        assert!(d.config().is_some_and(|c| c.same(config)));
    }

    #[test]
    fn h264_vp8_vp9_av1_and_opus_are_ingested() {
        assert_eq!(TrackCodec::from_mime("video/H264"), Some(TrackCodec::H264));
        assert_eq!(TrackCodec::from_mime("video/vp8"), Some(TrackCodec::Vp8));
        assert_eq!(TrackCodec::from_mime("video/VP9"), Some(TrackCodec::Vp9));
        assert_eq!(TrackCodec::from_mime("video/AV1"), Some(TrackCodec::Av1));
        assert_eq!(TrackCodec::from_mime("audio/OPUS"), Some(TrackCodec::Opus));
        assert_eq!(TrackCodec::from_mime("video/H265"), None);
    }

    #[test]
    fn a_vp9_key_frame_brings_its_vpcc_record_once() {
        // libvpx's 320x240 key frame start, then an inter frame; one-byte descriptors.
        let key = [0x0c, 0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf6, 0x08];
        let inter = [0x4c, 0x86, 0x00, 0x40, 0x92, 0x9c, 0x30, 0x50];
        let mut track = TrackIngest::new(TrackCodec::Vp9);
        let mut out = Vec::new();
        let at = MediaTime::from_millis(1000);
        track.packet(1, 0, true, &Bytes::copy_from_slice(&key), at, &mut out);
        track.packet(2, 3000, true, &Bytes::copy_from_slice(&inter), at, &mut out);
        track.packet(3, 6000, true, &Bytes::copy_from_slice(&key), at, &mut out);
        let [Ingested::Config(config), Ingested::Frame(k), Ingested::Frame(i), Ingested::Frame(k2)] =
            &out[..]
        else {
            panic!("a configuration and three frames: {out:?}");
        };
        assert_eq!(config.codec(), Codec::Vp9);
        assert_eq!(&config.record()[..], &[1, 0, 0, 0, 0, 20, 0x80, 2, 2, 2, 0, 0]);
        assert!(k.keyframe() && !i.keyframe() && k2.keyframe());
        assert!(
            k2.config().is_some_and(|c| c.same(config)),
            "the same record: not announced again"
        );
    }
}
