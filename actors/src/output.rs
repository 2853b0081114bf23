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

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;

use crate::directory::{Directory, StreamEntry};
use crate::events::NodeCounters;
use crate::key::StreamKey;
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
}

/// The node's outputs, started for every stream.
#[derive(Clone)]
pub struct Outputs {
    list: Arc<Vec<Arc<dyn Output>>>,
    pool: ArbiterPool,
    directory: Directory,
    counters: Arc<NodeCounters>,
    max_behind: Duration,
}

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
        Self { list: Arc::new(list), pool, directory, counters, max_behind }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Tells every output that the stream `key` ended.
    pub(crate) fn ended(&self, key: &StreamKey) {
        for output in self.list.iter() {
            output.ended(key);
        }
    }

    /// Starts every output for the stream `key` (its directory `entry`).
    pub(crate) fn start(&self, key: &StreamKey, entry: &StreamEntry, replica: bool) {
        for output in self.list.iter() {
            let stream = OutputStream {
                key: key.clone(),
                stats: Arc::clone(&entry.stats),
                replica,
                restarts: 0,
            };
            self.run(Arc::clone(output), stream, entry.clone(), Restarts::default());
        }
    }

    fn run(
        &self,
        output: Arc<dyn Output>,
        stream: OutputStream,
        entry: StreamEntry,
        history: Restarts,
    ) {
        let Some(sink) = output.open(&stream) else { return };
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
        self.run(output, stream, entry, history);
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
