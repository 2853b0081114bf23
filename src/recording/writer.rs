//! Recorded streams' writers: each stream's [`RecorderCore`] and [`SegmentFiles`] live on
//! one of a few writer threads shared by every recorded stream of the node
//! ([`WriterPool`]), which take the stream's frames in order and carry the core's effects
//! out on disk. Disk writes and fsyncs block, so they run here, never on an event loop.
//! A stream stays on its thread, so its messages are handled in order; a slow disk delays
//! the other streams of that thread, whose queues (bounded in bytes by the sink) absorb
//! it. A few shared threads rather than one per stream: a thread per stream kept memory
//! per thread in the allocator and woke for every frame (BENCHMARKS.md, "Recording").
//!
//! A stream's writer ends when its [`WriterHandle`] is dropped (the stream ended, or the
//! sink was dropped after a crash): the open segment is finalized first. It also ends on
//! a disk error, with one error log line and `zenlive_recording_write_errors_total`; the
//! sink then reports the recorder closed, and the stream and its viewers go on. Either way
//! the storage hears that the recording ended (`RecordingEvent::Ended`). A panic while
//! handling a stream is caught and flagged, ends that stream's writer only, and the sink
//! re-raises it on the session's side, so the output's supervision restarts the recorder
//! (in a new segment).
//!
//! Before its first write a stream waits at its [`Gate`]: the recorder's claim of the name
//! `recorder/{app}/{key}` in the registry (see [`super::actor`]). Its messages are kept
//! meanwhile (the sink's byte bound applies) and the thread goes on with other streams. A
//! claim another node holds closes the gate and the writer ends without writing; a
//! registry that does not answer within [`GATE_WAIT`] opens it (recording twice is better
//! than losing a recording).
//!
//! When the storage has no room (an S3 spool full while uploads fail), a segment due to
//! begin is skipped whole: an error log when skipping starts, an info line when it ends,
//! `zenlive_recording_segments_skipped_total` for each. Recording resumes by itself at
//! the first segment that finds room.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

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
}

impl Gate {
    /// A gate already open (no claim to wait for).
    pub fn opened() -> Self {
        Self { open: Mutex::new(Some(true)) }
    }

    /// Opens (`true`) or closes the gate; the first call decides.
    pub fn set(&self, open: bool) {
        let mut state = self.open.lock();
        if state.is_none() {
            *state = Some(open);
        }
    }

    /// Whether it is open, once decided; `None` while undecided.
    pub fn get(&self) -> Option<bool> {
        *self.open.lock()
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

/// Writer threads shared by every recorded stream of a node (see the module docs).
pub struct WriterPool {
    threads: usize,
    workers: OnceLock<Vec<Sender<Job>>>,
    next: AtomicUsize,
    ids: AtomicU64,
}

/// A recorded stream's end of its writer: messages go to the stream's worker thread in
/// order. Dropping it ends the recording (the writer finishes the open segment).
pub struct WriterHandle {
    id: u64,
    tx: Sender<Job>,
    state: Arc<WriterState>,
}

/// The writer is gone (it ended on a disk error, a panic or a closed gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl WriterHandle {
    /// Hands `msg` to the writer; it is never refused for room (the sink bounds the bytes
    /// queued), only because the writer is gone.
    pub fn send(&self, msg: Msg) -> Result<(), Gone> {
        if self.state.exited.load(Ordering::Acquire) {
            return Err(Gone);
        }
        self.tx.send(Job { id: self.id, event: Event::Msg(msg) }).map_err(|_| Gone)
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Job { id: self.id, event: Event::End });
    }
}

/// One message for a worker: about which stream, and what.
struct Job {
    id: u64,
    event: Event,
}

enum Event {
    /// A stream's writer joins this worker.
    Start(Box<Slot>),
    Msg(Msg),
    /// The stream's handle was dropped: finish and end.
    End,
}

impl WriterPool {
    /// A pool of `threads` writer threads, started with the first recording.
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            workers: OnceLock::new(),
            next: AtomicUsize::new(0),
            ids: AtomicU64::new(0),
        }
    }

    /// The usual pool: a thread per core, two to [`MAX_THREADS`].
    pub fn sized_for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self::new(cores.clamp(2, MAX_THREADS))
    }

    /// Starts writing `key` on one of the threads (each stream stays on its thread, so
    /// its messages are handled in order); answers its handle and state.
    pub fn start(
        &self,
        key: StreamKey,
        core: RecorderCore,
        files: SegmentFiles,
        counters: RecordingCounters,
        lifecycle: Lifecycle,
    ) -> std::io::Result<(WriterHandle, Arc<WriterState>)> {
        let workers = match self.workers.get() {
            Some(workers) => workers,
            None => {
                let started = spawn_workers(self.threads)?;
                // Two first recordings at once: the loser's threads end as their senders
                // drop here.
                let _ = self.workers.set(started);
                self.workers.get().ok_or_else(|| std::io::Error::other("no writer threads"))?
            }
        };
        let tx = workers[self.next.fetch_add(1, Ordering::Relaxed) % workers.len()].clone();
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(WriterState::default());
        let Lifecycle { gate, on_exit } = lifecycle;
        let slot = Slot {
            writer: Writer {
                key,
                core,
                files,
                counters,
                state: Arc::clone(&state),
                logged: HashSet::new(),
                skipping: false,
                summary: Summary::default(),
            },
            gate,
            on_exit: Some(on_exit),
            waiting: Some((Instant::now(), Vec::new())),
            effects: Vec::new(),
        };
        tx.send(Job { id, event: Event::Start(Box::new(slot)) })
            .map_err(|_| std::io::Error::other("the writer thread is gone"))?;
        Ok((WriterHandle { id, tx, state: Arc::clone(&state) }, state))
    }
}

/// Most writer threads a pool starts by itself.
pub const MAX_THREADS: usize = 4;
/// How often a worker looks at the gates of streams waiting for their claim.
const GATE_TICK: Duration = Duration::from_millis(50);

fn spawn_workers(threads: usize) -> std::io::Result<Vec<Sender<Job>>> {
    (0..threads)
        .map(|n| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("rec writer {n}"))
                .spawn(move || Worker::default().run(&rx))?;
            Ok(tx)
        })
        .collect()
}

/// A writer thread's streams.
#[derive(Default)]
struct Worker {
    streams: HashMap<u64, Box<Slot>>,
    /// The streams still waiting for their gate (kept apart so that a batch of frames does
    /// not scan every stream on the thread).
    waiting: HashSet<u64>,
}

/// One stream on a worker.
struct Slot {
    writer: Writer,
    gate: Arc<Gate>,
    on_exit: Option<Box<dyn FnOnce(Exit) + Send>>,
    /// Until its gate opens: since when, and what came meanwhile.
    waiting: Option<(Instant, Vec<Event>)>,
    effects: Vec<Effect>,
}

/// What handling an event left of a stream.
enum Outcome {
    Goes,
    Ended(Exit),
}

impl Worker {
    fn run(mut self, rx: &Receiver<Job>) {
        loop {
            let wait = if self.waiting.is_empty() { Duration::from_secs(3600) } else { GATE_TICK };
            match rx.recv_timeout(wait) {
                Ok(Job { id, event }) => self.handle(id, event),
                Err(RecvTimeoutError::Timeout) => {}
                // The pool is gone: the node is shutting down.
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !self.waiting.is_empty() {
                self.check_gates();
            }
        }
        for (_, slot) in self.streams.drain() {
            finish(slot);
        }
    }

    fn handle(&mut self, id: u64, event: Event) {
        if let Event::Start(slot) = event {
            if slot.waiting.is_some() {
                self.waiting.insert(id);
            }
            self.streams.insert(id, slot);
            self.check_gates();
            return;
        }
        let Some(slot) = self.streams.get_mut(&id) else { return };
        if let Some((_, queued)) = &mut slot.waiting {
            queued.push(event);
            return;
        }
        if let Outcome::Ended(exit) = handle_event(slot, event) {
            if let Some(slot) = self.streams.remove(&id) {
                end_slot(slot, exit);
            }
        }
    }

    /// Streams whose gate is decided (or has waited [`GATE_WAIT`]) start or end.
    fn check_gates(&mut self) {
        let ready: Vec<(u64, bool)> = self
            .waiting
            .iter()
            .filter_map(|id| {
                let slot = self.streams.get(id)?;
                let (since, _) = slot.waiting.as_ref()?;
                match slot.gate.get() {
                    Some(open) => Some((*id, open)),
                    None if since.elapsed() >= GATE_WAIT => Some((*id, true)),
                    None => None,
                }
            })
            .collect();
        for (id, open) in ready {
            self.waiting.remove(&id);
            let Some(mut slot) = self.streams.remove(&id) else { continue };
            let queued = slot.waiting.take().map(|(_, q)| q).unwrap_or_default();
            if !open {
                slot.writer.state.exited.store(true, Ordering::Release);
                if let Some(on_exit) = slot.on_exit.take() {
                    on_exit(Exit::Declined);
                }
                continue;
            }
            slot.writer.counters.active.inc();
            match replay(&mut slot, queued) {
                Outcome::Ended(exit) => end_slot(slot, exit),
                Outcome::Goes => {
                    self.streams.insert(id, slot);
                }
            }
        }
    }
}

/// Handles one event of a started stream; a panic is caught and ends that stream only.
fn handle_event(slot: &mut Slot, event: Event) -> Outcome {
    let Slot { writer, effects, .. } = slot;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match event {
        Event::Msg(msg) => writer.take(msg, effects).map(|()| None),
        Event::End => {
            writer.core.finish(effects);
            writer.apply(effects).map(|()| Some(()))
        }
        Event::Start(_) => Ok(None),
    }));
    let state = &writer.state;
    let exit = match outcome {
        Ok(Ok(None)) => return Outcome::Goes,
        Ok(Ok(Some(()))) => {
            let reason = if state.stop_requested.load(Ordering::Acquire) {
                "stopped on request"
            } else {
                "stream ended"
            };
            writer.ended(reason.to_owned());
            Exit::Finished
        }
        Ok(Err(error)) => {
            state.failed.store(true, Ordering::Release);
            writer.counters.write_errors.inc();
            let part = writer.files.current().map(|p| p.display().to_string()).unwrap_or_default();
            tracing::error!(stream = %writer.key, %error, part, "recording stopped on a disk error; the stream and its viewers go on (what was written stays on disk)");
            writer.ended(format!("disk error: {error}"));
            Exit::Finished
        }
        Err(_) => {
            // Supervision restarts the recorder: the recording goes on.
            state.panicked.store(true, Ordering::Release);
            Exit::Panicked
        }
    };
    slot.effects.clear();
    Outcome::Ended(exit)
}

/// Handles `events` in order, up to the one that ends the stream.
fn replay(slot: &mut Slot, events: Vec<Event>) -> Outcome {
    for event in events {
        if let Outcome::Ended(exit) = handle_event(slot, event) {
            return Outcome::Ended(exit);
        }
    }
    Outcome::Goes
}

/// A stream's writer is done: counted, flagged, and its lifecycle told how.
fn end_slot(mut slot: Box<Slot>, exit: Exit) {
    slot.writer.counters.active.dec();
    slot.writer.state.exited.store(true, Ordering::Release);
    if let Some(on_exit) = slot.on_exit.take() {
        on_exit(exit);
    }
}

/// Ends a stream left on a worker whose pool is gone (what it was sent first).
fn finish(mut slot: Box<Slot>) {
    let queued = match slot.waiting.take() {
        Some((_, queued)) => {
            slot.writer.counters.active.inc();
            queued
        }
        None => Vec::new(),
    };
    let outcome = match replay(&mut slot, queued) {
        Outcome::Goes => handle_event(&mut slot, Event::End),
        ended => ended,
    };
    if let Outcome::Ended(exit) = outcome {
        end_slot(slot, exit);
    }
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
    /// Takes one message: a declaration, or frames, each written as it is cut.
    fn take(&mut self, msg: Msg, effects: &mut Vec<Effect>) -> Result<(), FileError> {
        match msg {
            Msg::Declare(config) => self.core.declare(&config),
            Msg::Frames(frames) => {
                for Queued { frame, wall, gap_before } in frames {
                    let charged = frame.payload().len() + super::sink::FRAME_OVERHEAD;
                    self.state.queued.fetch_sub(charged, Ordering::AcqRel);
                    if faults::fire(Fault::RecorderPanic) {
                        panic!("fault injection: a recorder writer thread panics");
                    }
                    if gap_before {
                        self.core.interrupt(effects);
                    }
                    self.core.push(&frame, wall, effects);
                    self.apply(effects)?;
                }
            }
        }
        Ok(())
    }

    /// The recording ended (`reason`): the storage hears it.
    fn ended(&mut self, reason: String) {
        let Summary { segments, bytes, duration, start } = std::mem::take(&mut self.summary);
        self.files.storage().ended(RecordingEvent::Ended {
            stream: self.key.clone(),
            segments,
            bytes,
            duration,
            start,
            reason,
        });
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::mpsc;

    use zenlive_media::segment::SegmentFormat;
    use zenlive_media::MediaTime;

    use super::*;
    use crate::recording::core::tests::{audio, configs, video};
    use crate::recording::path::PathTemplate;
    use crate::recording::storage::{LocalStorage, Storage};

    /// The bound on every wait here: a condition, not a pause.
    const WAIT: Duration = Duration::from_secs(30);

    struct Started {
        handle: WriterHandle,
        state: Arc<WriterState>,
        gate: Arc<Gate>,
        exit: mpsc::Receiver<Exit>,
    }

    fn start(pool: &WriterPool, root: &Path, name: &str) -> Started {
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(root));
        let template = Arc::new(PathTemplate::parse("{app}/{key}.{ext}").expect("valid"));
        let key = StreamKey::new("live", name).expect("valid");
        let files = SegmentFiles::new(key.clone(), "flv", template, storage);
        let core = RecorderCore::new(
            SegmentFormat::Flv,
            MediaTime::from_millis(60_000),
            MediaTime::from_millis(1000),
        );
        let gate = Arc::new(Gate::default());
        let (tx, exit) = mpsc::channel();
        let lifecycle = Lifecycle {
            gate: Arc::clone(&gate),
            on_exit: Box::new(move |how| {
                let _ = tx.send(how);
            }),
        };
        let (handle, state) =
            pool.start(key, core, files, RecordingCounters::default(), lifecycle).expect("started");
        Started { handle, state, gate, exit }
    }

    /// Three seconds of audio and video, in batches of about a quarter second, counted in
    /// the queue's bytes as the sink counts them.
    fn send_media(handle: &WriterHandle, state: &WriterState) {
        let (v, a) = configs();
        handle.send(Msg::Declare(v.clone())).expect("declared");
        handle.send(Msg::Declare(a.clone())).expect("declared");
        let mut frames = Vec::new();
        for ms in (0..3000).step_by(40) {
            frames.push(video(&v, ms, ms % 1000 == 0));
            frames.push(audio(&a, ms + 1));
        }
        for batch in frames.chunks(12) {
            let charged: usize =
                batch.iter().map(|f| f.payload().len() + super::super::sink::FRAME_OVERHEAD).sum();
            state.queued.fetch_add(charged, Ordering::AcqRel);
            let queued = batch
                .iter()
                .map(|f| Queued { frame: f.clone(), wall: SystemTime::now(), gap_before: false })
                .collect();
            handle.send(Msg::Frames(queued)).expect("sent");
        }
    }

    #[test]
    fn streams_on_one_thread_wait_at_their_gates_and_write_what_came_meanwhile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = WriterPool::new(1);
        let first = start(&pool, dir.path(), "first");
        let second = start(&pool, dir.path(), "second");
        send_media(&first.handle, &first.state);
        send_media(&second.handle, &second.state);
        // The second is decided first: one stream waiting does not hold up another.
        second.gate.set(true);
        drop(second.handle);
        assert_eq!(second.exit.recv_timeout(WAIT), Ok(Exit::Finished));
        assert!(first.exit.try_recv().is_err(), "the first still waits for its claim");
        first.gate.set(true);
        drop(first.handle);
        assert_eq!(first.exit.recv_timeout(WAIT), Ok(Exit::Finished));
        for (name, state) in [("first", &first.state), ("second", &second.state)] {
            let file = dir.path().join(format!("live/{name}.flv"));
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            assert!(len > 0, "{name}: the recording was written");
            assert_eq!(state.written.load(Ordering::Relaxed), len);
            assert_eq!(state.queued.load(Ordering::Relaxed), 0, "{name}: nothing left queued");
            assert!(state.exited.load(Ordering::Acquire));
        }
    }

    #[test]
    fn a_closed_gate_ends_the_writer_without_a_file_and_the_handle_hears_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pool = WriterPool::new(2);
        let declined = start(&pool, dir.path(), "elsewhere");
        send_media(&declined.handle, &declined.state);
        declined.gate.set(false);
        assert_eq!(declined.exit.recv_timeout(WAIT), Ok(Exit::Declined));
        assert!(declined.state.exited.load(Ordering::Acquire));
        assert_eq!(declined.handle.send(Msg::Frames(Vec::new())), Err(Gone));
        assert!(!dir.path().join("live").exists(), "nothing was written");
    }
}
