//! The chat wire protocol (`docs/chat-protocol.md`): one JSON object per WebSocket text
//! frame, with a `type` field. [`ClientCommand`] is what a member sends; [`ServerEvent`]
//! what the room sends. Both are plain serde types: the WebSocket shell parses and prints
//! them, the room decides.

use serde::{Deserialize, Serialize};

/// Who said something: from the member's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatUser {
    /// The user's id (the token's `sub`).
    pub id: String,
    /// The display name.
    pub name: String,
    /// Roles (`admin`, `moderator`, `publisher`, `viewer`).
    pub roles: Vec<String>,
}

impl ChatUser {
    /// Whether the user may moderate (a `moderator` or an `admin`).
    pub fn moderates(&self) -> bool {
        self.roles.iter().any(|r| r == "moderator" || r == "admin")
    }
}

/// A message as members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Unique in the room, increasing.
    pub id: u64,
    /// The text.
    pub text: String,
    /// The author (`None` for system messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<ChatUser>,
    /// Unix milliseconds when the room accepted it.
    pub ts: u64,
}

/// What a member sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientCommand {
    /// Post a message; `client_id` comes back in the `ack` (and in an `error`).
    Message {
        /// The text.
        text: String,
        /// The client's own id for the message, echoed back.
        #[serde(default)]
        client_id: Option<String>,
    },
    /// Moderators: delete a message.
    Delete {
        /// The message id.
        id: u64,
    },
    /// Moderators: mute a user for `seconds`.
    Mute {
        /// The user id.
        user: String,
        /// How long.
        seconds: u64,
    },
    /// Moderators: ban a user from the room (kicked now, refused on rejoin).
    Ban {
        /// The user id.
        user: String,
    },
    /// Moderators: lift a ban.
    Unban {
        /// The user id.
        user: String,
    },
    /// Moderators: one message per user per `seconds` (0 turns slow mode off).
    SlowMode {
        /// The interval.
        seconds: u64,
    },
    /// Moderators: clear the room's recent messages.
    Clear,
}

/// What the room sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// A message (text at the top level, so simple clients stay simple).
    Message(ChatMessage),
    /// The recent messages, sent once on join, oldest first.
    History {
        /// The messages.
        messages: Vec<ChatMessage>,
    },
    /// Someone joined.
    Join {
        /// Who (absent for anonymous readers).
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<ChatUser>,
        /// Members now.
        members: usize,
    },
    /// Someone left.
    Leave {
        /// Who (absent for anonymous readers).
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<ChatUser>,
        /// Members now.
        members: usize,
    },
    /// A notice from the room or the application.
    System {
        /// The text.
        text: String,
    },
    /// A message was deleted.
    Deleted {
        /// Its id.
        id: u64,
    },
    /// A user was muted.
    Muted {
        /// The user id.
        user: String,
        /// Unix milliseconds when the mute ends.
        until: u64,
    },
    /// A user was banned.
    Banned {
        /// The user id.
        user: String,
    },
    /// Slow mode changed.
    SlowMode {
        /// Seconds between two messages of one user (0: off).
        seconds: u64,
    },
    /// The recent messages were cleared.
    Cleared,
    /// The member's own message was accepted and broadcast as `id`.
    Ack {
        /// The message id.
        id: u64,
        /// The client's id for it, when it sent one.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// The member's command was refused.
    Error {
        /// Stable, for programs.
        code: &'static str,
        /// For people.
        reason: String,
        /// The client's id of the refused message, when it sent one.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
}

impl ServerEvent {
    /// The event as one JSON text frame.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no floats.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_events_print_as_documented() {
        let c: ClientCommand =
            serde_json::from_str(r#"{"type":"message","text":"hi","client_id":"c1"}"#)
                .expect("valid");
        assert_eq!(c, ClientCommand::Message { text: "hi".into(), client_id: Some("c1".into()) });
        let c: ClientCommand =
            serde_json::from_str(r#"{"type":"mute","user":"bob","seconds":60}"#).expect("valid");
        assert_eq!(c, ClientCommand::Mute { user: "bob".into(), seconds: 60 });
        for bad in [r#"{"type":"nope"}"#, r#"{"text":"hi"}"#, r#"{"type":"message"}"#, "[]"] {
            assert!(serde_json::from_str::<ClientCommand>(bad).is_err(), "{bad}");
        }
        let user = ChatUser { id: "u1".into(), name: "Ann".into(), roles: vec!["viewer".into()] };
        let m =
            ServerEvent::Message(ChatMessage { id: 7, text: "hi".into(), user: Some(user), ts: 1 });
        assert_eq!(
            m.to_json(),
            r#"{"type":"message","id":7,"text":"hi","user":{"id":"u1","name":"Ann","roles":["viewer"]},"ts":1}"#
        );
        let e = ServerEvent::Error { code: "too_long", reason: "x".into(), client_id: None };
        assert_eq!(e.to_json(), r#"{"type":"error","code":"too_long","reason":"x"}"#);
    }
}
