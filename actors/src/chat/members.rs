//! How frames reach a room's members, and how members go: the effects
//! [`ChatCore`](crate::chat_core::ChatCore) returns
//! are carried out here, whatever the room's role.
//!
//! A broadcast is serialized once and the same `Arc<str>` is queued for every local member;
//! a member whose queue is full is evicted (its queue closed, which its connection sees and
//! closes), so one member that does not read never slows the room. At the home, the frame
//! also goes once to each satellite node with members ([`Delivery`]); a satellite that
//! cannot be reached loses its members here.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::mpsc::error::TrySendError;
use zenlive_cluster::NodeId;

use super::home::RemoteMembers;
use super::hooks::DeliveredMessage;
use super::remote::{Delivery, RoomRequest};
use super::role::Role;
use super::room::{ChatRoom, ROOM_IDLE};
use crate::chat_core::{Effects, MemberId};
use crate::chat_protocol::ServerEvent;
use crate::events::NodeCounters;

impl ChatRoom {
    /// The home's members on satellites (`None` unless this is the home).
    pub(super) fn remote(&self) -> Option<&RemoteMembers> {
        match &self.role {
            Role::Home(home) => Some(&home.remote),
            _ => None,
        }
    }

    /// The home's members on satellites, to change.
    pub(super) fn remote_mut(&mut self) -> Option<&mut RemoteMembers> {
        match &mut self.role {
            Role::Home(home) => Some(&mut home.remote),
            _ => None,
        }
    }

    /// Carries out `effects` of something `caller` did (replies go to the caller only).
    pub(super) fn apply(
        &mut self,
        caller: Option<MemberId>,
        effects: Effects,
        ctx: &mut Context<Self>,
    ) {
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
        let satellites: Vec<NodeId> =
            self.remote().map(|r| r.nodes.keys().cloned().collect()).unwrap_or_default();
        for node in satellites {
            let delivery =
                Delivery { frames: vec![frame.to_string()], to: None, evict: Vec::new() };
            self.send_to_satellites(&[node], &delivery, ctx);
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
    pub(super) fn fan_out(&mut self, frame: &Arc<str>, ctx: &mut Context<Self>) {
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

    /// Queues `frame` for one member, local or (at the home) on a satellite.
    pub(super) fn send(&mut self, member: MemberId, frame: Arc<str>, ctx: &mut Context<Self>) {
        if let Some((node, remote)) = self.remote().and_then(|r| r.by_id.get(&member).cloned()) {
            let delivery =
                Delivery { frames: vec![frame.to_string()], to: Some(remote), evict: Vec::new() };
            return self.send_to_satellites(&[node], &delivery, ctx);
        }
        let Some(queue) = self.outbound.get(&member) else { return };
        match queue.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.drop_member(member, true, ctx),
            Err(TrySendError::Closed(_)) => self.drop_member(member, false, ctx),
        }
    }

    /// The home sends `delivery` to satellite `nodes` (encoded once); a satellite that
    /// cannot be reached loses its members here.
    fn send_to_satellites(
        &mut self,
        nodes: &[NodeId],
        delivery: &Delivery,
        ctx: &mut Context<Self>,
    ) {
        let Some(transport) = &self.placement.transport else { return };
        let sends = transport.to_satellites(nodes, &self.name, delivery);
        for (node, sent) in nodes.iter().cloned().zip(sends) {
            ctx.spawn(sent.into_actor(self).map(move |result, act, ctx| {
                if let Err(error) = result {
                    tracing::warn!(room = %act.name, satellite = %node, %error, "chat satellite unreachable; dropping its members");
                    let gone = act.remote().map(|r| r.of_node(&node)).unwrap_or_default();
                    for member in gone {
                        if let Some(remote) = act.remote_mut() {
                            remote.remove(member);
                        }
                        let effects = act.core.leave(member);
                        act.apply(None, effects, ctx);
                    }
                    act.watch_idle(ctx);
                }
            }));
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

    /// Drops a member's queue (its connection then closes) and tells the others: at the
    /// home through the core, at a satellite by telling the home.
    pub(super) fn evict(&mut self, member: MemberId, ctx: &mut Context<Self>) {
        if let Some((node, remote)) = self.remote_mut().and_then(|r| r.remove(member)) {
            let effects = self.core.leave(member);
            self.apply(None, effects, ctx);
            let delivery = Delivery { frames: Vec::new(), to: None, evict: vec![remote] };
            self.send_to_satellites(&[node], &delivery, ctx);
            self.watch_idle(ctx);
            return;
        }
        if self.outbound.remove(&member).is_none() {
            return;
        }
        if let Role::Satellite(_) = self.role {
            self.forward(RoomRequest::Leave { member }, ctx);
        } else {
            let effects = self.core.leave(member);
            self.apply(None, effects, ctx);
        }
        self.watch_idle(ctx);
    }

    /// Stops the room after [`ROOM_IDLE`] without members (here or on satellites).
    pub(super) fn watch_idle(&mut self, ctx: &mut Context<Self>) {
        if self.has_members() || self.idle.is_some() {
            return;
        }
        self.idle = Some(ctx.run_later(ROOM_IDLE, |act, ctx| {
            if !act.has_members() {
                tracing::debug!(room = %act.name, "chat room idle; stopping");
                ctx.stop();
            }
            act.idle = None;
        }));
    }

    /// A member arrives: the room is not idle.
    pub(super) fn cancel_idle(&mut self, ctx: &mut Context<Self>) {
        if let Some(idle) = self.idle.take() {
            ctx.cancel_future(idle);
        }
    }

    fn has_members(&self) -> bool {
        !self.outbound.is_empty() || self.remote().is_some_and(|r| !r.by_id.is_empty())
    }
}
