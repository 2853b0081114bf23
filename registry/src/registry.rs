//! The [`Registry`] contract: leases on actor names with fencing epochs, and node membership.
//!
//! A node *claims* an actor name before it runs the actor. A claim is a [`Lease`]: it names
//! the owner node and carries a fencing *epoch* that grows with every successful claim of
//! that name, and it lasts a TTL unless *renewed*. Renewal and release compare the whole
//! lease first, so a node whose lease was lost (it expired and someone else claimed the
//! name) can never overwrite the newer owner. Side effects that outlive the actor (playlists
//! or manifests in storage) carry the epoch so older writers can be refused.
//!
//! Nodes *register* with a TTL and renew it by heartbeat; a node that stops renewing
//! disappears from [`Registry::nodes`] within the TTL, and can no longer claim names.
//!
//! Names may also be *kept alive* ([`Registry::keep`]): a set of names per kind, without
//! TTL, that says "this actor must run somewhere". Nodes that run a kind with a keep-alive
//! policy claim a kept name that has no live owner and start it (application actors whose
//! node died are started again elsewhere). Keeping a name claims nothing by itself.
//!
//! Every method is async and fallible because the cluster implementation talks to Redis.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{ActorKey, ActorKind, NodeId};

/// How long a node's registration lives without a heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(6);
/// How long an actor lease lives without renewal.
pub const ACTOR_LEASE_TTL: Duration = Duration::from_secs(10);

/// A boxed, sendable future: what every [`Registry`] method returns, so the trait can be
/// used as `dyn Registry` with implementations chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Names claimed anywhere in the cluster from the moment it was asked for, as hints: a
/// receiver may miss some (it lagged, or the subscription was reconnecting), so whoever
/// waits for a name to be claimed still looks it up now and then.
pub type ClaimHints = tokio::sync::broadcast::Receiver<ActorKey>;

/// How many claim hints wait for a slow receiver before it lags (and looks up instead).
pub const CLAIM_HINTS_CAPACITY: usize = 256;

/// Why a registry call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is held by a live lease of another claim.
    #[error("{key} is owned by node {} (epoch {})", owner.node, owner.epoch)]
    AlreadyOwned {
        /// The actor asked for.
        key: ActorKey,
        /// Who holds it now.
        owner: Owner,
    },
    /// The lease expired or was taken over: the caller must stop acting as the owner.
    #[error("lease on {key} (epoch {epoch}) is lost")]
    LeaseLost {
        /// The actor whose lease was lost.
        key: ActorKey,
        /// The epoch the caller held.
        epoch: u64,
    },
    /// The node is not (or no longer) registered: it was declared dead.
    #[error("node {node} is not registered")]
    NodeNotRegistered {
        /// The node in question.
        node: NodeId,
    },
    /// The registry could not be reached or answered nonsense.
    #[error("registry unavailable: {reason}")]
    Unavailable {
        /// What went wrong, for the log.
        reason: String,
    },
}

/// The current owner of an actor name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The node that holds the lease.
    pub node: NodeId,
    /// The lease's fencing epoch.
    pub epoch: u64,
}

/// Proof of ownership of an actor name until `ttl` after the last claim or renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The actor.
    pub key: ActorKey,
    /// The owner (this node).
    pub node: NodeId,
    /// The fencing epoch: strictly greater than every earlier claim's of this name.
    pub epoch: u64,
    /// How long the lease lasts after each claim or renewal.
    pub ttl: Duration,
}

/// What a node publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node.
    pub id: NodeId,
    /// Random per process start: a restarted node is a new incarnation.
    pub incarnation: u64,
    /// Its public addresses by protocol (`rtmp`, `http`, `metrics`, `cluster`).
    pub addresses: BTreeMap<String, String>,
    /// A load figure for placement (e.g. connections); higher is busier.
    pub load: u64,
    /// The node is draining: it takes no new streams or rooms and lets its streams end.
    #[serde(default)]
    pub draining: bool,
}

/// Leases on actor names and node membership. See the module docs for the contract.
pub trait Registry: Send + Sync + 'static {
    /// Registers (or re-registers) a node for `ttl`.
    fn register_node(
        &self,
        info: NodeInfo,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Extends a node's registration by `ttl` and updates its load. Fails with
    /// [`RegistryError::NodeNotRegistered`] when the registration expired (the node was
    /// declared dead and must stop its actors and re-register as a new incarnation).
    fn heartbeat(
        &self,
        node: &NodeId,
        incarnation: u64,
        load: u64,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Removes a node's registration (clean shutdown). Its leases stay until released or
    /// expired.
    fn deregister_node(
        &self,
        node: &NodeId,
        incarnation: u64,
    ) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// The live nodes.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, RegistryError>>;

    /// Claims `key` for `node`, atomically: succeeds only if the node is registered and no
    /// live lease exists. The new lease's epoch is greater than every earlier one's.
    fn claim(
        &self,
        key: &ActorKey,
        node: &NodeId,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Lease, RegistryError>>;

    /// Extends a lease by its TTL if it is still exactly the current one; otherwise
    /// [`RegistryError::LeaseLost`].
    fn renew(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Releases a lease if it is still exactly the current one. Releasing a lease that was
    /// already lost is not an error: the name is not ours either way.
    fn release(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Who owns `key` now, if anyone.
    fn lookup(&self, key: &ActorKey) -> BoxFuture<'_, Result<Option<Owner>, RegistryError>>;

    /// Adds `key` to the names kept alive: nodes that run its kind with a keep-alive
    /// policy claim and start it whenever it has no live owner (its node died). Idempotent.
    /// Kept names have no TTL: they stay until [`Registry::unkeep`].
    fn keep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// Removes `key` from the names kept alive (the actor ended on purpose). Idempotent.
    fn unkeep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>>;

    /// The names of `kind` kept alive, in no particular order.
    fn kept(&self, kind: &ActorKind) -> BoxFuture<'_, Result<Vec<String>, RegistryError>>;

    /// Hints of the names claimed from now on, by any node (see [`ClaimHints`]), or `None`
    /// when this registry gives none (then a waiter looks up on a timer alone). No default:
    /// a wrapper that forgot to pass it on would silently turn hints off.
    fn claim_hints(&self) -> Option<ClaimHints>;
}
