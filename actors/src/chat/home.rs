//! The room's *home*: the one instance, cluster-wide, that holds the room's lease and state
//! and decides everything ([`ChatCore`](crate::chat_core::ChatCore), the application's
//! hooks). Its members are local (a queue each) or remote (connected to a satellite, which
//! forwards for them; see [`super::remote`]). The lease is kept by a [`LeaseKeeper`];
//! losing it stops the room (self-fencing), and its members reconnect.
//!
//! Plain data and decisions, no actix: [`Home`] is what only the home has, [`RemoteMembers`]
//! maps satellites' members to the home's ids and reads their requests ([`Asked`]), and
//! [`lease_lost`] says what a renewal means. The room's actor carries them out.

use std::collections::HashMap;
use std::sync::Arc;

use zenlive_registry::{Lease, NodeId, Registry};

use super::messages::next_member_id;
use super::remote::{RemoteRoomError, RoomRequest};
use crate::chat_core::MemberId;
use crate::chat_protocol::{ChatUser, ClientCommand};
use crate::lease::{LeaseKeeper, Renewal, LEASE_RENEW_INTERVAL};

/// What only the home has: its lease, and the members connected to satellites.
pub(super) struct Home {
    /// Keeps the room's name; dropping it (the room stopping) releases the lease.
    pub(super) keeper: LeaseKeeper,
    /// Members connected to satellites.
    pub(super) remote: RemoteMembers,
}

impl Home {
    /// The home's state under `lease`, whose keeper hands every renewal to `report` (the
    /// room's actor, which asks [`lease_lost`]).
    pub(super) fn start(
        registry: Arc<dyn Registry>,
        lease: Lease,
        report: impl FnMut(Renewal) + Send + 'static,
    ) -> Self {
        let keeper = LeaseKeeper::start(registry, lease, LEASE_RENEW_INTERVAL, report);
        Self { keeper, remote: RemoteMembers::default() }
    }
}

/// What a lease renewal means for room `room`'s home, logged: `true` when the lease is lost
/// and the room must stop (self-fencing: without the lease this node may not act as the
/// room).
pub(super) fn lease_lost(room: &str, renewal: Renewal) -> bool {
    match renewal {
        Renewal::Renewed => false,
        Renewal::Unproven(error) => {
            tracing::warn!(%room, %error, "cannot renew the chat room's lease; it carries on");
            false
        }
        Renewal::Reclaimed(lease) => {
            tracing::warn!(%room, epoch = lease.epoch, "chat room lease lapsed; re-claimed");
            false
        }
        Renewal::Lost(error) => {
            tracing::error!(%room, %error, "chat room lease lost; stopping");
            true
        }
    }
}

/// A satellite's request in the home's member ids (see [`RemoteMembers::asked`]).
#[derive(Debug, PartialEq)]
pub(super) enum Asked {
    /// A member joins under the home id `id`, counted among the remote members already:
    /// if the room refuses it, [`RemoteMembers::remove`] it again.
    Join {
        /// The home's id for the member.
        id: MemberId,
        /// Who, from the token.
        user: Option<ChatUser>,
    },
    /// A remote member's command.
    Command {
        /// The home's id for the member.
        id: MemberId,
        /// The command.
        command: ClientCommand,
    },
    /// A remote member left; it is no longer among the remote members.
    Leave {
        /// The home's id it had.
        id: MemberId,
    },
    /// A system message from the application on the satellite's node.
    System {
        /// The text.
        text: String,
    },
    /// A moderation command from the application on the satellite's node.
    Moderate {
        /// The command.
        command: ClientCommand,
    },
    /// About a member the home does not know (it left already): nothing to do.
    Nothing,
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

    /// Forgets the remote member `id`; answers its satellite node and that node's id for it.
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

    /// The home's ids of every member connected to `node`.
    pub(super) fn of_node(&self, node: &NodeId) -> Vec<MemberId> {
        self.by_id.iter().filter(|(_, (n, _))| n == node).map(|(id, _)| *id).collect()
    }

    /// Reads what the satellite on node `from` asks, in the home's member ids: a joining
    /// member is added here, a leaving one removed. A command that is not valid JSON is
    /// refused.
    pub(super) fn asked(
        &mut self,
        from: NodeId,
        request: RoomRequest,
    ) -> Result<Asked, RemoteRoomError> {
        let parse = |json: &str| {
            serde_json::from_str::<ClientCommand>(json)
                .map_err(|e| RemoteRoomError::Unreachable(format!("bad command: {e}")))
        };
        Ok(match request {
            RoomRequest::Join { member, user } => Asked::Join { id: self.add(from, member), user },
            RoomRequest::Command { member, command } => {
                let command = parse(&command)?;
                match self.id(from, member) {
                    Some(id) => Asked::Command { id, command },
                    None => Asked::Nothing,
                }
            }
            RoomRequest::Leave { member } => match self.id(from, member) {
                Some(id) => {
                    self.remove(id);
                    Asked::Leave { id }
                }
                None => Asked::Nothing,
            },
            RoomRequest::System { text } => Asked::System { text },
            RoomRequest::Moderate { command } => Asked::Moderate { command: parse(&command)? },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str) -> NodeId {
        NodeId::new(name)
    }

    #[test]
    fn satellites_members_get_home_ids_until_they_leave() {
        let mut remote = RemoteMembers::default();
        let Ok(Asked::Join { id, user: None }) =
            remote.asked(n("n2"), RoomRequest::Join { member: 7, user: None })
        else {
            panic!("a join");
        };
        assert_eq!(remote.of_node(&n("n2")), [id]);
        assert_eq!(remote.nodes.get(&n("n2")), Some(&1));
        let command = r#"{"type":"message","text":"hi"}"#.to_owned();
        let asked = remote.asked(n("n2"), RoomRequest::Command { member: 7, command });
        assert!(matches!(asked, Ok(Asked::Command { id: got, .. }) if got == id), "{asked:?}");
        // The same satellite id from another node is another member.
        assert_eq!(remote.asked(n("n3"), RoomRequest::Leave { member: 7 }), Ok(Asked::Nothing));
        assert_eq!(
            remote.asked(n("n2"), RoomRequest::Leave { member: 7 }),
            Ok(Asked::Leave { id })
        );
        assert!(remote.by_id.is_empty() && remote.nodes.is_empty());
        assert_eq!(remote.asked(n("n2"), RoomRequest::Leave { member: 7 }), Ok(Asked::Nothing));
    }

    #[test]
    fn a_command_that_is_not_json_is_refused() {
        let mut remote = RemoteMembers::default();
        let asked = remote.asked(n("n2"), RoomRequest::Moderate { command: "{".into() });
        assert!(matches!(asked, Err(RemoteRoomError::Unreachable(_))), "{asked:?}");
    }
}
