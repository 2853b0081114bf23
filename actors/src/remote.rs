//! [`RemoteMessage`]: an actor message that may cross nodes, and [`NamedActor`]: an actor
//! kind found by name in the registry. Both are what a typed reference by name
//! (`zenlive::refs::ActorRef`) needs; the node's side (envelopes, routing, fencing) lives in
//! `src/refs.rs`.
//!
//! # Where it sits
//! At the bottom of the crate, beside [`crate::protocol`]: the stream's and the chat room's
//! message modules implement it for their messages, nothing here knows an actor.
//!
//! # Which messages cross nodes
//! | actor | message | wire name | answers |
//! |---|---|---|---|
//! | stream ([`crate::StreamActor`]) | [`crate::stream::Kick`] | `stream.kick` | whether a publisher was attached |
//! | stream | [`crate::stream::GetStats`] | `stream.stats` | [`crate::StatsSnapshot`] |
//! | stream | [`crate::stream::SetOutput`] | `stream.output` | [`crate::OutputChange`] |
//! | chat room ([`crate::chat::ChatRoom`]) | [`crate::chat::SystemMessage`] | `chat.system` | `()` |
//! | chat room | [`crate::chat::Moderate`] | `chat.moderate` | `()` |
//!
//! The recorder (`zenlive::recording`) adds its own (`recorder.status`, `recorder.stop`).
//! An application's actors (`zenlive::app_actors`) add theirs: the messages each kind
//! registers with `AppActorKind::message`, named by the application (`examples/cluster`'s
//! poll: `poll.vote`, `poll.tally`); their kind is `app_kind!("name")`.
//!
//! Every other message of these actors (attaching a publisher, subscribing a viewer, a
//! member joining, ...) carries channels or handles and stays local.

use serde::de::DeserializeOwned;
use serde::Serialize;
use zenlive_registry::ActorKind;

/// An actix message that can be sent to an actor on another node: the message and its
/// result are serde types, and it has a stable name on the wire.
///
/// The name must be unique among the messages of one actor kind and must never change once
/// nodes run it (a node that does not know a name answers "unknown message"). By
/// convention `kind.verb` (`stream.kick`). Serde shapes must round-trip through a
/// non-self-describing format (bincode): no internally tagged enums, no
/// `skip_serializing_if` (wrap such a field as JSON text, as [`crate::chat::Moderate`] does).
pub trait RemoteMessage:
    actix::Message<Result: Serialize + DeserializeOwned + Send + 'static>
    + Serialize
    + DeserializeOwned
    + Send
    + 'static
{
    /// The message's name on the wire.
    const NAME: &'static str;
}

/// An actor found by name through the registry: its kind names its registry entries
/// (`kind/name` → owner node and epoch). An application's own kind is
/// `zenlive_registry::app_kind!("name")` (registered with `NodeBuilder::actor_kind`).
pub trait NamedActor: actix::Actor<Context = actix::Context<Self>> {
    /// The registry kind of this actor's names.
    const KIND: ActorKind;
}
