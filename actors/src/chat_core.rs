//! [`ChatCore`]: the decisions of one chat room, without actix or sockets. Time is an
//! input (Unix milliseconds), so tests run faster than real time.
//!
//! It keeps the members, a bounded buffer of recent messages (what a joining member sees;
//! not a database), moderation state (mutes, bans, slow mode), and a token bucket per user.
//! Every call answers [`Effects`]: events for everyone, events for the caller only, and
//! members to disconnect.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::chat_protocol::{ChatMessage, ChatUser, ClientCommand, ServerEvent};

/// A member connection's id in its room.
pub type MemberId = u64;

/// Most users a room remembers as muted or banned (oldest forgotten first).
const MAX_MODERATED_USERS: usize = 10_000;

/// A room's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatLimits {
    /// Recent messages kept and sent on join.
    pub history: usize,
    /// Longest message, in characters.
    pub max_len: usize,
    /// Words refused anywhere in a message (case-insensitive).
    pub blocked_words: Vec<String>,
    /// Most members at once.
    pub max_members: usize,
    /// Messages a user may send in a burst.
    pub burst: u32,
    /// Messages per second a user's allowance refills by.
    pub per_second: f64,
    /// Rooms with more members than this do not broadcast `join`/`leave` (in a big room
    /// they would be most of the traffic: every arrival is sent to every member).
    pub presence_limit: usize,
}

impl Default for ChatLimits {
    fn default() -> Self {
        Self {
            history: 50,
            max_len: 500,
            blocked_words: Vec::new(),
            max_members: 10_000,
            burst: 10,
            per_second: 5.0,
            presence_limit: 100,
        }
    }
}

/// Why a command was refused; `code` is stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ChatError {
    /// Posting needs a signed-in user.
    #[error("sign in to post")]
    SignInRequired,
    /// A signed-in user whose token has no `name` claim: chat shows a name with every
    /// message.
    #[error("your token has no name claim; ask for one with a name to post")]
    NameRequired,
    /// Empty text.
    #[error("empty message")]
    Empty,
    /// Longer than the room allows.
    #[error("message longer than {0} characters")]
    TooLong(usize),
    /// A blocked word.
    #[error("message contains a blocked word")]
    BlockedWord,
    /// The user is muted.
    #[error("you are muted")]
    Muted,
    /// The user is banned from the room.
    #[error("you are banned from this room")]
    Banned,
    /// Over the user's rate limit.
    #[error("too many messages; slow down")]
    RateLimited,
    /// Slow mode: wait before the next message.
    #[error("slow mode: one message every {0} s")]
    SlowMode(u64),
    /// The room is full.
    #[error("the room is full")]
    RoomFull,
    /// A moderation command from someone who may not moderate.
    #[error("only moderators may do that")]
    Forbidden,
    /// No such message.
    #[error("no message {0}")]
    NotFound(u64),
    /// The application's hook refused the message.
    #[error("{0}")]
    Rejected(String),
    /// The room could not be reached (its home node, in a cluster).
    #[error("the room is unavailable: {0}")]
    Unavailable(String),
}

impl ChatError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SignInRequired => "sign_in_required",
            Self::NameRequired => "name_required",
            Self::Empty => "empty",
            Self::TooLong(_) => "too_long",
            Self::BlockedWord => "blocked_word",
            Self::Muted => "muted",
            Self::Banned => "banned",
            Self::RateLimited => "rate_limited",
            Self::SlowMode(_) => "slow_mode",
            Self::RoomFull => "room_full",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Rejected(_) => "rejected",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// What a call asks the room actor to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Events for every member, in order.
    pub broadcast: Vec<ServerEvent>,
    /// Events for the caller only, in order.
    pub reply: Vec<ServerEvent>,
    /// Members to disconnect (banned users).
    pub kick: Vec<MemberId>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// One room's state. See the module docs.
#[derive(Debug)]
pub struct ChatCore {
    limits: ChatLimits,
    members: HashMap<MemberId, Option<ChatUser>>,
    history: VecDeque<ChatMessage>,
    next_id: u64,
    muted: HashMap<String, u64>,
    banned: HashSet<String>,
    buckets: HashMap<String, Bucket>,
    last_post: HashMap<String, u64>,
    slow_mode_secs: u64,
}

fn refusal(error: ChatError, client_id: Option<String>) -> Effects {
    Effects {
        reply: vec![ServerEvent::Error {
            code: error.code(),
            reason: error.to_string(),
            client_id,
        }],
        ..Effects::default()
    }
}

impl ChatCore {
    /// New limits for a live room (a configuration reload): they apply from the next
    /// command on; history beyond the new length goes, oldest first.
    pub fn set_limits(&mut self, limits: ChatLimits) {
        while self.history.len() > limits.history {
            self.history.pop_front();
        }
        self.limits = limits;
    }

    /// An empty room.
    pub fn new(limits: ChatLimits) -> Self {
        Self {
            limits,
            members: HashMap::new(),
            history: VecDeque::new(),
            next_id: 1,
            muted: HashMap::new(),
            banned: HashSet::new(),
            buckets: HashMap::new(),
            last_post: HashMap::new(),
            slow_mode_secs: 0,
        }
    }

    /// Members now.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Every member's id.
    pub fn member_ids(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.members.keys().copied()
    }

    /// Adds a member (`user` is `None` for an anonymous reader). The reply is the history.
    pub fn join(&mut self, member: MemberId, user: Option<ChatUser>) -> Result<Effects, ChatError> {
        if user.as_ref().is_some_and(|u| self.banned.contains(&u.id)) {
            return Err(ChatError::Banned);
        }
        if self.members.len() >= self.limits.max_members {
            return Err(ChatError::RoomFull);
        }
        self.members.insert(member, user.clone());
        let members = self.members.len();
        let presence = members <= self.limits.presence_limit;
        Ok(Effects {
            reply: vec![ServerEvent::History { messages: self.history.iter().cloned().collect() }],
            broadcast: if presence {
                vec![ServerEvent::Join { user, members }]
            } else {
                Vec::new()
            },
            kick: Vec::new(),
        })
    }

    /// Removes a member.
    pub fn leave(&mut self, member: MemberId) -> Effects {
        let Some(user) = self.members.remove(&member) else { return Effects::default() };
        if let Some(u) = &user {
            // Forget per-user state once the user's last connection leaves.
            if !self.members.values().flatten().any(|m| m.id == u.id) {
                self.buckets.remove(&u.id);
                self.last_post.remove(&u.id);
            }
        }
        let members = self.members.len();
        if members >= self.limits.presence_limit {
            return Effects::default();
        }
        Effects { broadcast: vec![ServerEvent::Leave { user, members }], ..Effects::default() }
    }

    /// Handles a member's command at `now_ms`.
    pub fn command(&mut self, member: MemberId, command: ClientCommand, now_ms: u64) -> Effects {
        let Some(user) = self.members.get(&member).cloned() else { return Effects::default() };
        match command {
            ClientCommand::Message { text, client_id } => match self.post(user, text, now_ms) {
                Ok(message) => Effects {
                    reply: vec![ServerEvent::Ack { id: message.id, client_id }],
                    broadcast: vec![ServerEvent::Message(message)],
                    kick: Vec::new(),
                },
                Err(error) => refusal(error, client_id),
            },
            moderation => match user.filter(ChatUser::moderates) {
                Some(_) => self.moderate(moderation, now_ms),
                None => refusal(ChatError::Forbidden, None),
            },
        }
    }

    /// A moderation command from the application or a moderator (no role check here).
    pub fn moderate(&mut self, command: ClientCommand, now_ms: u64) -> Effects {
        let broadcast = |event| Effects { broadcast: vec![event], ..Effects::default() };
        match command {
            ClientCommand::Message { .. } => Effects::default(),
            ClientCommand::Delete { id } => {
                let before = self.history.len();
                self.history.retain(|m| m.id != id);
                if self.history.len() == before && id >= self.next_id {
                    return refusal(ChatError::NotFound(id), None);
                }
                broadcast(ServerEvent::Deleted { id })
            }
            ClientCommand::Mute { user, seconds } => {
                let until = now_ms.saturating_add(seconds.saturating_mul(1000));
                if self.muted.len() >= MAX_MODERATED_USERS {
                    self.muted.retain(|_, end| *end > now_ms);
                }
                if self.muted.len() < MAX_MODERATED_USERS {
                    self.muted.insert(user.clone(), until);
                }
                broadcast(ServerEvent::Muted { user, until })
            }
            ClientCommand::Ban { user } => {
                if self.banned.len() < MAX_MODERATED_USERS {
                    self.banned.insert(user.clone());
                }
                let kick: Vec<MemberId> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.as_ref().is_some_and(|m| m.id == user))
                    .map(|(id, _)| *id)
                    .collect();
                Effects { broadcast: vec![ServerEvent::Banned { user }], reply: Vec::new(), kick }
            }
            ClientCommand::Unban { user } => {
                self.banned.remove(&user);
                Effects::default()
            }
            ClientCommand::SlowMode { seconds } => {
                self.slow_mode_secs = seconds;
                broadcast(ServerEvent::SlowMode { seconds })
            }
            ClientCommand::Clear => {
                self.history.clear();
                broadcast(ServerEvent::Cleared)
            }
        }
    }

    /// A message from the application, shown as a system message.
    pub fn system(&mut self, text: String, now_ms: u64) -> Effects {
        let message = self.record(text, None, now_ms);
        Effects {
            broadcast: vec![ServerEvent::System { text: message.text }],
            ..Effects::default()
        }
    }

    fn post(
        &mut self,
        user: Option<ChatUser>,
        text: String,
        now_ms: u64,
    ) -> Result<ChatMessage, ChatError> {
        let (user, text) = self.check(user, text, now_ms)?;
        Ok(self.record(text, Some(user), now_ms))
    }

    /// Validates a member's message and charges its rate limit, without publishing it
    /// (for a room that asks the application first). Answers the author and the trimmed
    /// text; [`ChatCore::publish`] then records and broadcasts it.
    pub fn check_message(
        &mut self,
        member: MemberId,
        text: String,
        now_ms: u64,
    ) -> Result<(ChatUser, String), ChatError> {
        let user = self.members.get(&member).cloned().flatten();
        self.check(user, text, now_ms)
    }

    /// Publishes a message [`ChatCore::check_message`] accepted (its text possibly
    /// rewritten by the application): the author's ack and everyone's broadcast.
    pub fn publish(
        &mut self,
        user: ChatUser,
        text: String,
        client_id: Option<String>,
        now_ms: u64,
    ) -> Effects {
        let message = self.record(text, Some(user), now_ms);
        Effects {
            reply: vec![ServerEvent::Ack { id: message.id, client_id }],
            broadcast: vec![ServerEvent::Message(message)],
            kick: Vec::new(),
        }
    }

    /// An error reply for a refused message.
    pub fn refusal(error: ChatError, client_id: Option<String>) -> Effects {
        refusal(error, client_id)
    }

    fn check(
        &mut self,
        user: Option<ChatUser>,
        text: String,
        now_ms: u64,
    ) -> Result<(ChatUser, String), ChatError> {
        let user = user.ok_or(ChatError::SignInRequired)?;
        if user.name.is_empty() {
            return Err(ChatError::NameRequired);
        }
        if self.muted.get(&user.id).is_some_and(|until| *until > now_ms) {
            return Err(ChatError::Muted);
        }
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ChatError::Empty);
        }
        if trimmed.chars().count() > self.limits.max_len {
            return Err(ChatError::TooLong(self.limits.max_len));
        }
        let lower = trimmed.to_lowercase();
        if self
            .limits
            .blocked_words
            .iter()
            .any(|w| !w.is_empty() && lower.contains(&w.to_lowercase()))
        {
            return Err(ChatError::BlockedWord);
        }
        if self.slow_mode_secs > 0 && !user.moderates() {
            let interval = self.slow_mode_secs.saturating_mul(1000);
            if self.last_post.get(&user.id).is_some_and(|last| now_ms < last + interval) {
                return Err(ChatError::SlowMode(self.slow_mode_secs));
            }
        }
        self.take_token(&user.id, now_ms)?;
        self.last_post.insert(user.id.clone(), now_ms);
        Ok((user, trimmed.to_owned()))
    }

    fn take_token(&mut self, user: &str, now_ms: u64) -> Result<(), ChatError> {
        let burst = f64::from(self.limits.burst.max(1));
        let bucket =
            self.buckets.entry(user.to_owned()).or_insert(Bucket { tokens: burst, at_ms: now_ms });
        let elapsed = now_ms.saturating_sub(bucket.at_ms) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * self.limits.per_second).min(burst);
        bucket.at_ms = now_ms;
        if bucket.tokens < 1.0 {
            return Err(ChatError::RateLimited);
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    fn record(&mut self, text: String, user: Option<ChatUser>, now_ms: u64) -> ChatMessage {
        let message = ChatMessage { id: self.next_id, text, user, ts: now_ms };
        self.next_id += 1;
        if self.limits.history > 0 {
            if self.history.len() >= self.limits.history {
                self.history.pop_front();
            }
            self.history.push_back(message.clone());
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn user(id: &str, roles: &[&str]) -> Option<ChatUser> {
        Some(ChatUser {
            id: id.into(),
            name: id.to_uppercase(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        })
    }

    fn say(text: &str) -> ClientCommand {
        ClientCommand::Message { text: text.into(), client_id: Some("c".into()) }
    }

    fn error_code(effects: &Effects) -> Option<&'static str> {
        effects.reply.iter().find_map(|e| match e {
            ServerEvent::Error { code, .. } => Some(*code),
            _ => None,
        })
    }

    #[test]
    fn members_get_history_on_join_and_messages_are_acked_and_broadcast() {
        let mut room = ChatCore::new(ChatLimits { history: 2, ..ChatLimits::default() });
        room.join(1, user("ann", &["viewer"])).expect("join");
        for (i, text) in ["one", "two", "three"].into_iter().enumerate() {
            let fx = room.command(1, say(text), 1000 + i as u64);
            assert!(matches!(&fx.reply[..], [ServerEvent::Ack { id, .. }] if *id == i as u64 + 1));
            assert!(matches!(&fx.broadcast[..], [ServerEvent::Message(m)] if m.text == text));
        }
        let fx = room.join(2, None).expect("anonymous reader");
        let ServerEvent::History { messages } = &fx.reply[0] else { panic!("history first") };
        let texts: Vec<_> = messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["two", "three"], "the last N, oldest first");
        assert_eq!(error_code(&room.command(2, say("hi"), 2000)), Some("sign_in_required"));
    }

    #[test]
    fn validation_refuses_bad_messages_with_codes() {
        let limits =
            ChatLimits { max_len: 5, blocked_words: vec!["Spam".into()], ..ChatLimits::default() };
        let mut room = ChatCore::new(limits);
        room.join(1, user("ann", &[])).expect("join");
        assert_eq!(error_code(&room.command(1, say("   "), 0)), Some("empty"));
        assert_eq!(error_code(&room.command(1, say("toolong"), 0)), Some("too_long"));
        assert_eq!(error_code(&room.command(1, say("spam!"), 0)), Some("blocked_word"));
        assert_eq!(error_code(&room.command(1, say("héllo"), 0)), None, "5 characters fit");
    }

    #[test]
    fn the_rate_limit_is_a_token_bucket_per_user() {
        let limits = ChatLimits { burst: 3, per_second: 1.0, ..ChatLimits::default() };
        let mut room = ChatCore::new(limits);
        room.join(1, user("ann", &[])).expect("join");
        room.join(2, user("ann", &[])).expect("second tab, same user");
        for _ in 0..3 {
            assert_eq!(error_code(&room.command(1, say("x"), 0)), None);
        }
        assert_eq!(error_code(&room.command(2, say("x"), 0)), Some("rate_limited"));
        assert_eq!(error_code(&room.command(1, say("x"), 1000)), None, "refilled one");
        assert_eq!(error_code(&room.command(1, say("x"), 1000)), Some("rate_limited"));
    }

    #[test]
    fn moderators_mute_ban_delete_slow_down_and_clear() {
        let mut room = ChatCore::new(ChatLimits::default());
        room.join(1, user("mod", &["moderator"])).expect("join");
        room.join(2, user("bob", &["viewer"])).expect("join");
        let fx = room.command(2, ClientCommand::Mute { user: "mod".into(), seconds: 9 }, 0);
        assert_eq!(error_code(&fx), Some("forbidden"), "viewers cannot moderate");

        room.command(1, ClientCommand::Mute { user: "bob".into(), seconds: 10 }, 0);
        assert_eq!(error_code(&room.command(2, say("hi"), 5_000)), Some("muted"));
        assert_eq!(error_code(&room.command(2, say("hi"), 10_001)), None, "mute expired");

        room.command(1, ClientCommand::SlowMode { seconds: 30 }, 10_001);
        assert_eq!(error_code(&room.command(2, say("again"), 20_000)), Some("slow_mode"));
        assert_eq!(error_code(&room.command(1, say("mods are exempt"), 20_000)), None);

        let fx = room.command(1, ClientCommand::Delete { id: 1 }, 20_000);
        assert_eq!(fx.broadcast, [ServerEvent::Deleted { id: 1 }]);
        let fx = room.command(1, ClientCommand::Delete { id: 999 }, 20_000);
        assert_eq!(error_code(&fx), Some("not_found"));

        let fx = room.command(1, ClientCommand::Ban { user: "bob".into() }, 20_000);
        assert_eq!(fx.kick, [2]);
        room.leave(2);
        assert_eq!(room.join(3, user("bob", &[])), Err(ChatError::Banned));
        room.command(1, ClientCommand::Unban { user: "bob".into() }, 20_000);
        assert!(room.join(3, user("bob", &[])).is_ok());

        room.command(1, ClientCommand::Clear, 20_000);
        let ServerEvent::History { messages } = &room.join(4, None).expect("join").reply[0] else {
            panic!("history")
        };
        assert!(messages.is_empty());
    }

    #[test]
    fn big_rooms_do_not_broadcast_presence() {
        let mut room = ChatCore::new(ChatLimits { presence_limit: 2, ..ChatLimits::default() });
        assert_eq!(room.join(1, None).expect("join").broadcast.len(), 1);
        assert_eq!(room.join(2, None).expect("join").broadcast.len(), 1);
        assert!(room.join(3, None).expect("join").broadcast.is_empty(), "over the limit");
        assert!(room.leave(3).broadcast.is_empty(), "2 left, but it was a big room");
        assert_eq!(room.leave(2).broadcast.len(), 1);
    }

    #[test]
    fn a_full_room_refuses_and_system_messages_reach_everyone() {
        let mut room = ChatCore::new(ChatLimits { max_members: 1, ..ChatLimits::default() });
        room.join(1, None).expect("join");
        assert_eq!(room.join(2, None), Err(ChatError::RoomFull));
        let fx = room.system("stream starts in 5 minutes".into(), 0);
        assert_eq!(
            fx.broadcast,
            [ServerEvent::System { text: "stream starts in 5 minutes".into() }]
        );
    }

    proptest! {
        #[test]
        fn any_command_sequence_keeps_the_room_bounded(
            steps in proptest::collection::vec((0u64..4, 0u8..8, ".{0,40}", 0u64..100_000), 0..300)
        ) {
            let limits = ChatLimits { history: 5, max_members: 3, ..ChatLimits::default() };
            let mut room = ChatCore::new(limits.clone());
            for (member, op, text, now) in steps {
                match op {
                    0 => { let _ = room.join(member, user(&format!("u{member}"), &["moderator"])); }
                    1 => { room.leave(member); }
                    2 => { room.command(member, ClientCommand::Ban { user: text.clone() }, now); }
                    3 => { room.command(member, ClientCommand::Delete { id: now }, now); }
                    4 => { room.command(member, ClientCommand::Mute { user: text.clone(), seconds: now }, now); }
                    _ => { room.command(member, say(&text), now); }
                }
                prop_assert!(room.history.len() <= 5);
                prop_assert!(room.members() <= 3);
            }
        }
    }
}
