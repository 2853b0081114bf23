//! [`RecorderActor`]: one stream's recording as a named actor, on the node that records it.
//!
//! It claims `recorder/{app}/{key}` in the registry when the recording starts, so a stream
//! is recorded once in the whole cluster, and keeps the lease while the recording lasts
//! (a restarted writer, after a panic, keeps recording under the same claim). Until the
//! claim is decided the writer waits at its [`Gate`] (frames queue); a name held by
//! another node closes the gate and nothing is written here. Anywhere in the cluster,
//! `Node::recorder_ref(key)` reaches it by name: [`GetRecording`] (`recorder.status`) and
//! [`StopRecording`] (`recorder.stop`). Starting a recording is the stream's business
//! (`zenlive_actors::stream::SetOutput`), since a recorder that does not run has no name.
//!
//! [`Recordings`] is the node's table of them, by stream: what the recorder output, the
//! sink (which polls [`Active::stop_requested`] on every frame) and the typed refs read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use zenlive_actors::lease::{LeaseKeeper, Renewal, LEASE_RENEW_INTERVAL};
use zenlive_actors::{NamedActor, RemoteMessage, StreamKey};
use zenlive_registry::{ActorKey, ActorKind, NodeId, Registry, RegistryError, ACTOR_LEASE_TTL};

use super::writer::{Exit, Gate, WriterState};

/// One stream's recording on this node, shared by its actor, its output and its sink.
#[derive(Debug)]
pub struct Active {
    /// The stream.
    pub key: StreamKey,
    /// The claim's decision, which every writer of this recording waits for.
    pub gate: Arc<Gate>,
    /// The container, for the status (`fmp4`, `ts`, `flv`).
    pub format: &'static str,
    /// When the recording started.
    pub since: SystemTime,
    /// When the publish it records started (a new publish of the stream is a new
    /// recording).
    pub publish: SystemTime,
    stop: AtomicBool,
    writer: Mutex<Option<Arc<WriterState>>>,
    addr: Mutex<Option<Addr<RecorderActor>>>,
}

impl Active {
    /// Whether the recording was asked to stop (the sink closes at its next frame).
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Whether a writer runs for it now.
    pub fn writing(&self) -> bool {
        self.writer.lock().as_ref().is_some_and(|w| !w.exited.load(Ordering::Acquire))
    }

    /// Whether it records now: a writer runs and no stop was asked.
    pub fn running(&self) -> bool {
        !self.stop_requested() && self.writing()
    }

    /// The writer now running for it (a new one after a panic).
    pub fn set_writer(&self, state: Arc<WriterState>) {
        *self.writer.lock() = Some(state);
    }

    /// Asks it to stop; whether it was recording.
    pub fn stop(&self) -> bool {
        let was = self.running();
        self.stop.store(true, Ordering::Release);
        was
    }

    fn status(&self, node: &NodeId) -> RecordingStatus {
        let writer = self.writer.lock().clone();
        let (segments, bytes) = writer.map_or((0, 0), |w| {
            (w.segments.load(Ordering::Relaxed), w.written.load(Ordering::Relaxed))
        });
        RecordingStatus {
            node: node.to_string(),
            format: self.format.to_owned(),
            since: crate::hooks::types::unix_seconds(self.since),
            segments,
            bytes,
            stopping: self.stop_requested(),
        }
    }
}

/// The node's recordings by stream.
#[derive(Debug, Clone, Default)]
pub struct Recordings(Arc<Mutex<HashMap<StreamKey, Arc<Active>>>>);

impl Recordings {
    /// The recording of `key` on this node whose actor still runs, if any.
    pub fn get(&self, key: &StreamKey) -> Option<Arc<Active>> {
        let mut table = self.0.lock();
        let active = table.get(key)?;
        if active.addr.lock().as_ref().is_some_and(Addr::connected) {
            return Some(Arc::clone(active));
        }
        table.remove(key);
        None
    }

    /// The actor of `key`'s recording here, for typed refs.
    pub fn actor(&self, key: &StreamKey) -> Option<Addr<RecorderActor>> {
        self.get(key)?.addr.lock().clone()
    }

    /// Starts recording the publish of `key` that started at `publish` here: a new
    /// [`Active`] (in place of an earlier publish's, which finishes on its own) and its
    /// actor, which claims the name. Call it on an actix arbiter.
    pub fn begin(
        &self,
        key: &StreamKey,
        publish: SystemTime,
        format: &'static str,
        registry: Arc<dyn Registry>,
        node: NodeId,
    ) -> Arc<Active> {
        let active = Arc::new(Active {
            key: key.clone(),
            gate: Arc::new(Gate::default()),
            format,
            since: SystemTime::now(),
            publish,
            stop: AtomicBool::new(false),
            writer: Mutex::new(None),
            addr: Mutex::new(None),
        });
        let actor = RecorderActor {
            active: Arc::clone(&active),
            recordings: self.clone(),
            registry,
            node,
            keeper: None,
        };
        *active.addr.lock() = Some(actor.start());
        self.0.lock().insert(key.clone(), Arc::clone(&active));
        active
    }

    /// How a writer of `active` ending is told to its actor.
    pub fn on_exit(active: &Arc<Active>) -> Box<dyn FnOnce(Exit) + Send> {
        let addr = active.addr.lock().clone();
        Box::new(move |exit| {
            if let Some(addr) = addr {
                addr.do_send(WriterExited(exit));
            }
        })
    }

    /// The stream `key` ended: a recording whose writer is gone already (given up after
    /// crashes) ends too.
    pub fn stream_ended(&self, key: &StreamKey) {
        let Some(active) = self.get(key) else { return };
        if !active.writing() {
            if let Some(addr) = active.addr.lock().as_ref() {
                addr.do_send(WriterExited(Exit::Finished));
            }
        }
    }

    fn remove(&self, active: &Arc<Active>) {
        let mut table = self.0.lock();
        if table.get(&active.key).is_some_and(|a| Arc::ptr_eq(a, active)) {
            table.remove(&active.key);
        }
    }
}

/// What [`GetRecording`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingStatus {
    /// The node recording it.
    pub node: String,
    /// The container (`fmp4`, `ts`, `flv`).
    pub format: String,
    /// When the recording started, in seconds since the Unix epoch.
    pub since: f64,
    /// Segments its current writer finished (a writer restarted after a panic counts
    /// its own).
    pub segments: u64,
    /// Bytes its current writer wrote.
    pub bytes: u64,
    /// A stop was asked and the recording is finishing.
    pub stopping: bool,
}

/// Asks how the recording goes. Remote: `recorder.status`.
#[derive(Debug, Clone, Copy, Message, Serialize, Deserialize)]
#[rtype(result = "RecordingStatus")]
pub struct GetRecording;

impl RemoteMessage for GetRecording {
    const NAME: &'static str = "recorder.status";
}

/// Stops the recording (the open segment is finished first); answers whether it was
/// recording. Remote: `recorder.stop`.
#[derive(Debug, Clone, Copy, Message, Serialize, Deserialize)]
#[rtype(result = "bool")]
pub struct StopRecording;

impl RemoteMessage for StopRecording {
    const NAME: &'static str = "recorder.stop";
}

/// A writer thread of the recording ended.
#[derive(Message)]
#[rtype(result = "()")]
struct WriterExited(Exit);

/// The lease keeper's news.
#[derive(Message)]
#[rtype(result = "()")]
struct LeaseNews(Renewal);

/// See the module docs.
pub struct RecorderActor {
    active: Arc<Active>,
    recordings: Recordings,
    registry: Arc<dyn Registry>,
    node: NodeId,
    keeper: Option<LeaseKeeper>,
}

impl NamedActor for RecorderActor {
    const KIND: ActorKind = ActorKind::Recorder;
}

impl Actor for RecorderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.claim(0, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Undecided (stopped before the claim answered): the writer must not wait on.
        self.active.gate.set(false);
        self.recordings.remove(&self.active);
        // Dropping the keeper releases the name.
        self.keeper.take();
    }
}

/// How often a claim of a name this node still holds (the previous publish's recorder,
/// finishing its last segment) is tried again, and how many times.
const RECLAIM_PAUSE: Duration = Duration::from_millis(250);
const RECLAIM_ATTEMPTS: u32 = 40;

impl RecorderActor {
    /// Claims the recorder's name (attempt `attempt`), then opens or closes the gate.
    fn claim(&mut self, attempt: u32, ctx: &mut Context<Self>) {
        let name = ActorKey::new(ActorKind::Recorder, self.active.key.to_string());
        let registry = Arc::clone(&self.registry);
        let node = self.node.clone();
        let claim = async move { registry.claim(&name, &node, ACTOR_LEASE_TTL).await };
        ctx.wait(claim.into_actor(self).map(move |claimed, act, ctx| {
            let key = &act.active.key;
            match claimed {
                Ok(lease) => {
                    let me = ctx.address();
                    act.keeper = Some(LeaseKeeper::start(
                        Arc::clone(&act.registry),
                        lease,
                        LEASE_RENEW_INTERVAL,
                        move |news| me.do_send(LeaseNews(news)),
                    ));
                    act.active.gate.set(true);
                }
                Err(RegistryError::AlreadyOwned { owner, .. })
                    if owner.node == act.node && attempt < RECLAIM_ATTEMPTS =>
                {
                    // This node's recorder of the previous publish lets go once its last
                    // segment is on disk.
                    ctx.run_later(RECLAIM_PAUSE, move |act, ctx| act.claim(attempt + 1, ctx));
                }
                Err(RegistryError::AlreadyOwned { owner, .. }) => {
                    tracing::warn!(stream = %key, node = %owner.node, "this stream is recorded by another node already; not recording it here");
                    act.active.gate.set(false);
                    act.active.stop();
                    ctx.stop();
                }
                Err(error) => {
                    // Recording twice beats losing the recording.
                    tracing::warn!(stream = %key, %error, "cannot claim the recorder's name in the registry; recording anyway");
                    act.active.gate.set(true);
                }
            }
        }));
    }
}

impl Handler<GetRecording> for RecorderActor {
    type Result = MessageResult<GetRecording>;

    fn handle(&mut self, _msg: GetRecording, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.active.status(&self.node))
    }
}

impl Handler<StopRecording> for RecorderActor {
    type Result = bool;

    fn handle(&mut self, _msg: StopRecording, _ctx: &mut Self::Context) -> bool {
        tracing::info!(stream = %self.active.key, "recording stopped on request");
        self.active.stop()
    }
}

impl Handler<WriterExited> for RecorderActor {
    type Result = ();

    fn handle(&mut self, msg: WriterExited, ctx: &mut Self::Context) {
        // After a panic the output's supervision starts another writer under this claim.
        if msg.0 != Exit::Panicked {
            ctx.stop();
        }
    }
}

impl Handler<LeaseNews> for RecorderActor {
    type Result = ();

    fn handle(&mut self, msg: LeaseNews, ctx: &mut Self::Context) {
        let key = &self.active.key;
        match msg.0 {
            Renewal::Renewed => {}
            Renewal::Unproven(error) => {
                tracing::warn!(stream = %key, %error, "cannot renew the recorder's lease; recording goes on");
            }
            Renewal::Reclaimed(lease) => {
                tracing::warn!(stream = %key, epoch = lease.epoch, "the recorder's lease lapsed; re-claimed");
            }
            Renewal::Lost(error) => {
                // Another node records the stream now: stop here (self-fencing).
                tracing::error!(stream = %key, %error, "the recorder's lease is lost; stopping this recording");
                self.keeper = None;
                self.active.stop();
                ctx.stop();
            }
        }
    }
}
