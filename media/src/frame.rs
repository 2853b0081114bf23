//! [`MediaFrame`]: one audio, video or script-data message from a publisher.
//!
//! A frame's payload is the body of an FLV tag exactly as RTMP carries it (RTMP audio and
//! video messages *are* FLV tag bodies), held in [`Bytes`] so fan-out to any number of
//! viewers shares one allocation. Classification looks only at the first bytes of the
//! payload, so a malformed body is still a frame: deeper parsers reject it later, per output.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// An FLV audio tag body (RTMP message type 8).
    Audio,
    /// An FLV video tag body (RTMP message type 9).
    Video,
    /// An AMF0 script-data body (`onMetaData`, RTMP message type 18), without the
    /// `@setDataFrame` prefix.
    Data,
}

/// FLV `CodecID` of H.264/AVC in a video tag header.
pub const FLV_VIDEO_CODEC_AVC: u8 = 7;
/// FLV `SoundFormat` of AAC in an audio tag header.
pub const FLV_AUDIO_FORMAT_AAC: u8 = 10;

/// Output encodings whose bytes are the same for every viewer, so they are built once per
/// frame (by the first viewer that needs them) and shared by all the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// An FLV tag (header, body, previous-tag-size): HTTP-FLV.
    FlvTag = 0,
    /// RTMP chunks on the server's default play chunk stream layout: RTMP play.
    RtmpChunks = 1,
}

const ENCODINGS: usize = 2;

/// One message from a publisher, classified once at ingest and shared read-only afterwards.
///
/// Cloning is one reference-count increment: the payload and its encoded forms live in one
/// shared allocation, so the GOP cache and every viewer queue hold the same frame.
#[derive(Debug, Clone)]
pub struct MediaFrame {
    /// Audio, video or script data.
    pub kind: FrameKind,
    /// The publisher's timestamp in milliseconds (RTMP time: it wraps at 2^32).
    pub timestamp: u32,
    /// A video frame a decoder can start from (FLV frame type 1). Always false for audio
    /// and data, and for sequence headers.
    pub keyframe: bool,
    /// A codec configuration record (AVC sequence header or AAC `AudioSpecificConfig`),
    /// which every viewer must receive before any media of that kind.
    pub sequence_header: bool,
    shared: Arc<Shared>,
}

/// What every clone of a frame shares.
#[derive(Debug)]
struct Shared {
    /// The FLV tag body.
    payload: Bytes,
    /// Encoded forms, filled on first use.
    encoded: [OnceLock<Bytes>; ENCODINGS],
}

impl PartialEq for MediaFrame {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.timestamp == other.timestamp
            && self.keyframe == other.keyframe
            && self.sequence_header == other.sequence_header
            && self.payload() == other.payload()
    }
}

impl Eq for MediaFrame {}

impl MediaFrame {
    /// Classifies a payload of the given kind. Never fails: a payload too short to classify
    /// is a plain non-key frame.
    pub fn new(kind: FrameKind, timestamp: u32, payload: Bytes) -> Self {
        let (keyframe, sequence_header) = match kind {
            FrameKind::Video => classify_video(&payload),
            FrameKind::Audio => (false, is_aac_sequence_header(&payload)),
            FrameKind::Data => (false, false),
        };
        let shared = Arc::new(Shared { payload, encoded: Default::default() });
        Self { kind, timestamp, keyframe, sequence_header, shared }
    }

    /// The FLV tag body (for [`FrameKind::Data`], the AMF0 script data).
    pub fn payload(&self) -> &Bytes {
        &self.shared.payload
    }

    /// This frame in `encoding`, built by `encode` the first time any clone of the frame
    /// asks and shared afterwards. `encode` must be a pure function of the frame: every
    /// caller gets the first result.
    pub fn encoded(&self, encoding: Encoding, encode: impl FnOnce(&MediaFrame) -> Bytes) -> Bytes {
        self.shared.encoded[encoding as usize].get_or_init(|| encode(self)).clone()
    }

    /// The FLV video codec id (low nibble of the first byte), if this is a video frame with
    /// a legacy (non-enhanced) header.
    pub fn video_codec(&self) -> Option<u8> {
        match (self.kind, self.payload().first()) {
            (FrameKind::Video, Some(b)) if b & 0x80 == 0 => Some(b & 0x0f),
            _ => None,
        }
    }

    /// The FLV sound format (high nibble of the first byte), if this is an audio frame.
    pub fn audio_format(&self) -> Option<u8> {
        match (self.kind, self.payload().first()) {
            (FrameKind::Audio, Some(b)) => Some(b >> 4),
            _ => None,
        }
    }
}

/// Returns `(keyframe, sequence_header)` for an FLV video tag body.
fn classify_video(payload: &[u8]) -> (bool, bool) {
    let Some(&first) = payload.first() else {
        return (false, false);
    };
    let frame_type = (first >> 4) & 0x07;
    if first & 0x80 != 0 {
        // Enhanced RTMP (`IsExHeader`): the low nibble is the packet type; 0 is the
        // sequence start, frame type 1 is a keyframe.
        let packet_type = first & 0x0f;
        return (frame_type == 1 && packet_type != 0, packet_type == 0);
    }
    let codec = first & 0x0f;
    if codec == FLV_VIDEO_CODEC_AVC {
        let sequence_header = payload.get(1) == Some(&0);
        (frame_type == 1 && !sequence_header, sequence_header)
    } else {
        (frame_type == 1, false)
    }
}

/// True for an AAC audio tag whose `AACPacketType` is 0 (the `AudioSpecificConfig`).
fn is_aac_sequence_header(payload: &[u8]) -> bool {
    matches!(payload, [first, 0, ..] if first >> 4 == FLV_AUDIO_FORMAT_AAC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_keyframe_and_sequence_header() {
        let seq = MediaFrame::new(FrameKind::Video, 0, Bytes::from_static(&[0x17, 0, 0, 0, 0]));
        assert!(seq.sequence_header && !seq.keyframe);
        let key = MediaFrame::new(FrameKind::Video, 40, Bytes::from_static(&[0x17, 1, 0, 0, 0]));
        assert!(key.keyframe && !key.sequence_header);
        let inter = MediaFrame::new(FrameKind::Video, 80, Bytes::from_static(&[0x27, 1, 0, 0, 0]));
        assert!(!inter.keyframe && !inter.sequence_header);
        assert_eq!(inter.video_codec(), Some(FLV_VIDEO_CODEC_AVC));
    }

    #[test]
    fn aac_sequence_header() {
        let seq = MediaFrame::new(FrameKind::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10]));
        assert!(seq.sequence_header);
        let raw = MediaFrame::new(FrameKind::Audio, 0, Bytes::from_static(&[0xaf, 1, 0x21]));
        assert!(!raw.sequence_header);
        assert_eq!(raw.audio_format(), Some(FLV_AUDIO_FORMAT_AAC));
    }

    #[test]
    fn encodings_are_built_once_and_shared_by_clones() {
        let frame = MediaFrame::new(FrameKind::Audio, 0, Bytes::from_static(&[0xaf, 1, 7]));
        let copy = frame.clone();
        let first = frame.encoded(Encoding::FlvTag, |f| f.payload().clone());
        let again = copy.encoded(Encoding::FlvTag, |_| panic!("must not encode twice"));
        assert_eq!(first, again);
        let other = copy.encoded(Encoding::RtmpChunks, |_| Bytes::from_static(b"x"));
        assert_eq!(&other[..], b"x");
    }

    #[test]
    fn empty_and_short_payloads_are_plain_frames() {
        for kind in [FrameKind::Audio, FrameKind::Video, FrameKind::Data] {
            let f = MediaFrame::new(kind, 0, Bytes::new());
            assert!(!f.keyframe && !f.sequence_header);
        }
        let f = MediaFrame::new(FrameKind::Video, 0, Bytes::from_static(&[0x17]));
        assert!(f.keyframe && !f.sequence_header);
    }
}
