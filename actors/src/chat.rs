//! [`ChatRoom`]: one chat room (beside a stream, or on its own). Its messages, its state,
//! one handler per message; its decisions live in [`ChatCore`]. [`ChatRooms`] finds or
//! starts a room by name.
//!
//! Each member connection registers a bounded queue of JSON text frames. A broadcast is
//! serialized once and the same `Arc<str>` is queued for every member; a member whose queue
//! is full is evicted (its queue closed, which its connection sees and closes), so one
//! member that does not read never slows the room. A room claims its name in the registry
//! (`chat/{name}`, with a lease it renews), like a stream, so the cluster can find it.

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
use crate::events::{ActorType, Gauge, NodeCounters};
use crate::supervisor::LEASE_RENEW_INTERVAL;
use zenlive_cluster::{
    ActorKey, ActorKind, Lease, NodeId, Registry, RegistryError, ACTOR_LEASE_TTL,
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

/// Asks how many members the room has.
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
    _alive: Gauge,
}

/// Where rooms are registered: the node's registry and id.
#[derive(Clone)]
pub struct Placement {
    /// The registry of actor names.
    pub registry: Arc<dyn Registry>,
    /// This node.
    pub node: NodeId,
}

impl ChatRoom {
    /// Claims the room's name in the registry (so the cluster can find it), renews the
    /// lease, and stops the room if the name belongs to someone else or the lease is lost.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        let registry = Arc::clone(&self.placement.registry);
        let node = self.placement.node.clone();
        let key = ActorKey::new(ActorKind::ChatRoom, self.name.clone());
        let claim = async move {
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
        ctx.spawn(claim.into_actor(self).map(|claimed, act, ctx| match claimed {
            Ok(lease) => act.lease = Some(lease),
            Err(error) => {
                tracing::error!(room = %act.name, %error, "chat room name not granted; stopping the room");
                ctx.stop();
            }
        }));
        ctx.run_interval(LEASE_RENEW_INTERVAL, |act, ctx| {
            let Some(lease) = act.lease.clone() else { return };
            let registry = Arc::clone(&act.placement.registry);
            let renew = async move { registry.renew(&lease).await };
            ctx.spawn(renew.into_actor(act).map(|renewed, act, ctx| {
                if let Err(error) = renewed {
                    // Self-fencing: without the lease this node may not act as the room.
                    tracing::error!(room = %act.name, %error, "chat room lease lost; stopping");
                    act.lease = None;
                    ctx.stop();
                }
            }));
        });
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
        let mut failed = Vec::new();
        let mut delivered = 0;
        for (member, queue) in &self.outbound {
            match queue.try_send(Arc::clone(&frame)) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_)) => failed.push((*member, true)),
                Err(TrySendError::Closed(_)) => failed.push((*member, false)),
            }
        }
        NodeCounters::add(&self.counters.chat_deliveries, delivered);
        for (member, slow) in failed {
            self.drop_member(member, slow, ctx);
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

    fn send(&mut self, member: MemberId, frame: Arc<str>, ctx: &mut Context<Self>) {
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
        if self.outbound.remove(&member).is_some() {
            let effects = self.core.leave(member);
            self.apply(None, effects, ctx);
            self.watch_idle(ctx);
        }
    }

    fn watch_idle(&mut self, ctx: &mut Context<Self>) {
        if self.outbound.is_empty() && self.idle.is_none() {
            self.idle = Some(ctx.run_later(ROOM_IDLE, |act, ctx| {
                if act.outbound.is_empty() {
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
    type Result = Result<(), ChatError>;

    fn handle(&mut self, msg: Join, ctx: &mut Self::Context) -> Self::Result {
        let effects = self.core.join(msg.member, msg.user)?;
        self.outbound.insert(msg.member, msg.outbound);
        if let Some(idle) = self.idle.take() {
            ctx.cancel_future(idle);
        }
        self.apply(Some(msg.member), effects, ctx);
        Ok(())
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
        let effects = self.core.system(msg.text, now_ms());
        self.apply(None, effects, ctx);
    }
}

impl Handler<Moderate> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Moderate, ctx: &mut Self::Context) {
        let effects = self.core.moderate(msg.command, now_ms());
        self.apply(None, effects, ctx);
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
    limits: ChatLimits,
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
            limits,
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
        self.get_or_start_within(name, arbiter, usize::MAX)
            .expect("no cap on the number of rooms, so a room is always started")
    }

    /// The room `name`, started on `arbiter` if it is not live and fewer than `max_rooms`
    /// rooms are; `None` when that cap is reached (rooms are named by clients, so the map
    /// must not grow without bound).
    pub fn get_or_start_within(
        &self,
        name: &str,
        arbiter: &ArbiterHandle,
        max_rooms: usize,
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
            core: ChatCore::new(self.limits.clone()),
            outbound: HashMap::new(),
            rooms: self.clone(),
            counters: Arc::clone(&self.counters),
            hooks: self.hooks.clone(),
            idle: None,
            placement: self.placement.clone(),
            lease: None,
            _alive: self.counters.actor(ActorType::ChatRoom),
        };
        let addr = ChatRoom::start_in_arbiter(arbiter, |_| room);
        rooms.insert(name.to_owned(), (generation, addr.clone()));
        Some(addr)
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
