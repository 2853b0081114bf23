//! FLV tags: the headers of audio and video tag bodies (what RTMP carries), and the FLV
//! file/stream writer used by HTTP-FLV.
//!
//! The tag headers are a few bit fields; `scuffle-flv` parses them too (Enhanced RTMP's
//! extended video header included) but demands owned buffers and pulls in a dependency
//! tree larger than these lines, so they are here: [`parse_video_tag`] for the legacy
//! header, [`parse_ex_video_tag`] for Enhanced RTMP's (v1 and v2: HEVC, AV1, VP9 and H.264
//! by FourCC, `ModEx` prefixes followed; multitrack refused).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::FrameKind;

/// Why a tag body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The body is shorter than its header.
    #[error("{kind} tag of {len} bytes is shorter than its header")]
    Truncated {
        /// `audio` or `video`.
        kind: &'static str,
        /// The body's length.
        len: usize,
    },
    /// An Enhanced RTMP (extended) video header: read it with [`parse_ex_video_tag`].
    #[error("an Enhanced RTMP video header (read it with parse_ex_video_tag)")]
    EnhancedHeader,
    /// An Enhanced RTMP header this reader does not take (multitrack, a reserved packet
    /// type).
    #[error("unsupported Enhanced RTMP video packet type {0}")]
    ExPacketType(u8),
    /// The stream does not start with an FLV header.
    #[error("not an FLV stream (bad signature)")]
    BadSignature,
    /// A tag declares more than [`MAX_TAG_BYTES`].
    #[error("FLV tag of {0} bytes exceeds the limit")]
    TagTooLarge(usize),
    /// A tag type other than audio, video or script data.
    #[error("unknown FLV tag type {0}")]
    UnknownTagType(u8),
}

/// FLV `CodecID` of H.264/AVC in a video tag header.
pub const FLV_VIDEO_CODEC_AVC: u8 = 7;
/// FLV `SoundFormat` of AAC in an audio tag header.
pub const FLV_AUDIO_FORMAT_AAC: u8 = 10;

/// Largest tag body the demuxer accepts.
pub const MAX_TAG_BYTES: usize = 8 * 1024 * 1024;

/// One tag read from an FLV file or stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// Audio, video or script.
    pub tag_type: TagType,
    /// Timestamp in milliseconds (with the extension byte).
    pub timestamp_ms: u32,
    /// The tag body.
    pub body: Bytes,
}

/// A sans-IO FLV reader: push bytes as they arrive, take complete tags out. It buffers at
/// most one tag plus one read's worth of bytes.
#[derive(Debug, Default)]
pub struct FlvDemuxer {
    buf: BytesMut,
    header_done: bool,
    failed: bool,
}

impl FlvDemuxer {
    /// A demuxer expecting the FLV file header first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes from the file or socket.
    pub fn push(&mut self, data: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next complete tag; `None` when more bytes are needed. After an error the
    /// stream is unusable and every call returns `None`.
    pub fn next_tag(&mut self) -> Option<Result<FlvTag, FlvError>> {
        if self.failed {
            return None;
        }
        let result = self.parse();
        if matches!(result, Some(Err(_))) {
            self.failed = true;
            self.buf.clear();
        }
        result
    }

    fn parse(&mut self) -> Option<Result<FlvTag, FlvError>> {
        if !self.header_done {
            let head = self.buf.get(..9)?;
            if &head[..3] != b"FLV" {
                return Some(Err(FlvError::BadSignature));
            }
            let offset = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
            // The header, then PreviousTagSize0.
            let skip = offset.max(9) + 4;
            if skip > 1024 {
                return Some(Err(FlvError::BadSignature));
            }
            if self.buf.len() < skip {
                return None;
            }
            self.buf.advance(skip);
            self.header_done = true;
        }
        let head = self.buf.get(..11)?;
        let tag_type = match head[0] & 0x1f {
            8 => TagType::Audio,
            9 => TagType::Video,
            18 => TagType::Script,
            other => return Some(Err(FlvError::UnknownTagType(other))),
        };
        let size =
            (usize::from(head[1]) << 16) | (usize::from(head[2]) << 8) | usize::from(head[3]);
        if size > MAX_TAG_BYTES {
            return Some(Err(FlvError::TagTooLarge(size)));
        }
        let timestamp_ms = u32::from_be_bytes([head[7], head[4], head[5], head[6]]);
        if self.buf.len() < 11 + size + 4 {
            return None;
        }
        self.buf.advance(11);
        let body = self.buf.split_to(size).freeze();
        self.buf.advance(4);
        Some(Ok(FlvTag { tag_type, timestamp_ms, body }))
    }
}

/// FLV tag types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagType {
    /// Audio (8).
    Audio = 8,
    /// Video (9).
    Video = 9,
    /// Script data (18).
    Script = 18,
}

impl From<FrameKind> for TagType {
    fn from(kind: FrameKind) -> Self {
        match kind {
            FrameKind::Audio => Self::Audio,
            FrameKind::Video => Self::Video,
            FrameKind::Data => Self::Script,
        }
    }
}

/// A parsed video tag header and the data after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTag<'a> {
    /// 1 keyframe, 2 inter frame, 3 disposable, 4 generated keyframe, 5 info/command.
    pub frame_type: u8,
    /// 7 for AVC.
    pub codec_id: u8,
    /// For AVC: 0 sequence header, 1 NAL units, 2 end of sequence.
    pub avc_packet_type: Option<u8>,
    /// For AVC: PTS minus DTS in milliseconds (signed 24-bit).
    pub composition_time: i32,
    /// What follows the header (for AVC NAL units: length-prefixed NALs).
    pub data: &'a [u8],
}

/// Reads a video tag body's header.
pub fn parse_video_tag(body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let Some(&first) = body.first() else {
        return Err(FlvError::Truncated { kind: "video", len: 0 });
    };
    if first & 0x80 != 0 {
        return Err(FlvError::EnhancedHeader);
    }
    let frame_type = first >> 4;
    let codec_id = first & 0x0f;
    if codec_id != FLV_VIDEO_CODEC_AVC {
        return Ok(VideoTag {
            frame_type,
            codec_id,
            avc_packet_type: None,
            composition_time: 0,
            data: &body[1..],
        });
    }
    let [_, packet_type, c0, c1, c2, data @ ..] = body else {
        return Err(FlvError::Truncated { kind: "video", len: body.len() });
    };
    // Sign-extend the 24-bit composition time.
    let composition_time = (i32::from_be_bytes([0, *c0, *c1, *c2]) << 8) >> 8;
    Ok(VideoTag {
        frame_type,
        codec_id,
        avc_packet_type: Some(*packet_type),
        composition_time,
        data,
    })
}

/// Enhanced RTMP video packet types: the low nibble of an extended video tag header.
pub mod ex_packet {
    /// The codec's configuration record (`hvcC`, `av1C`, `vpcC`, `avcC`).
    pub const SEQUENCE_START: u8 = 0;
    /// Coded frames; for HEVC and H.264 a composition time offset comes first.
    pub const CODED_FRAMES: u8 = 1;
    /// The end of the sequence.
    pub const SEQUENCE_END: u8 = 2;
    /// Coded frames with no composition time offset (it is 0).
    pub const CODED_FRAMES_X: u8 = 3;
    /// AMF metadata (colour information, HDR).
    pub const METADATA: u8 = 4;
    /// An MPEG-2 TS-style AV1 sequence start.
    pub const MPEG2TS_SEQUENCE_START: u8 = 5;
    /// Several tracks in one tag (refused).
    pub const MULTITRACK: u8 = 6;
    /// A modifier before the real packet type.
    pub const MOD_EX: u8 = 7;
}

/// A parsed Enhanced RTMP video tag header and the data after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExVideoTag<'a> {
    /// 1 keyframe, 2 inter frame, 3 disposable, 4 generated keyframe, 5 info/command.
    pub frame_type: u8,
    /// One of [`ex_packet`] (never `MOD_EX` or `MULTITRACK`).
    pub packet_type: u8,
    /// The codec: `hvc1`, `av01`, `vp09`, `avc1`, ...
    pub fourcc: [u8; 4],
    /// PTS minus DTS in milliseconds (signed 24-bit), for coded frames of HEVC and H.264.
    pub composition_time: i32,
    /// What follows the header.
    pub data: &'a [u8],
}

/// Reads an Enhanced RTMP video tag body's header (the first byte's top bit set).
pub fn parse_ex_video_tag(body: &[u8]) -> Result<ExVideoTag<'_>, FlvError> {
    let truncated = |len| FlvError::Truncated { kind: "video", len };
    let Some((&first, mut rest)) = body.split_first() else { return Err(truncated(0)) };
    let frame_type = (first >> 4) & 0x07;
    let mut packet_type = first & 0x0f;
    // Modifiers: [size - 1 (u8; 255 then u16 + 1)] [data] [modExType << 4 | next type].
    let mut hops = 0;
    while packet_type == ex_packet::MOD_EX {
        hops += 1;
        let (size, after) = match rest {
            [0xff, hi, lo, after @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])) + 1, after),
            [n, after @ ..] => (usize::from(*n) + 1, after),
            [] => return Err(truncated(body.len())),
        };
        let (Some(next), true) = (after.get(size), hops <= 8) else {
            return Err(truncated(body.len()));
        };
        packet_type = next & 0x0f;
        rest = &after[size + 1..];
    }
    if packet_type == ex_packet::MULTITRACK || packet_type > ex_packet::MOD_EX {
        return Err(FlvError::ExPacketType(packet_type));
    }
    let [f0, f1, f2, f3, rest @ ..] = rest else { return Err(truncated(body.len())) };
    let fourcc = [*f0, *f1, *f2, *f3];
    let with_cts = packet_type == ex_packet::CODED_FRAMES && matches!(&fourcc, b"hvc1" | b"avc1");
    let (composition_time, data) = if with_cts {
        let [c0, c1, c2, data @ ..] = rest else { return Err(truncated(body.len())) };
        ((i32::from_be_bytes([0, *c0, *c1, *c2]) << 8) >> 8, data)
    } else {
        (0, rest)
    };
    Ok(ExVideoTag { frame_type, packet_type, fourcc, composition_time, data })
}

/// A parsed audio tag header and the data after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTag<'a> {
    /// 10 for AAC, 2 for MP3, ...
    pub sound_format: u8,
    /// 0..=3: 5.5, 11, 22, 44 kHz (AAC always says 3).
    pub sound_rate: u8,
    /// 0 8-bit, 1 16-bit.
    pub sound_size: u8,
    /// 0 mono, 1 stereo.
    pub sound_type: u8,
    /// For AAC: 0 `AudioSpecificConfig`, 1 raw frame.
    pub aac_packet_type: Option<u8>,
    /// What follows the header.
    pub data: &'a [u8],
}

/// Reads an audio tag body's header.
pub fn parse_audio_tag(body: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let Some(&first) = body.first() else {
        return Err(FlvError::Truncated { kind: "audio", len: 0 });
    };
    let sound_format = first >> 4;
    let (aac_packet_type, data) = if sound_format == FLV_AUDIO_FORMAT_AAC {
        match body {
            [_, packet_type, data @ ..] => (Some(*packet_type), data),
            _ => return Err(FlvError::Truncated { kind: "audio", len: body.len() }),
        }
    } else {
        (None, &body[1..])
    };
    Ok(AudioTag {
        sound_format,
        sound_rate: (first >> 2) & 0x03,
        sound_size: (first >> 1) & 0x01,
        sound_type: first & 0x01,
        aac_packet_type,
        data,
    })
}

/// The 9-byte FLV file header followed by the first (zero) PreviousTagSize.
pub fn flv_file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// Appends one tag: the 11-byte header (with the extended timestamp byte), the body, and
/// the 4-byte PreviousTagSize (see [`write_tag_parts`]).
pub fn write_tag(out: &mut BytesMut, tag_type: TagType, timestamp_ms: u32, body: &[u8]) {
    write_tag_parts(out, tag_type, timestamp_ms, &[], body);
}

/// Appends one tag whose body is `head` then `body`: the 11-byte header (with the extended
/// timestamp byte), the body, and the 4-byte PreviousTagSize. Bodies longer than 2^24 - 1
/// bytes cannot be expressed in FLV and never arrive over RTMP; their size is truncated.
pub fn write_tag_parts(
    out: &mut BytesMut,
    tag_type: TagType,
    timestamp_ms: u32,
    head: &[u8],
    body: &[u8],
) {
    out.reserve(15 + head.len() + body.len());
    let previous = write_tag_head(out, tag_type, timestamp_ms, head, body.len());
    out.put_slice(body);
    out.put_u32(previous);
}

/// Appends a tag up to its body's `head`, for a body of `head` then `body_len` more bytes
/// that the caller writes itself (so a payload need not be copied); answers the
/// PreviousTagSize that goes after those bytes. Sizes as in [`write_tag_parts`].
pub fn write_tag_head(
    out: &mut BytesMut,
    tag_type: TagType,
    timestamp_ms: u32,
    head: &[u8],
    body_len: usize,
) -> u32 {
    let size = ((head.len() + body_len) as u32) & 0x00ff_ffff;
    out.reserve(11 + head.len());
    out.put_u8(tag_type as u8);
    out.put_slice(&size.to_be_bytes()[1..]);
    out.put_slice(&timestamp_ms.to_be_bytes()[1..]);
    out.put_u8((timestamp_ms >> 24) as u8);
    out.put_slice(&[0, 0, 0]);
    out.put_slice(head);
    size + 11
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn reads_avc_headers_with_negative_composition_time() {
        let tag = parse_video_tag(&[0x27, 1, 0xff, 0xff, 0xd8, 9, 9]).expect("valid");
        assert_eq!((tag.frame_type, tag.codec_id, tag.avc_packet_type), (2, 7, Some(1)));
        assert_eq!(tag.composition_time, -40);
        assert_eq!(tag.data, &[9, 9]);
        assert_eq!(parse_video_tag(&[0x17, 0, 0, 0, 80]).expect("valid").composition_time, 80);
    }

    #[test]
    fn reads_enhanced_headers_as_ffmpeg_8_writes_them() {
        // HEVC sequence start, then a keyframe with a composition time of 67 ms (bytes
        // from FFmpeg 8's FLV muxer).
        let start = parse_ex_video_tag(b"\x90hvc1\x01\x01\x60").expect("valid");
        assert_eq!((start.frame_type, start.packet_type), (1, ex_packet::SEQUENCE_START));
        assert_eq!((&start.fourcc, start.data), (b"hvc1", &[1u8, 1, 0x60][..]));
        let frame = parse_ex_video_tag(b"\x91hvc1\x00\x00\x43\x00\x00\x0d").expect("valid");
        assert_eq!((frame.frame_type, frame.packet_type), (1, ex_packet::CODED_FRAMES));
        assert_eq!((frame.composition_time, frame.data), (67, &[0u8, 0, 0x0d][..]));
        // AV1 and VP9 coded frames carry no composition time; CodedFramesX says it is 0.
        let av1 = parse_ex_video_tag(b"\xa1av01\x12\x00").expect("valid");
        assert_eq!((av1.frame_type, av1.composition_time, av1.data), (2, 0, &[0x12u8, 0][..]));
        let x = parse_ex_video_tag(b"\xa3hvc1\x07").expect("valid");
        assert_eq!((x.packet_type, x.composition_time, x.data), (3, 0, &[7u8][..]));
        // Metadata (a command frame), and a negative composition time.
        assert_eq!(parse_ex_video_tag(b"\xd4hvc1\x02").expect("valid").frame_type, 5);
        let neg = parse_ex_video_tag(b"\xa1avc1\xff\xff\xd8\x09").expect("valid");
        assert_eq!(neg.composition_time, -40);
    }

    #[test]
    fn follows_mod_ex_prefixes_and_refuses_multitrack() {
        // ModEx with 2 bytes of data (size - 1 = 1), then CodedFrames.
        let tag = parse_ex_video_tag(b"\x97\x01\xaa\xbb\x01av01\x05").expect("valid");
        assert_eq!((tag.packet_type, &tag.fourcc, tag.data), (1, b"av01", &[5u8][..]));
        // A 16-bit size: 0xff, then 0x0001 + 1 = 2 bytes.
        let long = parse_ex_video_tag(b"\x97\xff\x00\x01\xaa\xbb\x00vp09\x01").expect("valid");
        assert_eq!((long.packet_type, &long.fourcc), (0, b"vp09"));
        assert_eq!(parse_ex_video_tag(b"\x96\x00hvc1"), Err(FlvError::ExPacketType(6)));
        assert_eq!(parse_ex_video_tag(b"\x9fhvc1"), Err(FlvError::ExPacketType(15)));
        // Truncated anywhere: an error, never a panic.
        let whole = b"\x97\x01\xaa\xbb\x01hvc1\x00\x00\x43\x09";
        for len in 0..whole.len() - 1 {
            assert!(parse_ex_video_tag(&whole[..len]).is_err(), "{len} bytes");
        }
        // A chain of modifiers is bounded.
        let chain: Vec<u8> = std::iter::once(0x97).chain((0..20).flat_map(|_| [0, 0, 7])).collect();
        assert!(parse_ex_video_tag(&chain).is_err());
    }

    #[test]
    fn reads_aac_headers() {
        let tag = parse_audio_tag(&[0xaf, 0, 0x12, 0x10]).expect("valid");
        assert_eq!(
            (tag.sound_format, tag.sound_rate, tag.sound_size, tag.sound_type),
            (10, 3, 1, 1)
        );
        assert_eq!(tag.aac_packet_type, Some(0));
        assert_eq!(tag.data, &[0x12, 0x10]);
    }

    #[test]
    fn refuses_truncated_and_enhanced_headers() {
        assert!(parse_video_tag(&[]).is_err());
        assert!(parse_video_tag(&[0x17, 1, 0]).is_err());
        assert_eq!(parse_video_tag(&[0x90, 0, 0, 0, 0]), Err(FlvError::EnhancedHeader));
        assert!(parse_audio_tag(&[]).is_err());
        assert!(parse_audio_tag(&[0xaf]).is_err());
    }

    #[test]
    fn writes_tags_with_extended_timestamps() {
        let mut out = BytesMut::new();
        write_tag(&mut out, TagType::Video, 0x0102_0304, &[1, 2, 3]);
        assert_eq!(&out[..], &[9, 0, 0, 3, 0x02, 0x03, 0x04, 0x01, 0, 0, 0, 1, 2, 3, 0, 0, 0, 14]);
        assert_eq!(&flv_file_header(true, true)[..5], b"FLV\x01\x05");
    }

    #[test]
    fn demuxer_reads_back_what_the_writer_wrote_in_any_split() {
        let mut file = BytesMut::new();
        file.extend_from_slice(&flv_file_header(true, true));
        write_tag(&mut file, TagType::Script, 0, b"meta");
        write_tag(&mut file, TagType::Video, 40, &[0x17, 1, 0, 0, 0, 9]);
        write_tag(&mut file, TagType::Audio, 0x0100_0000, &[0xaf, 1, 7]);
        for split in 0..file.len() {
            let mut demux = FlvDemuxer::new();
            let mut tags = Vec::new();
            for part in [&file[..split], &file[split..]] {
                demux.push(part);
                while let Some(tag) = demux.next_tag() {
                    tags.push(tag.expect("valid"));
                }
            }
            let summary: Vec<_> =
                tags.iter().map(|t| (t.tag_type, t.timestamp_ms, t.body.len())).collect();
            assert_eq!(
                summary,
                vec![
                    (TagType::Script, 0, 4),
                    (TagType::Video, 40, 6),
                    (TagType::Audio, 0x0100_0000, 3)
                ]
            );
        }
    }

    #[test]
    fn demuxer_refuses_hostile_streams() {
        let mut demux = FlvDemuxer::new();
        demux.push(b"GIF89a....");
        assert_eq!(demux.next_tag(), Some(Err(FlvError::BadSignature)));
        assert_eq!(demux.next_tag(), None);
        let mut demux = FlvDemuxer::new();
        demux.push(&flv_file_header(true, true));
        demux.push(&[9, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(demux.next_tag(), Some(Err(FlvError::TagTooLarge(_)))));
        let mut demux = FlvDemuxer::new();
        demux.push(&flv_file_header(true, true));
        demux.push(&[7, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12]);
        assert_eq!(demux.next_tag(), Some(Err(FlvError::UnknownTagType(7))));
    }

    proptest! {
        #[test]
        fn demuxer_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut demux = FlvDemuxer::new();
            demux.push(&flv_file_header(true, true));
            demux.push(&data);
            while let Some(Ok(_)) = demux.next_tag() {}
        }

        #[test]
        fn tag_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_video_tag(&body);
            let _ = parse_ex_video_tag(&body);
            let _ = parse_audio_tag(&body);
        }
    }
}
