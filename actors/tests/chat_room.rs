//! A chat room at actor level, on the in-memory registry with tokio's clock paused: what
//! arrives while the room's claim is in flight waits in order (the mailbox keeps flowing)
//! and is handled once the role is known; a room that stops hands its name to the next
//! instance without a wait; a room whose name another node took stops (self-fencing).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use zenlive_actors::chat::{
    ChatHooks, ChatRooms, Command, HandOff, Join, Members, Placement, SetLimits,
};
use zenlive_actors::chat_core::ChatLimits;
use zenlive_actors::chat_protocol::{ChatUser, ClientCommand};
use zenlive_actors::lease::LEASE_RENEW_INTERVAL;
use zenlive_actors::NodeCounters;
use zenlive_registry::{
    ActorKey, ActorKind, BoxFuture, Lease, MemoryRegistry, NodeId, NodeInfo, Owner, Registry,
    RegistryError, ACTOR_LEASE_TTL,
};

fn key(room: &str) -> ActorKey {
    ActorKey::new(ActorKind::ChatRoom, room)
}

/// A registry where `nodes` are registered for an hour.
async fn registry(nodes: &[&str]) -> Arc<MemoryRegistry> {
    let registry = Arc::new(MemoryRegistry::new());
    for (incarnation, node) in (1..).zip(nodes) {
        let info = NodeInfo {
            id: NodeId::new(*node),
            incarnation,
            addresses: BTreeMap::new(),
            load: 0,
            draining: false,
        };
        registry.register_node(info, Duration::from_secs(3600)).await.expect("register");
    }
    registry
}

/// The in-memory registry, with releases that take [`SlowRelease::DELAY`] (a registry
/// across the network), so a stopped room still holds its name for a while.
struct SlowRelease(Arc<MemoryRegistry>);

impl SlowRelease {
    const DELAY: Duration = Duration::from_secs(1);
}

impl Registry for SlowRelease {
    fn register_node(
        &self,
        info: NodeInfo,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.0.register_node(info, ttl)
    }

    fn heartbeat(
        &self,
        node: &NodeId,
        incarnation: u64,
        load: u64,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.0.heartbeat(node, incarnation, load, ttl)
    }

    fn deregister_node(
        &self,
        node: &NodeId,
        incarnation: u64,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.0.deregister_node(node, incarnation)
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, RegistryError>> {
        self.0.nodes()
    }

    fn claim(
        &self,
        key: &ActorKey,
        node: &NodeId,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        self.0.claim(key, node, ttl)
    }

    fn keep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.0.keep(key)
    }

    fn unkeep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.0.unkeep(key)
    }

    fn kept(&self, kind: &ActorKind) -> BoxFuture<'_, Result<Vec<String>, RegistryError>> {
        self.0.kept(kind)
    }

    fn renew(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.0.renew(lease)
    }

    fn release(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        let lease = lease.clone();
        Box::pin(async move {
            tokio::time::sleep(Self::DELAY).await;
            self.0.release(&lease).await
        })
    }

    fn lookup(&self, key: &ActorKey) -> BoxFuture<'_, Result<Option<Owner>, RegistryError>> {
        self.0.lookup(key)
    }

    fn claim_hints(&self) -> Option<zenlive_registry::ClaimHints> {
        self.0.claim_hints()
    }
}

/// Node `n1`'s rooms, on a single node.
fn rooms(registry: &Arc<MemoryRegistry>) -> ChatRooms {
    rooms_on(registry.clone())
}

/// Node `n1`'s rooms on `registry`, on a single node.
fn rooms_on(registry: Arc<dyn Registry>) -> ChatRooms {
    let placement = Placement { registry, node: NodeId::new("n1"), transport: None };
    let counters = Arc::new(NodeCounters::default());
    ChatRooms::new(ChatLimits::default(), counters, ChatHooks::default(), placement)
}

fn ann() -> ChatUser {
    ChatUser { id: "ann".into(), name: "Ann".into(), roles: vec!["viewer".into()] }
}

fn say(text: &str) -> ClientCommand {
    ClientCommand::Message { text: text.into(), client_id: None }
}

/// Waits, a bounded number of turns, for `check`; the clock is paused, so no time passes.
async fn settle(what: &str, check: impl Fn() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{what}");
}

#[actix_rt::test]
async fn what_arrives_while_the_claim_waits_is_handled_in_order_once_it_resolves() {
    tokio::time::pause();
    let registry = registry(&["n1"]).await;
    // An earlier process with this node id left the room's lease behind: the claim waits
    // for it to lapse.
    registry.claim(&key("live/a"), &NodeId::new("n1"), ACTOR_LEASE_TTL).await.expect("claim");
    let rooms = rooms(&registry);
    let room = rooms.get_or_start("live/a", &Arbiter::current());
    let started = Instant::now();
    let (outbound, mut frames) = mpsc::channel(16);
    let joined = room.send(Join { member: 1, user: Some(ann()), outbound });
    room.do_send(Command { member: 1, command: say("first") });
    room.do_send(Command { member: 1, command: say("second") });

    room.send(SetLimits { limits: ChatLimits::default() }).await.expect("answered while pending");
    assert!(started.elapsed() < Duration::from_secs(1), "the mailbox is not frozen by the claim");

    joined.await.expect("mailbox").expect("joined once the role is known");
    assert!(started.elapsed() >= ACTOR_LEASE_TTL, "after the lease left behind lapsed");
    let mut events = Vec::new();
    while let Ok(frame) = frames.try_recv() {
        events.push(serde_json::from_str::<Value>(&frame).expect("JSON"));
    }
    assert_eq!(events.first().map(|e| e["type"].clone()), Some("history".into()), "{events:?}");
    let texts: Vec<&Value> =
        events.iter().filter(|e| e["type"] == "message").map(|e| &e["text"]).collect();
    assert_eq!(texts, ["first", "second"], "the commands ran after the join, in order");
}

#[actix_rt::test]
async fn a_room_that_stopped_hands_its_name_to_the_next_instance_at_once() {
    tokio::time::pause();
    let registry = registry(&["n1"]).await;
    let rooms = rooms_on(Arc::new(SlowRelease(Arc::clone(&registry))));
    let room = rooms.get_or_start("live/b", &Arbiter::current());
    assert_eq!(room.send(Members).await.expect("resolved"), 0);
    let first = registry.lookup(&key("live/b")).await.expect("lookup").expect("claimed");

    room.send(HandOff).await.expect("handed off");
    settle("the room stops", || rooms.get("live/b").is_none()).await;
    let started = Instant::now();
    let again = rooms.get_or_start("live/b", &Arbiter::current());
    assert_eq!(again.send(Members).await.expect("resolved"), 0);
    let waited = started.elapsed();
    assert!(
        waited >= SlowRelease::DELAY && waited < 2 * SlowRelease::DELAY,
        "claimed once the old instance released the name, not when it lapsed: {waited:?}"
    );
    let second = registry.lookup(&key("live/b")).await.expect("lookup").expect("claimed");
    assert_eq!(second.node, first.node);
    assert!(second.epoch > first.epoch, "claimed anew");
}

#[actix_rt::test]
async fn a_room_whose_name_another_node_took_stops() {
    tokio::time::pause();
    let registry = registry(&["n1", "n2"]).await;
    let rooms = rooms(&registry);
    let room = rooms.get_or_start("live/c", &Arbiter::current());
    room.send(Members).await.expect("resolved");
    let owner = registry.lookup(&key("live/c")).await.expect("lookup").expect("claimed");
    // The registry lost the lease (say, a Redis restart) and n2 took the name meanwhile.
    let lease =
        Lease { key: key("live/c"), node: owner.node, epoch: owner.epoch, ttl: ACTOR_LEASE_TTL };
    registry.release(&lease).await.expect("forget");
    registry.claim(&key("live/c"), &NodeId::new("n2"), ACTOR_LEASE_TTL).await.expect("n2");
    tokio::time::sleep(LEASE_RENEW_INTERVAL + Duration::from_millis(10)).await;
    settle("the room stops", || !room.connected()).await;
    let taken = registry.lookup(&key("live/c")).await.expect("lookup").expect("n2 holds it");
    assert_eq!(taken.node.as_str(), "n2", "the stopped room released nothing of n2's");
}
