//! Typed references to named actors, wherever they live: [`ActorRef`] (from
//! `Node::stream_ref`, `Node::room_ref`, and what the admin API uses), its errors
//! ([`RefError`]), and the receiving side ([`serve`]): envelopes from other nodes fenced by
//! epoch and dispatched by message name.
//!
//! # The path of a message
//! 1. `ActorRef::send(msg)`: if this node holds the name's lease *and can prove it now*
//!    ([`LeaseBook::proven`]) and the actor runs here, `msg` goes to its `Addr` as a plain
//!    actix message: no lookup, no serialization. A relayed replica on an edge holds no
//!    lease, so it is never the target.
//! 2. Otherwise the owner comes from the registry (cached in the ref until a call to it
//!    fails), and the message goes there as a `Call` of kind `ref.{kind}` whose body is an
//!    [`Envelope`] (wire name + bincode payload) and whose epoch is the owner's epoch as
//!    the caller saw it, over the node links ([`crate::cluster::link`]).
//! 3. The receiving node ([`serve`]) answers `NotOwner` unless it proves a lease on the
//!    name *under that epoch* now and runs the actor; else it decodes the message by name
//!    and sends it to the actor, and the result goes back encoded.
//! 4. On `NotOwner`, or when the message provably never left this node (the owner's node
//!    is no longer registered, or connecting to it is refused: a dead owner's node), the
//!    caller looks the owner up once more and tries once more; then it gives up with
//!    [`RefError::NotOwner`] or [`RefError::Unreachable`]. So the first message after an
//!    owner died reaches the new owner if one runs already, even through a ref that
//!    cached the dead one.
//!
//! # Delivery: at most once
//! A message is never sent twice on its own: a timeout ([`RefError::Timeout`]) or a link
//! that broke after the message was written to it ([`RefError::Unreachable`]) is not
//! retried, because the owner may or may not have applied the message. Only `NotOwner`
//! and a message that was never sent, which say the message was *not* applied, are.
//! Messages from one caller to one owner are handled in the order sent (one ordered link
//! per pair of nodes), as long as the caller awaits each `send`.
//!
//! # Fencing
//! The check on receipt (epoch and proof of the lease) happens when the envelope is taken
//! off the link, just before the message enters the actor's mailbox; a node paused past its
//! lease therefore refuses what was queued for it while it was stopped (`LeaseBook`'s
//! proof is on the monotonic clock, which runs on while a process is stopped).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Addr, Handler};
use arc_swap::ArcSwapOption;
use futures_util::future::{Either, FutureExt};
use parking_lot::Mutex;
use zenlive_actors::{NamedActor, RemoteMessage};
use zenlive_registry::{ActorKey, BoxFuture, LeaseBook, NodeId, Owner, ProofHandle, Registry};

use crate::cluster::wire::{decode_payload, encode_payload, Envelope, RemoteError};
use crate::cluster::Cluster;

/// Why a message sent through an [`ActorRef`] has no answer. Each variant says what the
/// caller may do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// No node owns the name: the actor is not running anywhere (a stream not being
    /// published). A ref never starts anything; try again once it runs.
    #[error("no live actor has this name")]
    NotFound,
    /// The node the registry named refused the message twice as not the owner (an owner
    /// changing hands right now). The message was not applied; it may be sent again.
    #[error("the owner changed while the message was sent; it was not applied")]
    NotOwner,
    /// The owner's node could not be reached (no address, no connection, or the link
    /// broke). The message may or may not have been applied if the link broke after it
    /// left; if no connection could be made it was not (and the owner was looked up twice:
    /// the registry still names this node, e.g. one that died and whose lease has not
    /// been taken over yet).
    #[error("node {node} cannot be reached")]
    Unreachable {
        /// The owner's node.
        node: NodeId,
    },
    /// No answer in time (the owner's node is slow or paused). The message may or may not
    /// have been applied: delivery is at most once, nothing is retried.
    #[error("node {node} did not answer in time; the message may or may not have been applied")]
    Timeout {
        /// The owner's node.
        node: NodeId,
    },
    /// The actor stopped (it ended, or a handler panicked and it was restarted) before it
    /// answered.
    #[error("the actor stopped before answering")]
    Stopped,
    /// The owner's node refused the message as one it cannot handle (it runs another
    /// version, or the message could not be encoded or decoded). Not applied.
    #[error("the owner's node cannot handle this message: {0}")]
    Refused(Refusal),
}

/// Why a node refused a message it could not handle (see [`RefError::Refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node has no handler for this kind of actor.
    UnknownKind,
    /// The actor kind there has no message of that name.
    UnknownMessage,
    /// The message or its answer could not be encoded or decoded.
    BadEncoding,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownKind => "unknown actor kind",
            Self::UnknownMessage => "unknown message",
            Self::BadEncoding => "undecodable message or answer",
        })
    }
}

/// The call kind of typed messages to actors of `kind` (`ref.stream`, `ref.chat`): apart
/// from the untyped calls between chat rooms (`chat`).
pub fn call_kind(kind: zenlive_registry::ActorKind) -> String {
    format!("ref.{kind}")
}

/// Finds this node's instance of an actor by name.
pub type Locate<A> = Arc<dyn Fn(&str) -> Option<Addr<A>> + Send + Sync>;

/// Decodes one message from its payload, hands it to the actor and encodes the answer.
type Dispatch<A> = fn(Addr<A>, &[u8]) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>>;

/// Everything refs to one actor kind on this node share: how to find a local instance, the
/// node's lease book and registry, the cluster (if any), and the messages other nodes may
/// send to this kind. Built once per kind per node.
pub struct Routes<A: NamedActor> {
    node: NodeId,
    book: LeaseBook,
    cluster: Option<Arc<Cluster>>,
    locate: Locate<A>,
    messages: HashMap<&'static str, Dispatch<A>>,
    /// [`call_kind`] of `A`, made once.
    kind: String,
}

impl<A: NamedActor> Routes<A> {
    /// Routes for `A` on `node`: local instances found with `locate`.
    pub fn new(
        node: NodeId,
        book: LeaseBook,
        cluster: Option<Arc<Cluster>>,
        locate: Locate<A>,
    ) -> Self {
        Self { node, book, cluster, locate, messages: HashMap::new(), kind: call_kind(A::KIND) }
    }

    /// Lets other nodes send `M` to this kind (registered under `M::NAME`).
    #[must_use]
    pub fn message<M>(mut self) -> Self
    where
        M: RemoteMessage,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.messages.insert(M::NAME, dispatch::<A, M>);
        self
    }

    /// The wire names of the messages other nodes may send to this kind, sorted.
    pub fn messages(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.messages.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// A reference to the actor named `name` (nothing is looked up or started yet).
    pub fn get(self: &Arc<Self>, name: &str) -> ActorRef<A> {
        let key = ActorKey::new(A::KIND, name);
        ActorRef {
            proof: Arc::new(self.book.handle(&key)),
            key,
            routes: Arc::clone(self),
            owner: Arc::default(),
            instance: Arc::default(),
        }
    }
}

/// A local answer, or [`RefError::Stopped`] when the actor went away first.
fn stopped<T>(answer: Result<T, actix::MailboxError>) -> Result<T, RefError> {
    answer.map_err(|_| RefError::Stopped)
}

fn dispatch<A, M>(addr: Addr<A>, payload: &[u8]) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>>
where
    A: NamedActor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: RemoteMessage,
{
    let message: Result<M, _> = decode_payload(payload);
    Box::pin(async move {
        let message = message.map_err(|e| RemoteError::BadRequest(e.to_string()))?;
        let answer = addr.send(message).await.map_err(|_| RemoteError::Stopped)?;
        encode_payload(&answer).map_err(|e| RemoteError::BadRequest(e.to_string()))
    })
}

/// A typed reference to the actor of kind `A` named by [`ActorRef::name`], wherever it runs.
/// Cheap to clone; clones share the cached owner. See the module docs for the path.
pub struct ActorRef<A: NamedActor> {
    key: ActorKey,
    /// This node's proof of the name's lease, checked without a lock.
    proof: Arc<ProofHandle>,
    routes: Arc<Routes<A>>,
    /// The owner last seen, forgotten when a call to it fails.
    owner: Arc<Mutex<Option<Owner>>>,
    /// The local instance last found, used while it is alive (a restarted or new instance
    /// has a new address, and the old one reports itself disconnected).
    instance: Arc<ArcSwapOption<Addr<A>>>,
}

impl<A: NamedActor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            proof: Arc::clone(&self.proof),
            routes: Arc::clone(&self.routes),
            owner: Arc::clone(&self.owner),
            instance: Arc::clone(&self.instance),
        }
    }
}

impl<A: NamedActor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRef").field("key", &self.key).finish_non_exhaustive()
    }
}

impl<A: NamedActor> ActorRef<A> {
    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.key.name
    }

    /// Whether the actor runs on this node as the name's proven owner right now.
    pub fn is_local(&self) -> bool {
        self.local().is_some()
    }

    /// The local instance, if this node proves the name's lease now.
    fn local(&self) -> Option<Addr<A>> {
        self.proof.proven()?;
        if let Some(addr) = self.instance.load().as_deref().filter(|a| a.connected()) {
            return Some(addr.clone());
        }
        let addr = (self.routes.locate)(&self.key.name)?;
        self.instance.store(Some(Arc::new(addr.clone())));
        Some(addr)
    }

    /// Sends `msg` to the actor's one live owner and waits for its answer: the same answer
    /// a local `Addr::send` gives, or why there is none. At most once (module docs).
    pub fn send<M>(&self, msg: M) -> impl Future<Output = Result<M::Result, RefError>> + use<A, M>
    where
        M: RemoteMessage,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        // The local path stays a plain `Addr::send` future; the remote one, much larger, is
        // boxed so that a local send does not carry (and move) its state.
        if self.proof.proven().is_some() {
            // The instance found last time, without cloning its address (the common case).
            if let Some(addr) = self.instance.load().as_deref().filter(|a| a.connected()) {
                let request = addr.send(msg);
                return Either::Left(request.map(stopped::<M::Result>));
            }
        }
        match self.local() {
            Some(addr) => Either::Left(addr.send(msg).map(stopped::<M::Result>)),
            None => {
                let this = self.clone();
                Either::Right(Box::pin(async move { this.send_remote(msg).await }))
            }
        }
    }

    async fn send_remote<M>(&self, msg: M) -> Result<M::Result, RefError>
    where
        M: RemoteMessage,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let Some(cluster) = self.routes.cluster.clone() else { return Err(RefError::NotFound) };
        let payload = encode_payload(&msg).map_err(|_| RefError::Refused(Refusal::BadEncoding))?;
        let envelope = Envelope { message: M::NAME.to_owned(), payload };
        let body =
            encode_payload(&envelope).map_err(|_| RefError::Refused(Refusal::BadEncoding))?;
        // The first attempt may use the cached owner; the second always looks it up.
        for attempt in 0..2 {
            let cached = if attempt == 0 { self.owner.lock().clone() } else { None };
            let owner = match cached {
                Some(owner) => owner,
                None => match self.routes.book.lookup(&self.key).await {
                    Ok(Some(owner)) => owner,
                    Ok(None) => return Err(RefError::NotFound),
                    Err(_) => return Err(RefError::Unreachable { node: self.routes.node.clone() }),
                },
            };
            if owner.node == self.routes.node {
                // The registry names this node: either the lease was proven meanwhile (the
                // actor just started here), or this node cannot prove it (self-fenced).
                if let Some(addr) = self.local() {
                    let msg: M = decode_payload(&envelope.payload)
                        .map_err(|_| RefError::Refused(Refusal::BadEncoding))?;
                    return addr.send(msg).await.map_err(|_| RefError::Stopped);
                }
                *self.owner.lock() = None;
                continue;
            }
            let call = cluster.new_call(
                &self.routes.kind,
                &self.key.name,
                Some(owner.epoch),
                body.clone(),
            );
            let result = cluster.call_node(&owner.node, call).await;
            let error = match result {
                Ok(reply) => {
                    *self.owner.lock() = Some(owner);
                    return decode_payload(&reply)
                        .map_err(|_| RefError::Refused(Refusal::BadEncoding));
                }
                Err(error) => error,
            };
            *self.owner.lock() = None;
            // Neither was applied: the node refused it as not the owner, or the call never
            // left this node (the owner's node is gone: no address, connection refused).
            let not_applied = matches!(error, RemoteError::NotOwner | RemoteError::NotSent(_));
            if not_applied && attempt == 0 {
                continue;
            }
            let node = owner.node;
            return Err(match error {
                RemoteError::NotOwner => RefError::NotOwner,
                RemoteError::NotSent(_) => RefError::Unreachable { node },
                RemoteError::Timeout => RefError::Timeout { node },
                RemoteError::Link(_) => RefError::Unreachable { node },
                RemoteError::Stopped => RefError::Stopped,
                RemoteError::NoHandler => RefError::Refused(Refusal::UnknownKind),
                RemoteError::UnknownMessage => RefError::Refused(Refusal::UnknownMessage),
                RemoteError::BadRequest(_) => RefError::Refused(Refusal::BadEncoding),
            });
        }
        Err(RefError::NotOwner)
    }

    /// Sends `msg` without waiting for the answer (fire and forget, at most once); the
    /// message is sent from a task of its own on the current actix arbiter (call it from
    /// one: an actor, a handler of the node's HTTP server, `actix_rt::System`), so `tell`
    /// returns at once. A failure is logged at debug level only.
    pub fn tell<M>(&self, msg: M)
    where
        M: RemoteMessage,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let this = self.clone();
        actix_rt::spawn(async move {
            if let Err(error) = this.send(msg).await {
                tracing::debug!(actor = %this.key, message = M::NAME, %error, "a told message has no answer");
            }
        });
    }
}

/// Answers typed calls from other nodes to actors of kind `A` on this node, with `routes`:
/// fenced by epoch and lease proof, dispatched by message name, each refusal counted in
/// `zenlive_registry_calls_refused_total{reason}`.
pub fn serve<A: NamedActor>(cluster: &Arc<Cluster>, routes: Arc<Routes<A>>) {
    let counters = Arc::clone(cluster);
    cluster.on_call(&call_kind(A::KIND), move |name, epoch, body| {
        let (routes, cluster) = (Arc::clone(&routes), Arc::clone(&counters));
        async move {
            let refuse = |reason: &str, error: RemoteError| {
                cluster.counters.refuse(reason);
                Err(error)
            };
            let envelope: Envelope = match decode_payload(&body) {
                Ok(envelope) => envelope,
                Err(error) => {
                    return refuse("bad_envelope", RemoteError::BadRequest(error.to_string()))
                }
            };
            let key = ActorKey::new(A::KIND, name);
            // Fencing on receipt: the epoch the caller saw must be the lease this node can
            // prove now; a replica, a lapsed or an older lease all answer NotOwner.
            let proven = routes.book.proven(&key);
            if epoch.is_none() || proven != epoch {
                return refuse("not_owner", RemoteError::NotOwner);
            }
            let Some(addr) = (routes.locate)(&key.name) else {
                return refuse("not_owner", RemoteError::NotOwner);
            };
            let Some(dispatch) = routes.messages.get(envelope.message.as_str()) else {
                return refuse("unknown_message", RemoteError::UnknownMessage);
            };
            match dispatch(addr, &envelope.payload).await {
                Err(error @ RemoteError::BadRequest(_)) => refuse("bad_body", error),
                other => other,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use zenlive_actors::chat::{Moderate, SystemMessage};
    use zenlive_actors::chat_protocol::ClientCommand;
    use zenlive_actors::stream::Kick;
    use zenlive_actors::{Protocol, StatsSnapshot, StreamStats};

    use super::*;

    #[test]
    fn built_in_remote_messages_round_trip_through_the_payload_codec() {
        let kick: Kick =
            decode_payload(&encode_payload(&Kick { reason: "tos".into() }).unwrap()).expect("kick");
        assert_eq!(kick.reason, "tos");
        let text = SystemMessage { text: "maintenance".into() };
        let text: SystemMessage = decode_payload(&encode_payload(&text).unwrap()).expect("text");
        assert_eq!(text.text, "maintenance");
        let mute = ClientCommand::Mute { user: "u1".into(), seconds: 60 };
        let moderate = Moderate { command: mute.clone() };
        let moderate: Moderate =
            decode_payload(&encode_payload(&moderate).unwrap()).expect("moderate");
        assert_eq!(moderate.command, mute);
    }

    #[test]
    fn a_stats_snapshot_crosses_nodes() {
        let stats = StreamStats::for_publisher(Protocol::Rtmp, Some("ann".into()), None);
        let sent = stats.snapshot();
        let got: StatsSnapshot = decode_payload(&encode_payload(&sent).unwrap()).expect("stats");
        assert_eq!(got.publisher_protocol, Protocol::Rtmp);
        assert_eq!(got.publisher_user.as_deref(), Some("ann"));
        assert_eq!(got.viewers, sent.viewers);
        assert_eq!(got.bytes_out, sent.bytes_out);
        assert_eq!(got.rates, sent.rates);
        assert_eq!(got.media, sent.media);
        let json: StatsSnapshot =
            serde_json::from_str(&serde_json::to_string(&sent).unwrap()).expect("JSON too");
        assert_eq!(json.viewers_total, sent.viewers_total);
    }

    #[test]
    fn hostile_payloads_are_errors_not_panics() {
        for bytes in [&[][..], &[0xff; 32][..], &[1, 200, 7][..]] {
            assert!(decode_payload::<Envelope>(bytes).is_err());
            assert!(decode_payload::<Kick>(bytes).is_err());
            let _ = decode_payload::<StatsSnapshot>(bytes);
        }
    }
}
