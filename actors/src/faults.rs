//! Fault injection for tests. With the `fault-injection` feature, a test can make the frame
//! path of a stream, an output's session, a recorder's writer thread or a WHEP audio feed's
//! transcoder panic, to prove supervision; without it, every check here is a constant
//! `false` the compiler removes.

/// A panic a test can arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Fault {
    /// The next frame an output's sink (the HLS packager's) is offered panics.
    OutputPanic = 1,
    /// The next frame a recorder's writer thread takes panics (the recorder restarts in a
    /// new segment).
    RecorderPanic = 2,
    /// The next AAC frame a WHEP audio feed (AAC → Opus, `src/webrtc/audio_feed.rs`)
    /// transcodes panics.
    TranscoderPanic = 4,
}

/// The script-data payload that makes a stream's frame path panic when it is taken in (a
/// "poison frame": send `onMetaData` whose `encoder` is this).
pub const POISON: &str = "zenlive-fault:poison";

#[cfg(feature = "fault-injection")]
static ARMED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Arms `fault`: the next place that checks it panics (once).
#[cfg(feature = "fault-injection")]
pub fn arm(fault: Fault) {
    ARMED.fetch_or(fault as u32, std::sync::atomic::Ordering::SeqCst);
}

/// Whether `fault` is armed; disarms it.
#[inline]
pub fn fire(fault: Fault) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        let bit = fault as u32;
        ARMED.fetch_and(!bit, std::sync::atomic::Ordering::SeqCst) & bit != 0
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = fault;
        false
    }
}

/// Whether `frame` is a poison frame (script data carrying [`POISON`]).
#[cfg(feature = "fault-injection")]
pub(crate) fn is_poison(frame: &zenlive_media::MediaFrame) -> bool {
    frame.kind() == zenlive_media::FrameKind::Data
        && frame.payload().windows(POISON.len()).any(|w| w == POISON.as_bytes())
}
