//! Playback's seam: [`RecordingStore`] is what the playback routes (`src/http/recordings.rs`)
//! read, whatever the storage: the recordings and their segments, and a segment's bytes.
//! [`LocalStore`] reads the catalog's sidecars and the files under `storage.base_path`;
//! [`super::s3_playback::S3Store`] reads the manifests and objects in the bucket, so that
//! every node sharing it serves the same recordings. The node picks one at start
//! (`storage.type`) and hands it to the routes in a [`Playback`].

use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use zenlive_actors::StreamKey;

use super::catalog::{Catalog, Recording, RecordingId, SegmentEntry};

/// Which streams a listing wants (the filter and the caller's scope, applied per stream).
pub type Select = Arc<dyn Fn(&StreamKey) -> bool + Send + Sync>;

/// Why a store could not answer. The routes map each to a status: `Io` 500, `Missing`
/// 404, `Unavailable` and `Corrupt` 502, `Timeout` 504.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Local disk failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A listed segment is not where its record says.
    #[error("{0}")]
    Missing(String),
    /// The storage refused or failed (S3 answered an error, or could not be reached).
    #[error("{0}")]
    Unavailable(String),
    /// The storage did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// What the storage holds cannot be used (a manifest too large or unreadable, an
    /// object longer than its record).
    #[error("{0}")]
    Corrupt(String),
}

/// A segment's bytes, as a store hands them to an HTTP client.
pub enum SegmentBody {
    /// In memory (a range of a local file).
    Bytes(Bytes),
    /// Streamed as it is read (a range of an S3 object): exactly the bytes asked for, or
    /// an error that cuts the answer short.
    Stream(BoxStream<'static, Result<Bytes, StoreError>>),
    /// Elsewhere: answer with a redirect to this URL (a presigned S3 URL).
    Redirect(String),
}

impl std::fmt::Debug for SegmentBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(bytes) => write!(f, "Bytes({})", bytes.len()),
            Self::Stream(_) => f.write_str("Stream"),
            Self::Redirect(url) => write!(f, "Redirect({url})"),
        }
    }
}

/// Reads recordings, wherever they are. See the module docs. Every future is `'static`
/// (the routes await them) and does its IO off the event loop. No method has a default:
/// a wrapper must forward each.
pub trait RecordingStore: Send + Sync + 'static {
    /// The recordings of `stream` (of every stream when `None`) whose stream `select`
    /// accepts, by stream then id; live ones without a finished segment yet included.
    fn recordings(
        &self,
        stream: Option<StreamKey>,
        select: Select,
    ) -> BoxFuture<'static, Result<Vec<Recording>, StoreError>>;

    /// `stream`'s recording `id`, if it exists (stored, or live here).
    fn recording(
        &self,
        stream: StreamKey,
        id: RecordingId,
    ) -> BoxFuture<'static, Result<Option<Recording>, StoreError>>;

    /// Bytes `start..end` of `segment` (within its recorded size), or where to find them.
    fn segment(
        &self,
        segment: &SegmentEntry,
        start: u64,
        end: u64,
    ) -> BoxFuture<'static, Result<SegmentBody, StoreError>>;

    /// All of `segment`, in memory (a time-range download re-muxes it), never more than
    /// its recorded size.
    fn read(&self, segment: &SegmentEntry) -> BoxFuture<'static, Result<Bytes, StoreError>>;
}

/// Recordings on local disk (`storage.type = "local"`): the catalog's sidecars and the
/// segment files under `storage.base_path`, read on tokio's blocking threads.
#[derive(Debug, Clone)]
pub struct LocalStore {
    catalog: Arc<Catalog>,
}

impl LocalStore {
    /// The recordings of `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self { catalog }
    }

    fn path(&self, segment: &SegmentEntry) -> PathBuf {
        // The entry's path is plain (checked when read), so this stays under the root.
        self.catalog.root().join(&segment.path)
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(io::Error::other)?.map_err(StoreError::Io)
}

impl RecordingStore for LocalStore {
    fn recordings(
        &self,
        stream: Option<StreamKey>,
        select: Select,
    ) -> BoxFuture<'static, Result<Vec<Recording>, StoreError>> {
        let catalog = Arc::clone(&self.catalog);
        Box::pin(blocking(move || {
            catalog.recordings(&|key| stream.as_ref().is_none_or(|s| s == key) && select(key))
        }))
    }

    fn recording(
        &self,
        stream: StreamKey,
        id: RecordingId,
    ) -> BoxFuture<'static, Result<Option<Recording>, StoreError>> {
        let catalog = Arc::clone(&self.catalog);
        Box::pin(blocking(move || catalog.recording(&stream, id)))
    }

    fn segment(
        &self,
        segment: &SegmentEntry,
        start: u64,
        end: u64,
    ) -> BoxFuture<'static, Result<SegmentBody, StoreError>> {
        let path = self.path(segment);
        Box::pin(async move {
            let read = blocking(move || {
                let mut file = std::fs::File::open(&path)?;
                file.seek(SeekFrom::Start(start))?;
                let len = end.saturating_sub(start);
                let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                file.take(len).read_to_end(&mut body)?;
                if body.len() as u64 != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} is shorter than its record", path.display()),
                    ));
                }
                Ok(body)
            });
            match read.await {
                Ok(body) => Ok(SegmentBody::Bytes(Bytes::from(body))),
                Err(StoreError::Io(error)) => Err(StoreError::Missing(error.to_string())),
                Err(error) => Err(error),
            }
        })
    }

    fn read(&self, segment: &SegmentEntry) -> BoxFuture<'static, Result<Bytes, StoreError>> {
        let path = self.path(segment);
        let limit = segment.bytes;
        Box::pin(async move {
            let read = blocking(move || {
                let mut body = Vec::new();
                std::fs::File::open(path)?.take(limit).read_to_end(&mut body)?;
                Ok(Bytes::from(body))
            });
            read.await.map_err(|error| match error {
                StoreError::Io(error) => StoreError::Missing(error.to_string()),
                error => error,
            })
        })
    }
}

/// Most time-range downloads built at once on a node (each holds its segments and its
/// answer in memory, up to `recording.max_download_bytes` each).
pub const MAX_CONCURRENT_DOWNLOADS: usize = 2;

/// What the playback routes read: the store, and the download limits.
pub struct Playback {
    /// The recordings and their segments.
    pub store: Arc<dyn RecordingStore>,
    /// Downloads being built.
    pub downloads: tokio::sync::Semaphore,
    /// The longest range a download may ask for (`recording.max_download`).
    pub max_duration: Duration,
    /// The most segment bytes a download may read (`recording.max_download_bytes`).
    pub max_bytes: u64,
}

impl Playback {
    /// Playback of the recordings `store` reads.
    pub fn new(store: Arc<dyn RecordingStore>, max_duration: Duration, max_bytes: u64) -> Self {
        Self {
            store,
            downloads: tokio::sync::Semaphore::new(MAX_CONCURRENT_DOWNLOADS),
            max_duration,
            max_bytes,
        }
    }

    /// Playback of the recordings in `catalog`, read from local disk.
    pub fn local(catalog: Arc<Catalog>, max_duration: Duration, max_bytes: u64) -> Self {
        Self::new(Arc::new(LocalStore::new(catalog)), max_duration, max_bytes)
    }
}
