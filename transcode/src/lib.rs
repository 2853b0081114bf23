//! Sans-IO audio transcoders for ZenLive: frames in, frames out, no sockets, no clock.
//!
//! RTMP, HTTP-FLV, HLS and recordings carry AAC; WebRTC carries Opus. A WHIP publisher's
//! Opus becomes AAC once per stream ([`OpusToAac`]) so every non-WebRTC output has audio,
//! and an RTMP publisher's AAC can become Opus for WHEP viewers ([`AacToOpus`]).
//!
//! Both take [`MediaFrame`]s stamped on the stream's clock and give [`MediaFrame`]s back,
//! and both:
//! - cut the decoded samples into the other codec's frames (960 samples of Opus, 1024 of
//!   AAC) and stamp each output frame from its position in one continuous run of samples
//!   ([`timeline`]): no drift over hours, gaps filled, jumps re-anchored;
//! - take the encoders' delay off the output times, so audio stays in sync with video;
//! - keep bounded buffers (less than one output frame of samples, at most one second of
//!   gap filled at a time);
//! - count what went wrong ([`Counters`]): an undecodable packet is counted and the stream
//!   goes on (the time it covered is filled); a panic inside a codec is caught, counted,
//!   and that codec is rebuilt.
//!
//! # Codecs and their licences
//! - Opus, both ways: [`opus_pure`], a pure-Rust port of libopus (BSD-3-Clause). Chosen
//!   over libopus through the `opus` crate because every libopus binding on crates.io
//!   (`opus`/`opusic-sys`, `audiopus_sys`, `opus-static-sys`, `opus-head-sys`) builds it
//!   with CMake; see BENCHMARKS.md ("Audio transcoding") for the comparison.
//! - AAC encoding: the Fraunhofer FDK AAC library through `fdk-aac` (MIT bindings), whose
//!   C++ sources `fdk-aac-sys` compiles with `cc`. The library's own licence is special:
//!   the "Software License for The Fraunhofer FDK AAC Codec Library for Android" allows
//!   redistribution in source and binary form, but grants no patent licence (AAC patents
//!   are licensed separately) and asks that its source be offered along with binaries;
//!   the FSF counts it as incompatible with the GPL. Only PCM decoded here reaches it:
//!   no byte from a publisher is parsed by C code.
//! - AAC decoding: [`rusty_aac`], pure Rust (Apache-2.0): AAC-LC and HE-AAC v1/v2.
//! - Resampling (a 44.1 kHz or other non-48 kHz AAC source to Opus's 48 kHz): [`rubato`]'s
//!   synchronous FFT resampler (MIT OR Apache-2.0).
//!
//! Opus → AAC keeps 48 kHz: AAC-LC at 48 kHz is valid in FLV (whose rate bits are fixed
//! for AAC, the `AudioSpecificConfig` tells the real rate), MPEG-TS and MP4, and FFmpeg
//! and browsers play it, so no resampling is done on that path.

pub mod aac_to_opus;
pub mod opus_to_aac;
pub mod timeline;

use std::time::Duration;

use bytes::Bytes;
use zenlive_media::{CodecConfig, MediaFrame};

pub use aac_to_opus::{AacToOpus, AacToOpusSettings};
pub use opus_to_aac::{OpusToAac, OpusToAacSettings};

/// Samples per second of Opus (and of the AAC made from it).
pub const OPUS_RATE: u32 = 48_000;

/// `OpusHead` (RFC 7845 §5.1) of WebRTC's Opus: version 1, 2 channels, no pre-skip,
/// 48 kHz, no gain, mapping family 0.
pub const OPUS_HEAD: [u8; 19] =
    [b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 1, 2, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0];

/// The [`OPUS_HEAD`] record.
pub fn opus_head() -> Bytes {
    Bytes::from_static(&OPUS_HEAD)
}

/// What a transcoder produced.
#[derive(Debug, Clone)]
pub enum Transcoded {
    /// The output track's configuration, before the first frame that uses it.
    Config(CodecConfig),
    /// A frame (it points at that configuration).
    Frame(MediaFrame),
}

/// What a transcoder did so far. Callers report the growth between two reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Input frames taken.
    pub frames_in: u64,
    /// Frames produced.
    pub frames_out: u64,
    /// Input frames that could not be decoded (their time is filled like a loss), plus
    /// codec panics caught and encoder failures.
    pub errors: u64,
    /// Input frames dropped as duplicates or too late (before where the run had reached).
    pub late: u64,
    /// Samples of gaps filled (loss concealment or silence), at the input rate.
    pub concealed_samples: u64,
    /// Times the timeline re-anchored after a jump of more than a second (or after a
    /// change of the input's configuration).
    pub resyncs: u64,
    /// Time spent transcoding (the thread is busy for all of it: no I/O, no waiting).
    pub busy: Duration,
}

/// A transcoder that cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The AAC encoder refused its settings.
    #[error("the AAC encoder cannot start: {0}")]
    AacEncoder(String),
    /// The Opus encoder or decoder refused its settings.
    #[error("the Opus codec cannot start: {0}")]
    Opus(String),
}

/// Runs `f`, turning a panic into `None` (a codec bug must not end the session).
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

#[cfg(test)]
pub(crate) mod testsignal {
    //! Test signals: a stereo tone, and how alike two signals are.

    /// `frames` stereo frames of a 440 Hz (left) and 660 Hz (right) tone at `rate`,
    /// amplitude 0.3, starting at frame `from`.
    pub fn tone(rate: u32, from: usize, frames: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(frames * 2);
        for i in from..from + frames {
            let t = i as f64 / f64::from(rate);
            out.push((0.3 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as f32);
            out.push((0.3 * (2.0 * std::f64::consts::PI * 660.0 * t).sin()) as f32);
        }
        out
    }

    /// The same tone as 16-bit samples.
    pub fn tone_i16(rate: u32, from: usize, frames: usize) -> Vec<i16> {
        tone(rate, from, frames).into_iter().map(|s| (s * 32767.0) as i16).collect()
    }

    /// The signal-to-noise ratio (dB) of `test` against `reference`, both interleaved
    /// stereo, at the best offset of `test` in `0..max_offset` frames, and that offset.
    pub fn best_snr(reference: &[f32], test: &[f32], max_offset: usize) -> (f64, usize) {
        (0..max_offset)
            .map(|d| {
                let test = test.get(d * 2..).unwrap_or(&[]);
                let n = reference.len().min(test.len());
                let (mut signal, mut noise) = (0f64, 0f64);
                for i in 0..n {
                    signal += f64::from(reference[i]).powi(2);
                    noise += (f64::from(reference[i]) - f64::from(test[i])).powi(2);
                }
                (10.0 * (signal / noise.max(1e-20)).log10(), d)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap_or((f64::NEG_INFINITY, 0))
    }
}
