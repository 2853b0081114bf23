//! [`StreamSupervisor`]: starts stream actors, owns their registry leases, and restarts the
//! ones that crash; [`Directory`]: this node's map from stream names to live actors.
//!
//! actix's own `Supervisor` does not help here: a panic in a handler drops the actor and
//! nothing restarts it. So every stream actor carries a notice that reaches this supervisor
//! when the actor goes away, saying whether it stopped cleanly. A crashed stream is started
//! again with fresh state on the same arbiter, under a freshly claimed lease (a new fencing
//! epoch), and the restart is counted. Its publisher's connection finds the new actor in the
//! [`Directory`] and attaches again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::fut::LocalBoxActorFuture;
use actix::prelude::*;
use actix_rt::ArbiterHandle;
use parking_lot::RwLock;
use zenlive_cluster::{
    ActorKey, ActorKind, Lease, NodeId, Registry, RegistryError, ACTOR_LEASE_TTL, NODE_TTL,
};

use crate::events::{ActorType, EventSink, NodeCounters, StreamEvent};
use crate::key::StreamKey;
use crate::stats::StreamStats;
use crate::stream::{Attach, IngestHandle, PublisherHandle, StreamActor, StreamError, TakeOver};
use crate::MediaTime;

/// How often the supervisor renews its streams' leases.
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(3);

/// A live stream actor as the directory knows it.
#[derive(Clone)]
pub struct StreamEntry {
    /// The actor.
    pub addr: Addr<StreamActor>,
    /// Unique per actor instance on this node.
    pub generation: u64,
    /// The generation of the first instance of this stream; restarts keep it, so viewers
    /// can tell a restarted stream from a new one with the same name.
    pub lineage: u64,
    /// The stream's statistics, kept across restarts.
    pub stats: Arc<StreamStats>,
    /// This instance's frame path (see [`crate::stream`]).
    pub ingest: IngestHandle,
}

/// This node's live streams by name. Written only by the supervisor; read from any thread.
/// A read lock around a map is right here: lookups are frequent and short, writes happen
/// once per stream start or end.
#[derive(Clone, Default)]
pub struct Directory {
    streams: Arc<RwLock<HashMap<StreamKey, StreamEntry>>>,
}

impl Directory {
    /// The live actor for `key`, if any.
    pub fn get(&self, key: &StreamKey) -> Option<StreamEntry> {
        self.streams.read().get(key).cloned()
    }

    /// Every live stream with its entry, sorted by name.
    pub fn entries(&self) -> Vec<(StreamKey, StreamEntry)> {
        let mut entries: Vec<_> =
            self.streams.read().iter().map(|(k, e)| (k.clone(), e.clone())).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }

    /// The names of every live stream, sorted.
    pub fn keys(&self) -> Vec<StreamKey> {
        let mut keys: Vec<_> = self.streams.read().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// How many streams are live.
    pub fn len(&self) -> usize {
        self.streams.read().len()
    }

    /// Whether no stream is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, key: StreamKey, entry: StreamEntry) {
        self.streams.write().insert(key, entry);
    }

    fn remove_generation(&self, key: &StreamKey, generation: u64) {
        let mut streams = self.streams.write();
        if streams.get(key).is_some_and(|e| e.generation == generation) {
            streams.remove(key);
        }
    }
}

/// What [`StartStream`] answers.
#[derive(Clone)]
pub struct Started {
    /// The stream.
    pub entry: StreamEntry,
    /// True when the publisher took over a relayed copy.
    pub took_over: bool,
    /// The copy's last frame timestamp, for the publisher to continue from.
    pub continue_after: Option<MediaTime>,
}

/// Why a stream could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// Someone is publishing this name already (here or on another node).
    #[error("stream {key} is already being published")]
    AlreadyPublishing {
        /// The stream.
        key: StreamKey,
    },
    /// Another node holds the name.
    #[error("stream {key} is already being published on node {node}; if that node has stopped, the name is free within {} s of its last heartbeat", NODE_TTL.as_secs())]
    OwnedElsewhere {
        /// The stream.
        key: StreamKey,
        /// The owner node.
        node: String,
    },
    /// The registry could not grant the name.
    #[error("registry refused {key}: {source}")]
    Registry {
        /// The stream.
        key: StreamKey,
        /// The registry's answer.
        source: RegistryError,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Starts a stream for a publisher: claims the name, starts the actor on `arbiter`, attaches
/// the publisher. Answers the new stream's entry. When the name is a relayed copy here (its
/// origin node died and the publisher reconnected to this node), the publisher takes that
/// copy over instead: same actor, same viewers, same HLS playlist.
#[derive(Message)]
#[rtype(result = "Result<Started, StartError>")]
pub struct StartStream {
    /// The stream.
    pub key: StreamKey,
    /// Its publisher.
    pub publisher: PublisherHandle,
    /// Where the actor runs: the publisher connection's arbiter.
    pub arbiter: ArbiterHandle,
    /// A local copy of a stream owned by another node (an edge relay): it claims no name
    /// in the registry, since the origin holds the lease.
    pub replica: bool,
}

/// A stream actor went away (sent from its drop notice).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamStopped {
    /// The stream.
    pub key: StreamKey,
    /// Which instance.
    pub generation: u64,
    /// The end event, when it stopped cleanly.
    pub ended: Option<StreamEvent>,
    /// True when the actor was dropped without stopping (a panic in a handler).
    pub crashed: bool,
}

/// Ends every stream (clean shutdown); answers when all have been asked to stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

struct Supervised {
    lease: Option<Lease>,
    /// A relay's local copy: never claims the name.
    replica: bool,
    arbiter: ArbiterHandle,
    generation: u64,
    lineage: u64,
    addr: Addr<StreamActor>,
    stats: Arc<StreamStats>,
}

/// Starts, tracks and restarts this node's stream actors. See the module docs.
pub struct StreamSupervisor {
    node: NodeId,
    registry: Arc<dyn Registry>,
    directory: Directory,
    events: Arc<dyn EventSink>,
    counters: Arc<NodeCounters>,
    streams: HashMap<StreamKey, Supervised>,
    next_generation: u64,
    shutting_down: bool,
}

impl StreamSupervisor {
    /// A supervisor for this node; `directory` is shared with the protocol front-ends.
    pub fn new(
        node: NodeId,
        registry: Arc<dyn Registry>,
        directory: Directory,
        events: Arc<dyn EventSink>,
        counters: Arc<NodeCounters>,
    ) -> Self {
        Self {
            node,
            registry,
            directory,
            events,
            counters,
            streams: HashMap::new(),
            next_generation: 1,
            shutting_down: false,
        }
    }

    fn spawn_actor(
        &mut self,
        key: &StreamKey,
        arbiter: &ArbiterHandle,
        stats: &Arc<StreamStats>,
        ctx: &Context<Self>,
    ) -> (u64, Addr<StreamActor>, IngestHandle) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let recipient = ctx.address().recipient();
        let actor_key = key.clone();
        let ingest = IngestHandle::new(Arc::clone(stats));
        let actor_ingest = ingest.clone();
        let stats = Arc::clone(stats);
        let alive = self.counters.actor(ActorType::Stream);
        let addr = StreamActor::start_in_arbiter(arbiter, move |_| {
            StreamActor::new(actor_key, generation, recipient, stats, actor_ingest, alive)
        });
        (generation, addr, ingest)
    }

    fn restart(&mut self, key: StreamKey, ctx: &mut Context<Self>) {
        let Some(old) = self.streams.remove(&key) else { return };
        NodeCounters::add(&self.counters.stream_restarts, 1);
        old.stats.restarted();
        let (generation, addr, ingest) = self.spawn_actor(&key, &old.arbiter, &old.stats, ctx);
        tracing::error!(stream = %key, old_generation = old.generation, generation, "stream actor crashed; restarted with fresh state");
        self.directory.insert(
            key.clone(),
            StreamEntry {
                addr: addr.clone(),
                generation,
                lineage: old.lineage,
                stats: Arc::clone(&old.stats),
                ingest,
            },
        );
        self.streams.insert(
            key.clone(),
            Supervised {
                lease: None,
                replica: old.replica,
                arbiter: old.arbiter,
                generation,
                lineage: old.lineage,
                addr,
                stats: old.stats,
            },
        );
        if old.replica {
            return;
        }
        // Re-claim the name under a new epoch, so anything the crashed instance left behind
        // is fenced off.
        let registry = Arc::clone(&self.registry);
        let node = self.node.clone();
        let actor_key = ActorKey::new(ActorKind::Stream, key.to_string());
        let reclaim = async move {
            if let Some(lease) = old.lease {
                registry.release(&lease).await?;
            }
            registry.claim(&actor_key, &node, ACTOR_LEASE_TTL).await
        };
        ctx.spawn(reclaim.into_actor(self).map(move |result, act, _ctx| match result {
            Ok(lease) => match act.streams.get_mut(&key) {
                Some(s) if s.generation == generation => s.lease = Some(lease),
                _ => {
                    let registry = Arc::clone(&act.registry);
                    actix_rt::spawn(async move { registry.release(&lease).await });
                }
            },
            Err(error) => {
                tracing::error!(stream = %key, %error, "could not re-claim a restarted stream; ending it");
                if let Some(s) = act.streams.get(&key) {
                    s.addr.do_send(crate::stream::Kick { reason: "lease lost".to_owned() });
                }
            }
        }));
    }

    fn renew_leases(&mut self, ctx: &mut Context<Self>) {
        let leases: Vec<(StreamKey, Lease)> = self
            .streams
            .iter()
            .filter_map(|(k, s)| s.lease.clone().map(|l| (k.clone(), l)))
            .collect();
        if leases.is_empty() {
            return;
        }
        let registry = Arc::clone(&self.registry);
        let node = self.node.clone();
        let renewals = async move {
            let mut outcomes = Vec::new();
            for (key, lease) in leases {
                let outcome = match registry.renew(&lease).await {
                    Ok(()) => continue,
                    // Redis is unreachable: nobody can claim the name meanwhile, so the
                    // stream keeps flowing and the lease is proven again once it returns.
                    Err(error @ RegistryError::Unavailable { .. }) => Renewal::Unproven(error),
                    // The lease lapsed (the node was paused, or Redis restarted empty). If
                    // the name is still free, it is ours again under a new epoch; if another
                    // node took it, we must stop: never two owners.
                    Err(lost) => match registry.claim(&lease.key, &node, lease.ttl).await {
                        Ok(new) => Renewal::Reclaimed(new),
                        // This node was declared dead and has not registered again yet (the
                        // heartbeat does that within a third of the node TTL): stop only if
                        // another node owns the name meanwhile, else try again next round.
                        Err(error @ RegistryError::NodeNotRegistered { .. }) => {
                            match registry.lookup(&lease.key).await {
                                Ok(Some(owner)) if owner.node != node => {
                                    Renewal::Lost(format!("{lost}; now owned by {}", owner.node))
                                }
                                _ => Renewal::Unproven(error),
                            }
                        }
                        Err(error) => Renewal::Lost(format!("{lost}; re-claim: {error}")),
                    },
                };
                outcomes.push((key, lease.epoch, outcome));
            }
            outcomes
        };
        ctx.spawn(renewals.into_actor(self).map(|outcomes, act, _ctx| {
            for (key, epoch, outcome) in outcomes {
                let Some(s) = act.streams.get_mut(&key) else { continue };
                if s.lease.as_ref().is_none_or(|l| l.epoch != epoch) {
                    continue;
                }
                match outcome {
                    Renewal::Unproven(error) => {
                        tracing::warn!(stream = %key, %error, "cannot renew the stream's lease; it keeps flowing");
                    }
                    Renewal::Reclaimed(lease) => {
                        tracing::warn!(stream = %key, old_epoch = epoch, epoch = lease.epoch, "stream lease lapsed; re-claimed");
                        NodeCounters::add(&act.counters.lease_losses, 1);
                        s.lease = Some(lease);
                    }
                    Renewal::Lost(error) => {
                        // Self-fencing: without a lease we may not act as the owner.
                        tracing::error!(stream = %key, %error, "lease lost; ending stream");
                        NodeCounters::add(&act.counters.lease_losses, 1);
                        s.lease = None;
                        s.addr.do_send(crate::stream::Kick { reason: "lease lost".to_owned() });
                    }
                }
            }
        }));
    }
}

/// What a failed lease renewal came to.
enum Renewal {
    /// The registry could not be asked.
    Unproven(RegistryError),
    /// The lease had lapsed and the name was claimed again.
    Reclaimed(Lease),
    /// Another node owns the name now (or it could not be claimed).
    Lost(String),
}

impl Actor for StreamSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(LEASE_RENEW_INTERVAL, |act, ctx| act.renew_leases(ctx));
    }
}

impl Handler<StartStream> for StreamSupervisor {
    type Result = ResponseActFuture<Self, Result<Started, StartError>>;

    fn handle(&mut self, msg: StartStream, _ctx: &mut Self::Context) -> Self::Result {
        if self.shutting_down {
            return Box::pin(fut::ready(Err(StartError::ShuttingDown)));
        }
        let registry = Arc::clone(&self.registry);
        let node = self.node.clone();
        let actor_key = ActorKey::new(ActorKind::Stream, msg.key.to_string());
        let replica = msg.replica;
        let claim = async move {
            if replica {
                return Ok(None);
            }
            registry.claim(&actor_key, &node, ACTOR_LEASE_TTL).await.map(Some)
        };
        Box::pin(claim.into_actor(self).then(
            move |claimed, act, ctx| -> LocalBoxActorFuture<Self, Result<Started, StartError>> {
                let key = msg.key;
                let lease = match claimed {
                    Ok(lease) => lease,
                    Err(RegistryError::AlreadyOwned { owner, .. }) if owner.node != act.node => {
                        let node = owner.node.to_string();
                        return Box::pin(fut::ready(Err(StartError::OwnedElsewhere { key, node })));
                    }
                    Err(RegistryError::AlreadyOwned { .. }) => {
                        return Box::pin(fut::ready(Err(StartError::AlreadyPublishing { key })));
                    }
                    Err(source) => {
                        return Box::pin(fut::ready(Err(StartError::Registry { key, source })))
                    }
                };
                if !replica {
                    if let Some(taking) = act.take_over(&key, lease.clone(), &msg.publisher) {
                        let publisher = msg.publisher;
                        return Box::pin(taking.into_actor(act).map(move |taken, act, _ctx| {
                            let (entry, continue_after) = taken?;
                            act.events.stream_event(&StreamEvent::Started {
                                key,
                                protocol: publisher.protocol,
                                peer: publisher.peer,
                                user: publisher.user,
                                at: SystemTime::now(),
                            });
                            Ok(Started { entry, took_over: true, continue_after })
                        }));
                    }
                }
                let stats = Arc::new(StreamStats::for_publisher(
                    msg.publisher.protocol,
                    msg.publisher.user.clone(),
                    msg.publisher.peer,
                ));
                let (generation, addr, ingest) = act.spawn_actor(&key, &msg.arbiter, &stats, ctx);
                let entry = StreamEntry {
                    addr: addr.clone(),
                    generation,
                    lineage: generation,
                    stats: Arc::clone(&stats),
                    ingest,
                };
                act.directory.insert(key.clone(), entry.clone());
                act.streams.insert(
                    key.clone(),
                    Supervised {
                        lease,
                        replica,
                        arbiter: msg.arbiter,
                        generation,
                        lineage: generation,
                        addr: addr.clone(),
                        stats,
                    },
                );
                let peer = msg.publisher.peer;
                let protocol = msg.publisher.protocol;
                let user = msg.publisher.user.clone();
                let attach = addr.send(Attach { publisher: msg.publisher });
                Box::pin(attach.into_actor(act).map(move |attached, act, _ctx| match attached {
                    Ok(Ok(())) => {
                        act.events.stream_event(&StreamEvent::Started {
                            key,
                            protocol,
                            peer,
                            user,
                            at: SystemTime::now(),
                        });
                        Ok(Started { entry, took_over: false, continue_after: None })
                    }
                    // A fresh actor has no publisher, so this is unreachable unless it died.
                    Ok(Err(StreamError::AlreadyPublishing { key })) => {
                        Err(StartError::AlreadyPublishing { key })
                    }
                    Err(_) => Err(StartError::AlreadyPublishing { key }),
                }))
            },
        ))
    }
}

impl StreamSupervisor {
    /// When `key` is a live relayed copy here, makes it this node's own stream under
    /// `lease` with `publisher` (see [`StartStream`]); answers the copy's entry and last
    /// timestamp once the actor switched publishers. `None` when there is no such copy.
    fn take_over(
        &mut self,
        key: &StreamKey,
        lease: Option<Lease>,
        publisher: &PublisherHandle,
    ) -> Option<impl Future<Output = Result<(StreamEntry, Option<MediaTime>), StartError>>> {
        let entry = self.directory.get(key)?;
        let copy = self
            .streams
            .get_mut(key)
            .filter(|s| s.replica && s.generation == entry.generation && s.addr.connected())?;
        copy.replica = false;
        copy.lease = lease;
        copy.stats.set_publisher(publisher.protocol, publisher.user.clone(), publisher.peer);
        let taking = copy.addr.send(TakeOver { publisher: publisher.clone() });
        let key = key.clone();
        Some(async move {
            match taking.await {
                Ok(continue_after) => Ok((entry, continue_after)),
                // The copy ended meanwhile; its stop releases the lease.
                Err(_) => Err(StartError::AlreadyPublishing { key }),
            }
        })
    }
}

impl Handler<StreamStopped> for StreamSupervisor {
    type Result = ();

    fn handle(&mut self, msg: StreamStopped, ctx: &mut Self::Context) {
        let current = self.streams.get(&msg.key).is_some_and(|s| s.generation == msg.generation);
        if !current {
            return;
        }
        if msg.crashed && !self.shutting_down {
            self.restart(msg.key, ctx);
            return;
        }
        // The event first: whoever waits for the directory to empty (a shutdown) then
        // knows every end event has been handed out.
        if let Some(ended) = msg.ended {
            self.events.stream_event(&ended);
        }
        self.directory.remove_generation(&msg.key, msg.generation);
        if let Some(stopped) = self.streams.remove(&msg.key) {
            if let Some(lease) = stopped.lease {
                let registry = Arc::clone(&self.registry);
                ctx.spawn(
                    async move {
                        if let Err(error) = registry.release(&lease).await {
                            tracing::warn!(%error, "could not release a stream lease; it will expire");
                        }
                    }
                    .into_actor(self),
                );
            }
        }
    }
}

impl Handler<Shutdown> for StreamSupervisor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) {
        self.shutting_down = true;
        for s in self.streams.values() {
            s.addr.do_send(crate::stream::Kick { reason: "node shutting down".to_owned() });
        }
    }
}
