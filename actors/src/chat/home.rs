//! The room's *home*: the one instance, cluster-wide, that holds the room's lease and state
//! and decides everything ([`ChatCore`], the application's hooks). Its members are local
//! (a queue each) or remote (connected to a satellite, which forwards for them; see
//! [`super::remote`]). The lease is kept by a [`LeaseKeeper`]; losing it stops the room
//! (self-fencing), and its members reconnect.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use zenlive_cluster::{Lease, NodeId};

use super::hooks::{ChatMessageRequest, Verdict};
use super::messages::{next_member_id, Join};
use super::remote::{RemoteRoomError, RoomRequest};
use super::room::{now_ms, ChatRoom, LeaseReport};
use crate::chat_core::{ChatCore, ChatError, MemberId};
use crate::chat_protocol::ClientCommand;
use crate::lease::{LeaseKeeper, Renewal, LEASE_RENEW_INTERVAL};

/// What only the home has: its lease, and the members connected to satellites.
pub(super) struct Home {
    /// Keeps the room's name; dropping it (the room stopping) releases the lease.
    pub(super) keeper: LeaseKeeper,
    /// Members connected to satellites.
    pub(super) remote: RemoteMembers,
}

/// The home's view of members connected to satellites.
#[derive(Default)]
pub(super) struct RemoteMembers {
    /// Home member id → (satellite node, the satellite's member id).
    pub(super) by_id: HashMap<MemberId, (NodeId, u64)>,
    /// (satellite node, the satellite's member id) → home member id.
    ids: HashMap<(NodeId, u64), MemberId>,
    /// Satellite nodes with members here, and how many.
    pub(super) nodes: HashMap<NodeId, usize>,
}

impl RemoteMembers {
    fn add(&mut self, node: NodeId, remote: u64) -> MemberId {
        let id = next_member_id();
        self.by_id.insert(id, (node.clone(), remote));
        self.ids.insert((node.clone(), remote), id);
        *self.nodes.entry(node).or_default() += 1;
        id
    }

    pub(super) fn remove(&mut self, id: MemberId) -> Option<(NodeId, u64)> {
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

    fn id(&self, node: NodeId, remote: u64) -> Option<MemberId> {
        self.ids.get(&(node, remote)).copied()
    }

    pub(super) fn of_node(&self, node: &NodeId) -> Vec<MemberId> {
        self.by_id.iter().filter(|(_, (n, _))| n == node).map(|(id, _)| *id).collect()
    }
}

impl ChatRoom {
    /// The home's state under `lease`, whose keeper reports to this room.
    pub(super) fn become_home(&mut self, lease: Lease, ctx: &mut Context<Self>) -> Home {
        let room = ctx.address();
        let registry = Arc::clone(&self.placement.registry);
        let keeper = LeaseKeeper::start(registry, lease, LEASE_RENEW_INTERVAL, move |renewal| {
            room.do_send(LeaseReport { renewal });
        });
        Home { keeper, remote: RemoteMembers::default() }
    }

    /// What the lease keeper reported.
    pub(super) fn lease_renewed(&mut self, renewal: Renewal, ctx: &mut Context<Self>) {
        match renewal {
            Renewal::Renewed => {}
            Renewal::Unproven(error) => {
                tracing::warn!(room = %self.name, %error, "cannot renew the chat room's lease; it carries on");
            }
            Renewal::Reclaimed(lease) => {
                tracing::warn!(room = %self.name, epoch = lease.epoch, "chat room lease lapsed; re-claimed");
            }
            Renewal::Lost(error) => {
                // Self-fencing: without the lease this node may not act as the room.
                tracing::error!(room = %self.name, %error, "chat room lease lost; stopping");
                ctx.stop();
            }
        }
    }

    /// A local member joins; the history arrives on its queue first.
    pub(super) fn join_here(
        &mut self,
        msg: Join,
        ctx: &mut Context<Self>,
    ) -> Result<(), ChatError> {
        let joined = self.core.join(msg.member, msg.user).map(|effects| {
            self.outbound.insert(msg.member, msg.outbound);
            self.apply(Some(msg.member), effects, ctx);
        });
        if joined.is_err() {
            self.watch_idle(ctx);
        }
        joined
    }

    /// Runs a member's command (the member may be local or remote); a message goes past
    /// the application's decider first, when there is one.
    pub(super) fn run_command(
        &mut self,
        member: MemberId,
        command: ClientCommand,
        ctx: &mut Context<Self>,
    ) {
        let (ClientCommand::Message { text, client_id }, Some(decide)) =
            (&command, self.hooks.decide.clone())
        else {
            let effects = self.core.command(member, command, now_ms());
            return self.apply(Some(member), effects, ctx);
        };
        let client_id = client_id.clone();
        let (user, text) = match self.core.check_message(member, text.clone(), now_ms()) {
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
                Verdict::Publish(text) => act.core.publish(user, text, client_id, now_ms()),
                Verdict::Refuse(reason) => {
                    ChatCore::refusal(ChatError::Rejected(reason), client_id)
                }
            };
            act.apply(Some(member), effects, ctx);
        }));
    }

    /// A system message from the application.
    pub(super) fn post_system(&mut self, text: String, ctx: &mut Context<Self>) {
        let effects = self.core.system(text, now_ms());
        self.apply(None, effects, ctx);
    }

    /// A moderation command from the application.
    pub(super) fn run_moderation(&mut self, command: ClientCommand, ctx: &mut Context<Self>) {
        let effects = self.core.moderate(command, now_ms());
        self.apply(None, effects, ctx);
    }

    /// What a satellite on node `from` asks of the home.
    pub(super) fn satellite_asks(
        &mut self,
        from: NodeId,
        request: RoomRequest,
        ctx: &mut Context<Self>,
    ) -> Result<(), RemoteRoomError> {
        let parse = |json: &str| {
            serde_json::from_str::<ClientCommand>(json)
                .map_err(|e| RemoteRoomError::Unreachable(format!("bad command: {e}")))
        };
        match request {
            RoomRequest::Join { member, user } => {
                self.cancel_idle(ctx);
                let Some(remote) = self.remote_mut() else { return Ok(()) };
                let id = remote.add(from, member);
                match self.core.join(id, user) {
                    Ok(effects) => self.apply(Some(id), effects, ctx),
                    Err(error) => {
                        if let Some(remote) = self.remote_mut() {
                            remote.remove(id);
                        }
                        self.watch_idle(ctx);
                        return Err(error.into());
                    }
                }
            }
            RoomRequest::Command { member, command } => {
                let command = parse(&command)?;
                if let Some(id) = self.remote().and_then(|r| r.id(from, member)) {
                    self.run_command(id, command, ctx);
                }
            }
            RoomRequest::Leave { member } => {
                if let Some(id) = self.remote().and_then(|r| r.id(from, member)) {
                    if let Some(remote) = self.remote_mut() {
                        remote.remove(id);
                    }
                    let effects = self.core.leave(id);
                    self.apply(None, effects, ctx);
                    self.watch_idle(ctx);
                }
            }
            RoomRequest::System { text } => self.post_system(text, ctx),
            RoomRequest::Moderate { command } => self.run_moderation(parse(&command)?, ctx),
        }
        Ok(())
    }

    /// The node is draining: the home ends, so its members (here and on satellites)
    /// reconnect and the room finds a new home on another node.
    pub(super) fn hand_off_home(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(room = %self.name, members = self.core.members(), "node draining: handing the chat room off");
        // Closing the queues closes the members' connections; satellites see the lease go
        // (released when the actor stops) and end too, so every member reconnects.
        self.outbound.clear();
        ctx.stop();
    }
}
