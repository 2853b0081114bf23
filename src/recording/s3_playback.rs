//! Playback from the bucket (`storage.type = "s3"`): [`S3Store`], the
//! [`RecordingStore`] of every node sharing the bucket, whether it recorded or not.
//!
//! - **Listing**: ListObjectsV2 under the catalog's prefix ([`catalog_prefix`]),
//!   then one GetObject per manifest (a few at a time), each bounded by
//!   [`super::manifest::MAX_MANIFEST_BYTES`]; at most [`MAX_LISTED`] recordings per listing,
//!   found among at most [`MAX_SCANNED`] keys.
//!   Recordings this node records that have no uploaded segment yet are listed too.
//! - **A recording**: one GetObject of its manifest.
//! - **Segments**: `storage.s3.playback = "proxy"` (the default): a GetObject of exactly
//!   the byte range asked for, streamed to the client through a small bounded channel (a
//!   slow client slows the read; nothing is held whole); `"redirect"`: a presigned GET URL
//!   (`storage.s3.presign_expiry`) the route answers with a 302, so the player reads the
//!   object itself (its `Range` header included).
//! - **Downloads**: each segment read whole, bounded by its recorded size (the route bounds
//!   their sum by `recording.max_download_bytes`).
//!
//! All S3 calls run on a runtime of their own (a thread owns it; two workers), away from
//! the media event loops; the routes await them. Every attempt and operation is bounded by
//! `storage.s3.attempt_timeout` and `operation_timeout`, and each read of a body by
//! `attempt_timeout`: a failure is [`StoreError::Unavailable`] (502), a timeout
//! [`StoreError::Timeout`] (504).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, OnceCell};
use zenlive_actors::StreamKey;

use super::catalog::{LiveRecordings, Recording, RecordingId, SegmentEntry};
use super::manifest::{catalog_prefix, parse_manifest_key};
use super::playback::{RecordingStore, SegmentBody, Select, StoreError};
use super::s3::{client, get_bounded, get_manifest, no_such_key, object_key, sdk_error};
use crate::config::{S3Config, S3Playback};

/// Most recordings one listing reads.
pub const MAX_LISTED: usize = 1000;
/// Most object keys one listing looks at (pages of 1000), selected or not.
pub const MAX_SCANNED: usize = 100_000;
/// Manifests read at once by a listing.
const LISTING_READS: usize = 8;
/// Chunks of a proxied segment buffered between S3 and the client.
const PROXY_CHUNKS: usize = 4;
/// Worker threads of the runtime the S3 reads run on.
const WORKERS: usize = 2;

/// Recordings in the bucket. See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: S3Config,
    live: Arc<LiveRecordings>,
    runtime: tokio::runtime::Handle,
    client: OnceCell<Client>,
    /// Dropped with the store: the runtime's thread then ends, and the runtime with it.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("bucket", &self.inner.config.bucket).finish_non_exhaustive()
    }
}

impl S3Store {
    /// Playback from the bucket `config` names; `live` says which recordings this node
    /// writes. Starts the runtime's thread (the client is built on first use); an error
    /// says why it could not start.
    pub fn start(config: &S3Config, live: Arc<LiveRecordings>) -> Result<Self, String> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("zenlive-s3-read".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(WORKERS)
                    .thread_name("zenlive-s3-read")
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = handle_tx.send(Ok(runtime.handle().clone()));
                        // Until the store is dropped.
                        let _ = runtime.block_on(stopped);
                    }
                    Err(error) => {
                        let _ = handle_tx.send(Err(error.to_string()));
                    }
                }
            })
            .map_err(|e| format!("cannot start the S3 playback thread: {e}"))?;
        let runtime = handle_rx
            .recv()
            .map_err(|_| "the S3 playback thread ended at start".to_owned())?
            .map_err(|e| format!("cannot start the S3 playback runtime: {e}"))?;
        let inner =
            Inner { config: config.clone(), live, runtime, client: OnceCell::new(), _stop: stop };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Runs `work` (given this store) on the S3 runtime and awaits its answer.
    fn run<T, F>(
        &self,
        work: impl FnOnce(Arc<Inner>) -> F + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let task = self.inner.runtime.spawn(async move { work(inner).await });
        Box::pin(task.map(|joined| {
            joined.unwrap_or_else(|error| {
                Err(StoreError::Unavailable(format!("an S3 playback task failed: {error}")))
            })
        }))
    }
}

impl Inner {
    async fn client(&self) -> &Client {
        self.client.get_or_init(|| client(&self.config)).await
    }

    /// Every manifest key under the catalog's prefix for `stream` (all when `None`) whose
    /// stream `select` accepts, up to [`MAX_LISTED`].
    async fn list(
        &self,
        stream: Option<&StreamKey>,
        select: &Select,
    ) -> Result<Vec<(StreamKey, RecordingId)>, StoreError> {
        let prefix = catalog_prefix(&self.config.prefix, stream);
        let what = format!("ListObjectsV2 s3://{}/{prefix}", self.config.bucket);
        let client = self.client().await;
        let mut found = Vec::new();
        let mut token = None;
        let mut scanned = 0;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(&self.config.bucket)
                .prefix(&prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error(&what, &e))?;
            scanned += page.contents().len();
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let Some((key, id)) = parse_manifest_key(&self.config.prefix, key) else {
                    continue;
                };
                if select(&key) {
                    found.push((key, id));
                }
                if found.len() >= MAX_LISTED {
                    tracing::warn!(%prefix, "more than {MAX_LISTED} recordings in the bucket: the listing shows the first ones; filter by stream");
                    return Ok(found);
                }
            }
            match page.next_continuation_token() {
                Some(_) if scanned >= MAX_SCANNED => {
                    tracing::warn!(%prefix, "more than {MAX_SCANNED} objects under the catalog's prefix: the listing shows what the first ones hold; filter by stream");
                    return Ok(found);
                }
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(found),
            }
        }
    }

    async fn recording(
        &self,
        stream: StreamKey,
        id: RecordingId,
    ) -> Result<Option<Recording>, StoreError> {
        let live_here = self.live.is_live(&stream, id);
        let manifest = get_manifest(self.client().await, &self.config, &stream, id).await?;
        Ok(match manifest {
            Some(manifest) => Some(manifest.to_recording(stream, id, SystemTime::now(), live_here)),
            None if live_here => Some(Recording { stream, id, live: true, segments: Vec::new() }),
            None => None,
        })
    }

    async fn recordings(
        self: Arc<Self>,
        stream: Option<StreamKey>,
        select: Select,
    ) -> Result<Vec<Recording>, StoreError> {
        let keys = self.list(stream.as_ref(), &select).await?;
        let reads = futures_util::stream::iter(keys)
            .map(|(key, id)| {
                let this = Arc::clone(&self);
                async move { (key.clone(), id, this.recording(key, id).await) }
            })
            .buffer_unordered(LISTING_READS)
            .collect::<Vec<_>>()
            .await;
        let mut found: BTreeMap<(String, RecordingId), Recording> = BTreeMap::new();
        for (key, id, read) in reads {
            match read {
                Ok(Some(recording)) => {
                    found.insert((key.to_string(), id), recording);
                }
                // Deleted since it was listed.
                Ok(None) => {}
                Err(StoreError::Corrupt(error)) => {
                    tracing::warn!(stream = %key, recording = %id, %error, "recordings: a manifest that cannot be used is left out of the listing");
                }
                Err(error) => return Err(error),
            }
        }
        for (key, id) in self.live.all() {
            if stream.as_ref().is_none_or(|s| s == &key) && select(&key) {
                found.entry((key.to_string(), id)).or_insert_with(|| Recording {
                    stream: key,
                    id,
                    live: true,
                    segments: Vec::new(),
                });
            }
        }
        Ok(found.into_values().collect())
    }

    fn key_of(&self, segment: &SegmentEntry) -> String {
        // The entry's path is plain (checked when read): `/`-separated parts.
        let parts: Vec<String> = segment
            .path
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        object_key(&self.config.prefix, &parts.join("/"))
    }

    async fn presign(&self, key: String) -> Result<SegmentBody, StoreError> {
        let what = format!("presign GetObject s3://{}/{key}", self.config.bucket);
        let presigning = PresigningConfig::expires_in(self.config.presign_expiry)
            .map_err(|e| StoreError::Unavailable(format!("{what}: {e}")))?;
        let request = self
            .client()
            .await
            .get_object()
            .bucket(&self.config.bucket)
            .key(&key)
            .presigned(presigning)
            .await
            .map_err(|e| sdk_error(&what, &e))?;
        Ok(SegmentBody::Redirect(request.uri().to_owned()))
    }

    /// Bytes `start..end` of `key`, streamed: a task reads the object's body into a
    /// bounded channel, each read within `attempt_timeout`.
    async fn proxy(
        self: Arc<Self>,
        key: String,
        start: u64,
        end: u64,
    ) -> Result<SegmentBody, StoreError> {
        let what = format!("GetObject s3://{}/{key}", self.config.bucket);
        let object = self
            .client()
            .await
            .get_object()
            .bucket(&self.config.bucket)
            .key(&key)
            .range(format!("bytes={start}-{}", end - 1))
            .send()
            .await
            .map_err(|error| match no_such_key(&error) {
                true => StoreError::Missing(format!("{what}: no such object")),
                false => sdk_error(&what, &error),
            })?;
        let want = end - start;
        if object.content_length().and_then(|n| u64::try_from(n).ok()) != Some(want) {
            return Err(StoreError::Corrupt(format!(
                "{what}: {:?} bytes answered for a range of {want}",
                object.content_length()
            )));
        }
        let (tx, rx) = mpsc::channel::<Result<Bytes, StoreError>>(PROXY_CHUNKS);
        let idle = self.config.attempt_timeout;
        tokio::spawn(async move {
            let mut body = object.body;
            let mut sent = 0u64;
            loop {
                let next = match tokio::time::timeout(idle, body.try_next()).await {
                    Err(_) => Err(StoreError::Timeout(format!("{what}: the body stalled"))),
                    Ok(Err(error)) => Err(StoreError::Unavailable(format!("{what}: {error}"))),
                    Ok(Ok(None)) if sent == want => return,
                    Ok(Ok(None)) => Err(StoreError::Unavailable(format!(
                        "{what}: the body ended after {sent} of {want} bytes"
                    ))),
                    Ok(Ok(Some(chunk))) if sent + chunk.len() as u64 > want => {
                        Err(StoreError::Corrupt(format!("{what}: more bytes than asked for")))
                    }
                    Ok(Ok(Some(chunk))) => {
                        sent += chunk.len() as u64;
                        Ok(chunk)
                    }
                };
                let failed = next.is_err();
                if let Err(error) = &next {
                    tracing::warn!(%error, "recordings: a segment read from S3 was cut short");
                }
                // The client went away: stop reading.
                if tx.send(next).await.is_err() || failed {
                    return;
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(SegmentBody::Stream(Box::pin(stream)))
    }
}

impl RecordingStore for S3Store {
    fn recordings(
        &self,
        stream: Option<StreamKey>,
        select: Select,
    ) -> BoxFuture<'static, Result<Vec<Recording>, StoreError>> {
        self.run(move |inner| inner.recordings(stream, select))
    }

    fn recording(
        &self,
        stream: StreamKey,
        id: RecordingId,
    ) -> BoxFuture<'static, Result<Option<Recording>, StoreError>> {
        self.run(move |inner| async move { inner.recording(stream, id).await })
    }

    fn segment(
        &self,
        segment: &SegmentEntry,
        start: u64,
        end: u64,
    ) -> BoxFuture<'static, Result<SegmentBody, StoreError>> {
        let key = self.inner.key_of(segment);
        match self.inner.config.playback {
            S3Playback::Redirect => self.run(move |inner| async move { inner.presign(key).await }),
            S3Playback::Proxy if end <= start => {
                Box::pin(std::future::ready(Ok(SegmentBody::Bytes(Bytes::new()))))
            }
            S3Playback::Proxy => self.run(move |inner| inner.proxy(key, start, end)),
        }
    }

    fn read(&self, segment: &SegmentEntry) -> BoxFuture<'static, Result<Bytes, StoreError>> {
        let key = self.inner.key_of(segment);
        let max = segment.bytes;
        self.run(move |inner| async move {
            let client = inner.client().await;
            let (bucket, idle) = (&inner.config.bucket, inner.config.attempt_timeout);
            match get_bounded(client, bucket, &key, max, idle).await? {
                Some(bytes) => Ok(bytes),
                None => Err(StoreError::Missing(format!("s3://{bucket}/{key}: no such object"))),
            }
        })
    }
}
