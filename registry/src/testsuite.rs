//! The registry conformance suite: one set of scenarios that every [`Registry`]
//! implementation must pass (the in-memory one here; the Redis one in cluster mode).
//!
//! Scenarios wait for expiry with `tokio::time::sleep`, so the in-memory registry runs them
//! with a paused clock, and a real Redis with short TTLs.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::id::{ActorKey, ActorKind, NodeId};
use crate::registry::{NodeInfo, Registry, RegistryError};

const TTL: Duration = Duration::from_millis(500);

fn node(name: &str, incarnation: u64) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(name),
        incarnation,
        addresses: BTreeMap::new(),
        load: 0,
        draining: false,
    }
}

/// Runs every scenario against `registry`, which must start empty.
pub async fn run_all(registry: &dyn Registry) {
    one_owner_at_a_time(registry).await;
    expired_lease_fences_old_owner(registry).await;
    node_membership_expires(registry).await;
    dead_node_cannot_claim(registry).await;
    dead_owners_names_can_be_taken_over(registry).await;
    claims_are_hinted(registry).await;
    kept_names_are_listed_by_kind(registry).await;
}

/// Names kept alive are listed by kind until unkept; keeping is idempotent and claims
/// nothing.
pub async fn kept_names_are_listed_by_kind(registry: &dyn Registry) {
    let poll = crate::app_kind!("poll");
    let board = ActorKind::App(crate::AppKind::parse("board").expect("valid"));
    let (a, b) = (ActorKey::new(poll.clone(), "live/a"), ActorKey::new(poll.clone(), "live/b"));
    let c = ActorKey::new(board.clone(), "live/a");
    for key in [&a, &b, &a, &c] {
        registry.keep(key).await.expect("keep");
    }
    let mut polls = registry.kept(&poll).await.expect("kept");
    polls.sort();
    assert_eq!(polls, ["live/a", "live/b"]);
    assert_eq!(registry.kept(&board).await.expect("kept"), ["live/a"]);
    assert_eq!(registry.lookup(&a).await.expect("lookup"), None, "keeping claims nothing");
    registry.unkeep(&a).await.expect("unkeep");
    registry.unkeep(&a).await.expect("unkeep twice");
    assert_eq!(registry.kept(&poll).await.expect("kept"), ["live/b"]);
    registry.unkeep(&b).await.expect("unkeep");
    registry.unkeep(&c).await.expect("unkeep");
    assert!(registry.kept(&poll).await.expect("kept").is_empty());
    assert!(registry.kept(&ActorKind::Stream).await.expect("kept").is_empty());
}

/// A receiver of claim hints hears of names claimed after it subscribed (by any node).
/// Hints are best effort and a Redis subscription comes up in the background, so the
/// scenario claims fresh names until one is heard, within 10 s.
pub async fn claims_are_hinted(registry: &dyn Registry) {
    let Some(mut hints) = registry.claim_hints() else { return };
    let a = node("hinted", 1);
    registry.register_node(a.clone(), TTL * 10).await.expect("register");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for attempt in 0.. {
        assert!(tokio::time::Instant::now() < deadline, "no claim hint within 10 s");
        let key = ActorKey::new(ActorKind::Recorder, format!("live/hinted-{attempt}"));
        let lease = registry.claim(&key, &a.id, TTL * 10).await.expect("claim");
        let heard = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match hints.recv().await {
                    Ok(hint) if hint == key => return true,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                }
            }
        })
        .await;
        registry.release(&lease).await.expect("release");
        if heard == Ok(true) {
            return;
        }
    }
}

/// Two nodes claim one name: exactly one wins; release frees it with a higher epoch next.
pub async fn one_owner_at_a_time(registry: &dyn Registry) {
    let (a, b) = (node("a1", 1), node("b1", 1));
    registry.register_node(a.clone(), TTL * 10).await.expect("register a");
    registry.register_node(b.clone(), TTL * 10).await.expect("register b");
    let key = ActorKey::new(ActorKind::Stream, "live/one-owner");

    let lease = registry.claim(&key, &a.id, TTL).await.expect("first claim wins");
    match registry.claim(&key, &b.id, TTL).await {
        Err(RegistryError::AlreadyOwned { owner, .. }) => {
            assert_eq!(owner.node, a.id);
            assert_eq!(owner.epoch, lease.epoch);
        }
        other => panic!("second claim must fail with AlreadyOwned, got {other:?}"),
    }
    let owner = registry.lookup(&key).await.expect("lookup").expect("owned");
    assert_eq!(owner.node, a.id);

    registry.release(&lease).await.expect("release");
    assert_eq!(registry.lookup(&key).await.expect("lookup"), None);
    let next = registry.claim(&key, &b.id, TTL).await.expect("claim after release");
    assert!(next.epoch > lease.epoch, "epochs only grow");
    registry.release(&next).await.expect("release");
}

/// A lease that expired and was claimed by another node cannot be renewed or released
/// by its old holder.
pub async fn expired_lease_fences_old_owner(registry: &dyn Registry) {
    let (a, b) = (node("a2", 1), node("b2", 1));
    registry.register_node(a.clone(), TTL * 10).await.expect("register a");
    registry.register_node(b.clone(), TTL * 10).await.expect("register b");
    let key = ActorKey::new(ActorKind::Stream, "live/fenced");

    let old = registry.claim(&key, &a.id, TTL).await.expect("claim");
    registry.renew(&old).await.expect("renew while live");
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(registry.lookup(&key).await.expect("lookup"), None, "expired");
    let new = registry.claim(&key, &b.id, TTL).await.expect("claim after expiry");
    assert!(new.epoch > old.epoch);

    assert!(matches!(registry.renew(&old).await, Err(RegistryError::LeaseLost { .. })));
    registry.release(&old).await.expect("releasing a lost lease is not an error");
    let owner = registry.lookup(&key).await.expect("lookup").expect("still owned");
    assert_eq!(owner.node, b.id, "the old holder's release did not touch the new lease");
    registry.release(&new).await.expect("release");
}

/// Nodes that stop heartbeating disappear; a heartbeat after that fails.
pub async fn node_membership_expires(registry: &dyn Registry) {
    let a = node("a3", 7);
    registry.register_node(a.clone(), TTL).await.expect("register");
    assert!(registry.nodes().await.expect("nodes").iter().any(|n| n.id == a.id));
    registry.heartbeat(&a.id, 7, 3, TTL).await.expect("heartbeat");
    assert!(
        matches!(
            registry.heartbeat(&a.id, 8, 3, TTL).await,
            Err(RegistryError::NodeNotRegistered { .. })
        ),
        "another incarnation's heartbeat is refused"
    );
    tokio::time::sleep(TTL * 2).await;
    assert!(!registry.nodes().await.expect("nodes").iter().any(|n| n.id == a.id));
    assert!(matches!(
        registry.heartbeat(&a.id, 7, 3, TTL).await,
        Err(RegistryError::NodeNotRegistered { .. })
    ));
}

/// When a node's registration expires (it died), its names can be claimed before their
/// leases run out; the dead node's lease is fenced.
pub async fn dead_owners_names_can_be_taken_over(registry: &dyn Registry) {
    let (a, b) = (node("a5", 1), node("b5", 1));
    registry.register_node(a.clone(), TTL).await.expect("register a");
    registry.register_node(b.clone(), TTL * 20).await.expect("register b");
    let key = ActorKey::new(ActorKind::Stream, "live/takeover");
    let old = registry.claim(&key, &a.id, TTL * 20).await.expect("claim");
    assert!(registry.claim(&key, &b.id, TTL).await.is_err(), "a is alive: no takeover");
    tokio::time::sleep(TTL * 2).await;
    let new = registry.claim(&key, &b.id, TTL * 20).await.expect("a is dead: takeover");
    assert!(new.epoch > old.epoch);
    assert!(matches!(registry.renew(&old).await, Err(RegistryError::LeaseLost { .. })));
    registry.release(&new).await.expect("release");
}

/// A node that is not registered cannot claim names.
pub async fn dead_node_cannot_claim(registry: &dyn Registry) {
    let key = ActorKey::new(ActorKind::ChatRoom, "lobby");
    let ghost = NodeId::new("ghost");
    assert!(matches!(
        registry.claim(&key, &ghost, TTL).await,
        Err(RegistryError::NodeNotRegistered { .. })
    ));
    let a = node("a4", 1);
    registry.register_node(a.clone(), TTL * 10).await.expect("register");
    registry.deregister_node(&a.id, 1).await.expect("deregister");
    assert!(registry.claim(&key, &a.id, TTL).await.is_err());
}

/// A private `redis-server` on a free loopback port, stopped when dropped. For tests.
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) without persistence and waits until it answers.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not come up within 10 s (a test fixture).
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (to bring up a Redis a node is already waiting for).
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_on(port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("zenlive-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let child = spawn_redis(port, &dir);
        Self { child, port, dir }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL, `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops it now (to test what happens while Redis is down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, empty (a Redis restart loses every key).
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn_redis(self.port, &self.dir);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_redis(port: u16, dir: &std::path::Path) -> std::process::Child {
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/test installs it)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
