//! [`LeaseKeeper`]: keeps one registry lease alive for whatever owns a name on this node (a
//! stream, a chat room's home, later a recorder), and [`renew`], the one decision of what a
//! renewal came to.
//!
//! # Where it sits
//! Between an owning actor and the [`Registry`]. The owner claims its name, hands the lease
//! to a keeper and hears back only when something changed ([`Renewal`]): it keeps acting
//! while the lease is proven or cannot be checked, and stops acting the moment another node
//! owns the name (self-fencing). Dropping the keeper releases the lease.
//!
//! # The rules (ARCHITECTURE.md, "Cluster", deliberate changes)
//! - A renewal that cannot reach the registry keeps the lease: nobody else can claim the
//!   name meanwhile.
//! - A lease found lapsed is claimed again if the name is still free (a Redis restart loses
//!   every key); only a name another node took is lost.
//! - A node declared dead (not registered) cannot claim: it keeps acting until it has
//!   registered again (its heartbeat does that), unless another node owns the name by then.
//!
//! The keeper runs as its own tokio task and reads no clock but tokio's, so tests pause time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use zenlive_registry::{Lease, Registry, RegistryError};

/// How often a keeper renews its lease: a third of the lease TTL, so two renewals may fail
/// (a slow registry) before the lease lapses.
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(3);

/// Why a lease is gone for good: its renewal failed and the name could not be claimed again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{renewal}; claiming it again: {reclaim}")]
pub struct LeaseLost {
    /// Why the renewal failed (the lease lapsed or was taken over).
    pub renewal: RegistryError,
    /// Why the name could not be claimed again (usually another node owns it).
    pub reclaim: RegistryError,
}

/// What one renewal of a lease came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours, and extended by its TTL.
    Renewed,
    /// Not proven this round: the registry could not be reached, or this node is not
    /// registered right now and nobody else owns the name. Keep acting; try again next
    /// round.
    Unproven(RegistryError),
    /// The lease had lapsed and the name was free: ours again, under this new lease (a
    /// greater fencing epoch).
    Reclaimed(Lease),
    /// Another node owns the name, or it could not be claimed again: stop acting as its
    /// owner.
    Lost(LeaseLost),
}

/// Renews `lease` once and decides what that came to (see the module docs for the rules).
pub async fn renew(registry: &dyn Registry, lease: &Lease) -> Renewal {
    let renewal = match registry.renew(lease).await {
        Ok(()) => return Renewal::Renewed,
        // The registry is unreachable: nobody can claim the name meanwhile, so the owner
        // carries on and the lease is proven again once the registry is back.
        Err(error @ RegistryError::Unavailable { .. }) => return Renewal::Unproven(error),
        Err(renewal) => renewal,
    };
    // The lease lapsed (the node was paused, or Redis restarted empty). If the name is still
    // free it is ours again under a new epoch; if another node took it, never two owners.
    match registry.claim(&lease.key, &lease.node, lease.ttl).await {
        Ok(new) => Renewal::Reclaimed(new),
        // This node was declared dead and has not registered again yet (its heartbeat does
        // that within a third of the node TTL): lost only if another node owns the name
        // meanwhile, else try again next round.
        Err(error @ RegistryError::NodeNotRegistered { .. }) => {
            match registry.lookup(&lease.key).await {
                Ok(Some(owner)) if owner.node != lease.node => Renewal::Lost(LeaseLost {
                    renewal,
                    reclaim: RegistryError::AlreadyOwned { key: lease.key.clone(), owner },
                }),
                _ => Renewal::Unproven(error),
            }
        }
        Err(reclaim) => Renewal::Lost(LeaseLost { renewal, reclaim }),
    }
}

/// Resolves once a keeper no longer holds its name: it released the lease, or lost it.
/// Cloned freely; whoever wants the name next on this node waits for it instead of polling.
#[derive(Debug, Clone)]
pub struct Released(watch::Receiver<Lease>);

impl Released {
    /// Waits until the keeper's lease is released or lost.
    pub async fn wait(mut self) {
        // `changed` fails once the keeper's task has ended (its sender dropped).
        while self.0.changed().await.is_ok() {}
    }

    /// Whether the keeper's lease is released or lost already.
    pub fn is_done(&self) -> bool {
        self.0.has_changed().is_err()
    }
}

/// Keeps one lease renewed every `interval` in its own task, reporting every outcome other
/// than [`Renewal::Renewed`] to its owner. Dropping the keeper (or [`LeaseKeeper::release`])
/// stops the renewals and releases the lease; a renewal in flight finishes first, so the
/// lease released is the latest one. After [`Renewal::Lost`] the task ends: nothing is
/// ours to release.
#[derive(Debug)]
pub struct LeaseKeeper {
    current: watch::Receiver<Lease>,
    /// Dropping it tells the task to release the lease and end.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RegistryError>>>,
}

impl LeaseKeeper {
    /// Keeps `lease` (just claimed from `registry`) renewed every `interval`, the first
    /// renewal one interval from now. `report` hears every outcome but `Renewed`, on the
    /// keeper's task: it must return quickly (send a message). Needs a tokio runtime.
    pub fn start(
        registry: Arc<dyn Registry>,
        lease: Lease,
        interval: Duration,
        report: impl FnMut(Renewal) + Send + 'static,
    ) -> Self {
        let (current_tx, current) = watch::channel(lease);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep(registry, current_tx, interval, report, stopped));
        Self { current, stop: Some(stop), task: Some(task) }
    }

    /// The lease as it is now (a lapsed lease claimed again has a new epoch): what side
    /// effects that outlive the owner carry for fencing.
    pub fn lease(&self) -> Lease {
        self.current.borrow().clone()
    }

    /// A handle that resolves once this keeper no longer holds the name.
    pub fn released(&self) -> Released {
        Released(self.current.clone())
    }

    /// Stops renewing and releases the lease; answers the registry's answer to the release
    /// (`Ok` too when the lease was lost already: the name is not ours either way).
    pub async fn release(mut self) -> Result<(), RegistryError> {
        self.stop.take();
        let Some(task) = self.task.take() else { return Ok(()) };
        task.await.unwrap_or_else(|_| {
            Err(RegistryError::Unavailable { reason: "the lease keeper's task ended".into() })
        })
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        // Dropping `stop` ends the task, which releases the lease on its own.
        self.stop.take();
    }
}

/// The keeper's task: renew on every tick until told to stop (then release) or the lease
/// is lost.
async fn keep(
    registry: Arc<dyn Registry>,
    current: watch::Sender<Lease>,
    interval: Duration,
    mut report: impl FnMut(Renewal),
    mut stop: oneshot::Receiver<()>,
) -> Result<(), RegistryError> {
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            // A message or the sender dropped: either way, stop.
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let lease = current.borrow().clone();
        let renewal = renew(&*registry, &lease).await;
        match &renewal {
            Renewal::Renewed => continue,
            Renewal::Reclaimed(new) => {
                current.send_replace(new.clone());
            }
            Renewal::Unproven(_) => {}
            Renewal::Lost(_) => {
                report(renewal);
                return Ok(());
            }
        }
        report(renewal);
    }
    let lease = current.borrow().clone();
    let released = registry.release(&lease).await;
    if let Err(error) = &released {
        tracing::warn!(key = %lease.key, %error, "could not release a lease; it will expire");
    }
    released
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use zenlive_registry::{ActorKey, ActorKind, MemoryRegistry, NodeId, NodeInfo, Owner};

    use super::*;

    const TTL: Duration = Duration::from_secs(10);
    const NODE_TTL: Duration = Duration::from_secs(6);

    fn key() -> ActorKey {
        ActorKey::new(ActorKind::ChatRoom, "live/a")
    }

    async fn register(registry: &dyn Registry, node: &str, incarnation: u64) {
        let info = NodeInfo {
            id: NodeId::new(node),
            incarnation,
            addresses: BTreeMap::new(),
            load: 0,
            draining: false,
        };
        registry.register_node(info, NODE_TTL).await.expect("register");
    }

    /// A registry with nodes `n1` and `n2`, and `n1` holding `live/a`.
    async fn claimed() -> (Arc<MemoryRegistry>, Lease) {
        let registry = Arc::new(MemoryRegistry::new());
        register(&*registry, "n1", 1).await;
        register(&*registry, "n2", 2).await;
        let lease = registry.claim(&key(), &NodeId::new("n1"), TTL).await.expect("claim");
        (registry, lease)
    }

    /// A registry whose every call fails as unreachable.
    struct Unreachable;

    impl Registry for Unreachable {
        fn register_node(
            &self,
            _: NodeInfo,
            _: Duration,
        ) -> zenlive_registry::BoxFuture<'_, Result<(), RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }
        fn heartbeat(
            &self,
            _: &NodeId,
            _: u64,
            _: u64,
            _: Duration,
        ) -> zenlive_registry::BoxFuture<'_, Result<(), RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }
        fn deregister_node(
            &self,
            _: &NodeId,
            _: u64,
        ) -> zenlive_registry::BoxFuture<'_, Result<(), RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }
        fn nodes(&self) -> zenlive_registry::BoxFuture<'_, Result<Vec<NodeInfo>, RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }
        fn claim(
            &self,
            _: &ActorKey,
            _: &NodeId,
            _: Duration,
        ) -> zenlive_registry::BoxFuture<'_, Result<Lease, RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }
        fn renew(&self, _: &Lease) -> zenlive_registry::BoxFuture<'_, Result<(), RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }
        fn release(&self, _: &Lease) -> zenlive_registry::BoxFuture<'_, Result<(), RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }
        fn lookup(
            &self,
            _: &ActorKey,
        ) -> zenlive_registry::BoxFuture<'_, Result<Option<Owner>, RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }
        fn keep(&self, _: &ActorKey) -> zenlive_registry::BoxFuture<'_, Result<(), RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }
        fn unkeep(
            &self,
            _: &ActorKey,
        ) -> zenlive_registry::BoxFuture<'_, Result<(), RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }
        fn kept(
            &self,
            _: &ActorKind,
        ) -> zenlive_registry::BoxFuture<'_, Result<Vec<String>, RegistryError>> {
            Box::pin(std::future::ready(Err(down())))
        }

        fn claim_hints(&self) -> Option<zenlive_registry::ClaimHints> {
            None
        }
    }

    fn down() -> RegistryError {
        RegistryError::Unavailable { reason: "down".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_lease_is_renewed() {
        let (registry, lease) = claimed().await;
        assert_eq!(renew(&*registry, &lease).await, Renewal::Renewed);
        // Renewed: it outlives the first TTL.
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert_eq!(renew(&*registry, &lease).await, Renewal::Renewed);
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert_eq!(renew(&*registry, &lease).await, Renewal::Renewed);
    }

    #[tokio::test]
    async fn an_unreachable_registry_keeps_the_lease() {
        let lease = Lease { key: key(), node: NodeId::new("n1"), epoch: 1, ttl: TTL };
        assert_eq!(renew(&Unreachable, &lease).await, Renewal::Unproven(down()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapsed_lease_on_a_free_name_is_claimed_again_under_a_new_epoch() {
        let (registry, lease) = claimed().await;
        // Keep both nodes registered while the lease lapses.
        tokio::time::advance(NODE_TTL - Duration::from_secs(1)).await;
        register(&*registry, "n1", 1).await;
        tokio::time::advance(TTL - NODE_TTL + Duration::from_secs(2)).await;
        register(&*registry, "n1", 1).await;
        let Renewal::Reclaimed(new) = renew(&*registry, &lease).await else {
            panic!("a lapsed lease on a free name is claimed again");
        };
        assert!(new.epoch > lease.epoch, "a new fencing epoch");
        assert_eq!(
            registry.lookup(&key()).await,
            Ok(Some(Owner { node: new.node, epoch: new.epoch }))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_another_node_took_is_lost() {
        let (registry, lease) = claimed().await;
        registry.release(&lease).await.expect("release");
        registry.claim(&key(), &NodeId::new("n2"), TTL).await.expect("n2 claims");
        let Renewal::Lost(lost) = renew(&*registry, &lease).await else {
            panic!("another node owns the name");
        };
        assert!(matches!(lost.renewal, RegistryError::LeaseLost { .. }), "{lost}");
        assert!(
            matches!(&lost.reclaim, RegistryError::AlreadyOwned { owner, .. } if owner.node.as_str() == "n2"),
            "{lost}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unregistered_node_keeps_a_free_name_and_loses_a_taken_one() {
        let (registry, lease) = claimed().await;
        // n1 misses its heartbeats: declared dead, and its lease lapses too.
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        register(&*registry, "n2", 2).await;
        let renewal = renew(&*registry, &lease).await;
        assert!(
            matches!(renewal, Renewal::Unproven(RegistryError::NodeNotRegistered { .. })),
            "nobody else owns the name: keep it for now ({renewal:?})"
        );
        registry.claim(&key(), &NodeId::new("n2"), TTL).await.expect("n2 claims");
        let Renewal::Lost(lost) = renew(&*registry, &lease).await else {
            panic!("n2 owns the name now");
        };
        assert!(
            matches!(&lost.reclaim, RegistryError::AlreadyOwned { owner, .. } if owner.node.as_str() == "n2"),
            "{lost}"
        );
    }

    /// A keeper reporting into a channel.
    fn keeper(
        registry: &Arc<MemoryRegistry>,
        lease: Lease,
    ) -> (LeaseKeeper, tokio::sync::mpsc::UnboundedReceiver<Renewal>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let registry: Arc<dyn Registry> = registry.clone();
        let keeper = LeaseKeeper::start(registry, lease, LEASE_RENEW_INTERVAL, move |renewal| {
            let _ = tx.send(renewal);
        });
        (keeper, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_keeper_holds_the_name_past_its_ttl_and_releases_it_when_dropped() {
        let (registry, lease) = claimed().await;
        let (keeper, mut reports) = keeper(&registry, lease.clone());
        let released = keeper.released();
        for _ in 0..4 {
            tokio::time::sleep(TTL / 2).await;
            register(&*registry, "n1", 1).await;
        }
        let owner = registry.lookup(&key()).await.expect("lookup").expect("still held");
        assert_eq!(owner.epoch, lease.epoch, "renewed, never re-claimed");
        assert!(reports.try_recv().is_err(), "nothing to report while renewals succeed");
        assert!(!released.is_done());
        drop(keeper);
        released.wait().await;
        assert_eq!(registry.lookup(&key()).await, Ok(None), "released on drop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_keeper_reclaims_a_lapsed_lease_and_releases_the_new_one() {
        let (registry, lease) = claimed().await;
        let (keeper, mut reports) = keeper(&registry, lease.clone());
        // The registry forgets the lease (a Redis restart), not the node.
        registry.release(&lease).await.expect("forget");
        tokio::time::sleep(LEASE_RENEW_INTERVAL + Duration::from_millis(1)).await;
        let Some(Renewal::Reclaimed(new)) = reports.recv().await else {
            panic!("the keeper claims the free name again");
        };
        assert_eq!(keeper.lease(), new);
        keeper.release().await.expect("release");
        assert_eq!(registry.lookup(&key()).await, Ok(None), "the new lease is the one released");
    }

    #[tokio::test(start_paused = true)]
    async fn a_keeper_reports_a_lost_name_once_and_ends() {
        let (registry, lease) = claimed().await;
        let (keeper, mut reports) = keeper(&registry, lease.clone());
        let released = keeper.released();
        registry.release(&lease).await.expect("forget");
        let taken = registry.claim(&key(), &NodeId::new("n2"), TTL).await.expect("n2 claims");
        tokio::time::sleep(LEASE_RENEW_INTERVAL + Duration::from_millis(1)).await;
        assert!(matches!(reports.recv().await, Some(Renewal::Lost(_))));
        released.wait().await;
        assert!(reports.recv().await.is_none(), "the keeper ended");
        drop(keeper);
        tokio::task::yield_now().await;
        let owner = registry.lookup(&key()).await.expect("lookup").expect("n2 holds it");
        assert_eq!(owner.epoch, taken.epoch, "dropping a lost keeper releases nothing of n2's");
    }
}
