//! Cluster benchmark: two nodes in this process joined through a private `redis-server`,
//! talking over their real loopback link. Not criterion: it needs live nodes and Redis.
//!
//! Measures:
//! - the round trip of a call between the nodes (`Cluster::call_node` to an echo handler):
//!   p50/p99/p99.9 one at a time, and calls per second with 64 in flight;
//! - the latency an edge adds to playback: FFmpeg publishes to node A; one HTTP-FLV reader
//!   on A and one on B (relayed from A) note when each video tag arrives; the difference per
//!   tag is what the relay costs.
//!
//! - the same round trip and throughput through a typed reference, to two targets on the
//!   other node, reported apart: a chat room (`Node::room_ref`, `SystemMessage`: the room's
//!   handler does real work) and an application actor that answers what it is sent
//!   (`Node::actor_ref`, `Say`: the typed path's own cost). The throughput runs also give
//!   the round trip's p50 and p99 under that load.
//!
//! Run: `cargo bench --bench cluster` (needs `redis-server` and `ffmpeg` on PATH;
//! `ZENLIVE_BENCH_SKIP_EDGE=1` skips the edge latency and FFmpeg).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use zenlive::app_actors::{AppActorKind, StartInfo};
use zenlive::chat::SystemMessage;
use zenlive::refs::ActorRef;
use zenlive::{Config, Node, NodeBuilder};
use zenlive_actors::{NamedActor, RemoteMessage};
use zenlive_media::flv::{FlvDemuxer, TagType};
use zenlive_registry::testsuite::RedisServer;
use zenlive_registry::{app_kind, ActorKind};

fn config(id: &str, redis: &str) -> Config {
    let any = || "127.0.0.1:0".parse().expect("address");
    let mut config = Config::default();
    config.node.id = id.to_owned();
    config.rtmp.addr = any();
    config.http.addr = any();
    config.webrtc.udp_addr = any();
    config.metrics.enabled = false;
    config.hls.enabled = false;
    config.cluster.enabled = true;
    config.cluster.redis_url = redis.to_owned();
    config.cluster.addr = any();
    config.cluster.secret = "bench-cluster-secret".to_owned();
    config
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn round_trips(a: &Node, b: &Node) {
    let (ca, cb) = (a.cluster().expect("cluster"), b.cluster().expect("cluster"));
    cb.on_call("echo", |_name, _epoch, body| async move { Ok(body) });
    let target = b.id().clone();
    let body = vec![7u8; 64];
    for _ in 0..2_000 {
        let call = ca.new_call("echo", "bench", None, body.clone());
        ca.call_node(&target, call).await.expect("warm-up call");
    }
    let mut times = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let call = ca.new_call("echo", "bench", None, body.clone());
        let started = Instant::now();
        ca.call_node(&target, call).await.expect("call");
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "call round trip, one at a time (64-byte body, 20,000 calls): p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us",
        micros(percentile(&times, 0.5)),
        micros(percentile(&times, 0.99)),
        micros(percentile(&times, 0.999)),
    );

    let window = Duration::from_secs(5);
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (ca, target, body) = (ca.clone(), target.clone(), body.clone());
            actix_rt::spawn(async move {
                let mut done = 0u64;
                while started.elapsed() < window {
                    let call = ca.new_call("echo", "bench", None, body.clone());
                    if ca.call_node(&target, call).await.is_ok() {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("task");
    }
    println!(
        "call throughput, 64 in flight over one link: {:.0} calls/s",
        total as f64 / started.elapsed().as_secs_f64()
    );
}

/// An application actor that answers what it is sent (`Node::actor_ref`): the typed
/// path's own cost, without a chat room's work behind it.
struct Echo;

impl Actor for Echo {
    type Context = Context<Self>;
}

impl NamedActor for Echo {
    const KIND: ActorKind = app_kind!("bench-echo");
}

/// Answered with its text.
#[derive(Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "String")]
struct Say(String);

impl RemoteMessage for Say {
    const NAME: &'static str = "bench.say";
}

impl Handler<Say> for Echo {
    type Result = String;

    fn handle(&mut self, msg: Say, _ctx: &mut Self::Context) -> String {
        msg.0
    }
}

/// The same two measures through a typed reference (`zenlive::refs`), as a bincode
/// envelope fenced by epoch on receipt: `target` is on the other node, `what` says which.
async fn typed_round_trips<A, M>(what: &str, target: ActorRef<A>, message: fn() -> M)
where
    A: NamedActor,
    M: RemoteMessage,
    A: Handler<M>,
    A::Context: ToEnvelope<A, M>,
{
    // The actor's claim resolves on B: until then A finds no owner.
    while target.send(message()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!target.is_local(), "the target runs on the other node");
    for _ in 0..2_000 {
        target.send(message()).await.expect("warm-up message");
    }
    let mut times = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let started = Instant::now();
        target.send(message()).await.expect("message");
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "typed remote send round trip, one at a time ({what}, 20,000 messages): p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us",
        micros(percentile(&times, 0.5)),
        micros(percentile(&times, 0.99)),
        micros(percentile(&times, 0.999)),
    );
    let window = Duration::from_secs(5);
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let target = target.clone();
            actix_rt::spawn(async move {
                let mut done = 0u64;
                let mut latencies = Vec::with_capacity(100_000);
                while started.elapsed() < window {
                    let sent = Instant::now();
                    if target.send(message()).await.is_ok() {
                        latencies.push(sent.elapsed());
                        done += 1;
                    }
                }
                (done, latencies)
            })
        })
        .collect();
    let (mut total, mut times) = (0, Vec::new());
    for task in tasks {
        let (done, latencies) = task.await.expect("task");
        total += done;
        times.extend(latencies);
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    times.sort();
    println!(
        "typed remote send throughput, 64 callers over one link ({what}): {rate:.0} messages/s; round trip under that load p50 {:.0} us, p99 {:.0} us",
        micros(percentile(&times, 0.5)),
        micros(percentile(&times, 0.99)),
    );
}

/// Reads `url` as FLV for `limit`, noting when each live video tag (by timestamp) arrived.
/// Tags of the first second (the GOP cache, sent at once on joining) are left out.
async fn arrivals(url: String, limit: Duration) -> HashMap<u32, Instant> {
    let mut seen = HashMap::new();
    let joined = Instant::now();
    let Ok(mut response) = reqwest::get(&url).await else { return seen };
    let mut demuxer = FlvDemuxer::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
        let now = Instant::now();
        demuxer.push(&chunk);
        while let Some(Ok(tag)) = demuxer.next_tag() {
            if tag.tag_type == TagType::Video && now.duration_since(joined) > Duration::from_secs(1)
            {
                seen.entry(tag.timestamp_ms).or_insert(now);
            }
        }
    }
    seen
}

async fn edge_latency(a: &Node, b: &Node) {
    let url = format!("rtmp://{}/live/bench", a.rtmp_addr().expect("rtmp"));
    let mut publisher = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60"])
        .args(["-t", "40", "-f", "flv", &url])
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg");
    let key = zenlive::StreamKey::parse("live/bench").expect("key");
    while a.stream(&key).is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The edge starts relaying on its first viewer; let it settle before measuring.
    let warm = format!("http://{}/live/bench.flv", b.http_addr());
    let _ = arrivals(warm, Duration::from_secs(2)).await;
    let window = Duration::from_secs(20);
    let (origin, edge) = tokio::join!(
        arrivals(format!("http://{}/live/bench.flv", a.http_addr()), window),
        arrivals(format!("http://{}/live/bench.flv", b.http_addr()), window),
    );
    let _ = publisher.kill().await;
    let mut added: Vec<Duration> = origin
        .iter()
        .filter_map(|(ts, at_origin)| {
            edge.get(ts).map(|at_edge| at_edge.saturating_duration_since(*at_origin))
        })
        .collect();
    added.sort();
    let live = &added[..];
    if live.is_empty() {
        println!("edge latency: no common frames");
        return;
    }
    println!(
        "latency an edge adds (HTTP-FLV, {} video frames): p50 {:.2} ms, p99 {:.2} ms",
        live.len(),
        micros(percentile(live, 0.5)) / 1000.0,
        micros(percentile(live, 0.99)) / 1000.0,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` asks benches to list themselves; nothing to list.
        return;
    }
    actix_rt::System::new().block_on(async {
        let redis = RedisServer::start();
        let echo = || AppActorKind::new(|_: &StartInfo| Echo).message::<Say>();
        let a = NodeBuilder::new(config("a", &redis.url())).actor_kind(echo()).start().await;
        let a = a.expect("node a");
        let b = NodeBuilder::new(config("b", &redis.url())).actor_kind(echo()).start().await;
        let b = b.expect("node b");
        b.cluster().expect("cluster").refresh_members().await.expect("members");
        round_trips(&a, &b).await;
        // A chat room whose home is B, sent `SystemMessage` (a room with no members, so the
        // handler's work is small: the event serialized, the history, the hooks).
        let room = "bench/typed";
        let _home = b.chat_room(room);
        let text = || SystemMessage { text: "x".repeat(48) };
        typed_round_trips("SystemMessage to a chat room on the other node", a.room_ref(room), text)
            .await;
        b.spawn_named::<Echo>("echo").await.expect("spawn the echo actor on B");
        let say = || Say("x".repeat(48));
        typed_round_trips(
            "Say to an application actor on the other node",
            a.actor_ref::<Echo>("echo"),
            say,
        )
        .await;
        if std::env::var_os("ZENLIVE_BENCH_SKIP_EDGE").is_none() {
            edge_latency(&a, &b).await;
        }
        a.shutdown().await;
        b.shutdown().await;
    });
}
