//! A recorded stream's writer thread: it owns the stream's [`RecorderCore`] and
//! [`SegmentFiles`], takes frames from a bounded queue, and carries the core's effects out
//! on disk. Disk writes and fsyncs block, so they run here, never on an event loop.
//!
//! The thread ends when its queue's sender is dropped (the stream ended, or the sink was
//! dropped after a crash): the open segment is finalized first. It also ends on a disk
//! error, with one error log line and `zenlive_recording_write_errors_total`; the sink
//! then reports the recorder closed, and the stream and its viewers go on. Either way the
//! storage hears that the recording ended (`RecordingEvent::Ended`). A panic here
//! is caught and flagged, and the sink re-raises it on the session's side, so the output's
//! supervision restarts the recorder (in a new segment).
//!
//! Before its first write the thread waits at its [`Gate`]: the recorder's claim of the
//! name `recorder/{app}/{key}` in the registry (see [`super::actor`]). Frames queue
//! meanwhile (the queue's bounds apply). A claim another node holds closes the gate and the
//! thread ends without writing; a registry that does not answer within [`GATE_WAIT`] opens
//! it (recording twice is better than losing a recording).
//!
//! When the storage has no room (an S3 spool full while uploads fail), a segment due to
//! begin is skipped whole: an error log when skipping starts, an info line when it ends,
//! `zenlive_recording_segments_skipped_total` for each. Recording resumes by itself at
//! the first segment that finds room.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};

use zenlive_actors::faults::{self, Fault};
use zenlive_actors::{CodecConfig, MediaFrame, StreamKey};

use super::core::{Effect, RecorderCore};
use super::counters::RecordingCounters;
use super::events::RecordingEvent;
use super::files::{FileError, SegmentFiles};

/// What the sink hands the writer.
pub enum Msg {
    /// A track's configuration, as declared.
    Declare(CodecConfig),
    /// Frames in order (a batch, so the writer wakes a few times a second, not per frame).
    Frames(Vec<Queued>),
}

/// One frame for the writer.
pub struct Queued {
    /// The frame.
    pub frame: MediaFrame,
    /// Wall-clock time it was taken.
    pub wall: SystemTime,
    /// Frames were dropped (queue full) before this one.
    pub gap_before: bool,
}

/// What the writer thread tells its sink and the recorder actor.
#[derive(Debug, Default)]
pub struct WriterState {
    /// It stopped on a disk error.
    pub failed: AtomicBool,
    /// It panicked.
    pub panicked: AtomicBool,
    /// It ended (however).
    pub exited: AtomicBool,
    /// Its sink let go of it because the recording was stopped on request.
    pub stop_requested: AtomicBool,
    /// Payload bytes queued and not yet taken.
    pub queued: AtomicUsize,
    /// Segments it finished.
    pub segments: AtomicU64,
    /// Bytes it wrote.
    pub written: AtomicU64,
}

/// The longest a writer waits at its [`Gate`] before it records anyway.
pub const GATE_WAIT: Duration = Duration::from_secs(10);

/// Whether a writer may record: set once, by the recorder's claim (see the module docs).
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<Option<bool>>,
    set: Condvar,
}

impl Gate {
    /// A gate already open (no claim to wait for).
    pub fn opened() -> Self {
        Self { open: Mutex::new(Some(true)), set: Condvar::new() }
    }

    /// Opens (`true`) or closes the gate; the first call decides.
    pub fn set(&self, open: bool) {
        let mut state = self.open.lock();
        if state.is_none() {
            *state = Some(open);
            self.set.notify_all();
        }
    }

    /// Whether it is open, once decided; `None` while undecided.
    pub fn get(&self) -> Option<bool> {
        *self.open.lock()
    }

    /// Waits up to `wait` for the decision; undecided after that counts as open.
    fn wait(&self, wait: Duration) -> bool {
        let mut state = self.open.lock();
        if state.is_none() {
            let _ = self.set.wait_for(&mut state, wait);
        }
        state.unwrap_or(true)
    }
}

/// How a writer thread ended, for [`Lifecycle::on_exit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It finished (the stream or the recording ended, or a disk error stopped it).
    Finished,
    /// The gate closed: another node records the stream.
    Declined,
    /// It panicked (supervision starts another writer).
    Panicked,
}

/// A writer's claim gate and who hears how it ended.
pub struct Lifecycle {
    /// Waited on before the first write.
    pub gate: Arc<Gate>,
    /// Called on the writer thread as it ends.
    pub on_exit: Box<dyn FnOnce(Exit) + Send>,
}

impl Lifecycle {
    /// No gate to wait at, nobody to tell.
    pub fn unclaimed() -> Self {
        Self { gate: Arc::new(Gate::opened()), on_exit: Box::new(|_| {}) }
    }
}

/// Starts the writer thread of `key`; answers its queue's sender and its state.
pub fn spawn(
    key: StreamKey,
    core: RecorderCore,
    files: SegmentFiles,
    counters: RecordingCounters,
    capacity: usize,
    lifecycle: Lifecycle,
) -> std::io::Result<(SyncSender<Msg>, Arc<WriterState>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
    let state = Arc::new(WriterState::default());
    let shared = Arc::clone(&state);
    let Lifecycle { gate, on_exit } = lifecycle;
    std::thread::Builder::new().name(format!("rec {key}")).spawn(move || {
        let exit = run_thread(key, core, files, counters, rx, &gate, &shared);
        shared.exited.store(true, Ordering::Release);
        on_exit(exit);
    })?;
    Ok((tx, state))
}

/// The thread's body; see the module docs.
fn run_thread(
    key: StreamKey,
    core: RecorderCore,
    files: SegmentFiles,
    counters: RecordingCounters,
    rx: Receiver<Msg>,
    gate: &Gate,
    shared: &Arc<WriterState>,
) -> Exit {
    if !gate.wait(GATE_WAIT) {
        return Exit::Declined;
    }
    counters.active.inc();
    let mut writer = Writer {
        key,
        core,
        files,
        counters: counters.clone(),
        state: Arc::clone(shared),
        logged: HashSet::new(),
        skipping: false,
        summary: Summary::default(),
    };
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| writer.run(rx)));
    counters.active.dec();
    let reason = match outcome {
        Ok(Ok(())) if shared.stop_requested.load(Ordering::Acquire) => {
            "stopped on request".to_owned()
        }
        Ok(Ok(())) => "stream ended".to_owned(),
        Ok(Err(error)) => {
            shared.failed.store(true, Ordering::Release);
            counters.write_errors.inc();
            let part = writer.files.current().map(|p| p.display().to_string()).unwrap_or_default();
            tracing::error!(stream = %writer.key, %error, part, "recording stopped on a disk error; the stream and its viewers go on (what was written stays on disk)");
            format!("disk error: {error}")
        }
        Err(_) => {
            // Supervision restarts the recorder: the recording goes on.
            shared.panicked.store(true, Ordering::Release);
            return Exit::Panicked;
        }
    };
    let Summary { segments, bytes, duration, start } = writer.summary;
    writer.files.storage().ended(RecordingEvent::Ended {
        stream: writer.key.clone(),
        segments,
        bytes,
        duration,
        start,
        reason,
    });
    Exit::Finished
}

struct Writer {
    key: StreamKey,
    core: RecorderCore,
    files: SegmentFiles,
    counters: RecordingCounters,
    state: Arc<WriterState>,
    logged: HashSet<&'static str>,
    /// Segments are being skipped: the storage has no room.
    skipping: bool,
    summary: Summary,
}

/// What this recorder finished, for its end event.
#[derive(Debug, Default)]
struct Summary {
    segments: u64,
    bytes: u64,
    duration: Duration,
    start: Option<SystemTime>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) -> Result<(), FileError> {
        let mut effects = Vec::new();
        for msg in rx.iter() {
            match msg {
                Msg::Declare(config) => self.core.declare(&config),
                Msg::Frames(frames) => {
                    for Queued { frame, wall, gap_before } in frames {
                        self.state.queued.fetch_sub(frame.payload().len(), Ordering::AcqRel);
                        if faults::fire(Fault::RecorderPanic) {
                            panic!("fault injection: a recorder writer thread panics");
                        }
                        if gap_before {
                            self.core.interrupt(&mut effects);
                        }
                        self.core.push(&frame, wall, &mut effects);
                        // Media is written as it is cut: frames are not kept past their
                        // chunk.
                        self.apply(&mut effects)?;
                    }
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
                    if !self.files.storage().has_room() {
                        if !std::mem::replace(&mut self.skipping, true) {
                            tracing::error!(stream = %self.key, "recording paused: the upload spool is full (storage.spool_max_bytes; S3 uploads are failing or slow); segments are skipped until uploads make room");
                        }
                        self.counters.segments_skipped.inc();
                        // No file is open: the segment's writes and close are no-ops.
                        continue;
                    }
                    if std::mem::take(&mut self.skipping) {
                        tracing::info!(stream = %self.key, "the upload spool has room again: recording resumes");
                    }
                    self.files.open(wall)?;
                    if let Some(part) = self.files.current() {
                        tracing::debug!(stream = %self.key, part = %part.display(), "recording segment started");
                    }
                }
                Effect::Write(chunk) => {
                    let written = self.files.write(&chunk)?;
                    self.counters.bytes.inc_by(written);
                    self.state.written.fetch_add(written, Ordering::Relaxed);
                }
                Effect::Close { start, duration } => {
                    if let Some(segment) = self.files.close(start, duration)? {
                        self.counters.segments.inc();
                        self.state.segments.fetch_add(1, Ordering::Relaxed);
                        let summary = &mut self.summary;
                        summary.segments += 1;
                        summary.bytes += segment.bytes;
                        summary.duration += segment.duration;
                        summary.start.get_or_insert(segment.wall_start);
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
