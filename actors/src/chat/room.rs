//! [`ChatRoom`]: one chat room (beside a stream, or on its own) on this node. Its messages,
//! its state, one handler per message; its decisions live in [`ChatCore`].
//!
//! Each member connection registers a bounded queue of JSON text frames. A room claims its
//! name in the registry (`chat/{name}`) when it starts, as a future beside its mailbox whose
//! outcome arrives as a message; the outcome sets the room's role once (home, satellite, or
//! stop), and what arrived meanwhile is handled then, in order. Every handler dispatches on
//! the role: the home decides, a satellite forwards to the home (see the [`super`] docs for
//! the files behind each).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;

use super::directory::ChatRooms;
use super::hooks::ChatHooks;
use super::messages::{
    Command, Deliver, HandOff, Join, Leave, Members, Moderate, Outbound, RemoteRequest, SetLimits,
    SystemMessage,
};
use super::pending::{Pending, Queued, PENDING_LIMIT};
use super::placement::Placement;
use super::remote::{Delivery, RemoteRoomError, RoomRequest};
use super::role::{self, Claimed, Role};
use super::tenure::{Predecessor, Tenure};
use crate::chat_core::{ChatCore, ChatError, ChatLimits, MemberId};
use crate::events::{ActorType, Gauge, NodeCounters};
use crate::lease::{Released, Renewal};
use crate::quota::Slot;

/// How long a room with no members lives on before it stops.
pub const ROOM_IDLE: Duration = Duration::from_secs(60);

/// How many messages a room's mailbox holds.
const MAILBOX_CAPACITY: usize = 4096;

/// The room's claim resolved (from the claim's task). Answers the home's [`Released`], so
/// the task holds the room's tenure until the lease is let go.
#[derive(Message)]
#[rtype(result = "Option<Released>")]
struct Resolve {
    claimed: Claimed,
}

/// The home's lease keeper reports.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct LeaseReport {
    pub(super) renewal: Renewal,
}

/// Unix milliseconds now, for the core.
pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One chat room. See the module docs.
pub struct ChatRoom {
    pub(super) name: String,
    generation: u64,
    pub(super) core: ChatCore,
    /// Local members' queues.
    pub(super) outbound: HashMap<MemberId, Outbound>,
    rooms: ChatRooms,
    pub(super) counters: Arc<NodeCounters>,
    pub(super) hooks: ChatHooks,
    pub(super) idle: Option<SpawnHandle>,
    pub(super) placement: Placement,
    pub(super) role: Role,
    /// This instance's hold on the name, until the claim's task takes it.
    tenure: Option<Tenure>,
    /// The previous instance of the room on this node, which the claim waits for.
    predecessor: Option<Predecessor>,
    /// What was still queued when the room stopped while handling its queue: kept until the
    /// room is dropped, so its senders see the room stop rather than an answer.
    stranded: Option<Pending>,
    _alive: Gauge,
    /// The opening client's place under its per-address cap, given back when the room
    /// stops; `None` for rooms the application or another node opened.
    _opener: Option<Slot>,
}

/// What [`ChatRooms`] starts a room with.
pub(super) struct RoomStart {
    pub(super) name: String,
    pub(super) generation: u64,
    pub(super) limits: ChatLimits,
    pub(super) rooms: ChatRooms,
    pub(super) opener: Option<Slot>,
    pub(super) tenure: Tenure,
    pub(super) predecessor: Option<Predecessor>,
}

impl ChatRoom {
    /// A room whose role is pending until its claim resolves.
    pub(super) fn new(start: RoomStart) -> Self {
        let rooms = start.rooms;
        Self {
            name: start.name,
            generation: start.generation,
            core: ChatCore::new(start.limits),
            outbound: HashMap::new(),
            counters: Arc::clone(&rooms.counters),
            hooks: rooms.hooks.clone(),
            idle: None,
            placement: rooms.placement.clone(),
            role: Role::Pending(Pending::new(PENDING_LIMIT)),
            tenure: Some(start.tenure),
            predecessor: start.predecessor,
            stranded: None,
            _alive: rooms.counters.actor(ActorType::ChatRoom),
            _opener: start.opener,
            rooms,
        }
    }

    /// Runs the claim ([`role::claim`]) as its own task and sends its outcome here as
    /// [`Resolve`]. The task holds the room's tenure until the name is let go: at once for
    /// a satellite or a refusal, when the home's lease is released otherwise, and (should
    /// the room be gone before it heard) after releasing a lease granted too late.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        let claim = role::claim(self.placement.clone(), self.name.clone(), self.predecessor.take());
        let tenure = self.tenure.take();
        let registry = Arc::clone(&self.placement.registry);
        let room = ctx.address();
        actix_rt::spawn(async move {
            let claimed = claim.await;
            let lease = match &claimed {
                Claimed::Home(lease) => Some(lease.clone()),
                _ => None,
            };
            let heard = room.send(Resolve { claimed }).await;
            drop(room);
            match (heard, lease) {
                (Ok(Some(released)), _) => released.wait().await,
                (Err(_), Some(lease)) => {
                    if let Err(error) = registry.release(&lease).await {
                        tracing::warn!(%error, "could not release a chat room lease; it will expire");
                    }
                }
                _ => {}
            }
            drop(tenure);
        });
    }

    /// Sets the role the claim decided, once, and handles what waited for it, in order.
    fn resolve(&mut self, claimed: Claimed, ctx: &mut Context<Self>) -> Option<Released> {
        if !matches!(self.role, Role::Pending(_)) {
            return None;
        }
        let (role, released) = match claimed {
            Claimed::Home(lease) => {
                let home = self.become_home(lease, ctx);
                let released = home.keeper.released();
                (Role::Home(home), Some(released))
            }
            Claimed::Satellite(home) => {
                // `role::decide` makes satellites only in a cluster, which has a transport.
                let Some(transport) = self.placement.transport.clone() else {
                    ctx.stop();
                    return None;
                };
                (Role::Satellite(self.become_satellite(home, transport, ctx)), None)
            }
            Claimed::Refused(error) => {
                // The role stays pending: what waits is dropped with the room.
                tracing::error!(room = %self.name, %error, "chat room name not granted; stopping the room");
                ctx.stop();
                return None;
            }
        };
        let Role::Pending(mut pending) = std::mem::replace(&mut self.role, role) else {
            return released;
        };
        tracing::debug!(room = %self.name, queued = pending.len(), "chat room's role decided");
        while !ctx.state().stopping() {
            let Some(queued) = pending.pop() else { break };
            self.dispatch(queued, ctx);
        }
        if pending.len() > 0 {
            self.stranded = Some(pending);
        }
        // Members who queued may have left meanwhile: an empty room goes idle as usual.
        self.watch_idle(ctx);
        released
    }

    /// Handles what waited for the role, as its handler would have; answers go back to
    /// whoever waits.
    fn dispatch(&mut self, queued: Queued, ctx: &mut Context<Self>) {
        match queued {
            Queued::Join(join, answer) => {
                let joined = self.join(join, ctx);
                ctx.spawn(joined.map(|joined, _, _| {
                    let _ = answer.send(joined);
                }));
            }
            Queued::Command(command) => self.command(command, ctx),
            Queued::System(message) => self.system(message, ctx),
            Queued::Moderate(command) => self.moderate(command, ctx),
            Queued::Remote(request, answer) => {
                let answered = self.remote_request(request, ctx);
                ctx.spawn(answered.map(|answered, _, _| {
                    let _ = answer.send(answered);
                }));
            }
            Queued::Deliver(delivery, answer) => {
                let answered = self.deliver(delivery, ctx);
                ctx.spawn(answered.map(|answered, _, _| {
                    let _ = answer.send(answered);
                }));
            }
            Queued::HandOff(hand_off) => self.hand_off(hand_off, ctx),
            Queued::Members(members, answer) => {
                let count = self.members(members);
                ctx.spawn(count.map(|count, _, _| {
                    let _ = answer.send(count);
                }));
            }
        }
    }

    fn join(&mut self, msg: Join, ctx: &mut Context<Self>) -> ResponseActFuture<Self, JoinResult> {
        match &mut self.role {
            Role::Pending(pending) => Box::pin(fut::wrap_future::<_, Self>(pending.join(msg))),
            Role::Home(_) => {
                self.cancel_idle(ctx);
                Box::pin(fut::ready(self.join_here(msg, ctx)))
            }
            Role::Satellite(_) => {
                self.cancel_idle(ctx);
                self.join_via_home(msg)
            }
        }
    }

    fn leave(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        match &mut self.role {
            Role::Pending(pending) => pending.forget(msg.member),
            Role::Home(_) | Role::Satellite(_) => self.evict(msg.member, ctx),
        }
    }

    fn command(&mut self, msg: Command, ctx: &mut Context<Self>) {
        match &mut self.role {
            Role::Pending(pending) => pending.command(msg),
            Role::Home(_) => self.run_command(msg.member, msg.command, ctx),
            Role::Satellite(_) => {
                if let Ok(command) = serde_json::to_string(&msg.command) {
                    self.forward(RoomRequest::Command { member: msg.member, command }, ctx);
                }
            }
        }
    }

    fn system(&mut self, msg: SystemMessage, ctx: &mut Context<Self>) {
        match &mut self.role {
            Role::Pending(pending) => {
                if !pending.system(msg) {
                    tracing::warn!(room = %self.name, "chat room starting and full; system message dropped");
                }
            }
            Role::Home(_) => self.post_system(msg.text, ctx),
            Role::Satellite(_) => self.forward(RoomRequest::System { text: msg.text }, ctx),
        }
    }

    fn moderate(&mut self, msg: Moderate, ctx: &mut Context<Self>) {
        match &mut self.role {
            Role::Pending(pending) => {
                if !pending.moderate(msg) {
                    tracing::warn!(room = %self.name, "chat room starting and full; moderation dropped");
                }
            }
            Role::Home(_) => self.run_moderation(msg.command, ctx),
            Role::Satellite(_) => {
                if let Ok(command) = serde_json::to_string(&msg.command) {
                    self.forward(RoomRequest::Moderate { command }, ctx);
                }
            }
        }
    }

    fn remote_request(
        &mut self,
        msg: RemoteRequest,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, RemoteResult> {
        match &mut self.role {
            Role::Pending(pending) => Box::pin(fut::wrap_future::<_, Self>(pending.remote(msg))),
            Role::Home(_) => Box::pin(fut::ready(self.satellite_asks(msg.from, msg.request, ctx))),
            Role::Satellite(_) => Box::pin(fut::ready(Err(RemoteRoomError::Unreachable(
                "this node is not the room's home".into(),
            )))),
        }
    }

    fn deliver(
        &mut self,
        delivery: Delivery,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, RemoteResult> {
        match &mut self.role {
            Role::Pending(pending) => {
                Box::pin(fut::wrap_future::<_, Self>(pending.deliver(delivery)))
            }
            Role::Satellite(_) => {
                self.take_delivery(delivery, ctx);
                Box::pin(fut::ready(Ok(())))
            }
            Role::Home(_) => Box::pin(fut::ready(Err(RemoteRoomError::Unreachable(
                "this room is not a satellite".into(),
            )))),
        }
    }

    fn hand_off(&mut self, msg: HandOff, ctx: &mut Context<Self>) {
        match &mut self.role {
            Role::Pending(pending) => pending.hand_off(msg),
            Role::Home(_) => self.hand_off_home(ctx),
            Role::Satellite(_) => {}
        }
    }

    fn members(&mut self, msg: Members) -> ResponseActFuture<Self, usize> {
        match &mut self.role {
            Role::Pending(pending) => Box::pin(fut::wrap_future::<_, Self>(pending.members(msg))),
            Role::Home(_) | Role::Satellite(_) => Box::pin(fut::ready(self.core.members())),
        }
    }
}

type JoinResult = Result<(), ChatError>;
type RemoteResult = Result<(), RemoteRoomError>;

impl Actor for ChatRoom {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.claim(ctx);
        self.watch_idle(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // The home's lease keeper releases the lease when the room is dropped, right after.
        self.rooms.remove(&self.name, self.generation);
    }
}

impl Handler<Join> for ChatRoom {
    type Result = ResponseActFuture<Self, JoinResult>;

    fn handle(&mut self, msg: Join, ctx: &mut Self::Context) -> Self::Result {
        self.join(msg, ctx)
    }
}

impl Handler<Leave> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Self::Context) {
        self.leave(msg, ctx);
    }
}

impl Handler<Command> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Command, ctx: &mut Self::Context) {
        self.command(msg, ctx);
    }
}

impl Handler<SystemMessage> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: SystemMessage, ctx: &mut Self::Context) {
        self.system(msg, ctx);
    }
}

impl Handler<Moderate> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Moderate, ctx: &mut Self::Context) {
        self.moderate(msg, ctx);
    }
}

impl Handler<RemoteRequest> for ChatRoom {
    type Result = ResponseActFuture<Self, RemoteResult>;

    fn handle(&mut self, msg: RemoteRequest, ctx: &mut Self::Context) -> Self::Result {
        self.remote_request(msg, ctx)
    }
}

impl Handler<Deliver> for ChatRoom {
    type Result = ResponseActFuture<Self, RemoteResult>;

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) -> Self::Result {
        self.deliver(msg.0, ctx)
    }
}

impl Handler<HandOff> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: HandOff, ctx: &mut Self::Context) {
        self.hand_off(msg, ctx);
    }
}

impl Handler<Members> for ChatRoom {
    type Result = ResponseActFuture<Self, usize>;

    fn handle(&mut self, msg: Members, _ctx: &mut Self::Context) -> Self::Result {
        self.members(msg)
    }
}

impl Handler<SetLimits> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: SetLimits, _ctx: &mut Self::Context) {
        self.core.set_limits(msg.limits);
    }
}

impl Handler<Resolve> for ChatRoom {
    type Result = Option<Released>;

    fn handle(&mut self, msg: Resolve, ctx: &mut Self::Context) -> Self::Result {
        self.resolve(msg.claimed, ctx)
    }
}

impl Handler<LeaseReport> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: LeaseReport, ctx: &mut Self::Context) {
        if let Role::Home(_) = self.role {
            self.lease_renewed(msg.renewal, ctx);
        }
    }
}
