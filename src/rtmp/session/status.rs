//! The `onStatus` codes an RTMP client is refused with: which NetStream code each
//! [`Refusal`] of admission, and each refusal decided by the session itself, becomes.
//! FFmpeg and OBS show the code and description to the person publishing or playing.

use crate::admission::Refusal;

/// A publish of a name that is not valid, taken, or on a connection already busy.
pub const PUBLISH_BAD_NAME: &str = "NetStream.Publish.BadName";
/// A publish without a token that allows it.
pub const PUBLISH_UNAUTHORIZED: &str = "NetStream.Publish.Unauthorized";
/// A publish refused by policy (draining, an application decider, an unsupported codec).
pub const PUBLISH_REJECTED: &str = "NetStream.Publish.Rejected";
/// A play without a token that allows it.
pub const PLAY_UNAUTHORIZED: &str = "NetStream.Play.Unauthorized";
/// A play of a name that is not valid or not live.
pub const PLAY_NOT_FOUND: &str = "NetStream.Play.StreamNotFound";
/// A play refused otherwise (an application decider, a busy connection).
pub const PLAY_FAILED: &str = "NetStream.Play.Failed";

/// The code a refused publish is answered with.
pub fn publish_refused(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Auth(_) => PUBLISH_UNAUTHORIZED,
        Refusal::Draining | Refusal::Denied(_) => PUBLISH_REJECTED,
        Refusal::NotLive(_) | Refusal::Start(_) => PUBLISH_BAD_NAME,
    }
}

/// The code a refused play is answered with.
pub fn play_refused(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Auth(_) => PLAY_UNAUTHORIZED,
        Refusal::NotLive(_) => PLAY_NOT_FOUND,
        Refusal::Draining | Refusal::Denied(_) | Refusal::Start(_) => PLAY_FAILED,
    }
}
