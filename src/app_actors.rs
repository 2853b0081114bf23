//! Application actors: kinds of actors an embedding application registers
//! ([`NodeBuilder::actor_kind`](crate::NodeBuilder::actor_kind) with an [`AppActorKind`]),
//! started by name ([`Node::spawn_named`](crate::Node::spawn_named)), one instance in the
//! whole cluster, supervised like a stream, and reached from every node with
//! [`Node::actor_ref`](crate::Node::actor_ref) (a [`crate::refs::ActorRef`], the same typed
//! reference streams and rooms have).
//!
//! # Where it sits
//! In the SDK facade, beside [`crate::refs`]: a `KindSupervisor` per registered kind and
//! node claims names in the registry (through the node's [`LeaseBook`], so typed messages
//! are fenced on receipt like a stream's), starts instances on the node's arbiters, keeps
//! their leases with a [`LeaseKeeper`], and restarts what panics. The refs' routes find the
//! running instances in a table the supervisor writes ([`Routes`]).
//!
//! # One instance in the cluster
//! [`Node::spawn_named`](crate::Node::spawn_named) claims `app.{kind}:{name}`: the claim is
//! atomic, so a second spawn anywhere answers [`SpawnError::AlreadyRunning`] with the owner.
//! Asking for a ref never starts anything.
//!
//! # Supervision
//! An instance whose handler panics is started again on the same node with fresh state (the
//! factory is called again, with [`StartCause::Restarted`]), under the same lease and epoch,
//! counted in `zenlive_actor_restarts_total{kind="app.{kind}"}`. A message that was being
//! handled answers [`crate::refs::RefError::Stopped`]. More than [`MAX_RESTARTS`] crashes
//! within [`RESTART_WINDOW`] give the name up (an instance that cannot run is a bug, and
//! restarting it in a loop here or elsewhere helps nobody). An instance that stops itself
//! (`ctx.stop()`) ends for good: its name is released (and no longer kept alive).
//!
//! # Failover: keep-alive kinds
//! A kind registered with [`AppActorKind::keep_alive`] is a singleton that must run
//! somewhere: spawning one adds its name to the registry's kept names
//! ([`Registry::keep`]). Every node that registered the kind checks the kept names every
//! [`KEEP_ALIVE_INTERVAL`] and claims each that has no live owner; the node that wins starts
//! it ([`StartCause::TakenOver`]). A node that dies (`kill -9`) loses its registration within
//! the node TTL (6 s), after which its leases count as free, so its kept actors run again on
//! another node within about 7 s, inside the lease TTL (10 s). Refs need not be re-created:
//! a message to a cached owner whose node is gone (connection refused, or no longer
//! registered) was never sent, so the ref looks the owner up again and sends it there at
//! once; any other failure makes the ref forget the owner it cached, and the next message
//! looks it up again.
//!
//! **State is the application's**: an instance started again (after a panic, or on another
//! node) starts from what the factory builds. An actor that must not lose its state persists
//! it (in the application's database) and loads it when it starts: the factory receives a
//! [`StartInfo`] (name, node, fencing epoch, cause) for that, and the epoch lets the
//! application's store refuse writes of an older owner.
//!
//! # Delivery
//! As for every ref: at most once. A call in flight when the owner dies answers
//! [`crate::refs::RefError::Unreachable`] or `Timeout` (the message may or may not have been
//! applied before the crash). Calls made after it died, until the new owner runs, answer
//! `Unreachable` naming the dead node (while the registry still names it as the owner;
//! these messages were not applied) or [`crate::refs::RefError::NotFound`]; from then on
//! they reach the new owner, the first one included.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::dev::channel;
use actix::dev::ToEnvelope;
use actix::prelude::*;
use parking_lot::RwLock;
use tokio::sync::oneshot;
use tokio::time::Instant;
use zenlive_actors::events::NodeCounters;
use zenlive_actors::lease::{LeaseKeeper, Renewal, LEASE_RENEW_INTERVAL};
use zenlive_actors::{ArbiterPool, NamedActor, RemoteMessage};
use zenlive_registry::{
    ActorKey, ActorKind, LeaseBook, NodeId, Owner, Registry, RegistryError, ACTOR_LEASE_TTL,
};

use crate::cluster::Cluster;
use crate::refs::{ActorRef, Locate, Routes};

/// How often a node that runs a keep-alive kind looks for kept names without a live owner.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How many crashes of one instance within [`RESTART_WINDOW`] are restarted.
pub const MAX_RESTARTS: usize = 10;
/// The window [`MAX_RESTARTS`] counts in.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// The longest actor name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Builds an instance of `A` when it starts (the first time, after a crash, on a new node).
type Factory<A> = Arc<dyn Fn(&StartInfo) -> A + Send + Sync>;

/// Why an instance is being started (see [`StartInfo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartCause {
    /// [`Node::spawn_named`](crate::Node::spawn_named) asked for it.
    Spawned,
    /// The previous instance on this node panicked; this one starts with fresh state.
    Restarted,
    /// A keep-alive name whose owner is gone (its node died or left) was claimed here.
    TakenOver,
}

/// What the factory of an application actor is told when an instance starts: the hook to
/// load persisted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartInfo {
    /// The actor's name.
    pub name: String,
    /// The node it runs on.
    pub node: NodeId,
    /// The fencing epoch of its lease: greater than every earlier owner's of the name, so a
    /// store that keeps the greatest epoch it saw can refuse a stale owner's writes.
    pub epoch: u64,
    /// Why it starts.
    pub cause: StartCause,
}

/// Why [`Node::spawn_named`](crate::Node::spawn_named) did not start an actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    /// The kind is not registered on this node ([`NodeBuilder::actor_kind`](crate::NodeBuilder::actor_kind)).
    #[error("actor kind {kind} is not registered on this node")]
    UnknownKind {
        /// The kind asked for.
        kind: ActorKind,
    },
    /// The name is empty or longer than [`MAX_NAME_LEN`] bytes.
    #[error("actor names are 1 to {MAX_NAME_LEN} bytes long")]
    InvalidName,
    /// An instance of that name runs already (here or on another node): the name is claimed
    /// once in the whole cluster. Its ref reaches it.
    #[error("{key} is already running on node {} (epoch {})", owner.node, owner.epoch)]
    AlreadyRunning {
        /// The actor.
        key: ActorKey,
        /// Who runs it.
        owner: Owner,
    },
    /// The registry could not grant the name (it is unreachable, or this node is not
    /// registered right now); nothing was started.
    #[error("the registry could not grant the name: {0}")]
    Registry(RegistryError),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// Why a kind could not be registered (a [`crate::StartError::ActorKind`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// The actor's `NamedActor::KIND` is a built-in kind; application kinds are
    /// `zenlive_registry::app_kind!("name")`.
    #[error("actor kind {0} is built in; an application's kind is app_kind!(\"name\")")]
    BuiltIn(ActorKind),
    /// The kind was registered twice on this node.
    #[error("actor kind {0} is registered twice")]
    Duplicate(ActorKind),
}

/// An application actor kind to register on a node: how to build an instance, which of its
/// messages other nodes may send ([`AppActorKind::message`]), and whether it is kept alive
/// across node failures ([`AppActorKind::keep_alive`]). Register the same kind, with the
/// same messages, on every node that may run it; a node that only sends to it needs no
/// registration ([`Node::actor_ref`](crate::Node::actor_ref) works for any kind).
pub struct AppActorKind<A: NamedActor> {
    factory: Factory<A>,
    messages: Vec<fn(Routes<A>) -> Routes<A>>,
    keep_alive: bool,
}

impl<A: NamedActor> AppActorKind<A> {
    /// A kind whose instances `factory` builds, from what [`StartInfo`] says (the name, and
    /// the cause: load persisted state there). The factory runs on the arbiter the instance
    /// runs on; a panic in it counts as a crash.
    pub fn new(factory: impl Fn(&StartInfo) -> A + Send + Sync + 'static) -> Self {
        Self { factory: Arc::new(factory), messages: Vec::new(), keep_alive: false }
    }

    /// Lets other nodes send `M` to instances of this kind (by `M::NAME`). Messages not
    /// registered reach local instances only; from another node they answer
    /// [`crate::refs::Refusal::UnknownMessage`].
    #[must_use]
    pub fn message<M>(mut self) -> Self
    where
        M: RemoteMessage,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.messages.push(|routes| routes.message::<M>());
        self
    }

    /// Keeps every instance of this kind running somewhere in the cluster: when its node
    /// dies, another node that registered the kind starts it again (module docs,
    /// "Failover"). An instance that stops itself is not kept.
    #[must_use]
    pub fn keep_alive(mut self) -> Self {
        self.keep_alive = true;
        self
    }
}

/// A registered kind, before the node starts (type-erased for the builder).
pub(crate) trait Registration: Send {
    fn kind(&self) -> ActorKind;
    fn start(self: Box<Self>, parts: &Parts) -> Arc<dyn Hosted>;
}

/// What a node lends the kinds it hosts.
#[derive(Clone)]
pub(crate) struct Parts {
    pub node: NodeId,
    pub book: LeaseBook,
    pub cluster: Option<Arc<Cluster>>,
    pub pool: ArbiterPool,
    pub counters: Arc<NodeCounters>,
}

impl<A: NamedActor> Registration for AppActorKind<A> {
    fn kind(&self) -> ActorKind {
        A::KIND
    }

    fn start(self: Box<Self>, parts: &Parts) -> Arc<dyn Hosted> {
        let table: Table<A> = Arc::default();
        let instances = Arc::clone(&table);
        let locate: Locate<A> = Arc::new(move |name: &str| {
            instances.read().get(name).filter(|addr| addr.connected()).cloned()
        });
        let routes =
            Routes::new(parts.node.clone(), parts.book.clone(), parts.cluster.clone(), locate);
        let routes = Arc::new(self.messages.iter().fold(routes, |routes, add| add(routes)));
        if let Some(cluster) = &parts.cluster {
            crate::refs::serve(cluster, Arc::clone(&routes));
        }
        // One label per kind registered at start, for the life of the process: the restart
        // counter is keyed by `&'static str`.
        let label: &'static str = Box::leak(A::KIND.to_string().into_boxed_str());
        let supervisor = KindSupervisor {
            node: parts.node.clone(),
            registry: Arc::new(parts.book.clone()),
            factory: self.factory,
            keep_alive: self.keep_alive,
            table,
            instances: HashMap::new(),
            pool: parts.pool.clone(),
            counters: Arc::clone(&parts.counters),
            label,
            next_generation: 0,
            sweeping: false,
            shutting_down: false,
        }
        .start();
        Arc::new(Host { routes, supervisor })
    }
}

/// A kind hosted on a node (type-erased for the node's table of kinds).
pub(crate) trait Hosted: Send + Sync {
    /// `self` as `Any`, to get the typed [`Host`] back.
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    /// Stops every instance here and releases their names (the node shuts down).
    fn shutdown(&self) -> futures_util::future::BoxFuture<'static, ()>;
}

/// One kind on one node: its refs' routes and its supervisor.
pub(crate) struct Host<A: NamedActor> {
    routes: Arc<Routes<A>>,
    supervisor: Addr<KindSupervisor<A>>,
}

impl<A: NamedActor> Hosted for Host<A> {
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn shutdown(&self) -> futures_util::future::BoxFuture<'static, ()> {
        let asked = self.supervisor.send(StopAll);
        Box::pin(async move {
            let _ = asked.await;
        })
    }
}

/// The application kinds of a node, by kind. See the module docs.
#[derive(Clone)]
pub(crate) struct AppActors {
    parts: Parts,
    kinds: Arc<HashMap<ActorKind, Arc<dyn Hosted>>>,
}

impl AppActors {
    /// Starts the supervisors of `registered` kinds on the current arbiter.
    pub fn start(parts: Parts, registered: Vec<Box<dyn Registration>>) -> Result<Self, KindError> {
        let mut kinds = HashMap::new();
        for registration in registered {
            let kind = registration.kind();
            if !matches!(kind, ActorKind::App(_)) {
                return Err(KindError::BuiltIn(kind));
            }
            if kinds.contains_key(&kind) {
                return Err(KindError::Duplicate(kind));
            }
            kinds.insert(kind, registration.start(&parts));
        }
        Ok(Self { parts, kinds: Arc::new(kinds) })
    }

    fn host<A: NamedActor>(&self) -> Option<Arc<Host<A>>> {
        let hosted = Arc::clone(self.kinds.get(&A::KIND)?);
        hosted.as_any().downcast::<Host<A>>().ok()
    }

    /// A ref to `A` named `name`; on a node that does not host `A`, a ref that only sends to
    /// other nodes.
    pub fn actor_ref<A: NamedActor>(&self, name: &str) -> ActorRef<A> {
        match self.host::<A>() {
            Some(host) => host.routes.get(name),
            None => {
                let nowhere: Locate<A> = Arc::new(|_: &str| None);
                let parts = &self.parts;
                let routes = Routes::new(
                    parts.node.clone(),
                    parts.book.clone(),
                    parts.cluster.clone(),
                    nowhere,
                );
                Arc::new(routes).get(name)
            }
        }
    }

    /// Starts `A` named `name` here (see [`crate::Node::spawn_named`]).
    pub async fn spawn<A: NamedActor>(&self, name: &str) -> Result<ActorRef<A>, SpawnError> {
        let Some(host) = self.host::<A>() else {
            return Err(SpawnError::UnknownKind { kind: A::KIND });
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(SpawnError::InvalidName);
        }
        let spawned = host.supervisor.send(Spawn { name: name.to_owned() }).await;
        spawned.map_err(|_| SpawnError::ShuttingDown)??;
        Ok(host.routes.get(name))
    }

    /// Stops every instance on this node and releases their names.
    pub async fn shutdown(&self) {
        let stopping: Vec<_> = self.kinds.values().map(|host| host.shutdown()).collect();
        futures_util::future::join_all(stopping).await;
    }
}

/// This node's running instances of one kind, by name: written by the supervisor, read by
/// the refs' routes (a lookup per message that does not find its cached address alive).
/// `RwLock` because no `.await` happens while it is held and reads are the common case.
type Table<A> = Arc<RwLock<HashMap<String, Addr<A>>>>;

/// Starts `A` named by the message here: claims the name, starts the instance.
#[derive(Message)]
#[rtype(result = "Result<(), SpawnError>")]
struct Spawn {
    name: String,
}

/// Stops every instance and releases every name (node shutdown).
#[derive(Message)]
#[rtype(result = "()")]
struct StopAll;

/// An instance went away: it stopped (`crashed: false`) or was dropped while running (a
/// panic in a handler or in the factory).
#[derive(Message)]
#[rtype(result = "()")]
struct InstanceStopped {
    name: String,
    generation: u64,
    crashed: bool,
}

/// An instance's lease keeper reports (see [`LeaseKeeper`]).
#[derive(Message)]
#[rtype(result = "()")]
struct LeaseNews {
    name: String,
    generation: u64,
    renewal: Renewal,
}

/// What the supervisor wants done when an instance it stops is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Running: a clean stop is the actor's own (its name is released and unkept).
    No,
    /// Stopped by the supervisor (lease lost, node shutting down): its name is not unkept.
    ByUs,
}

/// One running instance.
struct Instance {
    generation: u64,
    arbiter: ArbiterHandle,
    /// Keeps the name; dropping it releases the lease.
    keeper: LeaseKeeper,
    /// Firing it stops the instance cleanly (`ctx.stop()` inside it); dropping it does not.
    stop: Option<oneshot::Sender<()>>,
    ending: Ending,
    /// When it crashed lately, to give up on an instance that cannot run.
    crashes: VecDeque<Instant>,
}

impl Instance {
    fn stop(&mut self) {
        self.ending = Ending::ByUs;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts, tracks and restarts this node's instances of one application kind, and claims
/// kept names that lost their owner. See the module docs.
pub(crate) struct KindSupervisor<A: NamedActor> {
    node: NodeId,
    registry: Arc<dyn Registry>,
    factory: Factory<A>,
    keep_alive: bool,
    table: Table<A>,
    instances: HashMap<String, Instance>,
    pool: ArbiterPool,
    counters: Arc<NodeCounters>,
    label: &'static str,
    next_generation: u64,
    /// A keep-alive sweep is under way (ticks do not pile up on a slow registry).
    sweeping: bool,
    shutting_down: bool,
}

impl<A: NamedActor> Actor for KindSupervisor<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.keep_alive {
            // At once too: a kept name may have no owner since the whole cluster stopped.
            self.sweep(ctx);
            ctx.run_interval(KEEP_ALIVE_INTERVAL, Self::sweep);
        }
    }
}

/// Tells the supervisor that an instance went away, and whether it finished cleanly. Made
/// before the factory runs and dropped however the instance ends (a panic included: the
/// task that runs it is dropped after it unwinds).
struct StopNotice {
    supervisor: Recipient<InstanceStopped>,
    name: String,
    generation: u64,
    clean: bool,
}

impl Drop for StopNotice {
    fn drop(&mut self) {
        self.supervisor.do_send(InstanceStopped {
            name: std::mem::take(&mut self.name),
            generation: self.generation,
            crashed: !self.clean,
        });
    }
}

impl<A: NamedActor> KindSupervisor<A> {
    fn key(name: &str) -> ActorKey {
        ActorKey::new(A::KIND, name)
    }

    /// Starts an instance named `name` on `arbiter` under `epoch`: its address goes into the
    /// table at once (messages wait in its mailbox until the factory has run).
    fn launch(
        &mut self,
        name: &str,
        arbiter: &ArbiterHandle,
        epoch: u64,
        cause: StartCause,
        ctx: &Context<Self>,
    ) -> (u64, oneshot::Sender<()>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let info = StartInfo { name: name.to_owned(), node: self.node.clone(), epoch, cause };
        let notice = StopNotice {
            supervisor: ctx.address().recipient(),
            name: name.to_owned(),
            generation,
            clean: false,
        };
        let factory = Arc::clone(&self.factory);
        let (stop, stopped) = oneshot::channel::<()>();
        let (sender, receiver) = channel::channel(16);
        arbiter.spawn_fn(move || {
            let mut context = Context::with_receiver(receiver);
            let actor = factory(&info);
            // Firing `stop` stops the instance the way it would stop itself; a sender
            // dropped (the supervisor forgot it) stops nothing.
            let stop = actix::fut::wrap_future::<_, A>(stopped);
            context.spawn(stop.map(|asked, _: &mut A, ctx: &mut Context<A>| {
                if asked.is_ok() {
                    ctx.stop();
                }
            }));
            let running = context.into_future(actor);
            actix_rt::spawn(async move {
                // The whole notice moves in (not just its flag): it lives as long as the
                // task, and is dropped with it, panic or not.
                let mut notice = notice;
                running.await;
                notice.clean = true;
            });
        });
        self.table.write().insert(name.to_owned(), Addr::new(sender));
        (generation, stop)
    }

    /// A keeper for `lease`, the name of instance `generation`, reporting here.
    fn keeper(
        &self,
        name: &str,
        generation: u64,
        lease: zenlive_registry::Lease,
        ctx: &Context<Self>,
    ) -> LeaseKeeper {
        let me = ctx.address();
        let name = name.to_owned();
        LeaseKeeper::start(
            Arc::clone(&self.registry),
            lease,
            LEASE_RENEW_INTERVAL,
            move |renewal| {
                me.do_send(LeaseNews { name: name.clone(), generation, renewal });
            },
        )
    }

    /// Starts `name` under the `lease` just claimed (a spawn or a takeover).
    fn run(
        &mut self,
        name: &str,
        lease: zenlive_registry::Lease,
        cause: StartCause,
        ctx: &Context<Self>,
    ) {
        let arbiter = self.pool.next();
        let (generation, stop) = self.launch(name, &arbiter, lease.epoch, cause, ctx);
        let keeper = self.keeper(name, generation, lease, ctx);
        let instance = Instance {
            generation,
            arbiter,
            keeper,
            stop: Some(stop),
            ending: Ending::No,
            crashes: VecDeque::new(),
        };
        self.instances.insert(name.to_owned(), instance);
    }

    /// Forgets instance `name` (gone): its address leaves the table, its keeper releases
    /// the name.
    fn forget(&mut self, name: &str) -> Option<Instance> {
        self.table.write().remove(name);
        self.instances.remove(name)
    }

    /// Claims every kept name of this kind that no node owns, and starts those won here.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweeping || self.shutting_down {
            return;
        }
        self.sweeping = true;
        let (registry, node) = (Arc::clone(&self.registry), self.node.clone());
        let running: Vec<String> = self.instances.keys().cloned().collect();
        let claims = async move {
            let names = registry.kept(&A::KIND).await?;
            let mut won = Vec::new();
            // A name that `spawn_named` would refuse (written to Redis by something else)
            // is not started either.
            let valid = |n: &String| !n.is_empty() && n.len() <= MAX_NAME_LEN;
            for name in names.into_iter().filter(|n| valid(n) && !running.contains(n)) {
                match registry.claim(&Self::key(&name), &node, ACTOR_LEASE_TTL).await {
                    Ok(lease) => won.push((name, lease)),
                    // Owned by a live node (the usual answer), or this node is not
                    // registered right now: nothing to do this round.
                    Err(
                        RegistryError::AlreadyOwned { .. }
                        | RegistryError::NodeNotRegistered { .. },
                    ) => {}
                    Err(error) => return Err(error),
                }
            }
            if !won.is_empty() {
                // A name unkept (its actor ended on purpose) between the list and the claim
                // was released after it was unkept: this second look catches it.
                let still = registry.kept(&A::KIND).await;
                let still = still.unwrap_or_default();
                let (keep, ended): (Vec<_>, Vec<_>) =
                    won.into_iter().partition(|(name, _)| still.contains(name));
                for (_, lease) in ended {
                    let _ = registry.release(&lease).await;
                }
                won = keep;
            }
            Ok(won)
        };
        ctx.spawn(claims.into_actor(self).map(|result, act, ctx| {
            act.sweeping = false;
            let won = match result {
                Ok(won) => won,
                Err(error) => {
                    tracing::debug!(kind = %A::KIND, %error, "cannot check the kept names; trying again");
                    return;
                }
            };
            for (name, lease) in won {
                if act.shutting_down || act.instances.contains_key(&name) {
                    let registry = Arc::clone(&act.registry);
                    actix_rt::spawn(async move { registry.release(&lease).await });
                    continue;
                }
                tracing::warn!(kind = %A::KIND, %name, epoch = lease.epoch, "a kept actor had no live owner; started here");
                act.run(&name, lease, StartCause::TakenOver, ctx);
            }
        }));
    }
}

impl<A: NamedActor> Handler<Spawn> for KindSupervisor<A> {
    type Result = ResponseActFuture<Self, Result<(), SpawnError>>;

    fn handle(&mut self, msg: Spawn, _ctx: &mut Self::Context) -> Self::Result {
        let key = Self::key(&msg.name);
        if self.shutting_down {
            return Box::pin(actix::fut::ready(Err(SpawnError::ShuttingDown)));
        }
        if let Some(instance) = self.instances.get(&msg.name) {
            let owner = Owner { node: self.node.clone(), epoch: instance.keeper.lease().epoch };
            return Box::pin(actix::fut::ready(Err(SpawnError::AlreadyRunning { key, owner })));
        }
        let (registry, node, keep) =
            (Arc::clone(&self.registry), self.node.clone(), self.keep_alive);
        let claim = async move {
            let lease =
                registry.claim(&key, &node, ACTOR_LEASE_TTL).await.map_err(
                    |error| match error {
                        RegistryError::AlreadyOwned { key, owner } => {
                            SpawnError::AlreadyRunning { key, owner }
                        }
                        other => SpawnError::Registry(other),
                    },
                )?;
            if keep {
                if let Err(error) = registry.keep(&key).await {
                    // Not kept means not running: release rather than run unprotected.
                    let _ = registry.release(&lease).await;
                    return Err(SpawnError::Registry(error));
                }
            }
            Ok(lease)
        };
        Box::pin(claim.into_actor(self).map(move |claimed, act, ctx| {
            let lease = claimed?;
            if act.shutting_down || act.instances.contains_key(&msg.name) {
                // Shut down, or a takeover started it meanwhile: not ours to run twice.
                let owner = Owner { node: act.node.clone(), epoch: lease.epoch };
                let registry = Arc::clone(&act.registry);
                actix_rt::spawn(async move { registry.release(&lease).await });
                let key = Self::key(&msg.name);
                return Err(if act.shutting_down {
                    SpawnError::ShuttingDown
                } else {
                    SpawnError::AlreadyRunning { key, owner }
                });
            }
            act.run(&msg.name, lease, StartCause::Spawned, ctx);
            Ok(())
        }))
    }
}

impl<A: NamedActor> Handler<InstanceStopped> for KindSupervisor<A> {
    type Result = ();

    fn handle(&mut self, msg: InstanceStopped, ctx: &mut Self::Context) {
        let InstanceStopped { name, generation, crashed } = msg;
        let Some(instance) = self.instances.get_mut(&name).filter(|i| i.generation == generation)
        else {
            return;
        };
        if crashed && instance.ending == Ending::No && !self.shutting_down {
            self.counters.restarted(self.label);
            let now = Instant::now();
            instance.crashes.push_back(now);
            while instance.crashes.front().is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
            {
                instance.crashes.pop_front();
            }
            if instance.crashes.len() <= MAX_RESTARTS {
                let (arbiter, epoch) = (instance.arbiter.clone(), instance.keeper.lease().epoch);
                let (generation, stop) =
                    self.launch(&name, &arbiter, epoch, StartCause::Restarted, ctx);
                if let Some(instance) = self.instances.get_mut(&name) {
                    instance.generation = generation;
                    instance.stop = Some(stop);
                }
                tracing::error!(kind = %A::KIND, %name, generation, "application actor crashed; restarted with fresh state");
                return;
            }
            tracing::error!(kind = %A::KIND, %name, "application actor crashed more than {MAX_RESTARTS} times in {RESTART_WINDOW:?}; giving its name up");
        }
        let on_purpose = instance.ending == Ending::No;
        let Some(instance) = self.forget(&name) else { return };
        // The actor ended by itself (or cannot run): nobody should start it again.
        if on_purpose && self.keep_alive && !self.shutting_down {
            let registry = Arc::clone(&self.registry);
            let key = Self::key(&name);
            actix_rt::spawn(async move {
                if let Err(error) = registry.unkeep(&key).await {
                    tracing::warn!(%key, %error, "cannot stop keeping an ended actor alive");
                }
                // Released after it is unkept, so no other node takes it over meanwhile.
                drop(instance);
            });
        }
    }
}

impl<A: NamedActor> Handler<LeaseNews> for KindSupervisor<A> {
    type Result = ();

    fn handle(&mut self, msg: LeaseNews, _ctx: &mut Self::Context) {
        let LeaseNews { name, generation, renewal } = msg;
        let Some(instance) = self.instances.get_mut(&name).filter(|i| i.generation == generation)
        else {
            return;
        };
        match renewal {
            Renewal::Renewed => {}
            Renewal::Unproven(error) => {
                tracing::warn!(kind = %A::KIND, %name, %error, "cannot renew an application actor's lease; it keeps running");
            }
            Renewal::Reclaimed(lease) => {
                tracing::warn!(kind = %A::KIND, %name, epoch = lease.epoch, "an application actor's lease lapsed; re-claimed");
                NodeCounters::add(&self.counters.lease_losses, 1);
            }
            Renewal::Lost(error) => {
                // Another node owns the name now: stop acting as its owner (self-fencing).
                tracing::error!(kind = %A::KIND, %name, %error, "an application actor's lease is lost; stopping it here");
                NodeCounters::add(&self.counters.lease_losses, 1);
                instance.stop();
                self.table.write().remove(&name);
            }
        }
    }
}

impl<A: NamedActor> Handler<StopAll> for KindSupervisor<A> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: StopAll, _ctx: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let mut releases = Vec::new();
        for (name, mut instance) in std::mem::take(&mut self.instances) {
            instance.stop();
            self.table.write().remove(&name);
            releases.push(instance.keeper.release());
        }
        Box::pin(async move {
            futures_util::future::join_all(releases).await;
        })
    }
}
