//! FLV tag bodies ↔ [`MediaFrame`]s: the RTMP and FLV edge of the neutral frame.
//!
//! RTMP audio and video messages (and the tags of an FLV stream, such as a relay's) are FLV
//! tag bodies: a codec header of a few bytes, then the codec's data. [`FlvToFrames`] takes
//! them apart at ingest, extending the 32-bit millisecond clock and keeping sequence
//! headers as the track's [`CodecConfig`]; [`frame_body_header`] and
//! [`config_body_header`] put the header back for RTMP and FLV outputs, which send it
//! followed by the payload as it is (no copy of the payload is needed to build it).

use bytes::{Buf, Bytes, BytesMut};

use crate::flv::{
    ex_packet, parse_audio_tag, parse_ex_video_tag, parse_video_tag, write_tag_head,
    write_tag_parts, FlvError, TagType, FLV_AUDIO_FORMAT_AAC, FLV_VIDEO_CODEC_AVC,
};
use crate::frame::{Codec, CodecConfig, FrameKind, MediaFrame};
use crate::time::{MediaTime, Unwrapper};

/// A track this node cannot take from FLV: the publisher is refused with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// A legacy FLV video codec other than H.264.
    #[error("unsupported video codec (FLV codec id {0}); only H.264 is accepted")]
    VideoCodec(u8),
    /// An Enhanced RTMP video codec other than H.264, HEVC, AV1 and VP9 (its FourCC).
    #[error("unsupported video codec (Enhanced RTMP FourCC {0:?}); H.264, HEVC, AV1 and VP9 are accepted")]
    EnhancedCodec(String),
    /// An Enhanced RTMP packet type this server does not take (multitrack).
    #[error("unsupported Enhanced RTMP video packet type {0} (multitrack is not supported)")]
    EnhancedPacket(u8),
    /// An audio format other than AAC.
    #[error("unsupported audio codec (FLV sound format {0}); only AAC is accepted")]
    AudioFormat(u8),
}

/// What one tag body became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// A frame for the stream.
    Frame(MediaFrame),
    /// A sequence header: the track's configuration from now on (`changed` is false when
    /// it repeats the current one, which is then kept).
    Config {
        /// The track's configuration.
        config: CodecConfig,
        /// Whether it differs from the one before.
        changed: bool,
    },
    /// Nothing for viewers: an end-of-sequence marker, a video info frame, a body too short
    /// for its header. The reason is for a debug log.
    Skipped(&'static str),
}

/// Turns FLV tag bodies into frames. One per publisher (its clock and configurations).
#[derive(Debug, Default)]
pub struct FlvToFrames {
    clock: Unwrapper,
    video: Option<CodecConfig>,
    audio: Option<CodecConfig>,
}

impl FlvToFrames {
    /// A fresh publisher's converter.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current video configuration.
    pub fn video_config(&self) -> Option<&CodecConfig> {
        self.video.as_ref()
    }

    /// The current audio configuration.
    pub fn audio_config(&self) -> Option<&CodecConfig> {
        self.audio.as_ref()
    }

    /// Converts one tag body stamped `timestamp_ms` (RTMP time).
    pub fn push(
        &mut self,
        tag: TagType,
        timestamp_ms: u32,
        body: Bytes,
    ) -> Result<Ingested, Unsupported> {
        match tag {
            TagType::Script => {
                let at = MediaTime::from_millis(self.clock.peek(timestamp_ms));
                Ok(Ingested::Frame(MediaFrame::data(at, body)))
            }
            TagType::Video => self.video(timestamp_ms, body),
            TagType::Audio => self.audio(timestamp_ms, body),
        }
    }

    fn video(&mut self, timestamp_ms: u32, mut body: Bytes) -> Result<Ingested, Unsupported> {
        let tag = match parse_video_tag(&body) {
            Ok(tag) => tag,
            Err(FlvError::EnhancedHeader) => return self.ex_video(timestamp_ms, body),
            Err(_) => return Ok(Ingested::Skipped("video tag shorter than its header")),
        };
        if tag.codec_id != FLV_VIDEO_CODEC_AVC {
            return Err(Unsupported::VideoCodec(tag.codec_id));
        }
        let (packet_type, frame_type, cts) =
            (tag.avc_packet_type, tag.frame_type, tag.composition_time);
        // The payload is the body past its header: moved, not sliced (a slice of a fresh
        // `Bytes` would allocate its shared counter, once per frame).
        body.advance(body.len() - tag.data.len());
        let at = MediaTime::from_millis(self.clock.extend(timestamp_ms));
        match packet_type {
            Some(0) => Ok(replace_config(&mut self.video, Codec::H264, body, at)),
            Some(1) if frame_type == 5 => Ok(Ingested::Skipped("video info frame")),
            Some(1) => {
                let pts = at + MediaTime::from_millis(i64::from(cts));
                Ok(Ingested::Frame(MediaFrame::video(
                    Codec::H264,
                    at,
                    pts,
                    frame_type == 1,
                    body,
                    self.video.clone(),
                )))
            }
            _ => Ok(Ingested::Skipped("end of sequence")),
        }
    }

    /// An Enhanced RTMP video tag (see [`parse_ex_video_tag`]).
    fn ex_video(&mut self, timestamp_ms: u32, mut body: Bytes) -> Result<Ingested, Unsupported> {
        let tag = match parse_ex_video_tag(&body) {
            Ok(tag) => tag,
            Err(FlvError::ExPacketType(kind)) => return Err(Unsupported::EnhancedPacket(kind)),
            Err(_) => return Ok(Ingested::Skipped("video tag shorter than its header")),
        };
        let Some(codec) = codec_of_fourcc(&tag.fourcc) else {
            return Err(Unsupported::EnhancedCodec(String::from_utf8_lossy(&tag.fourcc).into()));
        };
        let (packet_type, frame_type, cts) =
            (tag.packet_type, tag.frame_type, tag.composition_time);
        body.advance(body.len() - tag.data.len());
        if frame_type == 5 {
            return Ok(Ingested::Skipped("video info or command frame"));
        }
        let at = MediaTime::from_millis(self.clock.extend(timestamp_ms));
        match packet_type {
            ex_packet::SEQUENCE_START => Ok(replace_config(&mut self.video, codec, body, at)),
            ex_packet::CODED_FRAMES | ex_packet::CODED_FRAMES_X => {
                let pts = at + MediaTime::from_millis(i64::from(cts));
                Ok(Ingested::Frame(MediaFrame::video(
                    codec,
                    at,
                    pts,
                    frame_type == 1,
                    body,
                    self.video.clone(),
                )))
            }
            ex_packet::METADATA => Ok(Ingested::Skipped("enhanced video metadata")),
            _ => Ok(Ingested::Skipped("end of sequence")),
        }
    }

    fn audio(&mut self, timestamp_ms: u32, mut body: Bytes) -> Result<Ingested, Unsupported> {
        let Ok(tag) = parse_audio_tag(&body) else {
            return Ok(Ingested::Skipped("audio tag shorter than its header"));
        };
        if tag.sound_format != FLV_AUDIO_FORMAT_AAC {
            return Err(Unsupported::AudioFormat(tag.sound_format));
        }
        let packet_type = tag.aac_packet_type;
        body.advance(body.len() - tag.data.len());
        let at = MediaTime::from_millis(self.clock.extend(timestamp_ms));
        match packet_type {
            Some(0) => Ok(replace_config(&mut self.audio, Codec::Aac, body, at)),
            _ => Ok(Ingested::Frame(MediaFrame::audio(Codec::Aac, at, body, self.audio.clone()))),
        }
    }
}

fn replace_config(
    slot: &mut Option<CodecConfig>,
    codec: Codec,
    record: Bytes,
    at: MediaTime,
) -> Ingested {
    if let Some(current) = slot.as_ref().filter(|c| c.codec() == codec && *c.record() == record) {
        return Ingested::Config { config: current.clone(), changed: false };
    }
    let config = CodecConfig::new(codec, record, at);
    *slot = Some(config.clone());
    Ingested::Config { config, changed: true }
}

/// The codec of an Enhanced RTMP FourCC this server takes.
fn codec_of_fourcc(fourcc: &[u8; 4]) -> Option<Codec> {
    match fourcc {
        b"avc1" => Some(Codec::H264),
        b"hvc1" => Some(Codec::Hevc),
        b"av01" => Some(Codec::Av1),
        b"vp09" => Some(Codec::Vp9),
        _ => None,
    }
}

/// The Enhanced RTMP FourCC of a video codec sent the enhanced way.
fn fourcc_of(codec: Codec) -> Option<&'static [u8; 4]> {
    match codec {
        Codec::Hevc => Some(b"hvc1"),
        Codec::Av1 => Some(b"av01"),
        Codec::Vp9 => Some(b"vp09"),
        _ => None,
    }
}

/// The longest body header: Enhanced RTMP's first byte, FourCC and composition time.
const MAX_BODY_HEADER: usize = 8;

/// The few bytes an FLV tag body starts with, before the codec's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyHeader {
    bytes: [u8; MAX_BODY_HEADER],
    len: u8,
}

impl BodyHeader {
    fn new(bytes: &[u8]) -> Self {
        let mut out = [0; MAX_BODY_HEADER];
        let len = bytes.len().min(MAX_BODY_HEADER);
        out[..len].copy_from_slice(&bytes[..len]);
        Self { bytes: out, len: len as u8 }
    }

    /// The header bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The tag type of a frame of `kind`.
pub fn tag_type(kind: FrameKind) -> TagType {
    match kind {
        FrameKind::Audio => TagType::Audio,
        FrameKind::Video => TagType::Video,
        FrameKind::Data => TagType::Script,
    }
}

/// Whether FLV (and so RTMP play) can carry `codec`: HEVC, AV1 and VP9 the Enhanced RTMP
/// way, which players that predate it (FFmpeg before 6.1, most Flash-era players) cannot
/// read.
pub fn carries(codec: Codec) -> bool {
    matches!(codec, Codec::H264 | Codec::Hevc | Codec::Av1 | Codec::Vp9 | Codec::Aac | Codec::Amf0)
}

/// The tag body header that goes before `frame`'s payload, or `None` when FLV cannot carry
/// its codec.
pub fn frame_body_header(frame: &MediaFrame) -> Option<BodyHeader> {
    match frame.codec() {
        Codec::H264 => {
            let frame_type: u8 = if frame.keyframe() { 1 } else { 2 };
            let cts = (frame.pts() - frame.dts()).as_millis().clamp(-(1 << 23), (1 << 23) - 1);
            let cts = (cts as i32).to_be_bytes();
            Some(BodyHeader::new(&[
                frame_type << 4 | FLV_VIDEO_CODEC_AVC,
                1,
                cts[1],
                cts[2],
                cts[3],
            ]))
        }
        Codec::Aac => Some(BodyHeader::new(&[0xaf, 1])),
        Codec::Amf0 => Some(BodyHeader::new(&[])),
        codec => {
            let fourcc = fourcc_of(codec)?;
            let frame_type: u8 = if frame.keyframe() { 1 } else { 2 };
            let mut head = [0u8; MAX_BODY_HEADER];
            head[0] = 0x80 | frame_type << 4 | ex_packet::CODED_FRAMES;
            head[1..5].copy_from_slice(fourcc);
            if codec != Codec::Hevc {
                return Some(BodyHeader::new(&head[..5]));
            }
            // HEVC's coded frames carry a composition time offset, as H.264's do.
            let cts = (frame.pts() - frame.dts()).as_millis().clamp(-(1 << 23), (1 << 23) - 1);
            head[5..8].copy_from_slice(&(cts as i32).to_be_bytes()[1..]);
            Some(BodyHeader::new(&head))
        }
    }
}

/// The sequence header's body header for `config`, or `None` when FLV cannot carry it.
pub fn config_body_header(config: &CodecConfig) -> Option<BodyHeader> {
    match config.codec() {
        Codec::H264 => Some(BodyHeader::new(&[0x10 | FLV_VIDEO_CODEC_AVC, 0, 0, 0, 0])),
        // AAC in FLV always says 44 kHz, 16-bit, stereo: the AudioSpecificConfig rules.
        Codec::Aac => Some(BodyHeader::new(&[0xaf, 0])),
        codec => {
            let fourcc = fourcc_of(codec)?;
            let first = 0x80 | 1 << 4 | ex_packet::SEQUENCE_START;
            Some(BodyHeader::new(&[first, fourcc[0], fourcc[1], fourcc[2], fourcc[3]]))
        }
    }
}

/// Appends `frame` as one FLV tag; false (nothing written) when FLV cannot carry it.
pub fn write_frame_tag(out: &mut BytesMut, frame: &MediaFrame) -> bool {
    let Some(head) = frame_body_header(frame) else { return false };
    let tag = tag_type(frame.kind());
    write_tag_parts(out, tag, frame.dts().as_rtmp_millis(), head.as_slice(), frame.payload());
    true
}

/// Appends `frame`'s tag up to its payload, which the caller writes next, followed by the
/// PreviousTagSize answered (see [`crate::flv::write_tag_head`]); `None` (nothing
/// written) when FLV cannot carry the frame.
pub fn write_frame_tag_head(out: &mut BytesMut, frame: &MediaFrame) -> Option<u32> {
    let head = frame_body_header(frame)?;
    let tag = tag_type(frame.kind());
    Some(write_tag_head(
        out,
        tag,
        frame.dts().as_rtmp_millis(),
        head.as_slice(),
        frame.payload().len(),
    ))
}

/// Appends `config` as an FLV sequence-header tag; false when FLV cannot carry it.
pub fn write_config_tag(out: &mut BytesMut, config: &CodecConfig) -> bool {
    let Some(head) = config_body_header(config) else { return false };
    let tag = tag_type(config.codec().kind());
    write_tag_parts(out, tag, config.since().as_rtmp_millis(), head.as_slice(), config.record());
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::flv::FlvDemuxer;

    const AVC_CONFIG: [u8; 5] = [0x17, 0, 0, 0, 0];

    fn seq_header(record: &[u8]) -> Bytes {
        let mut body = AVC_CONFIG.to_vec();
        body.extend_from_slice(record);
        Bytes::from(body)
    }

    #[test]
    fn avc_frames_keep_their_config_and_times() {
        let mut ingest = FlvToFrames::new();
        let Ok(Ingested::Config { config, changed: true }) =
            ingest.push(TagType::Video, 0, seq_header(&[1, 0x64, 0, 0x1f]))
        else {
            panic!("a sequence header is configuration");
        };
        assert_eq!(&config.record()[..], &[1, 0x64, 0, 0x1f]);
        let body = Bytes::from_static(&[0x17, 1, 0, 0, 80, 0, 0, 0, 1, 0x65]);
        let Ok(Ingested::Frame(frame)) = ingest.push(TagType::Video, 40, body) else {
            panic!("a frame");
        };
        assert!(frame.keyframe());
        assert_eq!(frame.dts(), MediaTime::from_millis(40));
        assert_eq!(frame.pts(), MediaTime::from_millis(120));
        assert_eq!(&frame.payload()[..], &[0, 0, 0, 1, 0x65]);
        assert!(frame.config().is_some_and(|c| c.same(&config)));
        // The same header again keeps the configuration object: viewers are not re-sent it.
        let again = ingest.push(TagType::Video, 80, seq_header(&[1, 0x64, 0, 0x1f]));
        assert!(matches!(again, Ok(Ingested::Config { changed: false, .. })));
    }

    #[test]
    fn aac_and_script_data() {
        let mut ingest = FlvToFrames::new();
        ingest.push(TagType::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).expect("aac");
        let Ok(Ingested::Frame(frame)) =
            ingest.push(TagType::Audio, 23, Bytes::from_static(&[0xaf, 1, 0x21, 0x22]))
        else {
            panic!("a frame");
        };
        assert_eq!((frame.codec(), frame.pts()), (Codec::Aac, MediaTime::from_millis(23)));
        assert_eq!(&frame.payload()[..], &[0x21, 0x22]);
        let Ok(Ingested::Frame(meta)) = ingest.push(TagType::Script, 0, Bytes::from_static(b"m"))
        else {
            panic!("data");
        };
        assert_eq!(meta.kind(), FrameKind::Data);
    }

    #[test]
    fn other_codecs_are_refused_with_a_reason() {
        let mut ingest = FlvToFrames::new();
        let vp6 = ingest.push(TagType::Video, 0, Bytes::from_static(&[0x14, 0]));
        assert!(vp6.unwrap_err().to_string().contains("codec id 4"));
        let vvc = ingest.push(TagType::Video, 0, Bytes::from_static(b"\x90vvc1\x01"));
        assert_eq!(vvc, Err(Unsupported::EnhancedCodec("vvc1".into())));
        let multitrack = ingest.push(TagType::Video, 0, Bytes::from_static(b"\x96\x00hvc1"));
        assert_eq!(multitrack, Err(Unsupported::EnhancedPacket(6)));
        let mp3 = ingest.push(TagType::Audio, 0, Bytes::from_static(&[0x2f, 0]));
        assert!(mp3.unwrap_err().to_string().contains("sound format 2"));
    }

    #[test]
    fn enhanced_rtmp_tracks_come_in_and_go_out_the_same_way() {
        for (codec, fourcc) in
            [(Codec::Hevc, b"hvc1"), (Codec::Av1, b"av01"), (Codec::Vp9, b"vp09")]
        {
            let mut ingest = FlvToFrames::new();
            let mut start = vec![0x90];
            start.extend_from_slice(fourcc);
            start.extend_from_slice(&[1, 2, 3]);
            let Ok(Ingested::Config { config, changed: true }) =
                ingest.push(TagType::Video, 1000, Bytes::from(start.clone()))
            else {
                panic!("{codec:?}: a configuration");
            };
            assert_eq!((config.codec(), &config.record()[..]), (codec, &[1u8, 2, 3][..]));
            assert!(carries(codec));
            let head = config_body_header(&config).expect("carried");
            assert_eq!(
                head.as_slice(),
                &start[..5],
                "{codec:?}: the sequence start goes out as it came"
            );
            // A keyframe, 40 ms late on display for HEVC.
            let mut body = vec![0x91];
            body.extend_from_slice(fourcc);
            if codec == Codec::Hevc {
                body.extend_from_slice(&[0, 0, 40]);
            }
            body.extend_from_slice(&[9, 8, 7]);
            let Ok(Ingested::Frame(frame)) =
                ingest.push(TagType::Video, 1033, Bytes::from(body.clone()))
            else {
                panic!("{codec:?}: a frame");
            };
            assert_eq!(
                (frame.codec(), frame.keyframe(), &frame.payload()[..]),
                (codec, true, &[9u8, 8, 7][..])
            );
            let cts = if codec == Codec::Hevc { 40 } else { 0 };
            assert_eq!(frame.pts() - frame.dts(), MediaTime::from_millis(cts));
            let head = frame_body_header(&frame).expect("carried");
            assert_eq!(
                head.as_slice(),
                &body[..body.len() - 3],
                "{codec:?}: the header goes out as it came"
            );
            // Metadata and the end of the sequence are not frames.
            let mut meta = vec![0xd4];
            meta.extend_from_slice(fourcc);
            let out = ingest.push(TagType::Video, 1066, Bytes::from(meta));
            assert!(matches!(out, Ok(Ingested::Skipped(_))), "{out:?}");
        }
    }

    #[test]
    fn short_bodies_and_markers_are_skipped() {
        let mut ingest = FlvToFrames::new();
        for (tag, body) in [
            (TagType::Video, &[][..]),
            (TagType::Video, &[0x17, 1][..]),
            (TagType::Video, &[0x17, 2, 0, 0, 0][..]),
            (TagType::Video, &[0x57, 1, 0, 0, 0][..]),
            (TagType::Audio, &[][..]),
            (TagType::Audio, &[0xaf][..]),
        ] {
            let out = ingest.push(tag, 0, Bytes::copy_from_slice(body));
            assert!(matches!(out, Ok(Ingested::Skipped(_))), "{body:?}: {out:?}");
        }
    }

    #[test]
    fn the_32_bit_clock_is_extended() {
        let mut ingest = FlvToFrames::new();
        let frame = |ingest: &mut FlvToFrames, ts| match ingest.push(
            TagType::Audio,
            ts,
            Bytes::from_static(&[0xaf, 1, 0]),
        ) {
            Ok(Ingested::Frame(f)) => f.pts(),
            other => panic!("{other:?}"),
        };
        frame(&mut ingest, u32::MAX - 10);
        assert_eq!(frame(&mut ingest, 13), MediaTime::from_millis((1 << 32) + 13));
    }

    #[test]
    fn frames_round_trip_through_flv_tags() {
        let mut ingest = FlvToFrames::new();
        let mut out = BytesMut::new();
        let tags: [(TagType, u32, &[u8]); 4] = [
            (TagType::Video, 0, &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]),
            (TagType::Audio, 0, &[0xaf, 0, 0x12, 0x10]),
            (TagType::Video, 40, &[0x27, 1, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x41]),
            (TagType::Audio, 63, &[0xaf, 1, 7, 7]),
        ];
        for (tag, ts, body) in tags {
            match ingest.push(tag, ts, Bytes::copy_from_slice(body)).expect("supported") {
                Ingested::Frame(f) => assert!(write_frame_tag(&mut out, &f)),
                Ingested::Config { config, .. } => assert!(write_config_tag(&mut out, &config)),
                Ingested::Skipped(why) => panic!("{why}"),
            }
        }
        let mut demuxer = FlvDemuxer::new();
        let mut stream = crate::flv::flv_file_header(true, true).to_vec();
        stream.extend_from_slice(&out);
        demuxer.push(&stream);
        let read: Vec<_> = std::iter::from_fn(|| demuxer.next_tag())
            .map(|t| t.map(|t| (t.tag_type, t.timestamp_ms, t.body.to_vec())))
            .collect::<Result<_, _>>()
            .expect("valid FLV");
        let expected: Vec<_> = tags.iter().map(|(t, ts, b)| (*t, *ts, b.to_vec())).collect();
        assert_eq!(read, expected, "what came in goes out byte for byte");
    }

    proptest! {
        #[test]
        fn hostile_bodies_never_panic(tag in 0u8..3, ts: u32, body in prop::collection::vec(any::<u8>(), 0..64)) {
            let tag = [TagType::Audio, TagType::Video, TagType::Script][usize::from(tag)];
            let mut ingest = FlvToFrames::new();
            if let Ok(Ingested::Frame(frame)) = ingest.push(tag, ts, Bytes::from(body)) {
                let mut out = BytesMut::new();
                write_frame_tag(&mut out, &frame);
            }
        }
    }
}
