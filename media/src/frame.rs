//! [`MediaFrame`]: one coded audio or video frame (or a script-data message), whatever
//! protocol brought it, and [`CodecConfig`], the codec configuration a track's frames
//! refer to.
//!
//! A frame says its [`Codec`], its decode and presentation times on one clock
//! ([`MediaTime`]), whether a decoder can start from it, and carries its payload in one
//! canonical form per codec:
//!
//! | codec | payload | configuration ([`CodecConfig::record`]) |
//! |---|---|---|
//! | H.264 | AVCC: NAL units with 4-, 2- or 1-byte length prefixes | `AVCDecoderConfigurationRecord` |
//! | HEVC | length-prefixed NAL units | `HEVCDecoderConfigurationRecord` |
//! | AV1 | OBUs (low-overhead format) | `AV1CodecConfigurationRecord` |
//! | VP8, VP9 | one frame | VP9: `VPCodecConfigurationRecord`; VP8: none |
//! | AAC | one raw access unit (no ADTS) | `AudioSpecificConfig` |
//! | Opus | one Opus packet | `OpusHead` |
//! | script data | AMF0 values (`onMetaData`, without `@setDataFrame`) | none |
//!
//! Codec configuration is stream state, not media: the ingest edge turns a sequence header
//! into a [`CodecConfig`] and every later frame of that track points at it. An output that
//! must send the configuration in-band (an FLV sequence header, SPS/PPS before an IDR)
//! sends it when a frame's configuration differs from the last one it sent.
//!
//! Bytes a protocol builds from a frame or a configuration and that are the same for every
//! viewer (an FLV tag, RTMP chunks, RTP packets) are built once, by the first viewer that
//! needs them, in a slot the producing crate registers ([`EncodingSlot`]). Cloning a frame
//! is one reference-count increment: times, payload, configuration and encodings live in
//! one shared allocation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::time::MediaTime;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
    /// Script data (AMF0: `onMetaData`, cue points).
    Data,
}

impl FrameKind {
    /// The kind's name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Data => "data",
        }
    }
}

/// A frame's codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    Hevc,
    /// AV1.
    Av1,
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// AAC (any profile).
    Aac,
    /// Opus.
    Opus,
    /// AMF0 script data.
    Amf0,
}

impl Codec {
    /// Audio, video or data.
    pub fn kind(self) -> FrameKind {
        match self {
            Self::H264 | Self::Hevc | Self::Av1 | Self::Vp8 | Self::Vp9 => FrameKind::Video,
            Self::Aac | Self::Opus => FrameKind::Audio,
            Self::Amf0 => FrameKind::Data,
        }
    }

    /// The codec's short name (`h264`, `aac`, ...), as the API and logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H264 => "h264",
            Self::Hevc => "hevc",
            Self::Av1 => "av1",
            Self::Vp8 => "vp8",
            Self::Vp9 => "vp9",
            Self::Aac => "aac",
            Self::Opus => "opus",
            Self::Amf0 => "amf0",
        }
    }
}

/// How many protocols may cache an encoding on frames and configurations.
pub const ENCODING_SLOTS: usize = 3;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// A place on every frame and configuration for one protocol's shared encoding of it
/// (FLV tags, RTMP chunks, ...). The crate that produces an encoding registers its slot
/// once (typically in a `static LazyLock`); the media crate knows nothing of protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingSlot(Option<usize>);

impl EncodingSlot {
    /// A new slot. When all [`ENCODING_SLOTS`] are taken, the slot caches nothing (every
    /// caller encodes for itself): slower, never wrong.
    pub fn register() -> Self {
        let index = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        Self((index < ENCODING_SLOTS).then_some(index))
    }

    fn get(self, cells: &[OnceLock<Bytes>; ENCODING_SLOTS], make: impl FnOnce() -> Bytes) -> Bytes {
        match self.0.and_then(|i| cells.get(i)) {
            Some(cell) => cell.get_or_init(make).clone(),
            None => make(),
        }
    }
}

/// A track's codec configuration (see the module docs for what `record` holds per codec).
/// Clones share one allocation; [`CodecConfig::same`] tells whether two are the same
/// configuration object, which is how outputs notice a change.
#[derive(Debug, Clone)]
pub struct CodecConfig(Arc<ConfigInner>);

#[derive(Debug)]
struct ConfigInner {
    codec: Codec,
    record: Bytes,
    since: MediaTime,
    encoded: [OnceLock<Bytes>; ENCODING_SLOTS],
}

impl CodecConfig {
    /// The configuration `record` of `codec`, in effect from media time `since`.
    pub fn new(codec: Codec, record: Bytes, since: MediaTime) -> Self {
        Self(Arc::new(ConfigInner { codec, record, since, encoded: Default::default() }))
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.0.codec
    }

    /// The configuration record.
    pub fn record(&self) -> &Bytes {
        &self.0.record
    }

    /// When it took effect (an in-band sequence header is stamped with this time).
    pub fn since(&self) -> MediaTime {
        self.0.since
    }

    /// Whether `other` is this very configuration (not merely equal bytes).
    pub fn same(&self, other: &CodecConfig) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// This configuration in a protocol's encoding, built once (see [`MediaFrame::encoded`]).
    pub fn encoded(&self, slot: EncodingSlot, encode: impl FnOnce(&CodecConfig) -> Bytes) -> Bytes {
        slot.get(&self.0.encoded, || encode(self))
    }
}

impl PartialEq for CodecConfig {
    fn eq(&self, other: &Self) -> bool {
        self.codec() == other.codec() && self.record() == other.record()
    }
}

impl Eq for CodecConfig {}

/// One frame, shared read-only once built. See the module docs.
#[derive(Debug, Clone)]
pub struct MediaFrame(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    codec: Codec,
    keyframe: bool,
    dts: MediaTime,
    pts: MediaTime,
    payload: Bytes,
    config: Option<CodecConfig>,
    encoded: [OnceLock<Bytes>; ENCODING_SLOTS],
}

impl PartialEq for MediaFrame {
    fn eq(&self, other: &Self) -> bool {
        self.codec() == other.codec()
            && self.dts() == other.dts()
            && self.pts() == other.pts()
            && self.keyframe() == other.keyframe()
            && self.payload() == other.payload()
            && self.config() == other.config()
    }
}

impl Eq for MediaFrame {}

impl MediaFrame {
    /// A video frame. `keyframe`: a decoder can start from it.
    pub fn video(
        codec: Codec,
        dts: MediaTime,
        pts: MediaTime,
        keyframe: bool,
        payload: Bytes,
        config: Option<CodecConfig>,
    ) -> Self {
        Self::build(codec, keyframe, dts, pts, payload, config)
    }

    /// An audio frame presented at `pts` (decode time is the same).
    pub fn audio(
        codec: Codec,
        pts: MediaTime,
        payload: Bytes,
        config: Option<CodecConfig>,
    ) -> Self {
        Self::build(codec, false, pts, pts, payload, config)
    }

    /// A script-data message (AMF0) at `at`.
    pub fn data(at: MediaTime, amf0: Bytes) -> Self {
        Self::build(Codec::Amf0, false, at, at, amf0, None)
    }

    fn build(
        codec: Codec,
        keyframe: bool,
        dts: MediaTime,
        pts: MediaTime,
        payload: Bytes,
        config: Option<CodecConfig>,
    ) -> Self {
        let keyframe = keyframe && codec.kind() == FrameKind::Video;
        Self(Arc::new(Inner {
            codec,
            keyframe,
            dts,
            pts,
            payload,
            config,
            encoded: Default::default(),
        }))
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.0.codec
    }

    /// Audio, video or data.
    pub fn kind(&self) -> FrameKind {
        self.0.codec.kind()
    }

    /// Whether a decoder can start from this frame (video only).
    pub fn keyframe(&self) -> bool {
        self.0.keyframe
    }

    /// Decode time.
    pub fn dts(&self) -> MediaTime {
        self.0.dts
    }

    /// Presentation time.
    pub fn pts(&self) -> MediaTime {
        self.0.pts
    }

    /// The payload in its codec's canonical form (module docs).
    pub fn payload(&self) -> &Bytes {
        &self.0.payload
    }

    /// The configuration this frame is decoded with, if the publisher sent one.
    pub fn config(&self) -> Option<&CodecConfig> {
        self.0.config.as_ref()
    }

    /// The same frame moved by `offset` on the clock (a relayed or taken-over stream
    /// continuing an earlier timeline). In place when this is the only reference.
    pub fn shifted(mut self, offset: MediaTime) -> Self {
        if offset == MediaTime::ZERO {
            return self;
        }
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.dts = inner.dts + offset;
            inner.pts = inner.pts + offset;
            inner.encoded = Default::default();
            return self;
        }
        let i = &self.0;
        Self::build(
            i.codec,
            i.keyframe,
            i.dts + offset,
            i.pts + offset,
            i.payload.clone(),
            i.config.clone(),
        )
    }

    /// This frame in a protocol's encoding: built by `encode` the first time any clone
    /// asks and shared afterwards. `encode` must be a pure function of the frame: every
    /// caller gets the first result.
    pub fn encoded(&self, slot: EncodingSlot, encode: impl FnOnce(&MediaFrame) -> Bytes) -> Bytes {
        slot.get(&self.0.encoded, || encode(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264(ms: i64, key: bool) -> MediaFrame {
        let t = MediaTime::from_millis(ms);
        MediaFrame::video(Codec::H264, t, t, key, Bytes::from_static(&[0, 0, 0, 1, 0x65]), None)
    }

    #[test]
    fn encodings_are_built_once_and_shared_by_clones() {
        let (flv, rtmp) = (EncodingSlot::register(), EncodingSlot::register());
        let frame = h264(0, true);
        let copy = frame.clone();
        let first = frame.encoded(flv, |f| f.payload().clone());
        let again = copy.encoded(flv, |_| panic!("must not encode twice"));
        assert_eq!(first, again);
        assert_eq!(&copy.encoded(rtmp, |_| Bytes::from_static(b"x"))[..], b"x");
    }

    #[test]
    fn a_slot_past_the_last_encodes_every_time() {
        let uncached = EncodingSlot(None);
        let frame = h264(0, false);
        assert_eq!(&frame.encoded(uncached, |_| Bytes::from_static(b"a"))[..], b"a");
        assert_eq!(&frame.encoded(uncached, |_| Bytes::from_static(b"b"))[..], b"b");
    }

    #[test]
    fn configurations_are_compared_by_identity_for_changes() {
        let a = CodecConfig::new(Codec::Aac, Bytes::from_static(&[0x12, 0x10]), MediaTime::ZERO);
        let b = CodecConfig::new(Codec::Aac, Bytes::from_static(&[0x12, 0x10]), MediaTime::ZERO);
        assert!(a.same(&a.clone()) && !a.same(&b));
        assert_eq!(a, b, "equal bytes are equal configurations");
    }

    #[test]
    fn only_video_has_keyframes_and_shifting_moves_both_times() {
        let audio = MediaFrame::build(
            Codec::Aac,
            true,
            MediaTime::ZERO,
            MediaTime::ZERO,
            Bytes::new(),
            None,
        );
        assert!(!audio.keyframe());
        let frame = h264(40, true);
        let shared = frame.clone();
        let moved = frame.shifted(MediaTime::from_millis(1000));
        assert_eq!(
            (moved.dts(), moved.pts()),
            (MediaTime::from_millis(1040), MediaTime::from_millis(1040))
        );
        assert_eq!(shared.dts(), MediaTime::from_millis(40), "other holders keep their frame");
        assert!(moved.keyframe());
        assert_eq!(h264(5, false).shifted(MediaTime::ZERO).dts(), MediaTime::from_millis(5));
    }
}
