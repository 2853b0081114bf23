//! What a [`ChatRoom`](super::ChatRoom) is sent: by its members' sessions ([`Join`],
//! [`Leave`], [`Command`]), the application ([`SystemMessage`], [`Moderate`]), the node
//! ([`HandOff`], [`Members`], [`SetLimits`]) and the room's other nodes ([`RemoteRequest`],
//! [`Deliver`]); and a member's queue, [`Outbound`].
//!
//! The bottom of the chat modules: plain message structs, so that the queue of a room whose
//! role is pending (`pending`) can hold them without knowing the actor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::Message;
use tokio::sync::mpsc;
use zenlive_registry::NodeId;

use super::remote::{Delivery, RemoteRoomError, RoomRequest};
use crate::chat_core::{ChatError, ChatLimits, MemberId};
use crate::chat_protocol::{ChatUser, ClientCommand};
use crate::remote::RemoteMessage;

/// A member's outbound queue: JSON text frames, shared between members.
pub type Outbound = mpsc::Sender<Arc<str>>;

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

/// A system message from the application. Remote: `chat.system` ([`crate::remote`]).
#[derive(Debug, Clone, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct SystemMessage {
    /// The text.
    pub text: String,
}

impl RemoteMessage for SystemMessage {
    const NAME: &'static str = "chat.system";
}

/// A moderation command from the application (no role needed). Remote: `chat.moderate`;
/// the command crosses nodes as JSON text (it is an internally tagged enum, which bincode
/// cannot read back).
#[derive(Debug, Clone, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct Moderate {
    /// The command (`Delete`, `Mute`, `Ban`, `Unban`, `SlowMode`, `Clear`).
    #[serde(with = "as_json")]
    pub command: ClientCommand,
}

impl RemoteMessage for Moderate {
    const NAME: &'static str = "chat.moderate";
}

/// A field written as its JSON text.
mod as_json {
    use serde::de::{DeserializeOwned, Error as _};
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(value).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
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

/// New limits for a live room (see [`ChatRooms::set_limits`](super::ChatRooms::set_limits)).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetLimits {
    /// The limits.
    pub limits: ChatLimits,
}
