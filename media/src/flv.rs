//! FLV tags: the headers of audio and video tag bodies (what RTMP carries), and the FLV
//! file/stream writer used by HTTP-FLV.
//!
//! The tag headers are a few bit fields; `scuffle-flv` parses them too but demands owned
//! buffers and pulls in a dependency tree larger than these forty lines, so they are here.

use bytes::{BufMut, BytesMut};

use crate::frame::{FrameKind, FLV_AUDIO_FORMAT_AAC, FLV_VIDEO_CODEC_AVC};

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
    /// An Enhanced RTMP (extended) video header, which this reader does not handle.
    #[error("enhanced RTMP video headers are not supported")]
    EnhancedHeader,
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
/// the 4-byte PreviousTagSize. Bodies longer than 2^24 - 1 bytes cannot be expressed in FLV
/// and never arrive over RTMP; their size field is truncated.
pub fn write_tag(out: &mut BytesMut, tag_type: TagType, timestamp_ms: u32, body: &[u8]) {
    let size = (body.len() as u32) & 0x00ff_ffff;
    out.reserve(15 + body.len());
    out.put_u8(tag_type as u8);
    out.put_slice(&size.to_be_bytes()[1..]);
    out.put_slice(&timestamp_ms.to_be_bytes()[1..]);
    out.put_u8((timestamp_ms >> 24) as u8);
    out.put_slice(&[0, 0, 0]);
    out.put_slice(body);
    out.put_u32(size + 11);
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

    proptest! {
        #[test]
        fn tag_parsers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_video_tag(&body);
            let _ = parse_audio_tag(&body);
        }
    }
}
