//! The registry conformance suite against a real `redis-server`, plus what only Redis can
//! do: lose every key in a restart, and be unreachable.

use std::time::Duration;

use zenlive_registry::testsuite::{self, RedisServer};
use zenlive_registry::{
    ActorKey, ActorKind, NodeId, NodeInfo, RedisRegistry, Registry, RegistryError,
};

#[tokio::test]
async fn conformance() {
    let redis = RedisServer::start();
    let registry = RedisRegistry::connect(&redis.url(), "test:").await.expect("connect");
    testsuite::run_all(&registry).await;
}

#[tokio::test]
async fn unreachable_redis_fails_fast_and_recovers() {
    let mut redis = RedisServer::start();
    let registry = RedisRegistry::connect(&redis.url(), "zenlive:").await.expect("connect");
    let info = NodeInfo {
        id: NodeId::new("n1"),
        incarnation: 9,
        addresses: Default::default(),
        load: 0,
        draining: false,
    };
    registry.register_node(info.clone(), Duration::from_secs(30)).await.expect("register");

    redis.stop();
    let started = std::time::Instant::now();
    let key = ActorKey::new(ActorKind::Stream, "live/x");
    assert!(matches!(registry.lookup(&key).await, Err(RegistryError::Unavailable { .. })));
    assert!(started.elapsed() < RedisRegistry::OP_TIMEOUT * 2, "fails fast");

    // A restarted Redis is empty: the node re-registers and claims again.
    redis.restart();
    let mut registered = Err(RegistryError::Unavailable { reason: String::new() });
    for _ in 0..50 {
        registered = registry.register_node(info.clone(), Duration::from_secs(30)).await;
        if registered.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    registered.expect("reconnects by itself");
    let lease = registry.claim(&key, &info.id, Duration::from_secs(10)).await.expect("claim");
    assert_eq!(lease.epoch, 1, "the epoch counters were lost with the restart");
}

#[tokio::test]
async fn connecting_to_nothing_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let error = RedisRegistry::connect(&format!("redis://127.0.0.1:{port}/"), "z:")
        .await
        .expect_err("nothing listens there");
    assert!(matches!(error, RegistryError::Unavailable { .. }), "{error}");
}

#[tokio::test]
async fn unique_names_leave_nothing_behind_and_old_counters_are_folded_in() {
    let redis = RedisServer::start();
    let registry = RedisRegistry::connect(&redis.url(), "z:").await.expect("connect");
    let node = NodeId::new("n1");
    let info = NodeInfo {
        id: node.clone(),
        incarnation: 1,
        addresses: Default::default(),
        load: 0,
        draining: false,
    };
    registry.register_node(info, Duration::from_secs(30)).await.expect("register");
    let client = redis::Client::open(redis.url()).expect("client");
    let direct = client.get_multiplexed_async_connection().await.expect("connect");
    let keys = |pattern: &'static str| {
        let mut direct = direct.clone();
        async move {
            let found: Vec<String> =
                redis::cmd("KEYS").arg(pattern).query_async(&mut direct).await.expect("KEYS");
            found
        }
    };
    // One broadcast after another, each under a name of its own (the common pattern).
    let mut last = 0;
    for i in 0..200 {
        let key = ActorKey::new(ActorKind::Stream, format!("live/broadcast-{i}"));
        let lease = registry.claim(&key, &node, Duration::from_secs(10)).await.expect("claim");
        assert!(lease.epoch > last, "epochs only grow");
        last = lease.epoch;
        registry.release(&lease).await.expect("release");
    }
    assert_eq!(keys("z:epoch:*").await, Vec::<String>::new(), "no key per name");
    assert_eq!(keys("z:owner:*").await, Vec::<String>::new());

    // A name whose counter an older version left at 5000 never goes back below it.
    let key = ActorKey::new(ActorKind::Stream, "live/old");
    let _: () = redis::cmd("SET")
        .arg("z:epoch:stream:live/old")
        .arg(5000)
        .query_async(&mut direct.clone())
        .await
        .expect("SET");
    let lease = registry.claim(&key, &node, Duration::from_secs(10)).await.expect("claim");
    assert_eq!(lease.epoch, 5001);
    assert_eq!(keys("z:epoch:*").await, Vec::<String>::new(), "the old counter is gone");
    registry.release(&lease).await.expect("release");
    let other = ActorKey::new(ActorKind::Stream, "live/new");
    let lease = registry.claim(&other, &node, Duration::from_secs(10)).await.expect("claim");
    assert!(lease.epoch > 5001, "and the counter carries on from it");
}
