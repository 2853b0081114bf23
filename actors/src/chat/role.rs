//! A room's [`Role`] on this node, decided once: when the claim of its registry name
//! (`chat/{name}`) resolves, the room becomes the room's *home* (it holds the lease), a
//! *satellite* of the home on another node, or stops. Until then it is [`Role::Pending`]
//! and queues what arrives ([`super::pending`]). Handlers dispatch on the role; none decides
//! it again.
//!
//! [`claim`] is the whole claim, as a future the room runs beside its mailbox: wait for this
//! node's previous instance of the room to let the name go, place a room without a home on
//! the least-loaded node (cluster), claim, and [`decide`]. No actix here, so the decision is
//! tested with the in-memory registry and a paused clock.

use std::time::Duration;

use zenlive_registry::{ActorKey, ActorKind, Lease, NodeId, Owner, RegistryError, ACTOR_LEASE_TTL};

use super::home::{Home, RemoteMembers};
use super::pending::Pending;
use super::placement::Placement;
use super::satellite::Satellite;
use super::tenure::Predecessor;

/// How long a claim waits, once, for a lease of this node's that nobody renews to lapse
/// (a previous process with this node id, or an instance whose release failed): the lease
/// TTL and a margin. The registry tells nobody when a lease lapses (no pub/sub), so this one
/// wait is a deadline, not a poll.
pub(super) const LAPSE_WAIT: Duration = ACTOR_LEASE_TTL.saturating_add(Duration::from_secs(1));

/// Which part of the room this actor plays.
pub(super) enum Role {
    /// The claim is in flight: what arrives waits here, in order.
    Pending(Pending),
    /// This node holds the room's lease and state.
    Home(Home),
    /// Another node is the home; this actor forwards and fans out.
    Satellite(Satellite),
}

impl Role {
    /// The home's members on satellites (`None` unless this is the home).
    pub(super) fn remote(&self) -> Option<&RemoteMembers> {
        match self {
            Role::Home(home) => Some(&home.remote),
            _ => None,
        }
    }

    /// The home's members on satellites, to change.
    pub(super) fn remote_mut(&mut self) -> Option<&mut RemoteMembers> {
        match self {
            Role::Home(home) => Some(&mut home.remote),
            _ => None,
        }
    }
}

/// What the claim of a room's name decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// This node holds the name: the room's home, under this lease.
    Home(Lease),
    /// Another live node holds the name (in a cluster): a satellite of that home.
    Satellite(Owner),
    /// No role: the room stops and its members reconnect.
    Refused(RegistryError),
}

/// One claim attempt's outcome, as [`decide`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The role is known.
    Decided(Claimed),
    /// This node holds the name already, under a lease no live instance here owns: wait
    /// for it to lapse ([`LAPSE_WAIT`]) and claim once more. Carries the refusal, which
    /// stands if the second claim meets the same.
    AwaitLapse(RegistryError),
}

/// Reads one claim of a room's name by `node` (`clustered`: other nodes' rooms are
/// reachable). Success makes the home; a live owner on another node makes a satellite when
/// that node can be reached; this node as the owner means a lease left behind (the room's
/// instances here take turns: see [`claim`]); anything else refuses.
pub fn decide(claim: Result<Lease, RegistryError>, node: &NodeId, clustered: bool) -> Step {
    match claim {
        Ok(lease) => Step::Decided(Claimed::Home(lease)),
        Err(RegistryError::AlreadyOwned { owner, .. }) if owner.node != *node && clustered => {
            Step::Decided(Claimed::Satellite(owner))
        }
        Err(RegistryError::AlreadyOwned { key, owner }) if owner.node == *node => {
            Step::AwaitLapse(RegistryError::AlreadyOwned { key, owner })
        }
        Err(error) => Step::Decided(Claimed::Refused(error)),
    }
}

/// Claims room `room` for this node under `placement` and decides its role. Waits first
/// for `predecessor` (this node's previous instance of the room) to release the name, so
/// the claim does not find its own node's lease; a lease found anyway is waited out once.
pub async fn claim(
    placement: Placement,
    room: String,
    predecessor: Option<Predecessor>,
) -> Claimed {
    if let Some(predecessor) = predecessor {
        predecessor.wait().await;
    }
    let key = ActorKey::new(ActorKind::ChatRoom, room.clone());
    placement.place(&key, &room).await;
    let clustered = placement.transport.is_some();
    let attempt = || placement.registry.claim(&key, &placement.node, ACTOR_LEASE_TTL);
    let refusal = match decide(attempt().await, &placement.node, clustered) {
        Step::Decided(claimed) => return claimed,
        Step::AwaitLapse(refusal) => refusal,
    };
    tracing::info!(%room, "chat room name held by an earlier lease of this node; waiting for it to lapse");
    tokio::time::sleep(LAPSE_WAIT).await;
    match decide(attempt().await, &placement.node, clustered) {
        Step::Decided(claimed) => claimed,
        Step::AwaitLapse(_) => Claimed::Refused(refusal),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use futures_util::future::BoxFuture;
    use tokio::time::Instant;
    use zenlive_registry::{MemoryRegistry, NodeInfo, Registry};

    use super::super::remote::{Delivery, RemoteRoomError, RoomRequest, RoomTransport};
    use super::super::tenure::tenure;
    use super::*;

    const ROOM: &str = "live/a";

    fn key() -> ActorKey {
        ActorKey::new(ActorKind::ChatRoom, ROOM)
    }

    fn n(name: &str) -> NodeId {
        NodeId::new(name)
    }

    fn owned_by(node: &str, epoch: u64) -> RegistryError {
        RegistryError::AlreadyOwned { key: key(), owner: Owner { node: n(node), epoch } }
    }

    #[test]
    fn a_granted_claim_makes_the_home() {
        let lease = Lease { key: key(), node: n("n1"), epoch: 3, ttl: ACTOR_LEASE_TTL };
        for clustered in [false, true] {
            assert_eq!(
                decide(Ok(lease.clone()), &n("n1"), clustered),
                Step::Decided(Claimed::Home(lease.clone()))
            );
        }
    }

    #[test]
    fn another_nodes_room_makes_a_satellite_only_in_a_cluster() {
        let owner = Owner { node: n("n2"), epoch: 4 };
        assert_eq!(
            decide(Err(owned_by("n2", 4)), &n("n1"), true),
            Step::Decided(Claimed::Satellite(owner))
        );
        assert_eq!(
            decide(Err(owned_by("n2", 4)), &n("n1"), false),
            Step::Decided(Claimed::Refused(owned_by("n2", 4)))
        );
    }

    #[test]
    fn this_nodes_own_lease_is_waited_out() {
        for clustered in [false, true] {
            assert_eq!(
                decide(Err(owned_by("n1", 5)), &n("n1"), clustered),
                Step::AwaitLapse(owned_by("n1", 5))
            );
        }
    }

    #[test]
    fn other_registry_errors_refuse() {
        for error in [
            RegistryError::Unavailable { reason: "down".into() },
            RegistryError::NodeNotRegistered { node: n("n1") },
        ] {
            assert_eq!(
                decide(Err(error.clone()), &n("n1"), true),
                Step::Decided(Claimed::Refused(error))
            );
        }
    }

    /// A registry with `nodes` registered for an hour.
    async fn registry(nodes: &[&str]) -> Arc<MemoryRegistry> {
        let registry = Arc::new(MemoryRegistry::new());
        for (incarnation, node) in (1..).zip(nodes) {
            let info = NodeInfo {
                id: n(node),
                incarnation,
                addresses: BTreeMap::new(),
                load: 0,
                draining: false,
            };
            registry.register_node(info, Duration::from_secs(3600)).await.expect("register");
        }
        registry
    }

    fn placement(registry: &Arc<MemoryRegistry>, transport: Option<Arc<Hosts>>) -> Placement {
        let registry: Arc<dyn Registry> = registry.clone();
        let transport = transport.map(|t| t as Arc<dyn RoomTransport>);
        Placement { registry, node: n("n1"), transport }
    }

    /// A cluster transport that places every new room on `home`, which claims it at once.
    struct Hosts {
        home: NodeId,
        registry: Arc<MemoryRegistry>,
    }

    impl RoomTransport for Hosts {
        fn to_home(
            &self,
            _: &NodeId,
            _: &str,
            _: RoomRequest,
        ) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
            Box::pin(async { Ok(()) })
        }

        fn choose_home(&self) -> Option<NodeId> {
            Some(self.home.clone())
        }

        fn host(
            &self,
            node: &NodeId,
            room: &str,
        ) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
            let (registry, node) = (Arc::clone(&self.registry), node.clone());
            let key = ActorKey::new(ActorKind::ChatRoom, room);
            Box::pin(async move {
                registry
                    .claim(&key, &node, ACTOR_LEASE_TTL)
                    .await
                    .map(drop)
                    .map_err(|e| RemoteRoomError::Unreachable(e.to_string()))
            })
        }

        fn to_satellites(
            &self,
            nodes: &[NodeId],
            _: &str,
            _: &Delivery,
        ) -> Vec<BoxFuture<'static, Result<(), RemoteRoomError>>> {
            nodes.iter().map(|_| Box::pin(async { Ok(()) }) as BoxFuture<'static, _>).collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_name_makes_this_node_the_home() {
        let registry = registry(&["n1"]).await;
        let Claimed::Home(lease) = claim(placement(&registry, None), ROOM.into(), None).await
        else {
            panic!("a free name is ours");
        };
        assert_eq!(
            registry.lookup(&key()).await,
            Ok(Some(Owner { node: n("n1"), epoch: lease.epoch }))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_room_placed_on_another_node_makes_this_one_a_satellite() {
        let registry = registry(&["n1", "n2"]).await;
        let hosts = Arc::new(Hosts { home: n("n2"), registry: Arc::clone(&registry) });
        let claimed = claim(placement(&registry, Some(hosts)), ROOM.into(), None).await;
        assert!(
            matches!(&claimed, Claimed::Satellite(owner) if owner.node == n("n2")),
            "{claimed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_claim_waits_for_the_previous_instance_here_without_polling() {
        let registry = registry(&["n1"]).await;
        let held = registry.claim(&key(), &n("n1"), ACTOR_LEASE_TTL).await.expect("claim");
        let (previous, predecessor) = tenure();
        let started = Instant::now();
        let claiming =
            tokio::spawn(claim(placement(&registry, None), ROOM.into(), Some(predecessor)));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!claiming.is_finished(), "the previous instance still holds the name");
        registry.release(&held).await.expect("release");
        drop(previous);
        let claimed = claiming.await.expect("claim task");
        assert!(matches!(claimed, Claimed::Home(_)), "{claimed:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "claimed as soon as it was let go");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_left_behind_is_waited_out_once() {
        let registry = registry(&["n1"]).await;
        registry.claim(&key(), &n("n1"), ACTOR_LEASE_TTL).await.expect("an earlier process");
        let started = Instant::now();
        let claimed = claim(placement(&registry, None), ROOM.into(), None).await;
        assert!(matches!(claimed, Claimed::Home(_)), "{claimed:?}");
        assert_eq!(started.elapsed(), LAPSE_WAIT, "one wait for the lease to lapse");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_someone_keeps_renewing_refuses_the_room() {
        let registry = registry(&["n1"]).await;
        let held = registry.claim(&key(), &n("n1"), ACTOR_LEASE_TTL).await.expect("claim");
        let renewing = {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    registry.renew(&held).await.expect("renew");
                }
            })
        };
        let claimed = claim(placement(&registry, None), ROOM.into(), None).await;
        renewing.abort();
        assert!(
            matches!(&claimed, Claimed::Refused(RegistryError::AlreadyOwned { owner, .. }) if owner.node == n("n1")),
            "{claimed:?}"
        );
    }
}
