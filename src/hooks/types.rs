//! What the node asks and tells the application: a decider's [`Decision`] on a
//! [`PublishRequest`] or [`PlayRequest`], and [`ViewerEvent`]s. Shared by the in-process
//! hooks ([`super::Hooks`]) and the webhooks ([`crate::webhooks`]), which sit beside each
//! other above this module.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use serde::Serialize;
use zenlive_actors::{Protocol, StreamKey};

use crate::auth::Identity;

/// A decider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Go ahead, with these choices for the stream (a publish decider's answer; a play
    /// decider's `AllowWith` is an `Allow`).
    AllowWith(StreamOptions),
    /// Refuse, telling the client why.
    Deny(String),
    /// The decider could not decide (its backend is down); `hooks.on_failure` applies.
    Unavailable(String),
}

/// What a publish decider may choose for a stream it lets in
/// ([`Decision::AllowWith`]). When several deciders choose, the last one's choice wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamOptions {
    /// Record it (`Some(true)`, even where `recording.auto` or `recording.paths` would not)
    /// or not (`Some(false)`, even where they would); `None` leaves it to them. Needs
    /// `recording.enabled`.
    pub record: Option<bool>,
}

impl StreamOptions {
    /// Chooses whether the stream is recorded.
    #[must_use]
    pub fn record(mut self, on: bool) -> Self {
        self.record = Some(on);
        self
    }

    /// `self` with what `later` chose on top.
    fn merge(self, later: Self) -> Self {
        Self { record: later.record.or(self.record) }
    }
}

impl Decision {
    /// This answer after `later`'s: a refusal wins, options add up.
    pub(crate) fn then(self, later: Self) -> Self {
        match (self, later) {
            (Self::Deny(reason), _) | (_, Self::Deny(reason)) => Self::Deny(reason),
            (Self::Unavailable(why), _) | (_, Self::Unavailable(why)) => Self::Unavailable(why),
            (Self::AllowWith(a), Self::AllowWith(b)) => Self::AllowWith(a.merge(b)),
            (Self::AllowWith(a), Self::Allow) | (Self::Allow, Self::AllowWith(a)) => {
                Self::AllowWith(a)
            }
            (Self::Allow, Self::Allow) => Self::Allow,
        }
    }

    /// The options it carries (none for a plain `Allow`).
    pub fn options(&self) -> StreamOptions {
        match self {
            Self::AllowWith(options) => options.clone(),
            _ => StreamOptions::default(),
        }
    }
}

/// Someone wants to publish.
#[derive(Debug, Clone, Serialize)]
pub struct PublishRequest {
    /// The stream.
    pub stream: StreamKey,
    /// How they connect.
    pub protocol: Protocol,
    /// From where.
    pub peer: Option<SocketAddr>,
    /// Who, when a token identified them.
    pub user: Option<Identity>,
}

/// Someone wants to watch.
pub type PlayRequest = PublishRequest;

/// A viewer came or went.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ViewerEvent {
    /// A viewer started watching.
    Joined {
        /// The stream.
        stream: StreamKey,
        /// How they watch.
        protocol: Protocol,
        /// From where.
        peer: Option<SocketAddr>,
        /// Who (a token's `sub`), when known.
        user: Option<String>,
    },
    /// A viewer stopped watching.
    Left {
        /// The stream.
        stream: StreamKey,
        /// How they watched.
        protocol: Protocol,
        /// From where.
        peer: Option<SocketAddr>,
        /// Who, when known.
        user: Option<String>,
        /// How long they watched, in seconds.
        seconds: f64,
        /// Bytes delivered to them.
        bytes: u64,
        /// Why they left.
        reason: String,
    },
}

impl ViewerEvent {
    /// The stream this event is about.
    pub fn stream(&self) -> &StreamKey {
        match self {
            Self::Joined { stream, .. } | Self::Left { stream, .. } => stream,
        }
    }
}

/// A publish or play decider.
pub type Decider = Arc<dyn Fn(PublishRequest) -> BoxFuture<'static, Decision> + Send + Sync>;

/// Wraps an async closure as a [`Decider`].
pub fn decider<F, Fut>(f: F) -> Decider
where
    F: Fn(PublishRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Decision> + Send + 'static,
{
    Arc::new(move |request| Box::pin(f(request)))
}

/// Seconds since the Unix epoch of `t`, for event payloads.
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciders_answers_add_up_and_a_refusal_wins() {
        let with = |on| Decision::AllowWith(StreamOptions::default().record(on));
        assert_eq!(Decision::Allow.then(Decision::Allow), Decision::Allow);
        assert_eq!(Decision::Allow.then(with(true)), with(true));
        assert_eq!(with(true).then(Decision::Allow), with(true));
        assert_eq!(with(true).then(with(false)), with(false), "the later choice wins");
        let deny = Decision::Deny("no".into());
        assert_eq!(with(true).then(deny.clone()), deny);
        assert_eq!(deny.clone().then(with(true)), deny);
        assert_eq!(with(false).options().record, Some(false));
        assert_eq!(Decision::Allow.options(), StreamOptions::default());
    }
}
