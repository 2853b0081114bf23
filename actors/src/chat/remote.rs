//! A chat room across nodes (cluster mode). One node's room is the room's *home*: it holds
//! the registry lease `chat/{name}`, the state ([`crate::chat_core::ChatCore`]: members,
//! history, limits, moderation) and decides everything. Any other node with members of the
//! room runs a *satellite* room: it forwards its members' joins, commands and leaves to the
//! home ([`RoomRequest`]) and fans out what the home sends it ([`Delivery`]) to its local
//! members. A broadcast crosses each node link once, however many members a satellite has.
//!
//! A room with no home yet is placed on the least-loaded node that is not draining
//! ([`RoomTransport::choose_home`]), which is asked to host it; the node where the first
//! member arrived becomes a satellite like any other.
//!
//! The node's cluster layer carries both directions ([`RoomTransport`]); this crate knows
//! nothing about links. Bodies are JSON (the chat protocol's own types are JSON-shaped), in
//! the cluster's versioned envelopes.

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use zenlive_registry::NodeId;

use crate::chat_core::ChatError;
use crate::chat_protocol::ChatUser;

/// Satellite → home: what a satellite's member (or the application on the satellite's
/// node) did. Member ids are the satellite's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomRequest {
    /// A member joined on the satellite.
    Join {
        /// The satellite's member id.
        member: u64,
        /// Who, from the token.
        user: Option<ChatUser>,
    },
    /// A member's command, as the JSON it sent.
    Command {
        /// The satellite's member id.
        member: u64,
        /// The command's JSON.
        command: String,
    },
    /// A member left the satellite.
    Leave {
        /// The satellite's member id.
        member: u64,
    },
    /// The application posted a system message on the satellite's node.
    System {
        /// The text.
        text: String,
    },
    /// The application moderated on the satellite's node (a command's JSON).
    Moderate {
        /// The command's JSON.
        command: String,
    },
}

/// Home → satellite: frames to hand to members, and members to disconnect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// JSON text frames, in order.
    pub frames: Vec<String>,
    /// `None`: every member of the satellite; `Some(id)`: that member only.
    pub to: Option<u64>,
    /// Members to disconnect (banned), by the satellite's ids.
    pub evict: Vec<u64>,
}

/// Why a remote room call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteRoomError {
    /// The room refused (a join to a full room, a banned user).
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The other node is unreachable or no longer has the room.
    #[error("room unreachable: {0}")]
    Unreachable(String),
}

/// Carries a room's traffic between nodes; implemented by the node's cluster layer.
pub trait RoomTransport: Send + Sync + 'static {
    /// Sends `request` for `room` to its home node and waits for the answer.
    fn to_home(
        &self,
        home: &NodeId,
        room: &str,
        request: RoomRequest,
    ) -> BoxFuture<'static, Result<(), RemoteRoomError>>;

    /// Where a room that has no home yet should live: the least-loaded live node that is
    /// not draining (this node when it is among the least loaded, or alone).
    fn choose_home(&self) -> Option<NodeId>;

    /// Asks `node` to host `room` (start it there as its home); answers once it has.
    fn host(&self, node: &NodeId, room: &str) -> BoxFuture<'static, Result<(), RemoteRoomError>>;

    /// Sends `delivery` for `room` to each of `nodes` (satellites), encoding it once;
    /// answers one future per node, in the order of `nodes`.
    fn to_satellites(
        &self,
        nodes: &[NodeId],
        room: &str,
        delivery: &Delivery,
    ) -> Vec<BoxFuture<'static, Result<(), RemoteRoomError>>>;
}
