//! Where finished segments go. [`Storage`] is the seam between the recorder, which writes
//! every segment to local disk first, and what happens to a segment once it is complete:
//! [`LocalStorage`] keeps it where it is; an uploader (S3, with a spool that survives
//! restarts) would take it from there, through the same trait.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zenlive_actors::StreamKey;

/// A segment that is complete on local disk: renamed from its `.part` name, its bytes
/// flushed to the disk (fsync) before the rename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedSegment {
    /// The stream it was recorded from.
    pub stream: StreamKey,
    /// Its path relative to the storage root (what the path template rendered).
    pub relative: PathBuf,
    /// Its full local path.
    pub path: PathBuf,
    /// Wall-clock time of its first frame.
    pub wall_start: SystemTime,
    /// Its first frame's decode time on the stream's clock.
    pub media_start: Duration,
    /// Its media duration.
    pub duration: Duration,
    /// Its size.
    pub bytes: u64,
}

/// Where the recorder writes, and who hears of finished segments. Implementations are
/// called from the recorders' writer threads: `finished` must not block for long (an
/// uploader queues the segment and returns).
pub trait Storage: Send + Sync + 'static {
    /// The local directory segments are written under.
    fn root(&self) -> &Path;

    /// A segment is complete on local disk.
    fn finished(&self, segment: FinishedSegment);
}

/// Segments stay on local disk under `base_path` (`storage.type = "local"`).
#[derive(Debug, Clone)]
pub struct LocalStorage {
    base: PathBuf,
}

impl LocalStorage {
    /// Storage under `base` (created when the first segment is written).
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Self { base: base.into() }
    }
}

impl Storage for LocalStorage {
    fn root(&self) -> &Path {
        &self.base
    }

    fn finished(&self, segment: FinishedSegment) {
        tracing::info!(
            stream = %segment.stream,
            path = %segment.path.display(),
            duration_ms = segment.duration.as_millis() as u64,
            bytes = segment.bytes,
            "recording segment finished"
        );
    }
}
