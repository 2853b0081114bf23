//! What recording tells the application: a segment reached its storage (local disk, or
//! the bucket once its upload is confirmed), and a stream's recording ended. The node's
//! hooks and webhooks listen ([`RecordingListener`], implemented by [`crate::hooks::Hooks`]).
//!
//! Order, per stream: every segment event of a recording comes before its end event. With
//! S3 storage both come from the uploader, after the uploads; a segment found in the spool
//! after a restart is announced when it is uploaded (`recovered`), and may be announced
//! twice if the node died between an upload and the local delete (delivery is at least
//! once: the object key identifies the segment).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use zenlive_actors::StreamKey;

/// Where a finished segment is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentLocation {
    /// On local disk (`storage.type = "local"`), at this full path.
    Local(PathBuf),
    /// In a bucket (`storage.type = "s3"`), uploaded and deleted locally.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object key: `storage.s3.prefix` and the segment's relative path.
        key: String,
    },
}

impl std::fmt::Display for SegmentLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

/// A recording event. See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordingEvent {
    /// A segment is complete in its storage.
    Segment {
        /// The stream it was recorded from.
        stream: StreamKey,
        /// Its path relative to `storage.base_path` (what the path template rendered).
        path: String,
        /// Where it is now.
        location: SegmentLocation,
        /// Wall-clock time of its first frame.
        start: Option<SystemTime>,
        /// Its first frame's decode time on the stream's clock.
        media_start: Option<Duration>,
        /// Its media duration; `None` for a segment cut by a crash (found as `.part`).
        duration: Option<Duration>,
        /// Its size.
        bytes: u64,
        /// Found in the spool when the node started (recorded before a restart or crash).
        recovered: bool,
    },
    /// A stream's recording ended: the stream ended, it was stopped on request, or a disk error stopped its recorder.
    Ended {
        /// The stream.
        stream: StreamKey,
        /// Segments this recorder finished (a recorder restarted after a panic counts
        /// its own).
        segments: u64,
        /// Their bytes.
        bytes: u64,
        /// Their media duration, summed.
        duration: Duration,
        /// Wall-clock time of the first segment's first frame.
        start: Option<SystemTime>,
        /// Why it ended (`stream ended`, `stopped on request`, or the disk error).
        reason: String,
    },
}

impl RecordingEvent {
    /// The stream this event is about.
    pub fn stream(&self) -> &StreamKey {
        match self {
            Self::Segment { stream, .. } | Self::Ended { stream, .. } => stream,
        }
    }
}

/// Hears recording events. Called from recorder writer threads (local storage) or the
/// uploader thread (S3): return quickly.
pub trait RecordingListener: Send + Sync + 'static {
    /// A recording event happened.
    fn recording_event(&self, event: &RecordingEvent);
}

/// A listener that hears nothing (recording without hooks, unit tests).
#[derive(Debug, Default)]
pub struct NoListener;

impl RecordingListener for NoListener {
    fn recording_event(&self, _event: &RecordingEvent) {}
}
