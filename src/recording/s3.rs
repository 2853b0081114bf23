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
//! The client: `aws-sdk-s3` over rustls with ring (no aws-lc, no other TLS stack),
//! credentials from the usual AWS chain, every attempt and operation bounded by
//! `storage.s3.attempt_timeout` and `operation_timeout`, checksums as
//! `request_checksum_calculation` says. A segment larger than
//! `storage.s3.multipart_threshold` goes up in parts of `part_size`; others in one
//! PutObject, streamed from the file (nothing is held in memory whole).

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use futures_util::FutureExt;
use tokio::task::JoinSet;
use zenlive_actors::StreamKey;

use super::counters::RecordingCounters;
use super::events::{RecordingEvent, RecordingListener, SegmentLocation};
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
        let mut meta = meta(&segment.stream, segment.wall_start);
        meta.media_start_ms = Some(segment.media_start.as_millis() as u64);
        meta.duration_ms = Some(segment.duration.as_millis() as u64);
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

    fn ended(&self, event: RecordingEvent) {
        let stream = event.stream().to_string();
        self.shared.push(&stream, Job::End(event));
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

/// What an upload task hands back.
type Outcome = (String, Pending, Result<(), UploadError>);

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
        let mut inflight: JoinSet<Outcome> = JoinSet::new();
        loop {
            let now = Instant::now();
            // Start what is ready, up to the concurrency.
            while inflight.len() < self.config.concurrency {
                let Some((stream, job)) = self.shared.queue().next_ready(now) else { break };
                match job {
                    Job::End(event) => {
                        self.events.recording_event(&event);
                        self.shared.queue().done(&stream);
                    }
                    Job::Upload(pending) => {
                        let (client, config) = (client.clone(), self.config.clone());
                        inflight.spawn(async move {
                            // A panic in the SDK fails this attempt only; the stream retries.
                            let attempt = AssertUnwindSafe(upload(&client, &config, &pending));
                            let result = attempt.catch_unwind().await.unwrap_or_else(|_| {
                                Err(UploadError::Panicked { path: pending.path.clone() })
                            });
                            (stream, pending, result)
                        });
                    }
                }
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
                    Ok(outcome) => self.finish(outcome),
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
    fn finish(&self, (stream, pending, result): Outcome) {
        let counters = &self.shared.counters;
        match result {
            Ok(()) => {
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
            Err(UploadError::Read { path, error }) if !path.exists() => {
                // Gone from the spool (deleted by hand): nothing left to upload. Said loudly.
                counters.upload_failures.inc();
                tracing::error!(%stream, path = %path.display(), %error, "a recording segment vanished from the spool before its upload; it is lost");
                self.shared.queue().done(&stream);
            }
            Err(error) => {
                counters.upload_failures.inc();
                let backoff =
                    self.shared.queue().failed(&stream, Instant::now(), self.config.max_backoff);
                tracing::warn!(%stream, path = %pending.path.display(), %error, retry_in = ?backoff, "recording upload failed; retrying");
            }
        }
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
