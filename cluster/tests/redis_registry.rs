//! The registry conformance suite against a real `redis-server`, plus what only Redis can
//! do: lose every key in a restart, and be unreachable.

use std::time::Duration;

use zenlive_cluster::testsuite::{self, RedisServer};
use zenlive_cluster::{
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
