//! [`LeaseBook`]: a [`Registry`] that remembers, for every lease this node holds, until when
//! it can still *prove* it on its own monotonic clock. What fencing on receipt asks before a
//! message to a named actor is applied here (ARCHITECTURE.md, "By name, anywhere").
//!
//! # Where it sits
//! Around the node's registry, once, so every claim, renewal and release of this node goes
//! through it whoever makes it (the stream supervisor, a chat room's home, later recorders
//! and application actors): nothing that keeps a lease needs to report to it.
//!
//! # The rule
//! A claim or a renewal that the registry answered `Ok` was applied at some instant after
//! the request left, so the lease lives at least until *sent + TTL*. But a lease also ends
//! when its node's registration does (a claim succeeds over the lease of a node that is no
//! longer registered: ARCHITECTURE.md, "Cluster"), so the node's own registration and
//! heartbeats are proven the same way. A lease is proven until the earlier of the two, less
//! [`SELF_FENCE_MARGIN`]; past it (the node was paused, or could not reach the registry)
//! [`LeaseBook::proven`] answers `None` and the node must not act on the name's behalf for
//! others (self-fencing), even before its keeper hears that the lease is lost. A renewal
//! answered `LeaseLost`, a release and a refused heartbeat forget at once. Time is tokio's
//! clock, so tests pause it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::id::{ActorKey, NodeId};
use crate::registry::{BoxFuture, ClaimHints, Lease, NodeInfo, Owner, Registry, RegistryError};

/// How long before its TTL runs out, counted from when the claim or renewal was *sent*, a
/// lease stops being proven here: room for the registry's clock and this node's to run at
/// slightly different rates and for a message to be handled after the check.
pub const SELF_FENCE_MARGIN: Duration = Duration::from_secs(1);

/// A lease this node holds and until when it is proven.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: u64,
    until: Instant,
}

/// The node's registry, remembering the leases the node holds. See the module docs.
#[derive(Clone)]
pub struct LeaseBook {
    inner: Arc<dyn Registry>,
    node: NodeId,
    held: Arc<Mutex<HashMap<ActorKey, Held>>>,
    /// Until when this node's registration is proven (`None`: not registered).
    registered: Arc<Mutex<Option<Instant>>>,
}

impl LeaseBook {
    /// Wraps `inner` for `node`: leases of other nodes (a test claiming for another id) are
    /// not recorded.
    pub fn new(inner: Arc<dyn Registry>, node: NodeId) -> Self {
        Self { inner, node, held: Arc::default(), registered: Arc::default() }
    }

    /// The epoch of this node's lease on `key` if it is proven now (see the module docs).
    pub fn proven(&self, key: &ActorKey) -> Option<u64> {
        let held = *self.held.lock().get(key)?;
        let registered = (*self.registered.lock())?;
        (Instant::now() < held.until.min(registered)).then_some(held.epoch)
    }

    /// Notes this node's registration, renewed at `sent` for `ttl` (or lost: `None`).
    fn registered(&self, node: &NodeId, renewed: Option<(Instant, Duration)>) {
        if *node != self.node {
            return;
        }
        let until = renewed.and_then(|(sent, ttl)| (sent + ttl).checked_sub(SELF_FENCE_MARGIN));
        let mut registered = self.registered.lock();
        *registered = match (until, *registered) {
            (Some(until), Some(before)) => Some(until.max(before)),
            (until, _) => until,
        };
    }

    fn record(&self, lease: &Lease, sent: Instant) {
        if lease.node != self.node {
            return;
        }
        let Some(until) = (sent + lease.ttl).checked_sub(SELF_FENCE_MARGIN) else { return };
        let mut held = self.held.lock();
        let entry = held.entry(lease.key.clone()).or_insert(Held { epoch: lease.epoch, until });
        // A newer epoch replaces an older one; a renewal of the same epoch only extends it.
        if lease.epoch > entry.epoch || (lease.epoch == entry.epoch && until > entry.until) {
            *entry = Held { epoch: lease.epoch, until };
        }
    }

    fn forget(&self, lease: &Lease) {
        let mut held = self.held.lock();
        if held.get(&lease.key).is_some_and(|h| h.epoch == lease.epoch) {
            held.remove(&lease.key);
        }
    }
}

impl Registry for LeaseBook {
    fn register_node(
        &self,
        info: NodeInfo,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let (sent, node) = (Instant::now(), info.id.clone());
        let registering = self.inner.register_node(info, ttl);
        Box::pin(async move {
            registering.await?;
            self.registered(&node, Some((sent, ttl)));
            Ok(())
        })
    }

    fn heartbeat(
        &self,
        node: &NodeId,
        incarnation: u64,
        load: u64,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let (sent, node) = (Instant::now(), node.clone());
        let beat = self.inner.heartbeat(&node, incarnation, load, ttl);
        Box::pin(async move {
            match beat.await {
                Ok(()) => {
                    self.registered(&node, Some((sent, ttl)));
                    Ok(())
                }
                Err(error @ RegistryError::NodeNotRegistered { .. }) => {
                    self.registered(&node, None);
                    Err(error)
                }
                Err(error) => Err(error),
            }
        })
    }

    fn deregister_node(
        &self,
        node: &NodeId,
        incarnation: u64,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.registered(node, None);
        self.inner.deregister_node(node, incarnation)
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, RegistryError>> {
        self.inner.nodes()
    }

    fn claim(
        &self,
        key: &ActorKey,
        node: &NodeId,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        // Taken before the request can leave: the proof errs on the short side.
        let sent = Instant::now();
        let claim = self.inner.claim(key, node, ttl);
        Box::pin(async move {
            let lease = claim.await?;
            self.record(&lease, sent);
            Ok(lease)
        })
    }

    fn renew(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        let sent = Instant::now();
        let renewal = self.inner.renew(lease);
        let lease = lease.clone();
        Box::pin(async move {
            match renewal.await {
                Ok(()) => {
                    self.record(&lease, sent);
                    Ok(())
                }
                Err(error @ RegistryError::LeaseLost { .. }) => {
                    self.forget(&lease);
                    Err(error)
                }
                Err(error) => Err(error),
            }
        })
    }

    fn release(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        // Given up from now on, whatever the registry answers.
        self.forget(lease);
        self.inner.release(lease)
    }

    fn lookup(&self, key: &ActorKey) -> BoxFuture<'_, Result<Option<Owner>, RegistryError>> {
        self.inner.lookup(key)
    }

    fn claim_hints(&self) -> Option<ClaimHints> {
        self.inner.claim_hints()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::id::ActorKind;
    use crate::memory::MemoryRegistry;

    const TTL: Duration = Duration::from_secs(10);

    fn info(node: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(node),
            incarnation: 1,
            addresses: BTreeMap::new(),
            load: 0,
            draining: false,
        }
    }

    /// A book for n1 over a memory registry where n1 and n2 are registered for 600 s.
    async fn book() -> LeaseBook {
        let memory: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
        let book = LeaseBook::new(memory, NodeId::new("n1"));
        for node in ["n1", "n2"] {
            book.register_node(info(node), Duration::from_secs(600)).await.expect("register");
        }
        book
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_proven_no_longer_than_the_nodes_registration() {
        let memory: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
        let book = LeaseBook::new(memory, NodeId::new("n1"));
        let node_ttl = Duration::from_secs(6);
        book.register_node(info("n1"), node_ttl).await.expect("register");
        let lease = book.claim(&key(), &NodeId::new("n1"), TTL).await.expect("claim");
        tokio::time::advance(node_ttl - SELF_FENCE_MARGIN - Duration::from_millis(1)).await;
        assert_eq!(book.proven(&key()), Some(lease.epoch));
        book.heartbeat(&NodeId::new("n1"), 1, 0, node_ttl).await.expect("heartbeat");
        tokio::time::advance(node_ttl - SELF_FENCE_MARGIN - Duration::from_millis(1)).await;
        assert_eq!(book.proven(&key()), None, "the lease's own TTL ran out first");
        book.heartbeat(&NodeId::new("n1"), 1, 0, node_ttl).await.expect("heartbeat");
        book.renew(&lease).await.expect("renew");
        assert_eq!(book.proven(&key()), Some(lease.epoch));
        tokio::time::advance(node_ttl - SELF_FENCE_MARGIN).await;
        assert_eq!(book.proven(&key()), None, "no heartbeat: the node may be declared dead");
    }

    fn key() -> ActorKey {
        ActorKey::new(ActorKind::Stream, "live/a")
    }

    #[tokio::test(start_paused = true)]
    async fn a_claimed_lease_is_proven_until_its_ttl_minus_the_margin() {
        let book = book().await;
        assert_eq!(book.proven(&key()), None);
        let lease = book.claim(&key(), &NodeId::new("n1"), TTL).await.expect("claim");
        assert_eq!(book.proven(&key()), Some(lease.epoch));
        tokio::time::advance(TTL - SELF_FENCE_MARGIN - Duration::from_millis(1)).await;
        assert_eq!(book.proven(&key()), Some(lease.epoch));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(book.proven(&key()), None, "not renewed in time: self-fenced");
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_extends_the_proof_and_a_release_ends_it() {
        let book = book().await;
        let lease = book.claim(&key(), &NodeId::new("n1"), TTL).await.expect("claim");
        tokio::time::advance(Duration::from_secs(5)).await;
        book.renew(&lease).await.expect("renew");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(book.proven(&key()), Some(lease.epoch), "proven from the renewal on");
        book.release(&lease).await.expect("release");
        assert_eq!(book.proven(&key()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_is_forgotten_and_other_nodes_leases_are_not_recorded() {
        let book = book().await;
        let lease = book.claim(&key(), &NodeId::new("n1"), TTL).await.expect("claim");
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        let taken = book.claim(&key(), &NodeId::new("n2"), TTL).await.expect("n2 claims");
        assert_eq!(book.proven(&key()), None, "n2's lease is not this node's");
        assert!(book.renew(&lease).await.is_err());
        assert_eq!(book.proven(&key()), None);
        assert!(taken.epoch > lease.epoch);
    }
}
