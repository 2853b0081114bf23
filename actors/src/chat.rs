//! [`ChatRoom`]: one chat room (beside a stream, or on its own). Its messages, its state,
//! one handler per message; its decisions live in [`ChatCore`]. [`ChatRooms`] finds or
//! starts a room by name.
//!
//! Each member connection registers a bounded queue of JSON text frames. A broadcast is
//! serialized once and the same `Arc<str>` is queued for every member; a member whose queue
//! is full is evicted (its queue closed, which its connection sees and closes), so one
//! member that does not read never slows the room. A room claims its name in the registry
//! (`chat/{name}`, with a lease it renews), like a stream, so the cluster can find it.
//!
//! In a cluster, the room whose claim succeeds is the room's *home*; a room started on
//! another node while the home lives becomes a *satellite* that forwards to the home and
//! fans out what it sends back (see [`crate::chat_remote`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::chat_core::{ChatCore, ChatError, ChatLimits, Effects, MemberId};
use crate::chat_protocol::{ChatMessage, ChatUser, ClientCommand, ServerEvent};
use crate::chat_remote::{Delivery, RemoteRoomError, RoomRequest, RoomTransport};
use crate::events::{ActorType, Gauge, NodeCounters};
use crate::quota::Slot;
use crate::lease::LEASE_RENEW_INTERVAL;
use zenlive_cluster::{
    ActorKey, ActorKind, Lease, NodeId, Owner, Registry, RegistryError, ACTOR_LEASE_TTL,
};

/// How long a room with no members lives on before it stops.
pub const ROOM_IDLE: Duration = Duration::from_secs(60);

/// A member's outbound queue: JSON text frames, shared between members.
pub type Outbound = mpsc::Sender<Arc<str>>;

/// A message the application may allow, refuse or rewrite before it is broadcast.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessageRequest {
    /// The room.
    pub room: String,
    /// The author.
    pub user: ChatUser,
    /// The text, validated and trimmed.
    pub text: String,
}

/// The application's answer to a [`ChatMessageRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatDecision {
    /// Broadcast as it is.
    Allow,
    /// Refuse; the author gets an `error` with code `rejected` and this reason.
    Reject(String),
    /// Broadcast this text instead.
    Rewrite(String),
    /// The hook could not decide; the room's failure policy applies.
    Unavailable(String),
}

/// A message that was broadcast, for the application to save.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveredMessage {
    /// The room.
    pub room: String,
    /// The message as members received it.
    pub message: ChatMessage,
}

/// Decides on each message before broadcast.
pub type ChatDecider =
    Arc<dyn Fn(ChatMessageRequest) -> BoxFuture<'static, ChatDecision> + Send + Sync>;
/// Hears every delivered message. Runs on the room's thread: return quickly.
pub type ChatListener = Arc<dyn Fn(&DeliveredMessage) + Send + Sync>;

/// The application's chat hooks, shared by every room of the node.
#[derive(Clone)]
pub struct ChatHooks {
    /// Asked before each member message is broadcast.
    pub decide: Option<ChatDecider>,
    /// Told of every broadcast member message.
    pub delivered: Vec<ChatListener>,
    /// How long the decider may take.
    pub timeout: Duration,
    /// What happens when the decider fails, panics or times out.
    pub allow_on_failure: bool,
}

impl Default for ChatHooks {
    fn default() -> Self {
        Self {
            decide: None,
            delivered: Vec::new(),
            timeout: Duration::from_secs(3),
            allow_on_failure: false,
        }
    }
}

static NEXT_MEMBER: AtomicU64 = AtomicU64::new(1);

/// A fresh member id.
pub fn next_member_id() -> MemberId {
    NEXT_MEMBER.fetch_add(1, Ordering::Relaxed)
}

/// Adds a member; the history arrives on `outbound` first.
#[derive(Message)]
#[rtype(result = "Result<(), ChatError>")]
pub struct Join {
    /// The member's id.
    pub member: MemberId,
    /// Who, from the token (`None`: an anonymous reader).
    pub user: Option<ChatUser>,
    /// Where the member's frames go.
    pub outbound: Outbound,
}

/// Removes a member.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The member's id.
    pub member: MemberId,
}

/// A member's command.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Command {
    /// Who sent it.
    pub member: MemberId,
    /// What.
    pub command: ClientCommand,
}

/// A system message from the application.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SystemMessage {
    /// The text.
    pub text: String,
}

/// A moderation command from the application (no role needed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Moderate {
    /// The command (`Delete`, `Mute`, `Ban`, `Unban`, `SlowMode`, `Clear`).
    pub command: ClientCommand,
}

/// A request from a satellite of this room on another node (the room must be the home).
#[derive(Message)]
#[rtype(result = "Result<(), RemoteRoomError>")]
pub struct RemoteRequest {
    /// The satellite's node.
    pub from: NodeId,
    /// What happened there.
    pub request: RoomRequest,
}

/// Frames from the room's home for this satellite's members.
#[derive(Message)]
#[rtype(result = "Result<(), RemoteRoomError>")]
pub struct Deliver(pub Delivery);

/// The node is draining: a room whose home is here ends (members reconnect and the room
/// finds a new home on another node); satellites keep serving.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOff;

/// Asks how many members the room has (answered once the room knows its role, so it also
/// tells when a room just started is ready).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Members;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One chat room. See the module docs.
pub struct ChatRoom {
    name: String,
    generation: u64,
    core: ChatCore,
    outbound: HashMap<MemberId, Outbound>,
    rooms: ChatRooms,
    counters: Arc<NodeCounters>,
    hooks: ChatHooks,
    idle: Option<SpawnHandle>,
    placement: Placement,
    lease: Option<Lease>,
    role: Role,
    remote: RemoteMembers,
    _alive: Gauge,
    /// The opening client's place under its per-address cap, given back when the room
    /// stops; `None` for rooms the application or another node opened.
    _opener: Option<Slot>,
}

/// Where rooms are registered: the node's registry and id, and (in a cluster) how rooms
/// reach their home or satellites on other nodes.
#[derive(Clone)]
pub struct Placement {
    /// The registry of actor names.
    pub registry: Arc<dyn Registry>,
    /// This node.
    pub node: NodeId,
    /// Links to other nodes' rooms; `None` on a single node.
    pub transport: Option<Arc<dyn RoomTransport>>,
}

/// Which part of the room this actor plays.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// The claim is in flight (no message is handled meanwhile).
    Claiming,
    /// This node holds the room's lease and state.
    Home,
    /// Another node is the home; this actor forwards and fans out.
    Satellite(Owner),
}

/// The home's view of members connected to satellites.
#[derive(Default)]
struct RemoteMembers {
    /// Home member id → (satellite node, the satellite's member id).
    by_id: HashMap<MemberId, (NodeId, u64)>,
    /// (satellite node, the satellite's member id) → home member id.
    ids: HashMap<(NodeId, u64), MemberId>,
    /// Satellite nodes with members here, and how many.
    nodes: HashMap<NodeId, usize>,
}

impl RemoteMembers {
    fn add(&mut self, node: NodeId, remote: u64) -> MemberId {
        let id = next_member_id();
        self.by_id.insert(id, (node.clone(), remote));
        self.ids.insert((node.clone(), remote), id);
        *self.nodes.entry(node).or_default() += 1;
        id
    }

    fn remove(&mut self, id: MemberId) -> Option<(NodeId, u64)> {
        let (node, remote) = self.by_id.remove(&id)?;
        self.ids.remove(&(node.clone(), remote));
        if let Some(count) = self.nodes.get_mut(&node) {
            *count -= 1;
            if *count == 0 {
                self.nodes.remove(&node);
            }
        }
        Some((node, remote))
    }

    fn of_node(&self, node: &NodeId) -> Vec<MemberId> {
        self.by_id.iter().filter(|(_, (n, _))| n == node).map(|(id, _)| *id).collect()
    }
}

impl ChatRoom {
    /// Claims the room's name in the registry (so the cluster can find it) before any
    /// member is handled: success makes this the room's home; a live owner elsewhere makes
    /// it a satellite of that home (in a cluster). Then keeps proving it: the home renews
    /// its lease, a satellite checks its home is still the owner; either stops (its
    /// members reconnect) when that fails.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        let registry = Arc::clone(&self.placement.registry);
        let node = self.placement.node.clone();
        let key = ActorKey::new(ActorKind::ChatRoom, self.name.clone());
        let transport = self.placement.transport.clone();
        let room = self.name.clone();
        let claim = async move {
            // Placement: a room without a home goes to the least-loaded node; if that is
            // another node, it starts the room there and this one becomes a satellite (the
            // claim below then finds the home). Any failure falls back to a local home.
            if let Some(transport) = transport {
                if let Ok(None) = registry.lookup(&key).await {
                    match transport.choose_home() {
                        Some(home) if home != node => {
                            if let Err(error) = transport.host(&home, &room).await {
                                tracing::warn!(%room, %home, %error, "could not place the chat room; hosting it here");
                            }
                        }
                        _ => {}
                    }
                }
            }
            // A previous instance of this room on this node may still be releasing its
            // lease (or, after a crash, waiting for it to expire): wait for it.
            let mut attempts = 0;
            loop {
                match registry.claim(&key, &node, ACTOR_LEASE_TTL).await {
                    Err(RegistryError::AlreadyOwned { owner, .. })
                        if owner.node == node && attempts < 60 =>
                    {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    result => return result,
                }
            }
        };
        ctx.wait(claim.into_actor(self).map(|claimed, act, ctx| match claimed {
            Ok(lease) => {
                act.lease = Some(lease);
                act.role = Role::Home;
            }
            Err(RegistryError::AlreadyOwned { owner, .. })
                if act.placement.transport.is_some() && owner.node != act.placement.node =>
            {
                tracing::debug!(room = %act.name, home = %owner.node, "chat room is a satellite");
                act.role = Role::Satellite(owner);
            }
            Err(error) => {
                tracing::error!(room = %act.name, %error, "chat room name not granted; stopping the room");
                ctx.stop();
            }
        }));
        ctx.run_interval(LEASE_RENEW_INTERVAL, |act, ctx| match act.role.clone() {
            Role::Home => act.renew(ctx),
            Role::Satellite(home) => act.check_home(home, ctx),
            Role::Claiming => {}
        });
    }

    /// The home renews its lease; a lapsed lease is claimed again if the name is free.
    fn renew(&mut self, ctx: &mut Context<Self>) {
        let Some(lease) = self.lease.clone() else { return };
        let registry = Arc::clone(&self.placement.registry);
        let renew = async move {
            match registry.renew(&lease).await {
                Ok(()) => Ok(None),
                // Redis unreachable: nobody can take the name meanwhile; keep going.
                Err(RegistryError::Unavailable { .. }) => Ok(None),
                Err(lost) => registry
                    .claim(&lease.key, &lease.node, lease.ttl)
                    .await
                    .map(Some)
                    .map_err(|error| format!("{lost}; re-claim: {error}")),
            }
        };
        ctx.spawn(renew.into_actor(self).map(|renewed, act, ctx| match renewed {
            Ok(None) => {}
            Ok(Some(lease)) => act.lease = Some(lease),
            Err(error) => {
                // Self-fencing: without the lease this node may not act as the room.
                tracing::error!(room = %act.name, %error, "chat room lease lost; stopping");
                act.lease = None;
                ctx.stop();
            }
        }));
    }

    /// A satellite stops when its home no longer owns the room (the home's node died or
    /// the room moved): its members reconnect and find the room's new home.
    fn check_home(&mut self, home: Owner, ctx: &mut Context<Self>) {
        let registry = Arc::clone(&self.placement.registry);
        let key = ActorKey::new(ActorKind::ChatRoom, self.name.clone());
        let lookup = async move { registry.lookup(&key).await };
        ctx.spawn(lookup.into_actor(self).map(move |owner, act, ctx| match owner {
            Ok(Some(owner)) if owner == home => {}
            Err(_) => {}
            _ => {
                tracing::info!(room = %act.name, home = %home.node, "chat room's home is gone; stopping the satellite");
                ctx.stop();
            }
        }));
    }

    /// Sends `request` to the home (a satellite's forwarding); a failure stops the
    /// satellite, since its members can no longer reach the room.
    fn forward(&mut self, request: RoomRequest, ctx: &mut Context<Self>) {
        let (Role::Satellite(home), Some(transport)) = (&self.role, &self.placement.transport)
        else {
            return;
        };
        let sent = transport.to_home(&home.node, &self.name, request);
        ctx.spawn(sent.into_actor(self).map(|result, act, ctx| {
            if let Err(RemoteRoomError::Unreachable(why)) = result {
                tracing::warn!(room = %act.name, why, "chat room's home unreachable; stopping the satellite");
                ctx.stop();
            }
        }));
    }

    /// The home sends `delivery` to satellite `nodes` (encoded once); a satellite that
    /// cannot be reached loses its members here.
    fn deliver(&mut self, nodes: &[NodeId], delivery: &Delivery, ctx: &mut Context<Self>) {
        let Some(transport) = &self.placement.transport else { return };
        let sends = transport.to_satellites(nodes, &self.name, delivery);
        for (node, sent) in nodes.iter().cloned().zip(sends) {
            ctx.spawn(sent.into_actor(self).map(move |result, act, ctx| {
                if let Err(error) = result {
                    tracing::warn!(room = %act.name, satellite = %node, %error, "chat satellite unreachable; dropping its members");
                    for member in act.remote.of_node(&node) {
                        act.remote.remove(member);
                        let effects = act.core.leave(member);
                        act.apply(None, effects, ctx);
                    }
                    act.watch_idle(ctx);
                }
            }));
        }
    }

    fn apply(&mut self, caller: Option<MemberId>, effects: Effects, ctx: &mut Context<Self>) {
        if let Some(member) = caller {
            for event in &effects.reply {
                self.send(member, Arc::from(event.to_json()), ctx);
            }
        }
        for event in &effects.broadcast {
            self.broadcast(event, ctx);
        }
        for member in effects.kick {
            self.evict(member, ctx);
        }
    }

    /// Serializes `event` once and queues the same `Arc<str>` for every member; members
    /// whose queue is full (or gone) are evicted afterwards.
    fn broadcast(&mut self, event: &ServerEvent, ctx: &mut Context<Self>) {
        let frame: Arc<str> = Arc::from(event.to_json());
        self.fan_out(&frame, ctx);
        let satellites: Vec<NodeId> = self.remote.nodes.keys().cloned().collect();
        for node in satellites {
            let delivery =
                Delivery { frames: vec![frame.to_string()], to: None, evict: Vec::new() };
            self.deliver(&[node], &delivery, ctx);
        }
        let ServerEvent::Message(message) = event else {
            if matches!(event, ServerEvent::System { .. }) {
                NodeCounters::add(&self.counters.chat_messages, 1);
            }
            return;
        };
        NodeCounters::add(&self.counters.chat_messages, 1);
        if self.hooks.delivered.is_empty() {
            return;
        }
        let delivered = DeliveredMessage { room: self.name.clone(), message: message.clone() };
        for listener in &self.hooks.delivered {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(&delivered)))
                .is_err()
            {
                tracing::error!(room = %self.name, "a chat hook panicked");
            }
        }
    }

    /// Queues `frame` for every local member; members whose queue is full (or gone) are
    /// evicted afterwards.
    fn fan_out(&mut self, frame: &Arc<str>, ctx: &mut Context<Self>) {
        let mut failed = Vec::new();
        let mut delivered = 0;
        for (member, queue) in &self.outbound {
            match queue.try_send(Arc::clone(frame)) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_)) => failed.push((*member, true)),
                Err(TrySendError::Closed(_)) => failed.push((*member, false)),
            }
        }
        NodeCounters::add(&self.counters.chat_deliveries, delivered);
        for (member, slow) in failed {
            self.drop_member(member, slow, ctx);
        }
    }

    fn send(&mut self, member: MemberId, frame: Arc<str>, ctx: &mut Context<Self>) {
        if let Some((node, remote)) = self.remote.by_id.get(&member).cloned() {
            let delivery =
                Delivery { frames: vec![frame.to_string()], to: Some(remote), evict: Vec::new() };
            return self.deliver(&[node], &delivery, ctx);
        }
        let Some(queue) = self.outbound.get(&member) else { return };
        match queue.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.drop_member(member, true, ctx),
            Err(TrySendError::Closed(_)) => self.drop_member(member, false, ctx),
        }
    }

    /// Evicts a member whose queue was full (`slow`, counted) or closed.
    fn drop_member(&mut self, member: MemberId, slow: bool, ctx: &mut Context<Self>) {
        if slow {
            NodeCounters::add(&self.counters.chat_members_dropped_slow, 1);
            tracing::info!(room = %self.name, member, "chat member not reading; disconnecting");
        }
        self.evict(member, ctx);
    }

    /// Drops a member's queue (its connection then closes) and tells the others.
    fn evict(&mut self, member: MemberId, ctx: &mut Context<Self>) {
        if let Some((node, remote)) = self.remote.remove(member) {
            let effects = self.core.leave(member);
            self.apply(None, effects, ctx);
            let delivery = Delivery { frames: Vec::new(), to: None, evict: vec![remote] };
            self.deliver(&[node], &delivery, ctx);
            self.watch_idle(ctx);
            return;
        }
        if self.outbound.remove(&member).is_some() {
            if let Role::Satellite(_) = self.role {
                self.forward(RoomRequest::Leave { member }, ctx);
                self.watch_idle(ctx);
                return;
            }
            let effects = self.core.leave(member);
            self.apply(None, effects, ctx);
            self.watch_idle(ctx);
        }
    }

    fn watch_idle(&mut self, ctx: &mut Context<Self>) {
        if self.outbound.is_empty() && self.remote.by_id.is_empty() && self.idle.is_none() {
            self.idle = Some(ctx.run_later(ROOM_IDLE, |act, ctx| {
                if act.outbound.is_empty() && act.remote.by_id.is_empty() {
                    tracing::debug!(room = %act.name, "chat room idle; stopping");
                    ctx.stop();
                }
                act.idle = None;
            }));
        }
    }
}

impl Actor for ChatRoom {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        self.claim(ctx);
        self.watch_idle(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.rooms.remove(&self.name, self.generation);
        if let Some(lease) = self.lease.take() {
            let registry = Arc::clone(&self.placement.registry);
            actix_rt::spawn(async move {
                if let Err(error) = registry.release(&lease).await {
                    tracing::warn!(%error, "could not release a chat room lease; it will expire");
                }
            });
        }
    }
}

impl Handler<Join> for ChatRoom {
    type Result = ResponseActFuture<Self, Result<(), ChatError>>;

    fn handle(&mut self, msg: Join, ctx: &mut Self::Context) -> Self::Result {
        if let Some(idle) = self.idle.take() {
            ctx.cancel_future(idle);
        }
        let (Role::Satellite(home), Some(transport)) = (&self.role, &self.placement.transport)
        else {
            let joined = self.core.join(msg.member, msg.user).map(|effects| {
                self.outbound.insert(msg.member, msg.outbound);
                self.apply(Some(msg.member), effects, ctx);
            });
            if joined.is_err() {
                self.watch_idle(ctx);
            }
            return Box::pin(fut::ready(joined));
        };
        // The member's queue is in place before the home answers, so the history the home
        // sends right after its answer finds it.
        let member = msg.member;
        self.outbound.insert(member, msg.outbound);
        let request = RoomRequest::Join { member, user: msg.user };
        let joined = transport.to_home(&home.node, &self.name, request);
        Box::pin(joined.into_actor(self).map(move |result, act, ctx| match result {
            Ok(()) => Ok(()),
            Err(error) => {
                act.outbound.remove(&member);
                act.watch_idle(ctx);
                Err(match error {
                    RemoteRoomError::Chat(error) => error,
                    RemoteRoomError::Unreachable(why) => ChatError::Unavailable(why),
                })
            }
        }))
    }
}

impl Handler<Leave> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Self::Context) {
        self.evict(msg.member, ctx);
    }
}

impl Handler<Command> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Command, ctx: &mut Self::Context) {
        let member = msg.member;
        if let Role::Satellite(_) = self.role {
            if let Ok(command) = serde_json::to_string(&msg.command) {
                self.forward(RoomRequest::Command { member, command }, ctx);
            }
            return;
        }
        self.command(member, msg.command, ctx);
    }
}

impl ChatRoom {
    /// Runs a member's command at the home (the member may be local or remote).
    fn command(&mut self, member: MemberId, command: ClientCommand, ctx: &mut Context<Self>) {
        let msg = Command { member, command };
        let (ClientCommand::Message { text, client_id }, Some(decide)) =
            (&msg.command, self.hooks.decide.clone())
        else {
            let effects = self.core.command(member, msg.command, now_ms());
            self.apply(Some(member), effects, ctx);
            return;
        };
        let (user, text) = match self.core.check_message(member, text.clone(), now_ms()) {
            Ok(checked) => checked,
            Err(error) => {
                return self.apply(Some(member), ChatCore::refusal(error, client_id.clone()), ctx)
            }
        };
        let client_id = client_id.clone();
        let request =
            ChatMessageRequest { room: self.name.clone(), user: user.clone(), text: text.clone() };
        // The decider runs as its own task: a panic in it ends only that task.
        let decision = tokio::time::timeout(self.hooks.timeout, actix_rt::spawn(decide(request)));
        ctx.spawn(decision.into_actor(self).map(move |outcome, act, ctx| {
            let decision = match outcome {
                Ok(Ok(decision)) => decision,
                Ok(Err(_)) => ChatDecision::Unavailable("the chat hook panicked".into()),
                Err(_) => ChatDecision::Unavailable("the chat hook timed out".into()),
            };
            let decision = match decision {
                ChatDecision::Unavailable(why) if act.hooks.allow_on_failure => {
                    tracing::warn!(room = %act.name, %why, "chat hook failed; allowing");
                    ChatDecision::Allow
                }
                ChatDecision::Unavailable(why) => {
                    tracing::warn!(room = %act.name, %why, "chat hook failed; refusing");
                    ChatDecision::Reject(why)
                }
                decision => decision,
            };
            let effects = match decision {
                ChatDecision::Allow => act.core.publish(user, text, client_id, now_ms()),
                ChatDecision::Rewrite(text) => act.core.publish(user, text, client_id, now_ms()),
                ChatDecision::Reject(reason) | ChatDecision::Unavailable(reason) => {
                    ChatCore::refusal(ChatError::Rejected(reason), client_id)
                }
            };
            act.apply(Some(member), effects, ctx);
        }));
    }
}

impl Handler<SystemMessage> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: SystemMessage, ctx: &mut Self::Context) {
        if let Role::Satellite(_) = self.role {
            return self.forward(RoomRequest::System { text: msg.text }, ctx);
        }
        let effects = self.core.system(msg.text, now_ms());
        self.apply(None, effects, ctx);
    }
}

impl Handler<Moderate> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Moderate, ctx: &mut Self::Context) {
        if let Role::Satellite(_) = self.role {
            if let Ok(command) = serde_json::to_string(&msg.command) {
                self.forward(RoomRequest::Moderate { command }, ctx);
            }
            return;
        }
        let effects = self.core.moderate(msg.command, now_ms());
        self.apply(None, effects, ctx);
    }
}

impl Handler<RemoteRequest> for ChatRoom {
    type Result = Result<(), RemoteRoomError>;

    fn handle(&mut self, msg: RemoteRequest, ctx: &mut Self::Context) -> Self::Result {
        if self.role != Role::Home {
            return Err(RemoteRoomError::Unreachable("this node is not the room's home".into()));
        }
        let parse = |json: &str| {
            serde_json::from_str::<ClientCommand>(json)
                .map_err(|e| RemoteRoomError::Unreachable(format!("bad command: {e}")))
        };
        match msg.request {
            RoomRequest::Join { member, user } => {
                if let Some(idle) = self.idle.take() {
                    ctx.cancel_future(idle);
                }
                let id = self.remote.add(msg.from.clone(), member);
                match self.core.join(id, user) {
                    Ok(effects) => self.apply(Some(id), effects, ctx),
                    Err(error) => {
                        self.remote.remove(id);
                        self.watch_idle(ctx);
                        return Err(error.into());
                    }
                }
            }
            RoomRequest::Command { member, command } => {
                let command = parse(&command)?;
                if let Some(id) = self.remote.ids.get(&(msg.from, member)).copied() {
                    self.command(id, command, ctx);
                }
            }
            RoomRequest::Leave { member } => {
                if let Some(id) = self.remote.ids.get(&(msg.from, member)).copied() {
                    self.remote.remove(id);
                    let effects = self.core.leave(id);
                    self.apply(None, effects, ctx);
                    self.watch_idle(ctx);
                }
            }
            RoomRequest::System { text } => {
                let effects = self.core.system(text, now_ms());
                self.apply(None, effects, ctx);
            }
            RoomRequest::Moderate { command } => {
                let effects = self.core.moderate(parse(&command)?, now_ms());
                self.apply(None, effects, ctx);
            }
        }
        Ok(())
    }
}

impl Handler<Deliver> for ChatRoom {
    type Result = Result<(), RemoteRoomError>;

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) -> Self::Result {
        if !matches!(self.role, Role::Satellite(_)) {
            return Err(RemoteRoomError::Unreachable("this room is not a satellite".into()));
        }
        let Delivery { frames, to, evict } = msg.0;
        for frame in frames {
            let frame: Arc<str> = Arc::from(frame);
            match to {
                Some(member) => self.send(member, frame, ctx),
                None => self.fan_out(&frame, ctx),
            }
        }
        for member in evict {
            // The home already counted the leave: only the connection goes.
            self.outbound.remove(&member);
        }
        self.watch_idle(ctx);
        Ok(())
    }
}

/// New limits for a live room (see [`ChatRooms::set_limits`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetLimits {
    /// The limits.
    pub limits: ChatLimits,
}

impl Handler<SetLimits> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: SetLimits, _ctx: &mut Self::Context) {
        self.core.set_limits(msg.limits);
    }
}

impl Handler<HandOff> for ChatRoom {
    type Result = ();

    fn handle(&mut self, _msg: HandOff, ctx: &mut Self::Context) {
        if self.role == Role::Home {
            tracing::info!(room = %self.name, members = self.core.members(), "node draining: handing the chat room off");
            // Closing the queues closes the members' connections; satellites see the lease
            // go (released when the actor stops) and end too, so every member reconnects.
            self.outbound.clear();
            ctx.stop();
        }
    }
}

impl Handler<Members> for ChatRoom {
    type Result = usize;

    fn handle(&mut self, _msg: Members, _ctx: &mut Self::Context) -> usize {
        self.core.members()
    }
}

/// A live room: its generation (so a stopping room removes only itself) and address.
type LiveRoom = (u64, Addr<ChatRoom>);

/// This node's chat rooms by name: finds a live room or starts one. A room that crashed
/// (its address no longer connected) is started again with fresh state; its members'
/// queues closed with it, so they reconnect.
#[derive(Clone)]
pub struct ChatRooms {
    rooms: Arc<Mutex<HashMap<String, LiveRoom>>>,
    /// The limits of new rooms; a reload changes them (and live rooms').
    limits: Arc<parking_lot::RwLock<ChatLimits>>,
    counters: Arc<NodeCounters>,
    hooks: ChatHooks,
    placement: Placement,
    next_generation: Arc<AtomicU64>,
}

impl ChatRooms {
    /// Rooms with `limits` and the application's `hooks`, counting into `counters`,
    /// registered under `placement`.
    pub fn new(
        limits: ChatLimits,
        counters: Arc<NodeCounters>,
        hooks: ChatHooks,
        placement: Placement,
    ) -> Self {
        Self {
            rooms: Arc::default(),
            limits: Arc::new(parking_lot::RwLock::new(limits)),
            counters,
            hooks,
            placement,
            next_generation: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The live room `name`, if any.
    pub fn get(&self, name: &str) -> Option<Addr<ChatRoom>> {
        self.rooms.lock().get(name).filter(|(_, a)| a.connected()).map(|(_, a)| a.clone())
    }

    /// The room `name`, started on `arbiter` if it is not live (application code: no cap).
    pub fn get_or_start(&self, name: &str, arbiter: &ArbiterHandle) -> Addr<ChatRoom> {
        self.get_or_start_within(name, arbiter, usize::MAX, None)
            .expect("no cap on the number of rooms, so a room is always started")
    }

    /// The room `name`, started on `arbiter` if it is not live and fewer than `max_rooms`
    /// rooms are; `None` when that cap is reached (rooms are named by clients, so the map
    /// must not grow without bound). A room started here holds `opener` (the opening
    /// client's place under a per-address cap) until it stops; an existing room drops it.
    pub fn get_or_start_within(
        &self,
        name: &str,
        arbiter: &ArbiterHandle,
        max_rooms: usize,
        opener: Option<Slot>,
    ) -> Option<Addr<ChatRoom>> {
        let mut rooms = self.rooms.lock();
        if let Some((_, addr)) = rooms.get(name).filter(|(_, a)| a.connected()) {
            return Some(addr.clone());
        }
        if rooms.len() >= max_rooms {
            return None;
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let room = ChatRoom {
            name: name.to_owned(),
            generation,
            core: ChatCore::new(self.limits.read().clone()),
            outbound: HashMap::new(),
            rooms: self.clone(),
            counters: Arc::clone(&self.counters),
            hooks: self.hooks.clone(),
            idle: None,
            placement: self.placement.clone(),
            lease: None,
            role: Role::Claiming,
            remote: RemoteMembers::default(),
            _alive: self.counters.actor(ActorType::ChatRoom),
            _opener: opener,
        };
        let addr = ChatRoom::start_in_arbiter(arbiter, |_| room);
        rooms.insert(name.to_owned(), (generation, addr.clone()));
        Some(addr)
    }

    /// New limits for new rooms and for every live room (a configuration reload).
    pub fn set_limits(&self, limits: ChatLimits) {
        *self.limits.write() = limits.clone();
        for (_, addr) in self.rooms.lock().values() {
            addr.do_send(SetLimits { limits: limits.clone() });
        }
    }

    /// Hands off every room whose home is this node (see [`HandOff`]).
    pub fn hand_off(&self) {
        for (_, addr) in self.rooms.lock().values() {
            addr.do_send(HandOff);
        }
    }

    /// How many rooms are live.
    pub fn len(&self) -> usize {
        self.rooms.lock().len()
    }

    /// Whether no room is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, name: &str, generation: u64) {
        let mut rooms = self.rooms.lock();
        if rooms.get(name).is_some_and(|(g, _)| *g == generation) {
            rooms.remove(name);
        }
    }
}
