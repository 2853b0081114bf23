//! [`Roster`]: a room's members on this node and how frames reach them. The effects
//! [`ChatCore`] returns are carried out here, whatever the room's role.
//!
//! A broadcast is serialized once and the same `Arc<str>` is queued for every local member;
//! a member whose queue is full is evicted (its queue closed, which its connection sees and
//! closes), so one member that does not read never slows the room. At the home, the frame
//! also goes once to each satellite node with members ([`Delivery`]); a satellite that
//! cannot be reached loses its members ([`Roster::satellite_lost`]).
//!
//! Plain Rust, no actix: what needs the room's actor (calls to other nodes, which it runs as
//! futures, and the idle timer) comes back as a [`Followup`], in the order it arose.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;
use zenlive_registry::NodeId;

use super::hooks::{ChatHooks, DeliveredMessage};
use super::messages::{Join, Outbound};
use super::remote::{Delivery, RoomRequest};
use super::role::Role;
use crate::chat_core::{ChatCore, ChatError, Effects, MemberId};
use crate::chat_protocol::ServerEvent;
use crate::events::NodeCounters;

/// A call to another node that carrying out effects asks for.
#[derive(Debug, PartialEq)]
pub(super) enum Call {
    /// The home sends `delivery` to the satellite on this node; one that cannot be reached
    /// loses its members ([`Roster::satellite_lost`]).
    ToSatellite(NodeId, Delivery),
    /// A satellite tells its home (a local member left); a home that cannot be reached
    /// stops the satellite.
    ToHome(RoomRequest),
}

/// What a [`Roster`] leaves to the room's actor.
#[derive(Debug, Default)]
#[must_use = "the calls are made and the idle check run by the room's actor"]
pub(super) struct Followup {
    /// Calls to other nodes, in the order they arose.
    pub(super) calls: Vec<Call>,
    /// A member left or was let go: the room may be idle now.
    pub(super) check_idle: bool,
}

/// A room's members on this node: the room's [`ChatCore`] (used at the home, which alone
/// decides) and the local members' queues. Every method that changes who is in the room
/// takes the room's [`Role`]: the home's members on satellites live there, and a satellite
/// tells its home who left.
pub(super) struct Roster {
    /// The room's name, for logs and listeners.
    name: String,
    /// The room's state and decisions (members, history, limits, moderation).
    pub(super) core: ChatCore,
    /// Local members' queues.
    local: HashMap<MemberId, Outbound>,
    counters: Arc<NodeCounters>,
    /// The application's listeners, told of every broadcast member message.
    hooks: ChatHooks,
}

impl Roster {
    /// The members of room `name` (none yet), decided by `core`.
    pub(super) fn new(
        name: String,
        core: ChatCore,
        counters: Arc<NodeCounters>,
        hooks: ChatHooks,
    ) -> Self {
        Self { name, core, local: HashMap::new(), counters, hooks }
    }

    /// A local member joins at the home: the core admits it (its queue is kept, the history
    /// queued on it first) or refuses it (then the room may be idle).
    pub(super) fn join(&mut self, role: &mut Role, join: Join) -> Result<Followup, ChatError> {
        let effects = self.core.join(join.member, join.user)?;
        self.local.insert(join.member, join.outbound);
        Ok(self.apply(role, Some(join.member), effects))
    }

    /// Keeps a local member's queue (a satellite's member, before its home answers).
    pub(super) fn add_local(&mut self, member: MemberId, outbound: Outbound) {
        self.local.insert(member, outbound);
    }

    /// Drops a local member's queue without telling anyone (its join was refused).
    pub(super) fn remove_local(&mut self, member: MemberId) {
        self.local.remove(&member);
    }

    /// Drops every local member's queue, which closes their connections (a hand-off).
    pub(super) fn close_local(&mut self) {
        self.local.clear();
    }

    /// Whether the room has members, here or (at the home) on satellites.
    pub(super) fn has_members(&self, role: &Role) -> bool {
        !self.local.is_empty() || role.remote().is_some_and(|r| !r.by_id.is_empty())
    }

    /// Carries out `effects` of something `caller` did (replies go to the caller only).
    pub(super) fn apply(
        &mut self,
        role: &mut Role,
        caller: Option<MemberId>,
        effects: Effects,
    ) -> Followup {
        let mut out = Followup::default();
        self.apply_into(role, caller, effects, &mut out);
        out
    }

    /// Lets `member` go: its queue is dropped (its connection then closes) and the others
    /// are told, at the home through the core, at a satellite by telling the home.
    pub(super) fn evict(&mut self, role: &mut Role, member: MemberId) -> Followup {
        let mut out = Followup::default();
        self.evict_into(role, member, &mut out);
        out
    }

    /// A satellite takes frames from the home for its members, and the members the home
    /// let go.
    pub(super) fn take_delivery(&mut self, role: &mut Role, delivery: Delivery) -> Followup {
        let mut out = Followup::default();
        let Delivery { frames, to, evict } = delivery;
        for frame in frames {
            let frame: Arc<str> = Arc::from(frame);
            match to {
                Some(member) => self.send(role, member, frame, &mut out),
                None => self.fan_out(role, &frame, &mut out),
            }
        }
        for member in evict {
            // The home already counted the leave: only the connection goes.
            self.local.remove(&member);
        }
        out.check_idle = true;
        out
    }

    /// The home could not reach the satellite on `node`: its members leave the room.
    pub(super) fn satellite_lost(&mut self, role: &mut Role, node: &NodeId) -> Followup {
        let mut out = Followup::default();
        let gone = role.remote().map(|r| r.of_node(node)).unwrap_or_default();
        for member in gone {
            if let Some(remote) = role.remote_mut() {
                remote.remove(member);
            }
            let effects = self.core.leave(member);
            self.apply_into(role, None, effects, &mut out);
        }
        out.check_idle = true;
        out
    }

    fn apply_into(
        &mut self,
        role: &mut Role,
        caller: Option<MemberId>,
        effects: Effects,
        out: &mut Followup,
    ) {
        if let Some(member) = caller {
            for event in &effects.reply {
                self.send(role, member, Arc::from(event.to_json()), out);
            }
        }
        for event in &effects.broadcast {
            self.broadcast(role, event, out);
        }
        for member in effects.kick {
            self.evict_into(role, member, out);
        }
    }

    /// Serializes `event` once and queues the same `Arc<str>` for every member; members
    /// whose queue is full (or gone) are evicted afterwards.
    fn broadcast(&mut self, role: &mut Role, event: &ServerEvent, out: &mut Followup) {
        let frame: Arc<str> = Arc::from(event.to_json());
        self.fan_out(role, &frame, out);
        let satellites: Vec<NodeId> =
            role.remote().map(|r| r.nodes.keys().cloned().collect()).unwrap_or_default();
        for node in satellites {
            let delivery =
                Delivery { frames: vec![frame.to_string()], to: None, evict: Vec::new() };
            out.calls.push(Call::ToSatellite(node, delivery));
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
        for _ in 0..self.hooks.tell_delivered(&delivered) {
            tracing::error!(room = %self.name, "a chat hook panicked");
        }
    }

    /// Queues `frame` for every local member; members whose queue is full (or gone) are
    /// evicted afterwards.
    fn fan_out(&mut self, role: &mut Role, frame: &Arc<str>, out: &mut Followup) {
        let mut failed = Vec::new();
        let mut delivered = 0;
        for (member, queue) in &self.local {
            match queue.try_send(Arc::clone(frame)) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_)) => failed.push((*member, true)),
                Err(TrySendError::Closed(_)) => failed.push((*member, false)),
            }
        }
        NodeCounters::add(&self.counters.chat_deliveries, delivered);
        for (member, slow) in failed {
            self.drop_member(role, member, slow, out);
        }
    }

    /// Queues `frame` for one member, local or (at the home) on a satellite.
    fn send(&mut self, role: &mut Role, member: MemberId, frame: Arc<str>, out: &mut Followup) {
        if let Some((node, remote)) = role.remote().and_then(|r| r.by_id.get(&member).cloned()) {
            let delivery =
                Delivery { frames: vec![frame.to_string()], to: Some(remote), evict: Vec::new() };
            return out.calls.push(Call::ToSatellite(node, delivery));
        }
        let Some(queue) = self.local.get(&member) else { return };
        match queue.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.drop_member(role, member, true, out),
            Err(TrySendError::Closed(_)) => self.drop_member(role, member, false, out),
        }
    }

    /// Evicts a member whose queue was full (`slow`, counted) or closed.
    fn drop_member(&mut self, role: &mut Role, member: MemberId, slow: bool, out: &mut Followup) {
        if slow {
            NodeCounters::add(&self.counters.chat_members_dropped_slow, 1);
            tracing::info!(room = %self.name, member, "chat member not reading; disconnecting");
        }
        self.evict_into(role, member, out);
    }

    /// Drops a member's queue (its connection then closes) and tells the others: at the
    /// home through the core (and a member on a satellite is let go there too), at a
    /// satellite by telling the home.
    fn evict_into(&mut self, role: &mut Role, member: MemberId, out: &mut Followup) {
        if let Some((node, remote)) = role.remote_mut().and_then(|r| r.remove(member)) {
            let effects = self.core.leave(member);
            self.apply_into(role, None, effects, out);
            let delivery = Delivery { frames: Vec::new(), to: None, evict: vec![remote] };
            out.calls.push(Call::ToSatellite(node, delivery));
            out.check_idle = true;
            return;
        }
        if self.local.remove(&member).is_none() {
            return;
        }
        if let Role::Satellite(_) = role {
            out.calls.push(Call::ToHome(RoomRequest::Leave { member }));
        } else {
            let effects = self.core.leave(member);
            self.apply_into(role, None, effects, out);
        }
        out.check_idle = true;
    }
}

#[cfg(test)]
mod tests {
    use futures_util::future::BoxFuture;
    use tokio::sync::mpsc;
    use zenlive_registry::Owner;

    use super::*;
    use crate::chat::pending::Pending;
    use crate::chat::remote::{RemoteRoomError, RoomTransport};
    use crate::chat::satellite::Satellite;
    use crate::chat_core::ChatLimits;

    fn roster() -> Roster {
        let core = ChatCore::new(ChatLimits::default());
        Roster::new("live/a".into(), core, Arc::default(), ChatHooks::default())
    }

    fn queue(capacity: usize) -> (Outbound, mpsc::Receiver<Arc<str>>) {
        mpsc::channel(capacity)
    }

    fn kinds(frames: &mut mpsc::Receiver<Arc<str>>) -> Vec<String> {
        std::iter::from_fn(|| frames.try_recv().ok())
            .map(|frame| {
                let json: serde_json::Value = serde_json::from_str(&frame).expect("JSON");
                json["type"].as_str().expect("a type").to_owned()
            })
            .collect()
    }

    #[test]
    fn a_member_that_does_not_read_is_evicted_and_the_others_hear_it_left() {
        let mut roster = roster();
        // A room that decides for itself (no satellites), as the home does.
        let mut role = Role::Pending(Pending::new(1));
        let (reads, mut read) = queue(16);
        let (stalls, mut stalled) = queue(2);
        let joined = roster.join(&mut role, Join { member: 1, user: None, outbound: reads });
        assert!(joined.is_ok_and(|f| f.calls.is_empty() && !f.check_idle));
        let joined = roster.join(&mut role, Join { member: 2, user: None, outbound: stalls });
        assert!(joined.is_ok(), "its history and its own join fill its queue");

        let effects = roster.core.system("hello".into(), 0);
        let followup = roster.apply(&mut role, None, effects);

        assert!(followup.calls.is_empty() && followup.check_idle, "{followup:?}");
        assert_eq!(kinds(&mut read), ["history", "join", "join", "system", "leave"]);
        assert_eq!(kinds(&mut stalled), ["history", "join"]);
        assert!(stalled.is_closed(), "the evicted member's queue is dropped");
        assert_eq!(roster.core.members(), 1);
        assert_eq!(
            roster.counters.chat_members_dropped_slow.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert!(roster.has_members(&role));
    }

    /// A transport the roster never calls: calls are the actor's.
    struct NoCalls;

    impl RoomTransport for NoCalls {
        fn to_home(
            &self,
            _: &NodeId,
            _: &str,
            _: RoomRequest,
        ) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
            unreachable!("the roster makes no calls")
        }

        fn choose_home(&self) -> Option<NodeId> {
            None
        }

        fn host(&self, _: &NodeId, _: &str) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
            unreachable!("the roster makes no calls")
        }

        fn to_satellites(
            &self,
            _: &[NodeId],
            _: &str,
            _: &Delivery,
        ) -> Vec<BoxFuture<'static, Result<(), RemoteRoomError>>> {
            unreachable!("the roster makes no calls")
        }
    }

    #[test]
    fn a_satellite_fans_out_the_homes_frames_and_tells_it_who_left() {
        let mut roster = roster();
        let home = Owner { node: NodeId::new("n2"), epoch: 1 };
        let mut role = Role::Satellite(Satellite { home, transport: Arc::new(NoCalls) });
        let (first, mut first_frames) = queue(4);
        let (gone, gone_frames) = queue(4);
        let (let_go, _let_go_frames) = queue(4);
        roster.add_local(1, first);
        roster.add_local(2, gone);
        roster.add_local(3, let_go);
        drop(gone_frames);

        let frames = vec![r#"{"type":"system","text":"hi"}"#.to_owned()];
        let delivery = Delivery { frames, to: None, evict: vec![3] };
        let followup = roster.take_delivery(&mut role, delivery);

        assert_eq!(followup.calls, [Call::ToHome(RoomRequest::Leave { member: 2 })]);
        assert!(followup.check_idle);
        assert_eq!(kinds(&mut first_frames), ["system"]);
        assert_eq!(roster.local.keys().collect::<Vec<_>>(), [&1], "the home let 3 go");
        assert_eq!(roster.core.members(), 0, "a satellite's core decides nothing");
    }
}
