//! [`StreamSupervisor`]: starts stream actors, owns their registry leases, and restarts the
//! ones that crash, keeping the [`Directory`] (this node's streams by name) up to date.
//!
//! actix's own `Supervisor` does not help here: a panic in a handler drops the actor and
//! nothing restarts it. So every stream actor carries a notice that reaches this supervisor
//! when the actor goes away, saying whether it stopped cleanly. A crashed stream is started
//! again with fresh state on the same arbiter, under a freshly claimed lease (a new fencing
//! epoch), and the restart is counted. Its publisher's connection finds the new actor in the
//! [`Directory`] and attaches again.
//!
//! Each stream's lease is kept by a [`LeaseKeeper`], which reports here only when its lease
//! was claimed again or lost (then the stream is ended: self-fencing).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use actix::fut::LocalBoxActorFuture;
use actix::prelude::*;
use actix_rt::ArbiterHandle;
use zenlive_media::MediaTime;
use zenlive_registry::{
    ActorKey, ActorKind, Lease, NodeId, Registry, RegistryError, ACTOR_LEASE_TTL, NODE_TTL,
};

use crate::directory::{Directory, StreamEntry};
use crate::events::{ActorType, EventSink, NodeCounters, StreamEvent};
use crate::key::StreamKey;
use crate::lease::{LeaseKeeper, Renewal, LEASE_RENEW_INTERVAL};
use crate::output::Outputs;
use crate::output_request::OutputChoices;
use crate::stats::StreamStats;
use crate::stream::{
    Attach, IngestHandle, PublisherHandle, StreamActor, StreamError, StreamStopped, TakeOver,
};

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
        /// The registry's answer (boxed: an error naming an application's actor kind is
        /// larger than the rest of this enum).
        source: Box<RegistryError>,
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
    /// Outputs chosen on or off for this stream (a publish decider's answer).
    pub outputs: OutputChoices,
}

/// Ends every stream (clean shutdown); answers when all have been asked to stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// A stream's lease keeper reports (see [`LeaseKeeper`]).
#[derive(Message)]
#[rtype(result = "()")]
struct LeaseReport {
    /// The stream.
    key: StreamKey,
    /// The instance whose lease it is.
    generation: u64,
    /// What the renewal came to.
    renewal: Renewal,
}

struct Supervised {
    /// Keeps the stream's name; dropping it releases the lease. `None` for a replica, and
    /// while a restarted stream claims its name again.
    lease: Option<LeaseKeeper>,
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
    outputs: Option<Outputs>,
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
            outputs: None,
        }
    }

    /// Starts `outputs` for every stream from now on (see [`crate::output`]).
    pub fn with_outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = Some(outputs);
        self
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
        let control = self.outputs.as_ref().map(Outputs::control);
        let addr = StreamActor::start_in_arbiter(arbiter, move |_| {
            StreamActor::new(actor_key, generation, recipient, stats, actor_ingest, alive)
                .with_outputs(control)
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
            if let Some(keeper) = old.lease {
                keeper.release().await?;
            }
            registry.claim(&actor_key, &node, ACTOR_LEASE_TTL).await
        };
        ctx.spawn(reclaim.into_actor(self).map(move |result, act, ctx| match result {
            Ok(lease) => match act.streams.get(&key) {
                Some(s) if s.generation == generation => {
                    let keeper = act.keep(&key, generation, lease, ctx);
                    if let Some(s) = act.streams.get_mut(&key) {
                        s.lease = Some(keeper);
                    }
                }
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

    /// A keeper for `lease`, the name of `key`'s instance `generation`, reporting here.
    fn keep(
        &self,
        key: &StreamKey,
        generation: u64,
        lease: Lease,
        ctx: &Context<Self>,
    ) -> LeaseKeeper {
        let supervisor = ctx.address();
        let key = key.clone();
        LeaseKeeper::start(
            Arc::clone(&self.registry),
            lease,
            LEASE_RENEW_INTERVAL,
            move |renewal| {
                supervisor.do_send(LeaseReport { key: key.clone(), generation, renewal });
            },
        )
    }
}

impl Actor for StreamSupervisor {
    type Context = Context<Self>;
}

impl Handler<LeaseReport> for StreamSupervisor {
    type Result = ();

    fn handle(&mut self, msg: LeaseReport, _ctx: &mut Self::Context) {
        let LeaseReport { key, generation, renewal } = msg;
        let Some(s) = self.streams.get_mut(&key).filter(|s| s.generation == generation) else {
            return;
        };
        match renewal {
            Renewal::Renewed => {}
            Renewal::Unproven(error) => {
                tracing::warn!(stream = %key, %error, "cannot renew the stream's lease; it keeps flowing");
            }
            Renewal::Reclaimed(lease) => {
                tracing::warn!(stream = %key, epoch = lease.epoch, "stream lease lapsed; re-claimed");
                NodeCounters::add(&self.counters.lease_losses, 1);
            }
            Renewal::Lost(error) => {
                // Self-fencing: without a lease we may not act as the owner.
                tracing::error!(stream = %key, %error, "lease lost; ending stream");
                NodeCounters::add(&self.counters.lease_losses, 1);
                s.lease = None;
                s.addr.do_send(crate::stream::Kick { reason: "lease lost".to_owned() });
            }
        }
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
                        return Box::pin(fut::ready(Err(StartError::Registry {
                            key,
                            source: Box::new(source),
                        })))
                    }
                };
                if !replica {
                    if let Some(taking) = act.take_over(&key, lease.clone(), &msg.publisher, ctx) {
                        let publisher = msg.publisher;
                        let choices = msg.outputs;
                        return Box::pin(taking.into_actor(act).map(move |taken, act, _ctx| {
                            let (entry, continue_after) = taken?;
                            // Outputs the relayed copy did not run (the recorder) start now.
                            if let Some(outputs) = &act.outputs {
                                outputs.promoted(&key, &entry, &choices);
                            }
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
                let lease = lease.map(|lease| act.keep(&key, generation, lease, ctx));
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
                let choices = msg.outputs;
                let attach = addr.send(Attach { publisher: msg.publisher });
                Box::pin(attach.into_actor(act).map(move |attached, act, _ctx| match attached {
                    Ok(Ok(())) => {
                        if let Some(outputs) = &act.outputs {
                            outputs.start(&key, &entry, replica, &choices);
                        }
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
        ctx: &Context<Self>,
    ) -> Option<impl Future<Output = Result<(StreamEntry, Option<MediaTime>), StartError>>> {
        let entry = self.directory.get(key)?;
        self.streams
            .get(key)
            .filter(|s| s.replica && s.generation == entry.generation && s.addr.connected())?;
        let lease = lease.map(|lease| self.keep(key, entry.generation, lease, ctx));
        let copy = self.streams.get_mut(key)?;
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
            if let Some(outputs) = &self.outputs {
                outputs.ended(&msg.key);
            }
            self.events.stream_event(&ended);
        }
        self.directory.remove_generation(&msg.key, msg.generation);
        // Dropping the stream's lease keeper releases its lease.
        self.streams.remove(&msg.key);
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
