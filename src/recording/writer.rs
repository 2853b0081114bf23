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
//! When the storage has no room (an S3 spool full while uploads fail), a segment due to
//! begin is skipped whole: an error log when skipping starts, an info line when it ends,
//! `zenlive_recording_segments_skipped_total` for each. Recording resumes by itself at
//! the first segment that finds room.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
        let mut writer = Writer { key, core, files, counters: counters.clone(), state: Arc::clone(&shared), logged: HashSet::new(), skipping: false, summary: Summary::default() };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| writer.run(rx)));
        counters.active.dec();
        let reason = match outcome {
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
                return;
            }
        };
        let Summary { segments, bytes, duration, start } = writer.summary;
        writer.files.storage().ended(RecordingEvent::Ended { stream: writer.key.clone(), segments, bytes, duration, start, reason });
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
                Msg::Frame { frame, wall, gap_before } => {
                    self.state.queued.fetch_sub(frame.payload().len(), Ordering::AcqRel);
                    if faults::fire(Fault::RecorderPanic) {
                        panic!("fault injection: a recorder writer thread panics");
                    }
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
                }
                Effect::Close { start, duration } => {
                    if let Some(segment) = self.files.close(start, duration)? {
                        self.counters.segments.inc();
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
