//! [`ChatRoom`]: one chat room (beside a stream, or on its own) on this node. Its state and
//! one handler per message (the messages are in [`super::messages`]); its decisions live in
//! [`ChatCore`] and the plain parts below this actor, which carries them out.
//!
//! Each member connection registers a bounded queue of JSON text frames. A room claims its
//! name in the registry (`chat/{name}`) when it starts, as a future beside its mailbox whose
//! outcome arrives as a message; the outcome sets the room's role once (home, satellite, or
//! stop), and what arrived meanwhile is handled then, in order. Every handler dispatches on
//! the role: the home decides, a satellite forwards to the home (see the [`super`] docs for
//! the files behind each). What only an actor can do stays here: running calls to other
//! nodes and the application's decider as futures, the idle timer, stopping.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use zenlive_registry::NodeId;

use super::home::{self, Asked, Home};
use super::hooks::{ChatHooks, ChatMessageRequest, Verdict};
use super::members::{Call, Followup, Roster};
use super::messages::{
    Command, Deliver, HandOff, Join, Leave, Members, Moderate, RemoteRequest, SetLimits,
    SystemMessage,
};
use super::pending::{Pending, Queued, PENDING_LIMIT};
use super::placement::Placement;
use super::remote::{Delivery, RemoteRoomError, RoomRequest};
use super::role::{self, Claimed, Role};
use super::satellite::Satellite;
use super::tenure::{Predecessor, Tenure};
use crate::chat_core::{ChatCore, ChatError, ChatLimits, Effects, MemberId};
use crate::chat_protocol::ClientCommand;
use crate::events::{ActorType, Gauge, NodeCounters};
use crate::lease::{Released, Renewal, LEASE_RENEW_INTERVAL};
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
struct LeaseReport {
    renewal: Renewal,
}

/// Unix milliseconds now, for the core.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a room instance does once it has stopped: the directory forgets it.
pub(super) type OnStopped = Box<dyn FnOnce() + Send>;

/// One chat room. See the module docs.
pub struct ChatRoom {
    name: String,
    /// Who is in the room, and the room's core.
    roster: Roster,
    role: Role,
    hooks: ChatHooks,
    idle: Option<SpawnHandle>,
    placement: Placement,
    /// This instance's hold on the name, until the claim's task takes it.
    tenure: Option<Tenure>,
    /// The previous instance of the room on this node, which the claim waits for.
    predecessor: Option<Predecessor>,
    /// What was still queued when the room stopped while handling its queue: kept until the
    /// room is dropped, so its senders see the room stop rather than an answer.
    stranded: Option<Pending>,
    on_stopped: Option<OnStopped>,
    _alive: Gauge,
    /// The opening client's place under its per-address cap, given back when the room
    /// stops; `None` for rooms the application or another node opened.
    _opener: Option<Slot>,
}

/// What [`ChatRooms`](super::ChatRooms) starts a room with.
pub(super) struct RoomStart {
    pub(super) name: String,
    pub(super) limits: ChatLimits,
    pub(super) counters: Arc<NodeCounters>,
    pub(super) hooks: ChatHooks,
    pub(super) placement: Placement,
    pub(super) opener: Option<Slot>,
    pub(super) tenure: Tenure,
    pub(super) predecessor: Option<Predecessor>,
    pub(super) on_stopped: OnStopped,
}

impl ChatRoom {
    /// A room whose role is pending until its claim resolves.
    pub(super) fn new(start: RoomStart) -> Self {
        let core = ChatCore::new(start.limits);
        let counters = start.counters;
        Self {
            roster: Roster::new(
                start.name.clone(),
                core,
                Arc::clone(&counters),
                start.hooks.clone(),
            ),
            name: start.name,
            role: Role::Pending(Pending::new(PENDING_LIMIT)),
            hooks: start.hooks,
            idle: None,
            placement: start.placement,
            tenure: Some(start.tenure),
            predecessor: start.predecessor,
            stranded: None,
            on_stopped: Some(start.on_stopped),
            _alive: counters.actor(ActorType::ChatRoom),
            _opener: start.opener,
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
                let room = ctx.address();
                let registry = Arc::clone(&self.placement.registry);
                let home = Home::start(registry, lease, move |renewal| {
                    room.do_send(LeaseReport { renewal });
                });
                let released = home.keeper.released();
                (Role::Home(home), Some(released))
            }
            Claimed::Satellite(home) => {
                // `role::decide` makes satellites only in a cluster, which has a transport.
                let Some(transport) = self.placement.transport.clone() else {
                    ctx.stop();
                    return None;
                };
                tracing::debug!(room = %self.name, home = %home.node, "chat room is a satellite");
                ctx.run_interval(LEASE_RENEW_INTERVAL, |act, ctx| act.check_home(ctx));
                (Role::Satellite(Satellite { home, transport }), None)
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
                let followup = self.roster.take_delivery(&mut self.role, delivery);
                self.follow(followup, ctx);
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
            Role::Home(_) => {
                tracing::info!(room = %self.name, members = self.roster.core.members(), "node draining: handing the chat room off");
                // Closing the queues closes the members' connections; satellites see the
                // lease go (released when the actor stops) and end too, so every member
                // reconnects.
                self.roster.close_local();
                ctx.stop();
            }
            Role::Satellite(_) => {}
        }
    }

    fn members(&mut self, msg: Members) -> ResponseActFuture<Self, usize> {
        match &mut self.role {
            Role::Pending(pending) => Box::pin(fut::wrap_future::<_, Self>(pending.members(msg))),
            Role::Home(_) | Role::Satellite(_) => Box::pin(fut::ready(self.roster.core.members())),
        }
    }
}

/// The home's side: commands through the core and the application's decider, requests
/// from satellites.
impl ChatRoom {
    /// A local member joins; the history arrives on its queue first.
    fn join_here(&mut self, msg: Join, ctx: &mut Context<Self>) -> JoinResult {
        match self.roster.join(&mut self.role, msg) {
            Ok(followup) => {
                self.follow(followup, ctx);
                Ok(())
            }
            Err(error) => {
                self.watch_idle(ctx);
                Err(error)
            }
        }
    }

    /// Runs a member's command (the member may be local or remote); a message goes past
    /// the application's decider first, when there is one.
    fn run_command(&mut self, member: MemberId, command: ClientCommand, ctx: &mut Context<Self>) {
        let (ClientCommand::Message { text, client_id }, Some(decide)) =
            (&command, self.hooks.decide.clone())
        else {
            let effects = self.roster.core.command(member, command, now_ms());
            return self.apply(Some(member), effects, ctx);
        };
        let client_id = client_id.clone();
        let (user, text) = match self.roster.core.check_message(member, text.clone(), now_ms()) {
            Ok(checked) => checked,
            Err(error) => {
                return self.apply(Some(member), ChatCore::refusal(error, client_id), ctx)
            }
        };
        let request =
            ChatMessageRequest { room: self.name.clone(), user: user.clone(), text: text.clone() };
        let decision = self.hooks.ask(&decide, request);
        ctx.spawn(decision.into_actor(self).map(move |decision, act, ctx| {
            let (verdict, failure) = act.hooks.settle(decision, text);
            if let Some(why) = failure {
                let outcome =
                    if matches!(verdict, Verdict::Publish(_)) { "allowing" } else { "refusing" };
                tracing::warn!(room = %act.name, %why, "chat hook failed; {outcome}");
            }
            let effects = match verdict {
                Verdict::Publish(text) => act.roster.core.publish(user, text, client_id, now_ms()),
                Verdict::Refuse(reason) => {
                    ChatCore::refusal(ChatError::Rejected(reason), client_id)
                }
            };
            act.apply(Some(member), effects, ctx);
        }));
    }

    /// A system message from the application.
    fn post_system(&mut self, text: String, ctx: &mut Context<Self>) {
        let effects = self.roster.core.system(text, now_ms());
        self.apply(None, effects, ctx);
    }

    /// A moderation command from the application.
    fn run_moderation(&mut self, command: ClientCommand, ctx: &mut Context<Self>) {
        let effects = self.roster.core.moderate(command, now_ms());
        self.apply(None, effects, ctx);
    }

    /// What a satellite on node `from` asks of the home.
    fn satellite_asks(
        &mut self,
        from: NodeId,
        request: RoomRequest,
        ctx: &mut Context<Self>,
    ) -> RemoteResult {
        let Role::Home(home) = &mut self.role else { return Ok(()) };
        match home.remote.asked(from, request)? {
            Asked::Join { id, user } => {
                self.cancel_idle(ctx);
                match self.roster.core.join(id, user) {
                    Ok(effects) => self.apply(Some(id), effects, ctx),
                    Err(error) => {
                        if let Some(remote) = self.role.remote_mut() {
                            remote.remove(id);
                        }
                        self.watch_idle(ctx);
                        return Err(error.into());
                    }
                }
            }
            Asked::Command { id, command } => self.run_command(id, command, ctx),
            Asked::Leave { id } => {
                let effects = self.roster.core.leave(id);
                self.apply(None, effects, ctx);
                self.watch_idle(ctx);
            }
            Asked::System { text } => self.post_system(text, ctx),
            Asked::Moderate { command } => self.run_moderation(command, ctx),
            Asked::Nothing => {}
        }
        Ok(())
    }
}

/// A satellite's side: the calls to its home.
impl ChatRoom {
    /// Stops when the home no longer owns the room (its node died or the room moved).
    fn check_home(&mut self, ctx: &mut Context<Self>) {
        let Role::Satellite(satellite) = &self.role else { return };
        let home = satellite.home.node.clone();
        let stays = satellite.home_stays(Arc::clone(&self.placement.registry), &self.name);
        ctx.spawn(stays.into_actor(self).map(move |stays, act, ctx| {
            if !stays {
                tracing::info!(room = %act.name, %home, "chat room's home is gone; stopping the satellite");
                ctx.stop();
            }
        }));
    }

    /// A local member joins through the home; answers the home's answer.
    fn join_via_home(&mut self, msg: Join) -> ResponseActFuture<Self, JoinResult> {
        let Role::Satellite(satellite) = &self.role else {
            return Box::pin(fut::ready(Err(ChatError::Unavailable("not a satellite".into()))));
        };
        let member = msg.member;
        let joined = satellite.join(&self.name, member, msg.user);
        // The member's queue is in place before the home answers, so the history the home
        // sends right after its answer finds it.
        self.roster.add_local(member, msg.outbound);
        Box::pin(joined.into_actor(self).map(move |joined, act, ctx| {
            if joined.is_err() {
                act.roster.remove_local(member);
                act.watch_idle(ctx);
            }
            joined
        }))
    }

    /// Sends `request` to the home; a home that cannot be reached stops the satellite,
    /// since its members can no longer reach the room.
    fn forward(&mut self, request: RoomRequest, ctx: &mut Context<Self>) {
        let Role::Satellite(satellite) = &self.role else { return };
        let sent = satellite.to_home(&self.name, request);
        ctx.spawn(sent.into_actor(self).map(|result, act, ctx| {
            if let Err(RemoteRoomError::Unreachable(why)) = result {
                tracing::warn!(room = %act.name, why, "chat room's home unreachable; stopping the satellite");
                ctx.stop();
            }
        }));
    }
}

/// Carrying out what the roster (`members`) decided, and the idle timer.
impl ChatRoom {
    /// Carries out `effects` of something `caller` did.
    fn apply(&mut self, caller: Option<MemberId>, effects: Effects, ctx: &mut Context<Self>) {
        let followup = self.roster.apply(&mut self.role, caller, effects);
        self.follow(followup, ctx);
    }

    /// Lets `member` go.
    fn evict(&mut self, member: MemberId, ctx: &mut Context<Self>) {
        let followup = self.roster.evict(&mut self.role, member);
        self.follow(followup, ctx);
    }

    /// Makes the calls the roster asked for, in order, then checks whether the room is idle.
    fn follow(&mut self, followup: Followup, ctx: &mut Context<Self>) {
        for call in followup.calls {
            match call {
                Call::ToSatellite(node, delivery) => self.send_to_satellite(node, &delivery, ctx),
                Call::ToHome(request) => self.forward(request, ctx),
            }
        }
        if followup.check_idle {
            self.watch_idle(ctx);
        }
    }

    /// The home sends `delivery` to the satellite on `node`; a satellite that cannot be
    /// reached loses its members here.
    fn send_to_satellite(&mut self, node: NodeId, delivery: &Delivery, ctx: &mut Context<Self>) {
        let Some(transport) = &self.placement.transport else { return };
        let nodes = [node];
        let sends = transport.to_satellites(&nodes, &self.name, delivery);
        for (node, sent) in nodes.into_iter().zip(sends) {
            ctx.spawn(sent.into_actor(self).map(move |result, act, ctx| {
                if let Err(error) = result {
                    tracing::warn!(room = %act.name, satellite = %node, %error, "chat satellite unreachable; dropping its members");
                    let followup = act.roster.satellite_lost(&mut act.role, &node);
                    act.follow(followup, ctx);
                }
            }));
        }
    }

    /// Stops the room after [`ROOM_IDLE`] without members (here or on satellites).
    fn watch_idle(&mut self, ctx: &mut Context<Self>) {
        if self.roster.has_members(&self.role) || self.idle.is_some() {
            return;
        }
        self.idle = Some(ctx.run_later(ROOM_IDLE, |act, ctx| {
            if !act.roster.has_members(&act.role) {
                tracing::debug!(room = %act.name, "chat room idle; stopping");
                ctx.stop();
            }
            act.idle = None;
        }));
    }

    /// A member arrives: the room is not idle.
    fn cancel_idle(&mut self, ctx: &mut Context<Self>) {
        if let Some(idle) = self.idle.take() {
            ctx.cancel_future(idle);
        }
    }
}

type JoinResult = Result<(), ChatError>;
type RemoteResult = Result<(), RemoteRoomError>;

impl crate::remote::NamedActor for ChatRoom {
    const KIND: zenlive_registry::ActorKind = zenlive_registry::ActorKind::ChatRoom;
}

impl Actor for ChatRoom {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.claim(ctx);
        self.watch_idle(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // The home's lease keeper releases the lease when the room is dropped, right after.
        if let Some(forget) = self.on_stopped.take() {
            forget();
        }
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
        self.roster.core.set_limits(msg.limits);
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
            if home::lease_lost(&self.name, msg.renewal) {
                ctx.stop();
            }
        }
    }
}
