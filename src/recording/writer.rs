//! A recorded stream's writer thread: it owns the stream's [`RecorderCore`] and
//! [`SegmentFiles`], takes frames from a bounded queue, and carries the core's effects out
//! on disk. Disk writes and fsyncs block, so they run here, never on an event loop.
//!
//! The thread ends when its queue's sender is dropped (the stream ended, or the sink was
//! dropped after a crash): the open segment is finalized first. It also ends on a disk
//! error, with one error log line and `zenlive_recording_write_errors_total`; the sink
//! then reports the recorder closed, and the stream and its viewers go on. A panic here
//! is caught and flagged, and the sink re-raises it on the session's side, so the output's
//! supervision restarts the recorder (in a new segment).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::SystemTime;

use zenlive_actors::{CodecConfig, MediaFrame, StreamKey};

use super::core::{Effect, RecorderCore};
use super::counters::RecordingCounters;
use super::files::{FileError, SegmentFiles};

/// What the sink hands the writer.
pub enum Msg {
    /// A track's configuration, as declared.
    Declare(CodecConfig),
    /// A frame, when it came, and whether frames were lost just before it.
    Frame {
        /// The frame.
        frame: MediaFrame,
        /// Wall-clock time it was taken.
        wall: SystemTime,
        /// Frames were dropped (queue full) before this one.
        gap_before: bool,
    },
}

/// What the writer thread tells its sink.
#[derive(Debug, Default)]
pub struct WriterState {
    /// It stopped on a disk error.
    pub failed: AtomicBool,
    /// It panicked.
    pub panicked: AtomicBool,
    /// Payload bytes queued and not yet taken.
    pub queued: AtomicUsize,
}

/// Starts the writer thread of `key`; answers its queue's sender and its state.
pub fn spawn(
    key: StreamKey,
    core: RecorderCore,
    files: SegmentFiles,
    counters: RecordingCounters,
    capacity: usize,
) -> std::io::Result<(SyncSender<Msg>, Arc<WriterState>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
    let state = Arc::new(WriterState::default());
    let shared = Arc::clone(&state);
    std::thread::Builder::new().name(format!("rec {key}")).spawn(move || {
        counters.active.inc();
        let mut writer = Writer { key, core, files, counters: counters.clone(), state: Arc::clone(&shared), logged: HashSet::new() };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| writer.run(rx)));
        counters.active.dec();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                shared.failed.store(true, Ordering::Release);
                counters.write_errors.inc();
                let part = writer.files.current().map(|p| p.display().to_string()).unwrap_or_default();
                tracing::error!(stream = %writer.key, %error, part, "recording stopped on a disk error; the stream and its viewers go on (what was written stays on disk)");
            }
            Err(_) => shared.panicked.store(true, Ordering::Release),
        }
    })?;
    Ok((tx, state))
}

struct Writer {
    key: StreamKey,
    core: RecorderCore,
    files: SegmentFiles,
    counters: RecordingCounters,
    state: Arc<WriterState>,
    logged: HashSet<&'static str>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) -> Result<(), FileError> {
        let mut effects = Vec::new();
        for msg in rx.iter() {
            match msg {
                Msg::Declare(config) => self.core.declare(&config),
                Msg::Frame { frame, wall, gap_before } => {
                    self.state.queued.fetch_sub(frame.payload().len(), Ordering::AcqRel);
                    if gap_before {
                        self.core.interrupt(&mut effects);
                    }
                    self.core.push(&frame, wall, &mut effects);
                }
            }
            self.apply(&mut effects)?;
        }
        // The sender is gone: the stream ended (or its session did).
        self.core.finish(&mut effects);
        self.apply(&mut effects)
    }

    fn apply(&mut self, effects: &mut Vec<Effect>) -> Result<(), FileError> {
        for effect in effects.drain(..) {
            match effect {
                Effect::Open { wall } => {
                    self.files.open(wall)?;
                    if let Some(part) = self.files.current() {
                        tracing::debug!(stream = %self.key, part = %part.display(), "recording segment started");
                    }
                }
                Effect::Write(chunk) => {
                    let written = self.files.write(&chunk)?;
                    self.counters.bytes.inc_by(written);
                }
                Effect::Close { start, duration } => {
                    if self.files.close(start, duration)?.is_some() {
                        self.counters.segments.inc();
                    }
                }
                Effect::Dropped(why) => {
                    // Once per reason and recorder: a broken publisher would otherwise log
                    // every frame.
                    if self.logged.insert(why) {
                        tracing::info!(stream = %self.key, "recorder: frame not recorded: {why} (further such frames are not logged)");
                    }
                }
            }
        }
        Ok(())
    }
}
