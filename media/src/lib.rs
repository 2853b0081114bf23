//! Sans-IO media cores for ZenLive.
//!
//! Everything in this crate is plain synchronous code: no sockets, no runtime, no clock.
//! Callers feed bytes and timestamps in and take bytes out, which is what lets every
//! parser here be unit-tested and fuzzed directly.
//!
//! # Where it sits
//! `src/` (protocol shells) → `actors/` (stream and viewer actors) → this crate. The RTMP
//! ingest turns each audio/video/data message into a [`MediaFrame`]; the stream actor
//! caches and fans frames out without looking deeper than [`MediaFrame`]'s flags; output
//! formats (HTTP-FLV, HLS) use the parsers and muxers below.
//!
//! # Layout
//! - [`frame`]: [`MediaFrame`], the unit that travels from a publisher to every viewer.
//! - [`flv`]: FLV tag headers and the FLV file/stream writer (HTTP-FLV, recordings).
//! - [`avc`]: H.264 in FLV: the `AVCDecoderConfigurationRecord`, SPS facts, AVCC → Annex B.
//! - [`aac`]: AAC in FLV: the `AudioSpecificConfig` and ADTS headers.
//! - [`ts`]: an MPEG-TS muxer for H.264 + AAC.
//! - [`hls`]: the live segmenter (cut on keyframes) and the media playlist.

pub mod aac;
pub mod avc;
pub mod flv;
pub mod frame;
pub mod hls;
pub mod ts;

pub use frame::{Encoding, FrameKind, MediaFrame};
