//! The recorder's end of its stream session: a [`FrameSink`] that never blocks the event
//! loop. It hands each frame (a reference, not a copy) to the stream's writer thread
//! through a bounded queue; when the queue is full (the disk is slower than the stream) it
//! answers [`Offer::Full`], so the session skips to the next keyframe, counts the overflow
//! and logs it once, and the next frame it hands over carries the news, so the writer ends
//! the segment there and begins a new one at that keyframe. A recording stopped on request
//! ([`Active::stop`]) closes the sink at the next frame: the writer finishes the open
//! segment and ends.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use zenlive_actors::{CodecConfig, FrameKind, FrameSink, MediaFrame, Offer, StreamKey};

use super::actor::Active;
use super::counters::RecordingCounters;
use super::writer::{Msg, WriterState};

/// Most payload bytes queued for one stream's writer: about 30 s of a 8 Mbit/s stream.
pub const MAX_QUEUED_BYTES: usize = 32 << 20;

/// See the module docs.
pub struct RecorderSink {
    key: StreamKey,
    tx: Option<SyncSender<Msg>>,
    state: Arc<WriterState>,
    active: Arc<Active>,
    counters: RecordingCounters,
    /// Frames were refused since the last one handed over.
    gap: bool,
}

impl RecorderSink {
    /// The sink of `key`'s writer (its queue and state), for the recording `active`.
    pub fn new(
        key: StreamKey,
        tx: SyncSender<Msg>,
        state: Arc<WriterState>,
        active: Arc<Active>,
        counters: RecordingCounters,
    ) -> Self {
        Self { key, tx: Some(tx), state, active, counters, gap: false }
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

impl FrameSink for RecorderSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        if frame.kind() == FrameKind::Data {
            return Offer::Accepted(0);
        }
        let Some(tx) = &self.tx else { return Offer::Closed };
        if self.active.stop_requested() {
            // Dropping the sender lets the writer finish the open segment and end.
            self.state.stop_requested.store(true, Ordering::Release);
            self.tx = None;
            return Offer::Closed;
        }
        let len = frame.payload().len();
        if self.state.queued.load(Ordering::Acquire) + len > MAX_QUEUED_BYTES {
            return self.full();
        }
        let msg =
            Msg::Frame { frame: frame.clone(), wall: SystemTime::now(), gap_before: self.gap };
        // Counted before sending, so the writer's subtraction never comes first.
        self.state.queued.fetch_add(len, Ordering::AcqRel);
        match tx.try_send(msg) {
            Ok(()) => {
                self.gap = false;
                Offer::Accepted(len)
            }
            Err(error) => {
                self.state.queued.fetch_sub(len, Ordering::AcqRel);
                match error {
                    TrySendError::Full(_) => self.full(),
                    TrySendError::Disconnected(_) => self.writer_gone(),
                }
            }
        }
    }

    fn offer_config(&mut self, config: &CodecConfig) -> Offer {
        // Frames carry their configuration too, so a declaration lost to a full queue
        // costs nothing.
        if let Some(tx) = &self.tx {
            if let Err(TrySendError::Disconnected(_)) = tx.try_send(Msg::Declare(config.clone())) {
                return self.writer_gone();
            }
        }
        Offer::Accepted(0)
    }

    fn finish(&mut self, _reason: &str) {
        // Dropping the sender lets the writer drain its queue and finalize the segment.
        self.tx = None;
    }
}
