//! Where finished HLS segments are kept: the [`SegmentStore`] the packager hands each
//! finished segment to, and the [`StoredSegment`] it gets back, which the packager's
//! snapshots hold and the HTTP handlers ([`super::serve`]) read. Two stores:
//! [`MemoryStore`] (`hls.storage = "memory"`: the segment's bytes stay in the heap) and
//! [`super::spool::Spool`] (`hls.storage = "files"`: a file in the spool directory, which
//! the kernel pages; the heap keeps none of it).
//!
//! A stored segment is immutable and lives as long as a snapshot or a response holds it:
//! the packager drops it when the segment's grace ends (it leaves the segmenter), and a
//! file is deleted when its last holder lets go.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use zenlive_actors::StreamKey;
use zenlive_media::hls::SegmentBytes;

use super::spool::SpoolFile;

/// Bytes handed to the HTTP server per body chunk from a file (what the in-memory
/// segments' chunks are too).
const BODY_CHUNK: usize = 64 * 1024;

/// What the packager writes segments to.
pub trait SegmentStore: Send + Sync {
    /// A writer for segment `sequence` of `key`, which takes its bytes while it is being
    /// built and then keeps it ([`SegmentWriter::finish`]).
    fn begin(&self, key: &StreamKey, sequence: u64) -> Box<dyn SegmentWriter>;

    /// Whether a segment's bytes should go to its writer while it is being built (a file
    /// store: the heap then holds only the chunk being filled), or all at once when it is
    /// complete (the memory store: nothing to gain).
    fn streams(&self) -> bool;

    /// Keeps the complete segment `sequence` of `key`, `data` being all its bytes.
    fn put(&self, key: &StreamKey, sequence: u64, data: SegmentBytes) -> Option<StoredSegment> {
        self.begin(key, sequence).finish(data)
    }

    /// [`SegmentStore::put`] for a fragmented MP4 segment (LL-HLS's), which a file store
    /// names `.m4s` rather than `.ts`.
    fn put_fmp4(
        &self,
        key: &StreamKey,
        sequence: u64,
        data: SegmentBytes,
    ) -> Option<StoredSegment> {
        self.put(key, sequence, data)
    }
}

/// One segment on its way into a store. Dropped without [`SegmentWriter::finish`], it
/// leaves nothing behind.
pub trait SegmentWriter: Send {
    /// Its next bytes (the segment being built).
    fn append(&mut self, chunks: &[Bytes]);

    /// The rest of its bytes: the segment is complete and stored. A store that cannot keep
    /// it where it should says so (a log line and a metric) and keeps it in memory; `None`
    /// only when its bytes are lost (counted as well).
    fn finish(self: Box<Self>, rest: SegmentBytes) -> Option<StoredSegment>;
}

/// A finished segment as a store keeps it. Cloning shares it.
#[derive(Clone)]
pub enum StoredSegment {
    /// In the heap.
    Memory(SegmentBytes),
    /// A file in the spool, deleted when the last clone is dropped.
    File(Arc<SpoolFile>),
}

impl StoredSegment {
    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(bytes) => bytes.len() as u64,
            Self::File(file) => file.len(),
        }
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A response body with its bytes. A file is mapped (once, then shared by every
    /// response) and its pages go to the socket from the page cache.
    pub fn body(&self) -> std::io::Result<SegmentBody> {
        Ok(match self {
            Self::Memory(segment) => SegmentBody::from_buffers(segment.clone()),
            Self::File(file) => SegmentBody::from_bytes(file.bytes()?),
        })
    }
}

/// [`SegmentStore`] of `hls.storage = "memory"`: the bytes stay where the packager made
/// them.
pub struct MemoryStore;

impl SegmentStore for MemoryStore {
    fn begin(&self, _key: &StreamKey, _sequence: u64) -> Box<dyn SegmentWriter> {
        Box::new(MemoryWriter(Vec::new()))
    }

    fn streams(&self) -> bool {
        false
    }
}

/// A segment gathered in memory: [`MemoryStore`]'s, and a file store's fallback.
pub struct MemoryWriter(pub Vec<Bytes>);

impl SegmentWriter for MemoryWriter {
    fn append(&mut self, chunks: &[Bytes]) {
        self.0.extend_from_slice(chunks);
    }

    fn finish(mut self: Box<Self>, rest: SegmentBytes) -> Option<StoredSegment> {
        if self.0.is_empty() {
            return Some(StoredSegment::Memory(rest));
        }
        self.0.extend_from_slice(rest.chunks());
        Some(StoredSegment::Memory(SegmentBytes::from_chunks(std::mem::take(&mut self.0))))
    }
}

/// A segment as a response body, with its length up front: its buffers in turn, each
/// handed to the HTTP server at most `BODY_CHUNK` bytes at a time (a mapped file is one
/// buffer). The MPEG-TS and the LL-HLS media responses both use it.
pub struct SegmentBody {
    /// What is left of the buffer being handed out.
    rest: Bytes,
    /// The buffers after the first (`from_buffers`), and the next one to take.
    more: Option<SegmentBytes>,
    next: usize,
    len: u64,
}

impl SegmentBody {
    /// A body of one buffer.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self { len: bytes.len() as u64, rest: bytes, more: None, next: 0 }
    }

    /// A body of `buffers`, in order.
    pub fn from_buffers(buffers: SegmentBytes) -> Self {
        Self { len: buffers.len() as u64, rest: Bytes::new(), more: Some(buffers), next: 0 }
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl MessageBody for SegmentBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.len)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        while this.rest.is_empty() {
            let next = this.more.as_ref().and_then(|more| more.chunks().get(this.next)).cloned();
            let Some(next) = next else { return Poll::Ready(None) };
            this.next += 1;
            this.rest = next;
        }
        let piece = this.rest.split_to(this.rest.len().min(BODY_CHUNK));
        Poll::Ready(Some(Ok(piece)))
    }
}
