//! A local three-node cluster to try cluster mode: starts a private `redis-server` on a free
//! port (or uses `REDIS_URL`), then three nodes in this process on their own ports, and
//! prints where to publish and play.
//!
//! Run: `cargo run --release --example cluster`, publish to node 1 and play from node 2 or 3
//! (the URLs are printed). Chat members on any node share one room:
//! `ws://127.0.0.1:8082/chat/live/test`. Ctrl-C stops everything.
//! With `ZENLIVE_EXAMPLE_EXIT_AFTER=N` it stops by itself after N seconds (tests use it).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use zenlive::{Config, Node, NodeBuilder};

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

/// Node `n`'s configuration: its own ports (1930+n, 8080+n, 9090+n, 7940+n).
fn config(n: u16, redis_url: &str) -> anyhow::Result<Config> {
    let addr =
        |port: u16| -> anyhow::Result<SocketAddr> { Ok(format!("127.0.0.1:{port}").parse()?) };
    let mut config = Config::default();
    config.node.id = format!("node{n}");
    config.rtmp.addr = addr(1930 + n)?;
    config.http.addr = addr(8080 + n)?;
    config.metrics.addr = addr(9090 + n)?;
    config.hls.segment_duration = Duration::from_secs(2);
    config.cluster.enabled = true;
    config.cluster.redis_url = redis_url.to_owned();
    config.cluster.addr = addr(7940 + n)?;
    config.cluster.secret = "example-cluster-secret".to_owned();
    Ok(config)
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").with_writer(std::io::stderr).init();
    let (_redis, redis_url) = match std::env::var("REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let (redis, url) = start_redis()?;
            (Some(redis), url)
        }
    };
    let mut nodes: Vec<Node> = Vec::new();
    for n in 1..=3 {
        nodes.push(NodeBuilder::new(config(n, &redis_url)?).start().await?);
    }
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

    let exit_after = std::env::var("ZENLIVE_EXAMPLE_EXIT_AFTER")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs);
    match exit_after {
        Some(limit) => tokio::time::sleep(limit).await,
        None => tokio::signal::ctrl_c().await?,
    }
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
