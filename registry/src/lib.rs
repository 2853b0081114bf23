//! ZenLive's registry: who owns which actor, and which nodes are alive (the crate was
//! `zenlive-cluster`; cluster mode, the links between nodes, lives in the root crate).
//!
//! # Where it sits
//! The bottom of the dependency graph: `src/` → `actors/` → this crate. Nothing here knows
//! about actix, media or protocols. The node always talks to a [`Registry`]; in single-node
//! mode that is the [`MemoryRegistry`], in cluster mode the [`RedisRegistry`], behind the
//! same trait, so no code path depends on whether Redis is there.
//!
//! # Layout
//! - [`id`]: [`NodeId`], [`ActorKind`] (built-in and application kinds: [`AppKind`],
//!   [`app_kind!`]), [`ActorKey`].
//! - [`registry`]: the [`Registry`] trait, leases with fencing epochs, node membership.
//! - [`memory`]: [`MemoryRegistry`], the in-process implementation.
//! - [`redis`]: [`RedisRegistry`], the shared implementation for a cluster.
//! - [`book`]: [`LeaseBook`], around either: the leases this node holds and until when it
//!   can prove them (fencing on receipt, self-fencing).

pub mod book;
pub mod id;
pub mod memory;
pub mod redis;
pub mod registry;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use book::{LeaseBook, ProofHandle, SELF_FENCE_MARGIN};
pub use id::{new_incarnation, ActorKey, ActorKind, AppKind, InvalidKind, NodeId};
pub use memory::MemoryRegistry;
pub use redis::RedisRegistry;
pub use registry::{
    BoxFuture, ClaimHints, Lease, NodeInfo, Owner, Registry, RegistryError, ACTOR_LEASE_TTL,
    CLAIM_HINTS_CAPACITY, NODE_TTL,
};
