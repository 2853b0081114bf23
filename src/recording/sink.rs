//! The recorder's end of its stream session: a [`FrameSink`] that never blocks the event
//! loop. It hands frames (references, not copies) to the stream's writer (a
//! [`WriterHandle`]) in batches of about [`BATCH_SPAN`] of media, so that the writer wakes
//! a few times a second rather than for every frame (it writes about a second at a time
//! anyway, so this keeps nothing from the disk longer). What is queued for the writer is
//! bounded in bytes ([`MAX_QUEUED_BYTES`], frames counted as they are taken). When that
//! is full (the disk is slower than the stream) it answers [`Offer::Full`], so the
//! session skips to the next keyframe, counts the overflow
//! and logs it once, and the next frame it hands over carries the news, so the writer ends
//! the segment there and begins a new one at that keyframe. A recording stopped on request
//! ([`Active::stop`]) closes the sink at the next frame: the writer finishes the open
//! segment and ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use zenlive_actors::{CodecConfig, FrameKind, FrameSink, MediaFrame, MediaTime, Offer, StreamKey};

use super::actor::Active;
use super::counters::RecordingCounters;
use super::writer::{Msg, Queued, WriterHandle, WriterState};

/// Most payload bytes queued for one stream's writer: about 30 s of a 8 Mbit/s stream.
pub const MAX_QUEUED_BYTES: usize = 32 << 20;
/// What a queued frame costs beside its payload, in the byte bound: many tiny frames
/// are bounded too.
pub const FRAME_OVERHEAD: usize = 128;
/// Media gathered before a batch goes to the writer.
pub const BATCH_SPAN: MediaTime = MediaTime::from_millis(250);
/// Most frames in one batch (a stream of many small frames, or time standing still).
const BATCH_FRAMES: usize = 128;

/// See the module docs.
pub struct RecorderSink {
    key: StreamKey,
    tx: Option<WriterHandle>,
    state: Arc<WriterState>,
    active: Arc<Active>,
    counters: RecordingCounters,
    /// Frames were refused since the last one handed over.
    gap: bool,
    /// Frames taken and not yet handed over, and the decode time of the first.
    batch: Vec<Queued>,
    batch_start: Option<MediaTime>,
}

impl RecorderSink {
    /// The sink of `key`'s writer (its queue and state), for the recording `active`.
    pub fn new(
        key: StreamKey,
        tx: WriterHandle,
        state: Arc<WriterState>,
        active: Arc<Active>,
        counters: RecordingCounters,
    ) -> Self {
        Self {
            key,
            tx: Some(tx),
            state,
            active,
            counters,
            gap: false,
            batch: Vec::new(),
            batch_start: None,
        }
    }

    /// Hands the batch to the writer.
    fn flush(&mut self) -> Offer {
        self.batch_start = None;
        if self.batch.is_empty() {
            return Offer::Accepted(0);
        }
        let Some(tx) = &self.tx else { return Offer::Closed };
        match tx.send(Msg::Frames(std::mem::take(&mut self.batch))) {
            Ok(()) => Offer::Accepted(0),
            Err(_) => self.writer_gone(),
        }
    }

    /// Hands over what is gathered and lets go of the writer, which finishes the open
    /// segment and ends.
    fn close(&mut self) {
        let _ = self.flush();
        self.tx = None;
    }

    fn full(&mut self) -> Offer {
        if !self.gap {
            self.counters.queue_overflows.inc();
            tracing::warn!(stream = %self.key, "recorder queue full (the disk is slower than the stream): frames are dropped up to the next keyframe, which begins a new segment");
        }
        self.gap = true;
        Offer::Full
    }

    /// The writer thread is gone: a panic there is raised here, so the output's
    /// supervision restarts the recorder; after a disk error the recorder stays closed.
    fn writer_gone(&mut self) -> Offer {
        self.tx = None;
        if self.state.panicked.load(Ordering::Acquire) {
            panic!("the recorder's writer thread of {} panicked", self.key);
        }
        Offer::Closed
    }
}

impl Drop for RecorderSink {
    fn drop(&mut self) {
        // Dropped without `finish` (its session is gone): what was taken still goes to the
        // writer. Nothing here may panic.
        if let Some(tx) = &self.tx {
            if !self.batch.is_empty() {
                let _ = tx.send(Msg::Frames(std::mem::take(&mut self.batch)));
            }
        }
    }
}

impl FrameSink for RecorderSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        if frame.kind() == FrameKind::Data {
            return Offer::Accepted(0);
        }
        if self.tx.is_none() {
            return Offer::Closed;
        }
        if self.active.stop_requested() {
            self.state.stop_requested.store(true, Ordering::Release);
            self.close();
            return Offer::Closed;
        }
        let len = frame.payload().len();
        let charged = len + FRAME_OVERHEAD;
        if self.state.queued.load(Ordering::Acquire) + charged > MAX_QUEUED_BYTES {
            return self.full();
        }
        // Counted when taken, so the writer's subtraction never comes first.
        self.state.queued.fetch_add(charged, Ordering::AcqRel);
        self.batch.push(Queued {
            frame: frame.clone(),
            wall: SystemTime::now(),
            gap_before: self.gap,
        });
        self.gap = false;
        let start = *self.batch_start.get_or_insert(frame.dts());
        if frame.dts() - start >= BATCH_SPAN || self.batch.len() >= BATCH_FRAMES {
            match self.flush() {
                Offer::Accepted(_) => {}
                refused => return refused,
            }
        }
        Offer::Accepted(len)
    }

    fn offer_config(&mut self, config: &CodecConfig) -> Offer {
        // Frames carry their configuration too, so a declaration lost to a full queue
        // costs nothing. The frames before it go first.
        if let Offer::Closed = self.flush() {
            return Offer::Closed;
        }
        if let Some(tx) = &self.tx {
            if tx.send(Msg::Declare(config.clone())).is_err() {
                return self.writer_gone();
            }
        }
        Offer::Accepted(0)
    }

    fn finish(&mut self, _reason: &str) {
        // Dropping the sender lets the writer drain its queue and finalize the segment.
        self.close();
    }
}
