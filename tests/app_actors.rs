//! Application actors (`zenlive::app_actors`) end to end, on a real `redis-server`: a kind
//! registered on three nodes, spawned on one and reached by typed refs from the others;
//! one instance in the cluster; a panic restarts it (counted); an unknown kind and hostile
//! envelopes are typed refusals, counted; and, with node 1 a separate process (this test
//! binary run again as [`CHILD_TEST`], with the example's poll) killed with `kill -9`, the
//! kept poll starts again on another node within the lease TTL while the refs made before
//! keep working, their first call after the move included.

mod common;

#[path = "../examples/cluster/poll.rs"]
#[allow(dead_code)]
mod poll;

use std::process::Stdio;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use zenlive::app_actors::{AppActorKind, SpawnError, StartCause, StartInfo};
use zenlive::cluster::wire::{
    encode_payload, Bincode, Call, Codec, Envelope, Message as WireMessage, RemoteError,
};
use zenlive::refs::{RefError, Refusal};
use zenlive::{Node, NodeBuilder};
use zenlive_actors::{NamedActor, RemoteMessage};
use zenlive_registry::testsuite::RedisServer;
use zenlive_registry::{app_kind, ActorKey, ActorKind, ACTOR_LEASE_TTL};

/// The cluster secret of the test's nodes (the child process's node 1 included).
const SECRET: &str = "example-cluster-secret";
/// Set for the child process that runs node 1 of the failover test: the Redis URL it joins.
const CHILD_ENV: &str = "ZENLIVE_APP_ACTORS_CHILD";
/// The test that is node 1 of the failover test in a child process (when [`CHILD_ENV`] is
/// set; otherwise it returns at once).
const CHILD_TEST: &str = "node_1_of_the_failover_test_in_a_child_process";
/// The poll the failover test moves.
const POLL: &str = "live/test";

/// A counter: the test's application actor.
struct Counter {
    info: StartInfo,
    total: u64,
}

impl NamedActor for Counter {
    const KIND: ActorKind = app_kind!("counter");
}

impl Actor for Counter {
    type Context = Context<Self>;
}

/// Adds `n`; answers the total. Remote: `counter.add`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "u64")]
struct Add {
    n: u64,
}

impl RemoteMessage for Add {
    const NAME: &'static str = "counter.add";
}

/// Where it runs and its total. Remote: `counter.get`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Snapshot")]
struct Get;

impl RemoteMessage for Get {
    const NAME: &'static str = "counter.get";
}

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    total: u64,
    node: String,
    restarted: bool,
}

/// Panics in the handler. Remote: `counter.crash`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Crash;

impl RemoteMessage for Crash {
    const NAME: &'static str = "counter.crash";
}

/// Stops the counter (it ends on purpose). Remote: `counter.finish`.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Finish;

impl RemoteMessage for Finish {
    const NAME: &'static str = "counter.finish";
}

impl Handler<Add> for Counter {
    type Result = u64;

    fn handle(&mut self, msg: Add, _ctx: &mut Self::Context) -> u64 {
        self.total += msg.n;
        self.total
    }
}

impl Handler<Get> for Counter {
    type Result = MessageResult<Get>;

    fn handle(&mut self, _msg: Get, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(Snapshot {
            total: self.total,
            node: self.info.node.to_string(),
            restarted: self.info.cause == StartCause::Restarted,
        })
    }
}

impl Handler<Crash> for Counter {
    type Result = ();

    fn handle(&mut self, _msg: Crash, _ctx: &mut Self::Context) {
        panic!("counter {} {DELIBERATE}", self.info.name);
    }
}

impl Handler<Finish> for Counter {
    type Result = ();

    fn handle(&mut self, _msg: Finish, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// How the counter's panic message ends (see [`quiet_deliberate_panics`]).
const DELIBERATE: &str = "crashes on request";

/// Leaves the counter's deliberate panics unprinted (others are printed as always). With
/// `RUST_BACKTRACE=1` the default hook resolves a backtrace on the actor's thread before
/// the panic unwinds, seconds for this debug binary on a loaded machine: the crashed
/// call's `Stopped` would come after the call timeout.
fn quiet_deliberate_panics() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<String>();
            if !message.is_some_and(|m| m.ends_with(DELIBERATE)) {
                default(info);
            }
        }));
    });
}

fn counter_kind() -> AppActorKind<Counter> {
    AppActorKind::new(|info: &StartInfo| Counter { info: info.clone(), total: 0 })
        .message::<Add>()
        .message::<Get>()
        .message::<Crash>()
        .message::<Finish>()
        .keep_alive()
}

/// A kind no node registers.
struct Ghost;

impl NamedActor for Ghost {
    const KIND: ActorKind = app_kind!("ghost");
}

impl Actor for Ghost {
    type Context = Context<Self>;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Ping;

impl RemoteMessage for Ping {
    const NAME: &'static str = "ghost.ping";
}

impl Handler<Ping> for Ghost {
    type Result = ();

    fn handle(&mut self, _msg: Ping, _ctx: &mut Self::Context) {}
}

/// A node in this process, joined to the cluster at `redis_url`, built by `build`.
async fn cluster_node(
    id: &str,
    redis_url: &str,
    build: impl FnOnce(NodeBuilder) -> NodeBuilder,
) -> Node {
    let mut config = test_config();
    config.node.id = id.to_owned();
    config.cluster.enabled = true;
    config.cluster.redis_url = redis_url.to_owned();
    config.cluster.addr = any_port();
    config.cluster.secret = SECRET.to_owned();
    build(NodeBuilder::new(config)).start().await.expect("node starts")
}

/// Polls `check` every 100 ms until it answers `Some`; panics with `what` after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn refused(node: &Node, reason: &str) -> f64 {
    let text = node.metrics_text();
    sample(&text, "zenlive_registry_calls_refused_total", &[("reason", reason)]).unwrap_or(0.0)
}

#[actix_rt::test]
async fn one_instance_in_the_cluster_reached_from_every_node_and_supervised() {
    quiet_deliberate_panics();
    let redis = RedisServer::start();
    let url = redis.url();
    let n1 = cluster_node("n1", &url, |b| b.actor_kind(counter_kind())).await;
    let n2 = cluster_node("n2", &url, |b| b.actor_kind(counter_kind())).await;
    let n3 = cluster_node("n3", &url, |b| b.actor_kind(counter_kind())).await;

    // A ref starts nothing.
    let (r2, r3) = (n2.actor_ref::<Counter>("c1"), n3.actor_ref::<Counter>("c1"));
    assert_eq!(r2.send(Add { n: 1 }).await, Err(RefError::NotFound));

    let r1 = n1.spawn_named::<Counter>("c1").await.expect("spawned on n1");
    assert!(r1.is_local());
    for node in [&n1, &n2, &n3] {
        match node.spawn_named::<Counter>("c1").await {
            Err(SpawnError::AlreadyRunning { key, owner }) => {
                assert_eq!(key, ActorKey::new(Counter::KIND, "c1"));
                assert_eq!(owner.node.as_str(), "n1", "the owner is named");
            }
            other => panic!("a second spawn on {} answered {other:?}", node.id()),
        }
    }

    // Typed messages from the other nodes reach the one instance.
    assert_eq!(r2.send(Add { n: 2 }).await, Ok(2));
    assert_eq!(r3.send(Add { n: 3 }).await, Ok(5));
    assert_eq!(r1.send(Add { n: 4 }).await, Ok(9));
    let seen = r3.send(Get).await.expect("get");
    assert_eq!((seen.total, seen.node.as_str(), seen.restarted), (9, "n1", false));
    assert!(!r2.is_local() && !r3.is_local());

    // A panic restarts it on its node with fresh state, counted by kind.
    let crashed = r2.send(Crash).await;
    assert!(matches!(crashed, Err(RefError::Stopped)), "{crashed:?}");
    let after = eventually("the restarted counter", Duration::from_secs(10), || async {
        r3.send(Get).await.ok()
    })
    .await;
    assert_eq!((after.total, after.node.as_str(), after.restarted), (0, "n1", true));
    assert_eq!(r2.send(Add { n: 1 }).await, Ok(1), "the same refs reach the new instance");
    let restarts =
        sample(&n1.metrics_text(), "zenlive_actor_restarts_total", &[("kind", "app.counter")]);
    assert_eq!(restarts, Some(1.0));

    // A kind nobody here runs: a typed error, on the spawning side and on the receiving one.
    match n2.spawn_named::<Ghost>("g").await {
        Err(SpawnError::UnknownKind { kind }) => assert_eq!(kind.as_str(), "app.ghost"),
        other => panic!("spawn of an unregistered kind answered {other:?}"),
    }
    // n1 holds the name (a node running a newer version of the application) but has no
    // such kind: the envelope is refused as an unknown kind and counted.
    let ghost = ActorKey::new(Ghost::KIND, "g");
    let registry = n1.registry();
    let lease = registry.claim(&ghost, n1.id(), ACTOR_LEASE_TTL).await.expect("claim");
    let before = refused(&n1, "unknown_kind");
    assert_eq!(
        n2.actor_ref::<Ghost>("g").send(Ping).await,
        Err(RefError::Refused(Refusal::UnknownKind))
    );
    assert_eq!(refused(&n1, "unknown_kind"), before + 1.0);
    registry.release(&lease).await.expect("release");

    // Hostile envelopes for the application kind: refused, counted, nothing harmed.
    let owner = registry.lookup(&ActorKey::new(Counter::KIND, "c1")).await.expect("lookup");
    let owner = owner.expect("n1 owns c1");
    let cluster_addr = n1.cluster_addr().expect("cluster port").to_string();
    hostile_envelopes(&cluster_addr, owner.epoch).await;
    for reason in ["not_owner", "unknown_message", "bad_envelope", "bad_body"] {
        assert!(refused(&n1, reason) >= 1.0, "{reason} counted");
    }
    assert_eq!(r3.send(Get).await.map(|s| s.total), Ok(1), "no hostile envelope was applied");

    // An instance that stops itself ends for good: released, no longer kept, startable again.
    assert_eq!(r3.send(Finish).await, Ok(()));
    eventually("c1 released", Duration::from_secs(10), || async {
        (r2.send(Get).await.err() == Some(RefError::NotFound)).then_some(())
    })
    .await;
    let kept = registry.kept(&Counter::KIND).await.expect("kept");
    assert!(kept.is_empty(), "an ended actor is not kept alive: {kept:?}");
    let again = n3.spawn_named::<Counter>("c1").await.expect("spawned again, on n3");
    assert!(again.is_local());
    assert_eq!(r2.send(Get).await.map(|s| s.node), Ok("n3".to_owned()));

    n3.shutdown().await;
    // Shutting n3 down released the name, and the kept counter started on n1 or n2.
    let moved = eventually("c1 kept alive after n3 left", Duration::from_secs(10), || async {
        r2.send(Get).await.ok()
    })
    .await;
    assert!(moved.node == "n1" || moved.node == "n2", "{moved:?}");
    n2.shutdown().await;
    n1.shutdown().await;
}

/// Sends hostile calls for `app.counter`/`c1` on a raw link to `addr`; each is refused.
async fn hostile_envelopes(addr: &str, epoch: u64) {
    let add = Envelope {
        message: "counter.add".into(),
        payload: encode_payload(&Add { n: 1000 }).expect("payload"),
    };
    let envelope = |e: &Envelope| encode_payload(e).expect("envelope");
    let call = |epoch: Option<u64>, body: Vec<u8>, correlation: u64| Call {
        kind: "ref.app.counter".into(),
        name: "c1".into(),
        from: "prober".into(),
        epoch,
        seq: correlation,
        correlation,
        body,
    };
    let unknown = Envelope { message: "counter.explode".into(), payload: vec![] };
    let bad_body = Envelope { message: "counter.add".into(), payload: vec![0xff; 9] };
    let cases: Vec<(Call, RemoteError)> = vec![
        (call(Some(epoch + 7), envelope(&add), 1), RemoteError::NotOwner),
        (call(None, envelope(&add), 2), RemoteError::NotOwner),
        (call(Some(epoch), envelope(&unknown), 3), RemoteError::UnknownMessage),
        (call(Some(epoch), vec![0xfe; 40], 4), RemoteError::BadRequest(String::new())),
        (call(Some(epoch), envelope(&bad_body), 5), RemoteError::BadRequest(String::new())),
    ];
    let mut link = handshaken_link(addr, SECRET).await;
    for (call, expected) in cases {
        let correlation = call.correlation;
        let bytes = Bincode.encode(&WireMessage::Call(call)).expect("encode");
        link.send(Bytes::from(bytes)).await.expect("send call");
        let reply = tokio::time::timeout(Duration::from_secs(5), link.next())
            .await
            .expect("a reply in time")
            .expect("open")
            .expect("frame");
        let Ok(WireMessage::Reply { correlation: answered, result }) = Bincode.decode(&reply)
        else {
            panic!("expected a reply");
        };
        assert_eq!(answered, correlation);
        match (result, expected) {
            (Err(RemoteError::BadRequest(_)), RemoteError::BadRequest(_)) => {}
            (result, expected) => assert_eq!(result, Err(expected), "case {correlation}"),
        }
    }
}

/// Node 1 of [`a_kept_actor_of_a_killed_node_starts_elsewhere_and_refs_keep_working`], run
/// by it as a process of its own (this binary, `--exact CHILD_TEST`, with [`CHILD_ENV`]) so
/// that it can be killed with `kill -9`: joins the cluster with the example's poll kind,
/// runs the poll [`POLL`], prints `NODE`, `POLL … on` and `READY`, and runs until killed
/// (or until its stdin closes: the test process is gone). A no-op in a normal test run.
#[actix_rt::test]
async fn node_1_of_the_failover_test_in_a_child_process() {
    let Ok(redis_url) = std::env::var(CHILD_ENV) else { return };
    let node = cluster_node("node1", &redis_url, |b| b.actor_kind(poll::Poll::kind())).await;
    let running = node.get_or_spawn::<poll::Poll>(POLL).await.expect("the poll runs");
    let tally = running.send(poll::GetTally).await.expect("the poll answers");
    println!("NODE {}", node.id());
    println!("POLL {POLL} on {}", tally.node);
    println!("READY");
    let stdin_closed =
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()));
    let _ = stdin_closed.await;
    node.shutdown().await;
}

/// Starts node 1 of the failover test ([`CHILD_TEST`]) as a child process joined to
/// `redis_url`: the child (killed on drop; its stdin stays open as long as it lives) and
/// its stdout lines.
fn start_node_1(redis_url: &str) -> (tokio::process::Child, StdoutLines) {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = tokio::process::Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture"])
        .env(CHILD_ENV, redis_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start node 1 as a child process");
    let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, lines)
}

#[actix_rt::test]
async fn a_kept_actor_of_a_killed_node_starts_elsewhere_and_refs_keep_working() {
    use poll::{GetTally, Poll, Vote};

    let redis = RedisServer::start();
    let url = redis.url();
    // Node 1: a process of its own, running the poll `live/test`.
    let (mut node1, mut lines) = start_node_1(&url);
    assert_eq!(line_starting(&mut lines, "NODE ").await, "node1");
    assert_eq!(line_starting(&mut lines, "POLL live/test on").await, "node1");
    line_starting(&mut lines, "READY").await;

    let n2 = cluster_node("node2", &url, |b| b.actor_kind(Poll::kind())).await;
    let n3 = cluster_node("node3", &url, |b| b.actor_kind(Poll::kind())).await;
    // Made once; never re-created below.
    let (r2, r3) = (n2.actor_ref::<Poll>(POLL), n3.actor_ref::<Poll>(POLL));
    let vote = |voter: &str, option: &str| Vote { voter: voter.into(), option: option.into() };
    let tally = r2.send(vote("ann", "yes")).await.expect("reached").expect("counted");
    assert_eq!(tally.node, "node1");
    let tally = r3.send(vote("bob", "no")).await.expect("reached").expect("counted");
    assert_eq!((tally.counts.get("yes"), tally.counts.get("no")), (Some(&1), Some(&1)));
    match n3.spawn_named::<Poll>(POLL).await {
        Err(SpawnError::AlreadyRunning { owner, .. }) => assert_eq!(owner.node.as_str(), "node1"),
        other => panic!("a second spawn answered {other:?}"),
    }

    node1.start_kill().expect("kill -9 node 1");
    let killed = tokio::time::Instant::now();
    node1.wait().await.expect("node 1 exits");
    // r2 waits for the move. Until a node runs the poll again, its calls fail without being
    // applied, and say why: the registry still names the dead node 1 (its registration
    // has not expired yet: Unreachable, node 1), or nobody (NotFound). Nothing else.
    let moved = eventually("the poll on another node", ACTOR_LEASE_TTL, || async {
        match r2.send(GetTally).await {
            Ok(tally) => Some(tally),
            Err(RefError::NotFound) => None,
            Err(RefError::Unreachable { node }) if node.as_str() == "node1" => None,
            Err(other) => panic!("r2 while the poll moves: {other:?}"),
        }
    })
    .await;
    let took = killed.elapsed();
    assert!(took < ACTOR_LEASE_TTL, "the poll ran again after {took:?}");
    assert!(moved.node == "node2" || moved.node == "node3", "{moved:?}");
    assert!(moved.restarted && moved.counts.is_empty(), "a fresh instance: {moved:?}");
    eprintln!("the poll runs on {} {took:?} after node 1 was killed", moved.node);

    // r3 was not used since the kill: it still caches node 1 as the owner. Its very first
    // call reaches the new owner: the call to node 1 could not be sent (refused), so the
    // ref looked the owner up again and sent it there, once.
    let tally = r3.send(vote("bob", "no")).await.expect("r3's first call after the move");
    let tally = tally.expect("counted");
    assert_eq!((tally.node.as_str(), tally.counts.get("no")), (moved.node.as_str(), Some(&1)));
    let tally = r2.send(vote("ann", "yes")).await.expect("reached").expect("counted");
    assert_eq!((tally.counts.get("yes"), tally.counts.get("no")), (Some(&1), Some(&1)));
    assert_eq!(tally.node, moved.node);
    match n2.spawn_named::<Poll>(POLL).await {
        Err(SpawnError::AlreadyRunning { owner, .. }) => {
            assert_eq!(owner.node.as_str(), moved.node)
        }
        other => panic!("a spawn after the move answered {other:?}"),
    }
    n3.shutdown().await;
    n2.shutdown().await;
}
