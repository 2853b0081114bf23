//! S3 storage (`storage.type = "s3"`): segments are written to the spool on local disk
//! first ([`super::spool`]), then uploaded by a thread of their own and deleted locally
//! once S3 has confirmed them.
//!
//! [`S3Storage`] is the recorder's side: it writes sidecars and queues finished segments
//! (never waiting on the network, so a writer thread is never held up by S3), and says
//! when the spool is full (`storage.spool_max_bytes`): the recorder then skips new
//! segments, loudly, rather than fill the disk or delete what has not been uploaded.
//! The uploader thread runs a tokio runtime of its own, away from the media event loops:
//! up to `storage.s3.concurrency` uploads at once, each stream's in order, each failure
//! retried with a capped exponential backoff for as long as it takes.
//!
//! **Manifests.** With playback's catalog (always, in a node), each segment comes with its
//! recording's id and [`SegmentRecord`] ([`SegmentIndexer`]); once its upload is confirmed
//! the same task rewrites the recording's manifest in the bucket ([`super::manifest`]) with
//! the record added, and the end of a recording rewrites it once more, no longer live.
//! Only then is the segment deleted locally and announced, so a segment the hooks announce
//! is already listed for playback. A manifest that cannot be written is retried like the
//! upload (which is then repeated: both are idempotent); one that cannot be *used* (too
//! large, or unreadable in the bucket) stops the recording's indexing, loudly, not its
//! uploads. The uploader keeps the manifests of the recordings it writes in memory, so
//! each segment costs one manifest PUT and no GET.
//!
//! The client: `aws-sdk-s3` over rustls with ring (no aws-lc, no other TLS stack),
//! credentials from the usual AWS chain, every attempt and operation bounded by
//! `storage.s3.attempt_timeout` and `operation_timeout`, checksums as
//! `request_checksum_calculation` says. A segment larger than
//! `storage.s3.multipart_threshold` goes up in parts of `part_size`; others in one
//! PutObject, streamed from the file (nothing is held in memory whole).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::task::JoinSet;
use zenlive_actors::StreamKey;

use super::catalog::{RecordingId, SegmentIndexer, SegmentRecord};
use super::counters::RecordingCounters;
use super::events::{RecordingEvent, RecordingListener, SegmentLocation};
use super::manifest::{manifest_key, ManifestError, RecordingManifest, MAX_MANIFEST_BYTES};
use super::playback::StoreError;
use super::spool::{self, Job, Pending, SegmentMeta, UploadQueue};
use super::storage::{FinishedSegment, Storage};
use crate::config::{ChecksumMode, S3Config, StorageConfig};

/// Every recording format's extension: the spool is re-read for all of them.
const EXTENSIONS: [&str; 3] = ["mp4", "ts", "flv"];
/// How often the queue's gauges (the oldest segment's age) are refreshed while it waits.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The segment could not be read from the spool.
    #[error("read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: String,
    },
    /// The upload code panicked (a bug); retried like any failure.
    #[error("the upload of {path} panicked")]
    Panicked {
        /// The file.
        path: PathBuf,
    },
    /// S3 refused or did not answer.
    #[error("{operation} s3://{bucket}/{key}: {error}")]
    S3 {
        /// The S3 operation.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The SDK's error, with its causes.
        error: String,
    },
}

/// State shared by the recorders' writer threads and the uploader. A std mutex: it is
/// held for the queue's bookkeeping only, never across an `.await` or any IO.
struct Shared {
    queue: Mutex<UploadQueue>,
    wake: tokio::sync::Notify,
    spool_max: u64,
    counters: RecordingCounters,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, UploadQueue> {
        // A panic while holding it cannot leave the queue half-updated: each method is a
        // few plain assignments. Keep going with what is there.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Refreshes the queue's gauges.
    fn publish(&self, queue: &UploadQueue, now: Instant) {
        let counters = &self.counters;
        counters.upload_queue.set(queue.segments() as i64);
        counters.spool_bytes.set(queue.bytes() as i64);
        let age = queue.oldest().map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        counters.upload_oldest_age.set(age);
    }

    fn push(&self, stream: &str, job: Job) {
        let mut queue = self.queue();
        queue.push(stream, job);
        self.publish(&queue, Instant::now());
        drop(queue);
        self.wake.notify_one();
    }
}

/// The recorder's side of S3 storage. See the module docs.
pub struct S3Storage {
    root: PathBuf,
    shared: Arc<Shared>,
}

impl S3Storage {
    /// Re-reads the spool under `storage.base_path` (queuing every segment a previous run
    /// left) and starts the uploader thread; `events` hears of uploaded segments and ended
    /// recordings. An error names the spool or the thread that could not start.
    pub fn start(
        config: &StorageConfig,
        counters: RecordingCounters,
        events: Arc<dyn RecordingListener>,
    ) -> Result<Self, String> {
        let root = PathBuf::from(&config.base_path);
        std::fs::create_dir_all(&root).map_err(|e| {
            format!("cannot create the spool storage.base_path = {}: {e}", root.display())
        })?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(UploadQueue::default()),
            wake: tokio::sync::Notify::new(),
            spool_max: config.spool_max_bytes,
            counters,
        });
        let found = spool::scan(&root, &EXTENSIONS, Instant::now());
        if !found.pending.is_empty() {
            tracing::info!(spool = %root.display(), segments = found.pending.len(), cut_by_crash = found.parts, "recording segments left in the spool are queued for upload");
        }
        for pending in found.pending {
            let stream = pending.stream.clone();
            shared.push(&stream, Job::Upload(pending));
        }
        let uploader = Uploader { config: config.s3.clone(), shared: Arc::clone(&shared), events };
        std::thread::Builder::new()
            .name("zenlive-s3".into())
            .spawn(move || uploader.run())
            .map_err(|e| format!("cannot start the S3 uploader thread: {e}"))?;
        Ok(Self { root, shared })
    }
}

fn meta(stream: &StreamKey, wall: SystemTime) -> SegmentMeta {
    SegmentMeta {
        stream: stream.to_string(),
        wall_start_ms: spool::unix_ms(wall),
        media_start_ms: None,
        duration_ms: None,
        recording: None,
        record: None,
    }
}

impl S3Storage {
    /// Writes the finished segment's sidecar and queues its upload; with `index`, its
    /// recording and record, for the manifest.
    fn queue(&self, segment: FinishedSegment, index: Option<(RecordingId, SegmentRecord)>) {
        let mut meta = meta(&segment.stream, segment.wall_start);
        meta.media_start_ms = Some(segment.media_start.as_millis() as u64);
        meta.duration_ms = Some(segment.duration.as_millis() as u64);
        if let Some((id, record)) = index {
            meta.recording = Some(id.to_string());
            meta.record = Some(record);
        }
        if let Err(error) = spool::write_sidecar(&segment.path, &meta) {
            tracing::error!(stream = %segment.stream, path = %segment.path.display(), %error, "cannot write a spool sidecar");
        }
        let relative: Vec<String> = segment
            .relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        tracing::info!(stream = %segment.stream, path = %segment.path.display(), duration_ms = segment.duration.as_millis() as u64, bytes = segment.bytes, "recording segment finished; queued for upload");
        let stream = meta.stream.clone();
        self.shared.push(
            &stream,
            Job::Upload(Pending {
                stream: stream.clone(),
                path: segment.path,
                relative: relative.join("/"),
                bytes: segment.bytes,
                meta: Some(meta),
                recovered: false,
                queued: Instant::now(),
            }),
        );
    }
}

impl Storage for S3Storage {
    fn root(&self) -> &Path {
        &self.root
    }

    fn opened(&self, stream: &StreamKey, _relative: &Path, path: &Path, wall: SystemTime) {
        if let Err(error) = spool::write_sidecar(path, &meta(stream, wall)) {
            // The segment is still uploaded; after a crash it would lack its stream's name.
            tracing::error!(%stream, path = %path.display(), %error, "cannot write a spool sidecar");
        }
    }

    fn has_room(&self) -> bool {
        self.shared.queue().bytes() < self.shared.spool_max
    }

    fn finished(&self, segment: FinishedSegment) {
        self.queue(segment, None);
    }

    fn ended(&self, event: RecordingEvent) {
        let stream = event.stream().to_string();
        self.shared.push(&stream, Job::End { event, recording: None });
    }
}

impl SegmentIndexer for S3Storage {
    fn opened_indexed(
        &self,
        stream: &StreamKey,
        _relative: &Path,
        path: &Path,
        wall: SystemTime,
        id: RecordingId,
    ) {
        // With its recording named, a segment a crash cuts short is still indexed once
        // uploaded after the restart (`spool::scan` reads its times from the media).
        let meta = SegmentMeta { recording: Some(id.to_string()), ..meta(stream, wall) };
        if let Err(error) = spool::write_sidecar(path, &meta) {
            tracing::error!(%stream, path = %path.display(), %error, "cannot write a spool sidecar");
        }
    }

    fn finished_indexed(
        &self,
        segment: FinishedSegment,
        id: RecordingId,
        record: Option<SegmentRecord>,
    ) {
        self.queue(segment, record.map(|record| (id, record)));
    }

    fn ended_indexed(&self, event: RecordingEvent, id: RecordingId) {
        let stream = event.stream().to_string();
        self.shared.push(&stream, Job::End { event, recording: Some(id) });
    }
}

/// The uploader thread's state.
struct Uploader {
    config: S3Config,
    shared: Arc<Shared>,
    events: Arc<dyn RecordingListener>,
}

/// The S3 client for `config`. See the module docs.
pub async fn client(config: &S3Config) -> Client {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.attempt_timeout.min(Duration::from_secs(10)))
        .operation_attempt_timeout(config.attempt_timeout)
        .operation_timeout(config.operation_timeout)
        .build();
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new(config.region.clone()))
        .timeout_config(timeouts)
        .load()
        .await;
    let checksums = match config.request_checksum_calculation {
        ChecksumMode::WhenSupported => RequestChecksumCalculation::WhenSupported,
        ChecksumMode::WhenRequired => RequestChecksumCalculation::WhenRequired,
    };
    let mut builder = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(config.force_path_style)
        .request_checksum_calculation(checksums);
    if !config.endpoint.is_empty() {
        builder = builder.endpoint_url(&config.endpoint);
    }
    Client::from_conf(builder.build())
}

/// What an upload task was given.
enum Work {
    /// A segment, then its manifest.
    Upload(Pending),
    /// A recording's end: its manifest, no longer live, then the event.
    End(RecordingEvent, RecordingId),
}

/// What an upload task hands back: the stream, its work, and the manifest as written
/// (`None` when there was none to write).
type Outcome = (String, Work, Result<Option<RecordingManifest>, UploadError>);

/// The manifests the uploader writes, by stream and recording.
type Manifests = HashMap<(String, RecordingId), RecordingManifest>;

impl Uploader {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "the S3 uploader's runtime could not start: recordings stay in the spool");
                return;
            }
        };
        runtime.block_on(self.serve());
    }

    async fn serve(self) {
        let client = client(&self.config).await;
        let bucket = self.config.bucket.clone();
        match client.head_bucket().bucket(&bucket).send().await {
            Ok(_) => {
                tracing::info!(%bucket, endpoint = %self.config.endpoint, "recording uploads to S3")
            }
            Err(error) => {
                tracing::warn!(%bucket, endpoint = %self.config.endpoint, error = %DisplayErrorContext(&error), "the S3 bucket is not reachable now; uploads are retried until it is")
            }
        }
        let mut manifests = Manifests::new();
        let mut inflight: JoinSet<Outcome> = JoinSet::new();
        loop {
            let now = Instant::now();
            // Start what is ready, up to the concurrency.
            while inflight.len() < self.config.concurrency {
                let Some((stream, job)) = self.shared.queue().next_ready(now) else { break };
                let work = match job {
                    Job::End { event, recording: None } => {
                        self.events.recording_event(&event);
                        self.shared.queue().done(&stream);
                        continue;
                    }
                    Job::End { event, recording: Some(id) } => Work::End(event, id),
                    Job::Upload(pending) => Work::Upload(pending),
                };
                let (client, config) = (client.clone(), self.config.clone());
                let cached = cached_manifest(&manifests, &stream, &work);
                inflight.spawn(async move {
                    // A panic in the SDK fails this attempt only; the stream retries.
                    let attempt = AssertUnwindSafe(carry_out(&client, &config, &work, cached));
                    let result = attempt
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| Err(UploadError::Panicked { path: work.path() }));
                    (stream, work, result)
                });
            }
            let (retry, waiting) = {
                let queue = self.shared.queue();
                self.shared.publish(&queue, now);
                (queue.next_retry(), queue.segments() > 0)
            };
            // Wake for a retry, or to refresh the age gauge while segments wait.
            let wake = match (retry, waiting) {
                (Some(at), _) => Some(at.min(now + GAUGE_INTERVAL)),
                (None, true) => Some(now + GAUGE_INTERVAL),
                (None, false) => None,
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(joined) = inflight.join_next(), if !inflight.is_empty() => match joined {
                    Ok(outcome) => self.finish(outcome, &mut manifests),
                    // Tasks catch their panics and are never cancelled.
                    Err(error) => tracing::error!(%error, "an S3 upload task was lost"),
                },
                _ = self.shared.wake.notified() => {}
                _ = sleep => {}
            }
        }
    }

    /// Carries out an upload's outcome: on success the local copy goes and the segment is
    /// announced; on failure the stream waits out its backoff.
    fn finish(&self, (stream, work, result): Outcome, manifests: &mut Manifests) {
        let counters = &self.shared.counters;
        let pending = match (work, result) {
            (Work::End(event, id), Ok(_)) => {
                manifests.remove(&(stream.clone(), id));
                self.events.recording_event(&event);
                self.shared.queue().done(&stream);
                return;
            }
            (Work::End(_, id), Err(error)) => {
                let backoff =
                    self.shared.queue().failed(&stream, Instant::now(), self.config.max_backoff);
                tracing::warn!(%stream, recording = %id, %error, retry_in = ?backoff, "the recording's manifest could not be marked ended; retrying");
                return;
            }
            (Work::Upload(pending), Ok(written)) => {
                // A recovered segment's recording has no recorder left to end it.
                if let (Some(manifest), false) = (written, pending.recovered) {
                    if let Some(id) = RecordingId::parse(&manifest.recording) {
                        manifests.insert((stream.clone(), id), manifest);
                    }
                }
                pending
            }
            (Work::Upload(pending), Err(error)) => {
                if let UploadError::Read { path, error } = &error {
                    if !path.exists() {
                        // Gone from the spool (deleted by hand): nothing left to upload.
                        counters.upload_failures.inc();
                        tracing::error!(%stream, path = %path.display(), %error, "a recording segment vanished from the spool before its upload; it is lost");
                        self.shared.queue().done(&stream);
                        return;
                    }
                }
                counters.upload_failures.inc();
                let backoff =
                    self.shared.queue().failed(&stream, Instant::now(), self.config.max_backoff);
                tracing::warn!(%stream, path = %pending.path.display(), %error, retry_in = ?backoff, "recording upload failed; retrying");
                return;
            }
        };
        counters.uploads.inc();
        counters.uploaded_bytes.inc_by(pending.bytes);
        let key = object_key(&self.config.prefix, &pending.relative);
        tracing::info!(%stream, bucket = %self.config.bucket, %key, bytes = pending.bytes, waited_ms = pending.queued.elapsed().as_millis() as u64, "recording segment uploaded");
        for path in [pending.path.clone(), spool::sidecar(&pending.path)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                // The upload stands; the file would be uploaded again after a restart.
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "uploaded, but the spool copy could not be deleted")
                }
            }
        }
        self.announce(&pending, key);
        self.shared.queue().done(&stream);
    }

    fn announce(&self, pending: &Pending, key: String) {
        let Ok(stream) = StreamKey::parse(&pending.stream) else {
            tracing::warn!(path = %pending.path.display(), "uploaded a segment whose stream is unknown (no sidecar): no event");
            return;
        };
        let meta = pending.meta.as_ref();
        let ms = |v: Option<u64>| v.map(Duration::from_millis);
        self.events.recording_event(&RecordingEvent::Segment {
            stream,
            path: pending.relative.clone(),
            location: SegmentLocation::S3 { bucket: self.config.bucket.clone(), key },
            start: meta.map(|m| SystemTime::UNIX_EPOCH + Duration::from_millis(m.wall_start_ms)),
            media_start: ms(meta.and_then(|m| m.media_start_ms)),
            duration: ms(meta.and_then(|m| m.duration_ms)),
            bytes: pending.bytes,
            recovered: pending.recovered,
        });
    }
}

impl Work {
    /// What a panic report names.
    fn path(&self) -> PathBuf {
        match self {
            Self::Upload(pending) => pending.path.clone(),
            Self::End(event, id) => {
                PathBuf::from(format!("the manifest of {} {id}", event.stream()))
            }
        }
    }

    /// The recording whose manifest this work changes.
    fn recording(&self) -> Option<RecordingId> {
        match self {
            Self::Upload(pending) => {
                pending.meta.as_ref()?.recording.as_deref().and_then(RecordingId::parse)
            }
            Self::End(_, id) => Some(*id),
        }
    }
}

fn cached_manifest(manifests: &Manifests, stream: &str, work: &Work) -> Option<RecordingManifest> {
    let id = work.recording()?;
    manifests.get(&(stream.to_owned(), id)).cloned()
}

/// Uploads a segment and adds it to its recording's manifest, or marks a recording's
/// manifest ended. Answers the manifest as written.
async fn carry_out(
    client: &Client,
    config: &S3Config,
    work: &Work,
    cached: Option<RecordingManifest>,
) -> Result<Option<RecordingManifest>, UploadError> {
    match work {
        Work::Upload(pending) => {
            upload(client, config, pending).await?;
            let Some(meta) = &pending.meta else { return Ok(None) };
            let (Some(id), Some(record), Ok(stream)) = (
                meta.recording.as_deref().and_then(RecordingId::parse),
                meta.record.clone(),
                StreamKey::parse(&pending.stream),
            ) else {
                return Ok(None);
            };
            let live = !pending.recovered;
            update_manifest(client, config, &stream, id, cached, true, move |manifest| {
                manifest.insert(record);
                manifest.live = live;
            })
            .await
        }
        Work::End(event, id) => {
            update_manifest(client, config, event.stream(), *id, cached, false, |manifest| {
                manifest.live = false;
            })
            .await
        }
    }
}

/// Reads `stream`'s recording `id`'s manifest (`cached`, else from the bucket; a new one
/// when there is none and `create`), applies `change` and writes it back. A manifest that
/// cannot be used is logged and left alone (`Ok(None)`); S3 failures are errors (retried).
async fn update_manifest(
    client: &Client,
    config: &S3Config,
    stream: &StreamKey,
    id: RecordingId,
    cached: Option<RecordingManifest>,
    create: bool,
    change: impl FnOnce(&mut RecordingManifest),
) -> Result<Option<RecordingManifest>, UploadError> {
    let key = manifest_key(&config.prefix, stream, id);
    let s3_error = |operation, error: String| UploadError::S3 {
        operation,
        bucket: config.bucket.clone(),
        key: key.clone(),
        error,
    };
    let found = match cached {
        Some(manifest) => Some(manifest),
        None => match get_manifest(client, config, stream, id).await {
            Ok(found) => found,
            Err(StoreError::Corrupt(error)) => {
                tracing::error!(%stream, recording = %id, %key, %error, "the recording's manifest in the bucket cannot be used: its segments are uploaded but no longer indexed for playback");
                return Ok(None);
            }
            Err(error) => return Err(s3_error("GetObject", error.to_string())),
        },
    };
    let mut manifest = match found {
        Some(manifest) => manifest,
        None if create => RecordingManifest::new(stream, id),
        None => return Ok(None),
    };
    change(&mut manifest);
    manifest.updated_ms = spool::unix_ms(SystemTime::now());
    let body = match manifest.to_bytes() {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%stream, recording = %id, %key, %error, "the recording's manifest is full: its later segments are uploaded but not indexed for playback");
            return Ok(None);
        }
    };
    client
        .put_object()
        .bucket(&config.bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| s3_error("PutObject", DisplayErrorContext(&e).to_string()))?;
    Ok(Some(manifest))
}

/// `stream`'s recording `id`'s manifest in the bucket, if there is one. A manifest too
/// large or unreadable is [`StoreError::Corrupt`].
pub async fn get_manifest(
    client: &Client,
    config: &S3Config,
    stream: &StreamKey,
    id: RecordingId,
) -> Result<Option<RecordingManifest>, StoreError> {
    let key = manifest_key(&config.prefix, stream, id);
    let max = MAX_MANIFEST_BYTES as u64;
    let Some(bytes) =
        get_bounded(client, &config.bucket, &key, max, config.attempt_timeout).await?
    else {
        return Ok(None);
    };
    RecordingManifest::parse(&bytes, stream, id).map(Some).map_err(|error: ManifestError| {
        StoreError::Corrupt(format!("s3://{}/{key}: {error}", config.bucket))
    })
}

/// Reads object `key` whole, at most `max` bytes, each read of its body within `idle`:
/// `Ok(None)` when there is no such object; a larger object is [`StoreError::Corrupt`].
pub async fn get_bounded(
    client: &Client,
    bucket: &str,
    key: &str,
    max: u64,
    idle: Duration,
) -> Result<Option<Bytes>, StoreError> {
    let what = format!("GetObject s3://{bucket}/{key}");
    let object = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(object) => object,
        Err(error) if no_such_key(&error) => return Ok(None),
        Err(error) => return Err(sdk_error(&what, &error)),
    };
    let too_large = || StoreError::Corrupt(format!("{what}: more than the {max} bytes expected"));
    if object.content_length().is_some_and(|n| u64::try_from(n).map_or(true, |n| n > max)) {
        return Err(too_large());
    }
    let mut body = object.body;
    let mut out = BytesMut::new();
    loop {
        let chunk = tokio::time::timeout(idle, body.try_next())
            .await
            .map_err(|_| StoreError::Timeout(format!("{what}: the body stalled for {idle:?}")))?
            .map_err(|e| StoreError::Unavailable(format!("{what}: {e}")))?;
        let Some(chunk) = chunk else { break };
        if (out.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out.freeze()))
}

/// Whether a GetObject failed because there is no such object.
pub fn no_such_key<R>(error: &SdkError<GetObjectError, R>) -> bool {
    match error {
        SdkError::ServiceError(service) => service.err().is_no_such_key(),
        _ => false,
    }
}

/// An S3 operation's failure as playback reports it: a timeout, or another failure.
pub fn sdk_error<E, R>(what: &str, error: &SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = format!("{what}: {}", DisplayErrorContext(error));
    let timeout = match error {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_timeout(),
        _ => false,
    };
    if timeout {
        StoreError::Timeout(text)
    } else {
        StoreError::Unavailable(text)
    }
}

/// `prefix` and the segment's relative path.
pub fn object_key(prefix: &str, relative: &str) -> String {
    format!("{prefix}{relative}")
}

/// Uploads one segment: PutObject, or a multipart upload above the threshold.
pub async fn upload(
    client: &Client,
    config: &S3Config,
    pending: &Pending,
) -> Result<(), UploadError> {
    let key = object_key(&config.prefix, &pending.relative);
    let bucket = &config.bucket;
    let s3_error = |operation, error: String| UploadError::S3 {
        operation,
        bucket: bucket.clone(),
        key: key.clone(),
        error,
    };
    let path = &pending.path;
    let read_error = |error: String| UploadError::Read { path: path.clone(), error };
    // The size on disk now: a segment recovered after a crash may differ from the record.
    let size = tokio::fs::metadata(path).await.map_err(|e| read_error(e.to_string()))?.len();
    if size <= config.multipart_threshold {
        let body = ByteStream::read_from()
            .path(path)
            .length(Length::Exact(size))
            .build()
            .await
            .map_err(|e| read_error(e.to_string()))?;
        client
            .put_object()
            .bucket(bucket)
            .key(&key)
            .content_length(size as i64)
            .content_type(content_type(&key))
            .body(body)
            .send()
            .await
            .map_err(|e| s3_error("PutObject", DisplayErrorContext(&e).to_string()))?;
        return Ok(());
    }
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .content_type(content_type(&key))
        .send()
        .await
        .map_err(|e| s3_error("CreateMultipartUpload", DisplayErrorContext(&e).to_string()))?;
    let Some(upload_id) = created.upload_id() else {
        return Err(s3_error("CreateMultipartUpload", "no upload id in the answer".into()));
    };
    let result = async {
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let length = config.part_size.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(length))
                .build()
                .await
                .map_err(|e| read_error(e.to_string()))?;
            let part = client
                .upload_part()
                .bucket(bucket)
                .key(&key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(length as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| s3_error("UploadPart", DisplayErrorContext(&e).to_string()))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(part.e_tag().map(str::to_owned))
                    .part_number(number)
                    .build(),
            );
            offset += length;
            number += 1;
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(&key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| {
                s3_error("CompleteMultipartUpload", DisplayErrorContext(&e).to_string())
            })?;
        Ok(())
    }
    .await;
    if result.is_err() {
        // Best effort: parts left behind cost storage until a lifecycle rule aborts them.
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(&key)
            .upload_id(upload_id)
            .send()
            .await;
    }
    result
}

fn content_type(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, ext)| ext) {
        Some("mp4") => "video/mp4",
        Some("ts") => "video/mp2t",
        Some("flv") => "video/x-flv",
        _ => "application/octet-stream",
    }
}
