//! The application's say in chat: [`ChatHooks`], a decider asked before each member message
//! is broadcast (allow, reject, rewrite) and listeners told of every delivered message.
//!
//! Only a room's home calls them (see [`super::room`]): the decider runs as its own task
//! bounded by [`ChatHooks::timeout`], so a slow or panicking hook costs only that message;
//! listeners run on the room's thread, each behind `catch_unwind`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::chat_protocol::{ChatMessage, ChatUser};

/// A message the application may allow, refuse or rewrite before it is broadcast.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessageRequest {
    /// The room.
    pub room: String,
    /// The author.
    pub user: ChatUser,
    /// The text, validated and trimmed.
    pub text: String,
}

/// The application's answer to a [`ChatMessageRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatDecision {
    /// Broadcast as it is.
    Allow,
    /// Refuse; the author gets an `error` with code `rejected` and this reason.
    Reject(String),
    /// Broadcast this text instead.
    Rewrite(String),
    /// The hook could not decide; the room's failure policy applies.
    Unavailable(String),
}

/// A message that was broadcast, for the application to save.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveredMessage {
    /// The room.
    pub room: String,
    /// The message as members received it.
    pub message: ChatMessage,
}

/// Decides on each message before broadcast.
pub type ChatDecider =
    Arc<dyn Fn(ChatMessageRequest) -> BoxFuture<'static, ChatDecision> + Send + Sync>;
/// Hears every delivered message. Runs on the room's thread: return quickly.
pub type ChatListener = Arc<dyn Fn(&DeliveredMessage) + Send + Sync>;

/// The application's chat hooks, shared by every room of the node.
#[derive(Clone)]
pub struct ChatHooks {
    /// Asked before each member message is broadcast.
    pub decide: Option<ChatDecider>,
    /// Told of every broadcast member message.
    pub delivered: Vec<ChatListener>,
    /// How long the decider may take.
    pub timeout: Duration,
    /// What happens when the decider fails, panics or times out.
    pub allow_on_failure: bool,
}

impl Default for ChatHooks {
    fn default() -> Self {
        Self {
            decide: None,
            delivered: Vec::new(),
            timeout: Duration::from_secs(3),
            allow_on_failure: false,
        }
    }
}

/// What the room does with a message once the decider answered (see [`ChatHooks::settle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Broadcast this text.
    Publish(String),
    /// Refuse with this reason.
    Refuse(String),
}

impl ChatHooks {
    /// Asks `decide` about `request` in its own task (a panic ends only that task), bounded
    /// by [`ChatHooks::timeout`]; a panic or a timeout answers
    /// [`ChatDecision::Unavailable`].
    pub(super) fn ask(
        &self,
        decide: &ChatDecider,
        request: ChatMessageRequest,
    ) -> impl Future<Output = ChatDecision> + 'static {
        let decision = tokio::time::timeout(self.timeout, actix_rt::spawn(decide(request)));
        async move {
            match decision.await {
                Ok(Ok(decision)) => decision,
                Ok(Err(_)) => ChatDecision::Unavailable("the chat hook panicked".into()),
                Err(_) => ChatDecision::Unavailable("the chat hook timed out".into()),
            }
        }
    }

    /// What `decision` about `text` comes to: an unavailable decider allows or refuses by
    /// [`ChatHooks::allow_on_failure`]. The second value is why the decider failed, if it
    /// did (for the log).
    pub(super) fn settle(&self, decision: ChatDecision, text: String) -> (Verdict, Option<String>) {
        match decision {
            ChatDecision::Allow => (Verdict::Publish(text), None),
            ChatDecision::Rewrite(text) => (Verdict::Publish(text), None),
            ChatDecision::Reject(reason) => (Verdict::Refuse(reason), None),
            ChatDecision::Unavailable(why) if self.allow_on_failure => {
                (Verdict::Publish(text), Some(why))
            }
            ChatDecision::Unavailable(why) => (Verdict::Refuse(why.clone()), Some(why)),
        }
    }

    /// Tells every listener of `delivered`; answers how many panicked (each is caught, so
    /// one broken listener neither ends the room nor keeps the others from hearing).
    pub(super) fn tell_delivered(&self, delivered: &DeliveredMessage) -> usize {
        self.delivered
            .iter()
            .filter(|listener| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(delivered)))
                    .is_err()
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn hooks(allow_on_failure: bool) -> ChatHooks {
        ChatHooks { allow_on_failure, ..ChatHooks::default() }
    }

    #[test]
    fn the_decider_allows_rewrites_or_rejects() {
        let hooks = hooks(false);
        let text = || "hi".to_owned();
        assert_eq!(hooks.settle(ChatDecision::Allow, text()), (Verdict::Publish(text()), None));
        assert_eq!(
            hooks.settle(ChatDecision::Rewrite("**".into()), text()),
            (Verdict::Publish("**".into()), None)
        );
        assert_eq!(
            hooks.settle(ChatDecision::Reject("no".into()), text()),
            (Verdict::Refuse("no".into()), None)
        );
    }

    #[test]
    fn a_failed_decider_allows_or_refuses_by_policy() {
        let failed = || ChatDecision::Unavailable("timed out".into());
        assert_eq!(
            hooks(true).settle(failed(), "hi".into()),
            (Verdict::Publish("hi".into()), Some("timed out".into()))
        );
        assert_eq!(
            hooks(false).settle(failed(), "hi".into()),
            (Verdict::Refuse("timed out".into()), Some("timed out".into()))
        );
    }

    #[test]
    fn a_panicking_listener_does_not_keep_the_others_from_hearing() {
        let heard = Arc::new(AtomicUsize::new(0));
        let counting: ChatListener = {
            let heard = Arc::clone(&heard);
            Arc::new(move |_| {
                heard.fetch_add(1, Ordering::Relaxed);
            })
        };
        let panicking: ChatListener = Arc::new(|_| panic!("a broken listener"));
        let hooks = ChatHooks {
            delivered: vec![panicking, Arc::clone(&counting), counting],
            ..ChatHooks::default()
        };
        let user = ChatUser { id: "u".into(), name: "U".into(), roles: Vec::new() };
        let message = ChatMessage { id: 1, text: "hi".into(), user: Some(user), ts: 0 };
        let delivered = DeliveredMessage { room: "live/a".into(), message };
        assert_eq!(hooks.tell_delivered(&delivered), 1, "one listener panicked");
        assert_eq!(heard.load(Ordering::Relaxed), 2, "the others heard");
    }
}
