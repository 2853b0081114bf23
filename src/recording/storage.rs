//! Where finished segments go. [`Storage`] is the seam between the recorder, which writes
//! every segment to local disk first, and what happens to a segment once it is complete:
//! [`LocalStorage`] keeps it where it is (and announces it); [`super::s3::S3Storage`]
//! queues it for upload from a spool that survives restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zenlive_actors::StreamKey;

use super::events::{NoListener, RecordingEvent, RecordingListener, SegmentLocation};
use super::retention::Retention;

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
/// called from the recorders' writer threads: no method may block for long (an uploader
/// queues the segment and returns; a small metadata file is all it may write).
///
/// No method has a default: a wrapper (the playback catalog's) that forgot one would
/// silently cut the storage off from it.
pub trait Storage: Send + Sync + 'static {
    /// The local directory segments are written under.
    fn root(&self) -> &Path;

    /// A segment was begun (its `.part` file created) at `path`, `relative` to the root.
    fn opened(&self, stream: &StreamKey, relative: &Path, path: &Path, wall: SystemTime);

    /// Whether a new segment may begin: `false` while local disk is full by the storage's
    /// own bound (an S3 spool waiting for uploads). The recorder then skips segments,
    /// loudly, until there is room again.
    fn has_room(&self) -> bool;

    /// A segment is complete on local disk.
    fn finished(&self, segment: FinishedSegment);

    /// A stream's recording ended (`RecordingEvent::Ended`), after its last `finished`.
    fn ended(&self, event: RecordingEvent);
}

/// Segments stay on local disk under `base_path` (`storage.type = "local"`), announced to
/// the listener as they finish, deleted by the retention rules if any are set.
#[derive(Clone)]
pub struct LocalStorage {
    base: PathBuf,
    events: Arc<dyn RecordingListener>,
    retention: Option<Retention>,
}

impl LocalStorage {
    /// Storage under `base` (created when the first segment is written), telling nobody.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Self { base: base.into(), events: Arc::new(NoListener), retention: None }
    }

    /// Tells `events` of every finished segment and ended recording.
    pub fn with_events(mut self, events: Arc<dyn RecordingListener>) -> Self {
        self.events = events;
        self
    }

    /// Hands every finished segment to `retention` (which deletes the oldest).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }
}

impl LocalStorage {
    /// Announces a segment a crash kept from being announced: cut short and finished when
    /// the node started ([`super::files::recover_parts`]), or finished just before the
    /// crash. `known` is what the catalog read back of it ([`super::catalog::Catalog::index_interrupted`]):
    /// its stream and times. Without it, the event has no start or duration and its
    /// stream is read from its directory, as the default `recording.path`
    /// (`{app}/{key}/...`) lays it out; a segment elsewhere stays on disk unannounced
    /// (logged).
    pub fn recovered(&self, path: &Path, bytes: u64, known: Option<&FinishedSegment>) {
        let relative = path.strip_prefix(&self.base).unwrap_or(path);
        let event = |stream: StreamKey| RecordingEvent::Segment {
            stream,
            path: relative.to_string_lossy().into_owned(),
            location: SegmentLocation::Local(path.to_owned()),
            start: known.map(|s| s.wall_start),
            media_start: known.map(|s| s.media_start),
            duration: known.map(|s| s.duration),
            bytes,
            recovered: true,
        };
        if let Some(known) = known {
            self.events.recording_event(&event(known.stream.clone()));
            return;
        }
        let dir: Vec<String> = relative
            .parent()
            .map(|d| d.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let Ok(stream) = StreamKey::parse(&dir.join("/")) else {
            tracing::warn!(path = %path.display(), "a recovered segment whose directory names no stream: kept, not announced");
            return;
        };
        self.events.recording_event(&event(stream));
    }
}

impl Storage for LocalStorage {
    fn root(&self) -> &Path {
        &self.base
    }

    fn opened(&self, _stream: &StreamKey, _relative: &Path, _path: &Path, _wall: SystemTime) {}

    /// Local disk has no bound of the recorder's own (retention deletes the oldest).
    fn has_room(&self) -> bool {
        true
    }

    fn finished(&self, segment: FinishedSegment) {
        tracing::info!(
            stream = %segment.stream,
            path = %segment.path.display(),
            duration_ms = segment.duration.as_millis() as u64,
            bytes = segment.bytes,
            "recording segment finished"
        );
        if let Some(retention) = &self.retention {
            retention.add(segment.path.clone(), segment.bytes);
        }
        self.events.recording_event(&RecordingEvent::Segment {
            stream: segment.stream,
            path: segment.relative.to_string_lossy().into_owned(),
            location: SegmentLocation::Local(segment.path),
            start: Some(segment.wall_start),
            media_start: Some(segment.media_start),
            duration: Some(segment.duration),
            bytes: segment.bytes,
            recovered: false,
        });
    }

    fn ended(&self, event: RecordingEvent) {
        self.events.recording_event(&event);
    }
}
