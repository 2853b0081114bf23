//! A local three-node cluster to try cluster mode: starts a private `redis-server` on a free
//! port (or uses `REDIS_URL`), then three nodes in this process on their own ports, and
//! prints where to publish and play.
//!
//! It also shows an **application actor** (`poll.rs`): a per-stream poll registered on
//! every node, spawned by name on node 1, that viewers on every node vote into from the
//! chat (`!vote yes` in the room `live/test`: each node's chat hook sends the vote to the
//! poll with a typed ref and answers with the tally). At start, node 2 and node 3 vote
//! through their refs and the tally is printed.
//!
//! Run: `cargo run --release --example cluster`, publish to node 1 and play from node 2 or 3
//! (the URLs are printed). Chat members on any node share one room:
//! `ws://127.0.0.1:8082/chat/live/test`. Ctrl-C stops everything.
//! With `ZENLIVE_EXAMPLE_EXIT_AFTER=N` it stops by itself after N seconds (tests use it).
//!
//! With `ZENLIVE_EXAMPLE_NODE=N` (and `REDIS_URL`) it runs node N alone, on free ports,
//! and spawns the poll `live/test` unless it runs somewhere already: one process per node,
//! so a node can be killed (`kill -9` the one running the poll, and another node starts it
//! within about 7 s; `tests/app_actors.rs` does the same with node 1 in a child process).

mod poll;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use poll::{GetTally, Poll, Vote};
use zenlive::chat::{ChatDecision, ChatMessageRequest};
use zenlive::refs::ActorRef;
use zenlive::{Config, Node, NodeBuilder};

/// The poll every node's chat hook votes into.
const POLL: &str = "live/test";
/// The cluster secret the example's nodes share.
pub const SECRET: &str = "example-cluster-secret";

/// A `redis-server` child, killed on drop.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `redis-server` on a free loopback port without persistence.
fn start_redis() -> anyhow::Result<(Redis, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("cannot start redis-server ({e}); install it or set REDIS_URL")
        })?;
    Ok((Redis(child), format!("redis://127.0.0.1:{port}/")))
}

/// Node `n`'s configuration: its own ports (1930+n, 8080+n, 9090+n, 7940+n), or free ones.
fn config(n: u16, redis_url: &str, free_ports: bool) -> anyhow::Result<Config> {
    let addr = |port: u16| -> anyhow::Result<SocketAddr> {
        let port = if free_ports { 0 } else { port };
        Ok(format!("127.0.0.1:{port}").parse()?)
    };
    let mut config = Config::default();
    config.node.id = format!("node{n}");
    config.rtmp.addr = addr(1930 + n)?;
    config.http.addr = addr(8080 + n)?;
    config.metrics.addr = addr(9090 + n)?;
    config.webrtc.udp_addr = addr(8189 + n)?;
    config.hls.segment_duration = Duration::from_secs(2);
    config.cluster.enabled = true;
    config.cluster.redis_url = redis_url.to_owned();
    config.cluster.addr = addr(7940 + n)?;
    config.cluster.secret = SECRET.to_owned();
    Ok(config)
}

/// Node `n` with the poll kind registered, and its chat hook: `!vote OPTION` in the room
/// `live/test` goes to the poll (wherever it runs) and comes back as the tally.
async fn start_node(n: u16, redis_url: &str, free_ports: bool) -> anyhow::Result<Node> {
    // The hook needs the node's ref, which exists once the node does: made once, kept.
    let poll_ref: Arc<OnceLock<ActorRef<Poll>>> = Arc::default();
    let hook_ref = Arc::clone(&poll_ref);
    let node = NodeBuilder::new(config(n, redis_url, free_ports)?)
        .actor_kind(Poll::kind())
        .on_chat_message(move |request: ChatMessageRequest| {
            let poll = hook_ref.get().cloned();
            async move {
                let Some(option) = request.text.strip_prefix("!vote ") else {
                    return ChatDecision::Allow;
                };
                let Some(poll) = poll.filter(|_| request.room == POLL) else {
                    return ChatDecision::Allow;
                };
                let vote = Vote { voter: request.user.id.clone(), option: option.to_owned() };
                match poll.send(vote).await {
                    Ok(Ok(tally)) => ChatDecision::Rewrite(format!(
                        "{} voted {option}: {:?}",
                        request.user.name, tally.counts
                    )),
                    Ok(Err(refused)) => ChatDecision::Reject(refused.to_string()),
                    Err(error) => {
                        ChatDecision::Reject(format!("the poll is not available: {error}"))
                    }
                }
            }
        })
        .start()
        .await?;
    let _ = poll_ref.set(node.actor_ref::<Poll>(POLL));
    Ok(node)
}

/// Waits for Ctrl-C, or `ZENLIVE_EXAMPLE_EXIT_AFTER` seconds.
async fn run_until_stopped() -> anyhow::Result<()> {
    let exit_after = std::env::var("ZENLIVE_EXAMPLE_EXIT_AFTER")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    match exit_after {
        Some(limit) => tokio::time::sleep(limit).await,
        None => tokio::signal::ctrl_c().await?,
    }
    Ok(())
}

/// One node per process (`ZENLIVE_EXAMPLE_NODE=n`).
async fn one_node(n: u16) -> anyhow::Result<()> {
    let redis_url = std::env::var("REDIS_URL")
        .map_err(|_| anyhow::anyhow!("ZENLIVE_EXAMPLE_NODE needs REDIS_URL"))?;
    let node = start_node(n, &redis_url, true).await?;
    let poll = node.get_or_spawn::<Poll>(POLL).await?;
    let tally = poll.send(GetTally).await?;
    println!("NODE {}", node.id());
    println!("CLUSTER {}", node.cluster_addr().map(|a| a.to_string()).unwrap_or_default());
    println!("POLL {POLL} on {}", tally.node);
    println!("READY");
    run_until_stopped().await?;
    node.shutdown().await;
    Ok(())
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").with_writer(std::io::stderr).init();
    if let Some(n) = std::env::var("ZENLIVE_EXAMPLE_NODE").ok().and_then(|n| n.parse().ok()) {
        return one_node(n).await;
    }
    let (_redis, redis_url) = match std::env::var("REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let (redis, url) = start_redis()?;
            (Some(redis), url)
        }
    };
    let mut nodes: Vec<Node> = Vec::new();
    for n in 1..=3 {
        nodes.push(start_node(n, &redis_url, false).await?);
    }
    // The poll runs on node 1; nodes 2 and 3 vote through refs, as their chat hooks do.
    nodes[0].spawn_named::<Poll>(POLL).await?;
    for (i, option) in [(1, "yes"), (2, "no")] {
        let vote = Vote { voter: format!("viewer-on-node{}", i + 1), option: option.into() };
        nodes[i].actor_ref::<Poll>(POLL).send(vote).await??;
    }
    let tally = nodes[2].actor_ref::<Poll>(POLL).send(GetTally).await?;
    println!(
        "Poll:      {POLL} runs on {}: {:?}   (say `!vote OPTION` in its chat room)",
        tally.node, tally.counts
    );

    let rtmp = |i: usize| nodes[i].rtmp_addr().map(|a| a.to_string()).unwrap_or_default();
    println!("Redis:     {redis_url}");
    println!(
        "Publish:   ffmpeg -re -i input.mp4 -c copy -f flv rtmp://{}/live/test   (node1)",
        rtmp(0)
    );
    println!("Play RTMP: ffplay rtmp://{}/live/test   (node2)", rtmp(1));
    println!("HTTP-FLV:  ffplay http://{}/live/test.flv   (node3)", nodes[2].http_addr());
    println!("HLS:       http://{}/live/test/index.m3u8   (node2)", nodes[1].http_addr());
    println!("Chat:      ws://{}/chat/live/test   (any node)", nodes[1].http_addr());
    println!(
        "Nodes:     http://{}/api/v1/nodes",
        nodes[0].metrics_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    println!("READY");

    run_until_stopped().await?;
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
