//! A per-stream poll as an application actor (`zenlive::app_actors`): one instance per
//! poll name in the whole cluster, wherever it was spawned; viewers on every node vote into
//! it through `Node::actor_ref::<Poll>(name)`. Its kind is kept alive: when the node that
//! runs it dies, another node starts it again and refs keep working.
//!
//! Shared by `examples/cluster/main.rs` and `tests/app_actors.rs` (the same kind on every
//! node, as a real application would have it).
//!
//! The tally lives in memory: an instance started again (after a crash, or on another node)
//! starts empty. A real application would load it from its database in `Poll::start` and save
//! each vote (fenced by `StartInfo::epoch`).

use std::collections::BTreeMap;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use zenlive::app_actors::{AppActorKind, StartCause, StartInfo};
use zenlive_actors::{NamedActor, RemoteMessage};
use zenlive_registry::{app_kind, ActorKind};

/// Longest option text, in characters.
pub const MAX_OPTION_CHARS: usize = 32;
/// Most distinct options in one poll.
pub const MAX_OPTIONS: usize = 16;
/// Most voters in one poll (one vote each; a new vote replaces the voter's last).
pub const MAX_VOTERS: usize = 100_000;

/// One poll. See the module docs.
pub struct Poll {
    info: StartInfo,
    /// Each voter's choice.
    votes: BTreeMap<String, String>,
}

impl NamedActor for Poll {
    const KIND: ActorKind = app_kind!("poll");
}

impl Actor for Poll {
    type Context = Context<Self>;
}

impl Poll {
    /// A fresh poll (the factory of its kind).
    pub fn start(info: &StartInfo) -> Self {
        if info.cause != StartCause::Spawned {
            tracing::warn!(poll = %info.name, node = %info.node, cause = ?info.cause, "poll started again: its votes start over");
        }
        Self { info: info.clone(), votes: BTreeMap::new() }
    }

    /// The kind to register on every node: `Vote` and `GetTally` cross nodes, and a poll
    /// is kept alive across node failures.
    pub fn kind() -> AppActorKind<Self> {
        AppActorKind::new(Self::start).message::<Vote>().message::<GetTally>().keep_alive()
    }

    fn tally(&self) -> Tally {
        let mut counts = BTreeMap::new();
        for option in self.votes.values() {
            *counts.entry(option.clone()).or_insert(0u64) += 1;
        }
        Tally {
            counts,
            node: self.info.node.to_string(),
            epoch: self.info.epoch,
            restarted: self.info.cause != StartCause::Spawned,
        }
    }
}

/// The votes so far, and where the poll runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Votes by option.
    pub counts: BTreeMap<String, u64>,
    /// The node the poll runs on.
    pub node: String,
    /// Its lease's fencing epoch.
    pub epoch: u64,
    /// This instance was started again (after a crash or on another node): older votes
    /// were lost.
    pub restarted: bool,
}

/// Why a vote was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum VoteRefused {
    /// The option is empty or longer than [`MAX_OPTION_CHARS`].
    #[error("an option is 1 to {MAX_OPTION_CHARS} characters")]
    BadOption,
    /// The poll has [`MAX_OPTIONS`] options already.
    #[error("the poll has {MAX_OPTIONS} options already")]
    TooManyOptions,
    /// The poll has [`MAX_VOTERS`] voters already.
    #[error("the poll has {MAX_VOTERS} voters already")]
    TooManyVoters,
}

/// `voter` votes for `option` (replacing the voter's earlier vote). Remote: `poll.vote`.
#[derive(Debug, Clone, Message, Serialize, Deserialize)]
#[rtype(result = "Result<Tally, VoteRefused>")]
pub struct Vote {
    /// Who votes (a chat user's id).
    pub voter: String,
    /// For what.
    pub option: String,
}

impl RemoteMessage for Vote {
    const NAME: &'static str = "poll.vote";
}

/// Asks for the tally. Remote: `poll.tally`.
#[derive(Debug, Clone, Copy, Message, Serialize, Deserialize)]
#[rtype(result = "Tally")]
pub struct GetTally;

impl RemoteMessage for GetTally {
    const NAME: &'static str = "poll.tally";
}

impl Handler<Vote> for Poll {
    type Result = Result<Tally, VoteRefused>;

    fn handle(&mut self, msg: Vote, _ctx: &mut Self::Context) -> Self::Result {
        let option = msg.option.trim();
        if option.is_empty() || option.chars().count() > MAX_OPTION_CHARS {
            return Err(VoteRefused::BadOption);
        }
        let known = self.votes.values().any(|o| o == option);
        if !known
            && self.votes.values().collect::<std::collections::BTreeSet<_>>().len() >= MAX_OPTIONS
        {
            return Err(VoteRefused::TooManyOptions);
        }
        if !self.votes.contains_key(&msg.voter) && self.votes.len() >= MAX_VOTERS {
            return Err(VoteRefused::TooManyVoters);
        }
        self.votes.insert(msg.voter, option.to_owned());
        Ok(self.tally())
    }
}

impl Handler<GetTally> for Poll {
    type Result = MessageResult<GetTally>;

    fn handle(&mut self, _msg: GetTally, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.tally())
    }
}
