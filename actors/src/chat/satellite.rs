//! A *satellite*: this node's instance of a room whose home is on another node. It keeps
//! only its members' queues: it forwards their joins, commands and leaves (and the
//! application's messages) to the home, and fans out the frames the home sends back, so a
//! broadcast crosses each node link once. It checks on every lease-renewal interval that its
//! home still owns the room, and stops when not (or when the home cannot be reached): its
//! members reconnect and find the room's new home.

use std::sync::Arc;

use actix::prelude::*;
use zenlive_cluster::{ActorKey, ActorKind, Owner};

use super::messages::Join;
use super::remote::{Delivery, RemoteRoomError, RoomRequest, RoomTransport};
use super::role::Role;
use super::room::ChatRoom;
use crate::chat_core::ChatError;
use crate::lease::LEASE_RENEW_INTERVAL;

/// What only a satellite has: its home, and the way there.
pub(super) struct Satellite {
    /// The home's node and lease epoch, as the claim found them.
    pub(super) home: Owner,
    /// The link to the home.
    pub(super) transport: Arc<dyn RoomTransport>,
}

impl ChatRoom {
    /// The satellite's state for `home`; checks on it from now on.
    pub(super) fn become_satellite(
        &mut self,
        home: Owner,
        transport: Arc<dyn RoomTransport>,
        ctx: &mut Context<Self>,
    ) -> Satellite {
        tracing::debug!(room = %self.name, home = %home.node, "chat room is a satellite");
        ctx.run_interval(LEASE_RENEW_INTERVAL, |act, ctx| act.check_home(ctx));
        Satellite { home, transport }
    }

    /// Stops when the home no longer owns the room (its node died or the room moved).
    fn check_home(&mut self, ctx: &mut Context<Self>) {
        let Role::Satellite(satellite) = &self.role else { return };
        let home = satellite.home.clone();
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

    /// A local member joins through the home; answers the home's answer.
    pub(super) fn join_via_home(
        &mut self,
        msg: Join,
    ) -> ResponseActFuture<Self, Result<(), ChatError>> {
        let Role::Satellite(satellite) = &self.role else {
            return Box::pin(fut::ready(Err(ChatError::Unavailable("not a satellite".into()))));
        };
        let member = msg.member;
        let request = RoomRequest::Join { member, user: msg.user };
        let joined = satellite.transport.to_home(&satellite.home.node, &self.name, request);
        // The member's queue is in place before the home answers, so the history the home
        // sends right after its answer finds it.
        self.outbound.insert(member, msg.outbound);
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

    /// Sends `request` to the home; a home that cannot be reached stops the satellite,
    /// since its members can no longer reach the room.
    pub(super) fn forward(&mut self, request: RoomRequest, ctx: &mut Context<Self>) {
        let Role::Satellite(satellite) = &self.role else { return };
        let sent = satellite.transport.to_home(&satellite.home.node, &self.name, request);
        ctx.spawn(sent.into_actor(self).map(|result, act, ctx| {
            if let Err(RemoteRoomError::Unreachable(why)) = result {
                tracing::warn!(room = %act.name, why, "chat room's home unreachable; stopping the satellite");
                ctx.stop();
            }
        }));
    }

    /// Frames from the home for this satellite's members, and members it let go.
    pub(super) fn take_delivery(&mut self, delivery: Delivery, ctx: &mut Context<Self>) {
        let Delivery { frames, to, evict } = delivery;
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
    }
}
