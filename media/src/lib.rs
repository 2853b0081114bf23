//! Sans-IO media cores for ZenLive.
//!
//! Everything in this crate is plain synchronous code: no sockets, no runtime, no clock.
//! Callers feed bytes and timestamps in and take bytes out, which is what lets every
//! parser here be unit-tested and fuzzed directly.
//!
//! # Where it sits
//! `src/` (protocol shells) → `actors/` (stream and viewer actors) → this crate. The RTMP
//! ingest turns each audio/video/data message into a [`MediaFrame`] ([`flv_frames`]); the
//! stream actor caches and fans frames out without looking deeper than [`MediaFrame`]'s
//! codec, times and keyframe flag; output
//! formats (HTTP-FLV, HLS) use the parsers and muxers below.
//!
//! # Layout
//! In dependency order, bottom to top: a module imports only modules listed before it.
//! - [`time`]: [`MediaTime`], one clock for millisecond, 90 kHz and sample-rate sources.
//! - [`frame`]: [`MediaFrame`] (codec-neutral: codec, times, canonical payload), the unit
//!   that travels from a publisher to every viewer, and [`CodecConfig`], a track's
//!   configuration (stream state, which frames point at).
//! - [`flv`]: FLV tag headers and the FLV file/stream reader and writer.
//! - [`flv_frames`]: FLV tag bodies ↔ frames (RTMP ingest, RTMP/FLV outputs).
//! - [`avc`]: H.264 in FLV: the `AVCDecoderConfigurationRecord`, SPS facts, AVCC → Annex B.
//! - [`aac`]: AAC in FLV: the `AudioSpecificConfig` and ADTS headers.
//! - [`ts`]: an MPEG-TS muxer for H.264 + AAC.
//! - [`hls`]: the live segmenter (cut on keyframes) and the media playlist.
//! - [`fmp4`]: a fragmented MP4 writer (H.264 + AAC), boxes from `mp4-atom`.
//! - [`segment`]: recording segments: one self-contained file in fMP4, MPEG-TS or FLV,
//!   handed out in chunks of about a fragment each.
//! - [`torn`]: how much of a segment file cut short by a crash is whole.
//! - [`rtp_clock`]: RTP timestamps (32-bit, wrapping) → [`MediaTime`].
//! - [`rtp_h264`]: H.264 over RTP (packetization mode 1) → AVCC access units (WHIP ingest).
//! - [`rtp_h264_pack`]: AVCC access units → H.264 RTP payloads (packetization mode 1, WHEP).
//! - [`vp9`], [`av1`]: what a VP9 frame or an AV1 temporal unit says of itself (key
//!   frame, configuration record), for VP9 and AV1 that arrive without a record (WHIP).

pub mod aac;
pub mod av1;
pub mod avc;
pub mod chunk;
pub mod flv;
pub mod flv_frames;
pub mod fmp4;
pub mod fmp4_cut;
pub mod frame;
pub mod hls;
pub mod llhls;
pub mod rtp_clock;
pub mod rtp_h264;
pub mod rtp_h264_pack;
pub mod segment;
pub mod span;
#[cfg(test)]
mod testdata;
pub mod time;
pub mod torn;
pub mod ts;
pub mod vp9;

pub use frame::{Codec, CodecConfig, EncodingSlot, FrameKind, MediaFrame};
pub use time::MediaTime;
