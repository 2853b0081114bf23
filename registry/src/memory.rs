//! [`MemoryRegistry`]: the [`Registry`] served from this process's memory (single node).
//!
//! Expiry uses tokio's clock, so tests can pause and advance time exactly.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::id::{ActorKey, ActorKind, NodeId};
use crate::registry::{
    BoxFuture, ClaimHints, Lease, NodeInfo, Owner, Registry, RegistryError, CLAIM_HINTS_CAPACITY,
};

/// An in-process registry. Every operation is one short critical section; a std-style
/// mutex is right because no `.await` happens while it is held.
#[derive(Debug)]
pub struct MemoryRegistry {
    state: Mutex<State>,
    claimed: broadcast::Sender<ActorKey>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self { state: Mutex::default(), claimed: broadcast::channel(CLAIM_HINTS_CAPACITY).0 }
    }
}

#[derive(Debug, Default)]
struct State {
    nodes: HashMap<NodeId, (NodeInfo, Instant)>,
    leases: HashMap<ActorKey, LeaseEntry>,
    /// Names kept alive, by kind.
    kept: HashMap<ActorKind, BTreeSet<String>>,
    /// The last fencing epoch handed out, for any name: one counter, so epochs only grow
    /// for every name and nothing is kept per name once its lease is gone.
    epoch: u64,
}

#[derive(Debug)]
struct LeaseEntry {
    owner: Owner,
    expires: Instant,
}

impl State {
    fn node_alive(&self, node: &NodeId, now: Instant) -> bool {
        self.nodes.get(node).is_some_and(|(_, expires)| *expires > now)
    }

    fn live_lease(&self, key: &ActorKey, now: Instant) -> Option<&LeaseEntry> {
        self.leases.get(key).filter(|entry| entry.expires > now)
    }

    fn holds(&self, lease: &Lease, now: Instant) -> bool {
        self.live_lease(&lease.key, now)
            .is_some_and(|entry| entry.owner.node == lease.node && entry.owner.epoch == lease.epoch)
    }
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Registry for MemoryRegistry {
    fn register_node(
        &self,
        info: NodeInfo,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let expires = Instant::now() + ttl;
        self.state.lock().nodes.insert(info.id.clone(), (info, expires));
        ready(Ok(()))
    }

    fn heartbeat(
        &self,
        node: &NodeId,
        incarnation: u64,
        load: u64,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let result = match state.nodes.get_mut(node) {
            Some((info, expires)) if *expires > now && info.incarnation == incarnation => {
                info.load = load;
                *expires = now + ttl;
                Ok(())
            }
            _ => Err(RegistryError::NodeNotRegistered { node: node.clone() }),
        };
        ready(result)
    }

    fn deregister_node(
        &self,
        node: &NodeId,
        incarnation: u64,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let mut state = self.state.lock();
        if state.nodes.get(node).is_some_and(|(info, _)| info.incarnation == incarnation) {
            state.nodes.remove(node);
        }
        ready(Ok(()))
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, RegistryError>> {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.nodes.retain(|_, (_, expires)| *expires > now);
        let mut nodes: Vec<NodeInfo> = state.nodes.values().map(|(info, _)| info.clone()).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        ready(Ok(nodes))
    }

    fn claim(
        &self,
        key: &ActorKey,
        node: &NodeId,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let result = if !state.node_alive(node, now) {
            Err(RegistryError::NodeNotRegistered { node: node.clone() })
        } else if let Some(entry) =
            state.live_lease(key, now).filter(|entry| state.node_alive(&entry.owner.node, now))
        {
            Err(RegistryError::AlreadyOwned { key: key.clone(), owner: entry.owner.clone() })
        } else {
            state.epoch += 1;
            let epoch = state.epoch;
            let owner = Owner { node: node.clone(), epoch };
            state.leases.insert(key.clone(), LeaseEntry { owner, expires: now + ttl });
            // Nobody listening is not an error.
            let _ = self.claimed.send(key.clone());
            Ok(Lease { key: key.clone(), node: node.clone(), epoch, ttl })
        };
        ready(result)
    }

    fn renew(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let result = if state.holds(lease, now) {
            if let Some(entry) = state.leases.get_mut(&lease.key) {
                entry.expires = now + lease.ttl;
            }
            Ok(())
        } else {
            Err(RegistryError::LeaseLost { key: lease.key.clone(), epoch: lease.epoch })
        };
        ready(result)
    }

    fn release(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        let now = Instant::now();
        let mut state = self.state.lock();
        if state.holds(lease, now) {
            state.leases.remove(&lease.key);
        }
        ready(Ok(()))
    }

    fn lookup(&self, key: &ActorKey) -> BoxFuture<'_, Result<Option<Owner>, RegistryError>> {
        let now = Instant::now();
        let state = self.state.lock();
        ready(Ok(state.live_lease(key, now).map(|entry| entry.owner.clone())))
    }

    fn keep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>> {
        let mut state = self.state.lock();
        state.kept.entry(key.kind.clone()).or_default().insert(key.name.clone());
        ready(Ok(()))
    }

    fn unkeep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>> {
        let mut state = self.state.lock();
        if let Some(names) = state.kept.get_mut(&key.kind) {
            names.remove(&key.name);
            if names.is_empty() {
                state.kept.remove(&key.kind);
            }
        }
        ready(Ok(()))
    }

    fn kept(&self, kind: &ActorKind) -> BoxFuture<'_, Result<Vec<String>, RegistryError>> {
        let state = self.state.lock();
        let names = state.kept.get(kind).map(|n| n.iter().cloned().collect()).unwrap_or_default();
        ready(Ok(names))
    }

    fn claim_hints(&self) -> Option<ClaimHints> {
        Some(self.claimed.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsuite;

    #[tokio::test(start_paused = true)]
    async fn conformance() {
        testsuite::run_all(&MemoryRegistry::new()).await;
    }
}
