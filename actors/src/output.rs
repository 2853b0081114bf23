//! [`Output`]: something every live stream feeds (the HLS packager, the recorder to come,
//! an application's own), started by the stream's life and supervised.
//!
//! When a stream starts (a new lineage: not when a crashed stream actor restarts, whose
//! outputs follow the new instance like any viewer), the supervisor asks each [`Output`]
//! for a [`FrameSink`] and runs it in an internal [`ViewerSession`] on the node's arbiter
//! pool: the same back-pressure rules as a viewer (a sink that cannot keep up skips to the
//! next keyframe), and the output ends when the stream does. A panic inside the session (the
//! sink's code, usually) ends that session only; the output is opened again with fresh
//! state ([`OutputStream::restarts`] tells it so) and the restart is counted in
//! `zenlive_actor_restarts_total{kind=<output name>}`. The stream, its viewers and its
//! other outputs never notice. An output that keeps crashing (more than
//! [`MAX_RESTARTS`] times in [`RESTART_WINDOW`]) is given up for that stream, with an
//! error in the log.
//!
//! # On request
//! An output may also be asked for by name, per stream: before the stream starts, by the
//! application's publish decider ([`OutputChoices`], e.g. "record this one"), and while it
//! is live, through the stream actor's [`crate::stream::SetOutput`] (the SDK and the admin
//! API send it to the stream's owner, wherever it runs). A requested open carries
//! [`OutputStream::requested`], so the output starts even where its own rules (a
//! configured pattern, say) would leave the stream alone; [`Output::running`] and
//! [`Output::stop`] let it be asked whether it runs and be stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use parking_lot::Mutex;

use crate::directory::{Directory, StreamEntry};
use crate::events::NodeCounters;
use crate::key::StreamKey;
use crate::output_request::{OutputChange, OutputChoices, OutputControl};
use crate::pool::ArbiterPool;
use crate::protocol::Protocol;
use crate::stats::StreamStats;
use crate::viewer::{FrameSink, ViewerSession};

/// Most restarts of one output of one stream within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: u32 = 5;
/// The window [`MAX_RESTARTS`] counts in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// An output of every live stream. See the module docs.
pub trait Output: Send + Sync + 'static {
    /// Its name, for logs and the `kind` label of restarts (`hls`, `recorder`, ...).
    fn name(&self) -> &'static str;

    /// A sink for `stream`'s frames, or `None` to leave this stream alone. Called when the
    /// stream starts, and again after this output's session panicked.
    fn open(&self, stream: &OutputStream) -> Option<Box<dyn FrameSink>>;

    /// The stream `key` ended (its sink has been, or is about to be, told through
    /// [`FrameSink::finish`]).
    fn ended(&self, _key: &StreamKey) {}

    /// Whether it runs for the stream `key` now, for a request to start it by name. An
    /// output that cannot tell answers `false` (the default), and a request to start it
    /// then opens it again.
    fn running(&self, _key: &StreamKey) -> bool {
        false
    }

    /// Stops it for the stream `key` on request (its session ends once its sink answers
    /// [`crate::Offer::Closed`]); whether it was running. The default cannot stop
    /// anything and says so (`false`).
    fn stop(&self, _key: &StreamKey) -> bool {
        false
    }
}

/// The stream an output is opened for.
#[derive(Debug, Clone)]
pub struct OutputStream {
    /// The stream's name.
    pub key: StreamKey,
    /// Its shared statistics (they include the tracks' codec configurations).
    pub stats: Arc<StreamStats>,
    /// Whether this node only relays the stream from the node that owns it.
    pub replica: bool,
    /// How many times this output crashed for this stream before (0 on the first open):
    /// a restarted output starts from fresh state.
    pub restarts: u32,
    /// Opened on request (a publish decider's choice, or by name while live), not by the
    /// output's own rules: start even where those would leave the stream alone.
    pub requested: bool,
}

/// The node's outputs, started for every stream.
#[derive(Clone)]
pub struct Outputs {
    list: Arc<Vec<Arc<dyn Output>>>,
    pool: ArbiterPool,
    directory: Directory,
    counters: Arc<NodeCounters>,
    max_behind: Duration,
    /// Outputs that declined a relayed copy, by stream: started if this node takes the
    /// stream over.
    declined: Arc<Mutex<Declined>>,
}

/// Outputs that declined each relayed copy.
type Declined = HashMap<StreamKey, Vec<Arc<dyn Output>>>;

impl Outputs {
    /// `list`, run on `pool`; a session that stays behind longer than `max_behind` is
    /// disconnected (and reopened at once, as from a restart).
    pub fn new(
        list: Vec<Arc<dyn Output>>,
        pool: ArbiterPool,
        directory: Directory,
        counters: Arc<NodeCounters>,
        max_behind: Duration,
    ) -> Self {
        let declined = Arc::default();
        Self { list: Arc::new(list), pool, directory, counters, max_behind, declined }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Tells every output that the stream `key` ended.
    pub(crate) fn ended(&self, key: &StreamKey) {
        self.declined.lock().remove(key);
        for output in self.list.iter() {
            output.ended(key);
        }
    }

    /// Starts every output for the stream `key` (its directory `entry`), as `choices` say.
    pub(crate) fn start(
        &self,
        key: &StreamKey,
        entry: &StreamEntry,
        replica: bool,
        choices: &OutputChoices,
    ) {
        for output in self.list.iter() {
            let Some(requested) = requested(choices, output.as_ref()) else { continue };
            let stream = OutputStream {
                key: key.clone(),
                stats: Arc::clone(&entry.stats),
                replica,
                restarts: 0,
                requested,
            };
            let started = self.run(Arc::clone(output), stream, entry.clone(), Restarts::default());
            if replica && !started {
                self.declined.lock().entry(key.clone()).or_default().push(Arc::clone(output));
            }
        }
    }

    /// This node took the stream `key` over from the node it relayed it from: the outputs
    /// its copy did not run start now, as `choices` say.
    pub(crate) fn promoted(&self, key: &StreamKey, entry: &StreamEntry, choices: &OutputChoices) {
        let declined = self.declined.lock().remove(key).unwrap_or_default();
        for output in declined {
            let Some(requested) = requested(choices, output.as_ref()) else { continue };
            let stream = OutputStream {
                key: key.clone(),
                stats: Arc::clone(&entry.stats),
                replica: false,
                restarts: 0,
                requested,
            };
            let _started = self.run(output, stream, entry.clone(), Restarts::default());
        }
    }

    /// The stream actor's handle on these outputs ([`Outputs::set`]).
    pub(crate) fn control(&self) -> OutputControl {
        let outputs = self.clone();
        Arc::new(move |key, name, on, replica| outputs.set(key, name, on, replica))
    }

    /// Starts (`on`) or stops the output `name` for the live stream `key` on request.
    pub(crate) fn set(&self, key: &StreamKey, name: &str, on: bool, replica: bool) -> OutputChange {
        let Some(output) = self.list.iter().find(|o| o.name() == name) else {
            return OutputChange::NoSuchOutput;
        };
        if !on {
            return if output.stop(key) { OutputChange::Stopped } else { OutputChange::NotRunning };
        }
        if output.running(key) {
            return OutputChange::AlreadyRunning;
        }
        let Some(entry) = self.directory.get(key) else { return OutputChange::Declined };
        let stream = OutputStream {
            key: key.clone(),
            stats: Arc::clone(&entry.stats),
            replica,
            restarts: 0,
            requested: true,
        };
        if self.run(Arc::clone(output), stream, entry, Restarts::default()) {
            OutputChange::Started
        } else {
            OutputChange::Declined
        }
    }

    fn run(
        &self,
        output: Arc<dyn Output>,
        stream: OutputStream,
        entry: StreamEntry,
        history: Restarts,
    ) -> bool {
        let Some(sink) = output.open(&stream) else { return false };
        let outputs = self.clone();
        let crashed = {
            let output = Arc::clone(&output);
            let stream = stream.clone();
            move || outputs.crashed(output, stream, history.crashed())
        };
        let session = ViewerSession::new(
            stream.key.clone(),
            Protocol::Internal,
            entry,
            self.directory.clone(),
            sink,
            Arc::clone(&self.counters),
            self.max_behind,
        )
        .internal()
        .on_crash(crashed);
        ViewerSession::start_in_arbiter(&self.pool.next(), move |_| session);
        true
    }

    /// An output's session panicked: count it, and open the output again on the stream's
    /// current instance (if it is still live and the output has not crashed too often).
    fn crashed(&self, output: Arc<dyn Output>, mut stream: OutputStream, history: Restarts) {
        let name = output.name();
        self.counters.restarted(name);
        let Some(entry) = self.directory.get(&stream.key) else { return };
        if !Arc::ptr_eq(&entry.stats, &stream.stats) {
            // A new publisher's stream (new lineage) started its own outputs.
            return;
        }
        if history.count > MAX_RESTARTS {
            tracing::error!(stream = %stream.key, output = name, restarts = history.count, "an output keeps crashing; giving it up for this stream");
            return;
        }
        stream.restarts += 1;
        tracing::error!(stream = %stream.key, output = name, restarts = stream.restarts, "an output crashed; restarting it with fresh state");
        // A crashed output that declines to reopen is simply not running any more.
        let _reopened = self.run(output, stream, entry, history);
    }
}

/// Whether `output` opens as requested (`Some(true)`) or by its own rules (`Some(false)`)
/// given `choices`, or not at all (`None`: chosen off).
fn requested(choices: &OutputChoices, output: &dyn Output) -> Option<bool> {
    match choices.get(output.name()) {
        Some(false) => None,
        Some(true) => Some(true),
        None => Some(false),
    }
}

/// Crashes of one output of one stream, for the restart bound.
#[derive(Debug, Clone, Copy, Default)]
struct Restarts {
    since: Option<Instant>,
    count: u32,
}

impl Restarts {
    fn crashed(mut self) -> Self {
        let now = Instant::now();
        match self.since {
            Some(since) if now.duration_since(since) < RESTART_WINDOW => self.count += 1,
            _ => {
                self.since = Some(now);
                self.count = 1;
            }
        }
        self
    }
}
