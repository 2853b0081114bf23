//! Cluster mode end to end: `zenlive` processes on 127.0.0.1 sharing one real
//! `redis-server` on a free port. FFmpeg publishes to one node and plays RTMP, HTTP-FLV and
//! HLS from the others; aiortc plays over WHEP and publishes over WHIP on any node;
//! WebSocket chat members on every node share one room; then a node is killed (`kill -9`),
//! paused (`SIGSTOP`) and Redis restarted, each outcome checked within a bound.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use zenlive::auth::Role;
use zenlive::cluster::wire::{Codec, Message as LinkMessage};
use zenlive_actors::chat::SystemMessage;
use zenlive_actors::stream::RequestKeyframe;
use zenlive_registry::testsuite::RedisServer;
use zenlive_registry::{ActorKey, ActorKind, RedisRegistry, Registry};

const SECRET: &str = "cluster-test-secret-cluster-test-secret";

/// One `zenlive` process of the cluster.
type ClusterNode = ZenliveProcess;

/// Starts node `id` of `test`'s cluster against the Redis at `redis_url`.
async fn cluster_node(test: &str, id: &str, redis_url: &str) -> ClusterNode {
    let args = ["--node-id", id, "--cluster-redis", redis_url, "--cluster-addr", "127.0.0.1:0"];
    let env = [("ZENLIVE_CLUSTER_SECRET", SECRET), ("ZENLIVE_AUTH_JWT_SECRET", SECRET)];
    ZenliveProcess::start(&format!("{test}-{id}"), id, &args, &env).await
}

/// Publishes to `url`, retrying every second until a publisher stays connected (a stream
/// name held by a node that just died is free once its registration expires).
async fn publish_when_accepted(url: &str, limit: Duration) -> Child {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut publisher = publish_looped(url);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if publisher.try_wait().expect("poll publisher").is_none() {
            return publisher;
        }
        assert!(tokio::time::Instant::now() < deadline, "no node accepted the publisher at {url}");
    }
}

/// A private Redis and two nodes, `n1` and `n2`, for `test`.
async fn two_nodes(test: &str) -> (RedisServer, ClusterNode, ClusterNode) {
    let redis = RedisServer::start();
    let url = redis.url();
    let (n1, n2) = tokio::join!(cluster_node(test, "n1", &url), cluster_node(test, "n2", &url));
    (redis, n1, n2)
}

/// Publishes `stream` to `node` in a loop and waits until the node has it live.
async fn publish_live(node: &ClusterNode, stream: &str) -> Child {
    let publisher = publish_looped(&node.rtmp_url(stream));
    let what = format!("{stream} on {}", node.id);
    wait_for_async(&what, Duration::from_secs(15), || node.has_stream(stream)).await;
    publisher
}

/// A node embedded in this process, joined to the cluster at `redis_url` with `secret`.
async fn embedded_node(id: &str, redis_url: &str, secret: &str) -> zenlive::Node {
    let mut config = test_config();
    config.node.id = id.to_owned();
    config.cluster.enabled = true;
    config.cluster.redis_url = redis_url.to_owned();
    config.cluster.addr = any_port();
    config.cluster.secret = secret.to_owned();
    start_node(config).await
}

/// Checks a recording: H.264 320x240 and AAC, at least `seconds` long.
async fn assert_plays(file: &std::path::Path, seconds: f64, label: &str) {
    let info = probe(file).await;
    let streams = info["streams"].as_array().expect("streams");
    let video = streams.iter().find(|s| s["codec_type"] == "video").expect("video");
    assert_eq!(video["codec_name"], "h264", "{label}");
    assert_eq!(video["width"], 320, "{label}");
    assert!(streams.iter().any(|s| s["codec_type"] == "audio"), "{label}: audio");
    let duration: f64 =
        info["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    assert!(duration >= seconds, "{label}: {duration} s < {seconds} s");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn member(http: &str, room: &str, user: &str) -> Socket {
    let token = mint_token(SECRET, user, Some(user), &[Role::Viewer]);
    let url = format!("ws://{http}/chat/{room}?token={token}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connects");
    // The history comes once the room (home or satellite) has accepted the member.
    next_of(&mut socket, "history").await;
    socket
}

/// The next JSON event, whatever its type, within 10 s.
async fn next_any(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("a {kind} event in time"))
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            let event: Value = serde_json::from_str(&text).expect("JSON");
            if event["type"] == kind {
                return event;
            }
        }
    }
}

#[actix_rt::test]
async fn three_nodes_share_streams_and_chat_rooms() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (n1, n2, n3) = tokio::join!(
        cluster_node("share", "n1", &url),
        cluster_node("share", "n2", &url),
        cluster_node("share", "n3", &url),
    );
    wait_for_async("three nodes in /api/v1/nodes", Duration::from_secs(10), || async {
        n3.node_ids().await == ["n1", "n2", "n3"]
    })
    .await;

    // Media: published on n1, played from n2 and n3 with every protocol.
    let _publisher = publish_live(&n1, "live/c").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (rtmp, flv, hls) =
        (dir.path().join("n2.flv"), dir.path().join("n3.flv"), dir.path().join("n3.ts"));
    let flv_url = format!("http://{}/live/c.flv", n3.http);
    let hls_url = format!("http://{}/live/c/index.m3u8", n2.http);
    let rtmp_url = n2.rtmp_url("live/c");
    let (a, b, c) = tokio::join!(
        record(&rtmp_url, 4, &rtmp),
        record(&flv_url, 4, &flv),
        record(&hls_url, 4, &hls),
    );
    for (out, file, label) in
        [(a, &rtmp, "RTMP on n2"), (b, &flv, "HTTP-FLV on n3"), (c, &hls, "HLS on n2")]
    {
        assert!(out.status.success(), "{label}: {}", String::from_utf8_lossy(&out.stderr));
        assert_plays(file, 3.0, label).await;
    }

    // Many viewers on an edge cost the origin one stream.
    let players: Vec<_> = (0..4)
        .map(|i| {
            let out = dir.path().join(format!("many-{i}.flv"));
            let url = format!("http://{}/live/c.flv", n2.http);
            tokio::spawn(async move { record(&url, 8, &out).await })
        })
        .collect();
    wait_for_async("4 HTTP-FLV viewers on n2", Duration::from_secs(15), || async {
        let text = n2.metrics_text().await;
        sample(&text, "zenlive_stream_viewers", &[("stream", "live/c"), ("protocol", "http-flv")])
            == Some(4.0)
    })
    .await;
    let origin = n1.metrics_text().await;
    let viewers = |protocol| {
        sample(&origin, "zenlive_stream_viewers", &[("stream", "live/c"), ("protocol", protocol)])
    };
    assert_eq!(
        viewers("http-flv").unwrap_or(0.0),
        0.0,
        "no viewer connects to the origin directly"
    );
    assert!(viewers("relay").unwrap_or(0.0) <= 2.0, "one relay per edge at most:\n{origin}");
    let edge = n2.metrics_text().await;
    assert_eq!(sample(&edge, "zenlive_registry_relays", &[]), Some(1.0), "n2 relays live/c once");
    for player in players {
        let out = player.await.expect("player task");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    // Chat: the first member makes n1 the room's home; members on n2 and n3 join it.
    let mut m1 = member(&n1.http, "live/c", "ann").await;
    let mut m2 = member(&n2.http, "live/c", "bob").await;
    let mut m3 = member(&n3.http, "live/c", "cid").await;
    // Message events a member received while its test step waited for something else.
    let mut early: [Vec<String>; 3] = Default::default();
    for (index, text) in [(1, "from n2"), (2, "from n3"), (0, "from n1")] {
        let socket = [&mut m1, &mut m2, &mut m3].into_iter().nth(index).expect("member");
        socket
            .send(Message::text(json!({"type": "message", "text": text}).to_string()))
            .await
            .expect("send");
        // Wait for the ack so the three posts are ordered.
        loop {
            let event = next_any(socket).await;
            match event["type"].as_str() {
                Some("ack") => break,
                Some("message") => {
                    early[index].push(event["text"].as_str().unwrap_or("").to_owned())
                }
                _ => {}
            }
        }
    }
    let mut seen = Vec::new();
    for (socket, early) in [&mut m1, &mut m2, &mut m3].into_iter().zip(early) {
        let mut texts = early;
        while texts.len() < 3 {
            texts.push(next_of(socket, "message").await["text"].as_str().expect("text").to_owned());
        }
        seen.push(texts);
    }
    let expected = ["from n2", "from n3", "from n1"];
    for texts in &seen {
        assert_eq!(texts, &expected, "every member sees every message once, in one order");
    }

    // An application message sent through a fourth node, embedded in this process,
    // reaches the room's home on n1 and every member.
    let app = embedded_node("app", &redis.url(), SECRET).await;
    wait_for_async("the app node sees n1", Duration::from_secs(5), || async {
        app.cluster().expect("cluster mode").refresh_members().await.is_ok_and(|m| m.len() == 4)
    })
    .await;
    app.chat_room("live/c").do_send(SystemMessage { text: "maintenance at noon".into() });
    for socket in [&mut m1, &mut m2, &mut m3] {
        assert_eq!(next_of(socket, "system").await["text"], "maintenance at noon");
    }
    let home = n1.metrics_text().await;
    assert!(sample(&home, "zenlive_registry_calls_received_total", &[]).unwrap_or(0.0) >= 4.0);
    app.shutdown().await;
}

#[actix_rt::test]
async fn a_killed_origin_is_replaced_and_edge_viewers_keep_playing() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (n1, n2, n3) = tokio::join!(
        cluster_node("kill", "n1", &url),
        cluster_node("kill", "n2", &url),
        cluster_node("kill", "n3", &url),
    );
    let mut first = publish_looped(&n1.rtmp_url("live/k"));
    wait_for_async("live/k on n1", Duration::from_secs(15), || n1.has_stream("live/k")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let recording = dir.path().join("n3.flv");
    let url = format!("http://{}/live/k.flv", n3.http);
    let out = recording.clone();
    // 20 s of media: across the kill, the publisher's move and the relay's re-resolve.
    let player = tokio::spawn(async move { record(&url, 20, &out).await });
    // n2 relays it too, for an RTMP viewer and HLS: n2 is where the publisher goes next.
    let edge_recording = dir.path().join("n2.flv");
    let (edge_url, edge_out) = (n2.rtmp_url("live/k"), edge_recording.clone());
    let edge_player = tokio::spawn(async move { record(&edge_url, 20, &edge_out).await });
    wait_for_async("n3 relays live/k", Duration::from_secs(15), || n3.has_stream("live/k")).await;
    wait_for_async("n2 relays live/k", Duration::from_secs(15), || n2.has_stream("live/k")).await;
    let playlist = format!("http://{}/live/k/index.m3u8", n2.http);
    let sequence = || async {
        let text = reqwest::get(&playlist).await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")?.parse::<u64>().ok())
    };
    wait_for_async("n2's HLS playlist", Duration::from_secs(15), || async {
        sequence().await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = sequence().await.expect("a playlist on n2");

    n1.signal("-KILL");
    let _ = first.kill().await;
    let killed = tokio::time::Instant::now();
    let _second = publish_when_accepted(&n2.rtmp_url("live/k"), Duration::from_secs(20)).await;
    let moved = killed.elapsed();
    wait_for_async("n1 gone from the cluster", Duration::from_secs(10), || async {
        !n2.node_ids().await.contains(&"n1".to_owned())
    })
    .await;
    assert!(moved <= Duration::from_secs(12), "the publisher was accepted on n2 after {moved:?}");

    let out = player.await.expect("player task");
    assert!(
        out.status.success(),
        "the edge viewer kept playing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_plays(&recording, 19.0, "HTTP-FLV on n3 across the failover").await;
    // n2's own viewers were handed to its new local publisher: they kept playing, and the
    // HLS playlist carried on (its media sequence never went back).
    let out = edge_player.await.expect("edge player task");
    assert!(
        out.status.success(),
        "n2's viewer kept playing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_plays(&edge_recording, 19.0, "RTMP on n2 as it took the stream over").await;
    wait_for_async("n2's playlist moving on", Duration::from_secs(15), || async {
        let now = sequence().await.unwrap_or(before);
        assert!(now >= before, "n2's media sequence went back from {before} to {now}");
        now > before + 2
    })
    .await;
    assert!(n2.log_text().contains("took over the relayed stream"), "n2 says what happened");
    let registry = RedisRegistry::connect(&redis.url(), "zenlive:").await.expect("redis");
    let owner = registry
        .lookup(&ActorKey::new(ActorKind::Stream, "live/k"))
        .await
        .expect("lookup")
        .expect("owned");
    assert_eq!(owner.node.as_str(), "n2");
    assert!(owner.epoch >= 2, "a new epoch: {}", owner.epoch);
}

#[actix_rt::test]
async fn a_paused_node_gives_up_the_stream_it_lost() {
    let (_redis, n1, n2) = two_nodes("pause").await;
    let _first = publish_live(&n1, "live/p").await;

    n1.signal("-STOP");
    // n1's registration expires (node TTL 6 s), so its lease no longer protects the name.
    let second = publish_when_accepted(&n2.rtmp_url("live/p"), Duration::from_secs(20)).await;
    n1.signal("-CONT");
    // Generous bounds: n1 notices at its next renewal, but a loaded machine (CI, or builds
    // beside the suite) slows every debug process down.
    wait_for_async("n1 ends its copy of live/p", Duration::from_secs(40), || async {
        n1.api("/api/v1/streams").await.is_some() && !n1.has_stream("live/p").await
    })
    .await;
    assert!(n2.has_stream("live/p").await, "n2 still serves the stream");
    assert!(n1.log_text().contains("lease lost"), "n1 says why:\n{}", n1.log_text());
    wait_for_async("n1 back in the cluster", Duration::from_secs(30), || async {
        n2.node_ids().await.contains(&"n1".to_owned())
    })
    .await;
    drop(second);
}

#[actix_rt::test]
async fn streams_survive_a_redis_restart_and_nodes_rejoin() {
    let (mut redis, n1, n2) = two_nodes("redis").await;
    let _publisher = publish_live(&n1, "live/r").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let recording = dir.path().join("n1.flv");
    let (url, out) = (n1.rtmp_url("live/r"), recording.clone());
    let player = tokio::spawn(async move { record(&url, 12, &out).await });
    tokio::time::sleep(Duration::from_secs(1)).await;

    redis.stop();
    let asked = tokio::time::Instant::now();
    let response =
        reqwest::get(format!("http://{}/api/v1/nodes", n1.metrics)).await.expect("answer");
    assert_eq!(response.status(), 503, "cluster lookups fail while Redis is down");
    assert!(asked.elapsed() < Duration::from_secs(3), "and fail fast: {:?}", asked.elapsed());
    let ready = reqwest::get(format!("http://{}/readyz", n1.metrics)).await.expect("readyz");
    assert_eq!(ready.status(), 200, "a Redis outage does not take the node out of rotation");
    let ready: Value = ready.json().await.expect("JSON");
    assert_eq!(ready["degraded"], true);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(n1.has_stream("live/r").await, "the local stream keeps flowing");

    redis.restart();
    wait_for_async("both nodes registered again", Duration::from_secs(15), || async {
        n2.node_ids().await == ["n1", "n2"]
    })
    .await;
    let registry = RedisRegistry::connect(&redis.url(), "zenlive:").await.expect("redis");
    let key = ActorKey::new(ActorKind::Stream, "live/r");
    wait_for_async("n1 claims live/r again", Duration::from_secs(10), || async {
        registry.lookup(&key).await.ok().flatten().is_some_and(|o| o.node.as_str() == "n1")
    })
    .await;
    let out = player.await.expect("player task");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_plays(&recording, 11.0, "RTMP on n1 across the Redis restart").await;
}

#[actix_rt::test]
async fn a_node_started_before_its_redis_waits_for_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}/");
    let log = log_dir().join("late-n1.log");
    let _ = std::fs::remove_file(&log);
    let starting = tokio::spawn(async move { cluster_node("late", "n1", &url).await });
    wait_for_async("the node says it cannot reach Redis", Duration::from_secs(15), || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("cannot reach Redis")
    })
    .await;
    let _redis = RedisServer::start_on(port);
    let node = tokio::time::timeout(Duration::from_secs(20), starting)
        .await
        .expect("the node starts once Redis is up")
        .expect("start task");
    assert_eq!(node.node_ids().await, ["n1"]);
}

#[actix_rt::test]
async fn draining_a_node_moves_its_chat_rooms_and_refuses_new_publishers() {
    let (redis, n1, n2) = two_nodes("drain").await;
    let url = redis.url();
    let _live = publish_live(&n1, "live/before").await;
    let mut home = member(&n1.http, "live/d", "ann").await;
    let mut away = member(&n2.http, "live/d", "bob").await;

    let drained = Command::new(env!("CARGO_BIN_EXE_zenlive"))
        .args(["drain", "--url", &format!("http://{}", n1.http)])
        .env("ZENLIVE_AUTH_JWT_SECRET", SECRET)
        .output()
        .await
        .expect("zenlive drain");
    assert!(drained.status.success(), "{}", String::from_utf8_lossy(&drained.stderr));
    let state: Value = serde_json::from_slice(&drained.stdout).expect("JSON answer");
    assert_eq!(state["draining"], true);

    // Load balancers stop sending clients; the cluster sees it.
    let ready = reqwest::get(format!("http://{}/readyz", n1.metrics)).await.expect("readyz");
    assert_eq!(ready.status(), 503);
    wait_for_async("n2 sees n1 draining", Duration::from_secs(10), || async {
        n2.api("/api/v1/nodes").await.is_some_and(|body| {
            body["nodes"]
                .as_array()
                .is_some_and(|nodes| nodes.iter().any(|n| n["id"] == "n1" && n["draining"] == true))
        })
    })
    .await;
    // No new publisher; the live stream goes on.
    let mut refused = publish_looped(&n1.rtmp_url("live/after"));
    let status = tokio::time::timeout(Duration::from_secs(15), refused.wait())
        .await
        .expect("the refused publisher exits")
        .expect("wait");
    assert!(!status.success(), "publishing to a draining node is refused");
    assert!(n1.has_stream("live/before").await, "streams continue until they end");

    // The room's members on both nodes are disconnected and the room moves.
    for socket in [&mut home, &mut away] {
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(Ok(frame)) = socket.next().await {
                if let Message::Close(_) = frame {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "members of the handed-off room are disconnected");
    }
    let mut again = member(&n2.http, "live/d", "bob").await;
    let registry = RedisRegistry::connect(&url, "zenlive:").await.expect("redis");
    let owner = registry
        .lookup(&ActorKey::new(ActorKind::ChatRoom, "live/d"))
        .await
        .expect("lookup")
        .expect("the room has a home");
    assert_eq!(owner.node.as_str(), "n2", "the room moved to n2");
    again
        .send(Message::text(json!({"type": "message", "text": "moved"}).to_string()))
        .await
        .expect("send");
    assert_eq!(next_of(&mut again, "message").await["text"], "moved");
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/chat/live/d", n1.http)).await;
    assert!(refused.is_err(), "a draining node takes no chat members");
}

#[actix_rt::test]
async fn hostile_bytes_on_the_cluster_port_harm_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--node-id", "n1", "--cluster-redis", &url, "--cluster-addr", "127.0.0.1:0"];
    let env = [
        ("ZENLIVE_CLUSTER_SECRET", SECRET),
        ("ZENLIVE_AUTH_JWT_SECRET", SECRET),
        ("ZENLIVE_CLUSTER_LINK_IDLE_TIMEOUT", "2"),
    ];
    let node = ZenliveProcess::start("hostile-n1", "n1", &args, &env).await;
    let mut oversized = vec![0, 0, 0x08, 0];
    oversized.extend(vec![7u8; 2048]);
    let attempts: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0xff; 64],
        // A frame claiming 4 GiB.
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        // A well-framed message that is not a valid encoding.
        &[0, 0, 0, 3, 200, 201, 202],
        // 2 KiB before the handshake: over its 1 KiB limit.
        &oversized,
    ];
    for bytes in attempts {
        let mut socket = tokio::net::TcpStream::connect(&node.cluster).await.expect("connect");
        let _ = socket.write_all(bytes).await;
        let mut sink = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the node closes a link that sent {bytes:?}");
    }
    // A peer that does not know the secret is refused by the handshake.
    let intruder = embedded_node("intruder", &redis.url(), "not-the-cluster-secret").await;
    let cluster = intruder.cluster().expect("cluster mode");
    let call = cluster.new_call("chat", "live/x", None, b"{}".to_vec());
    let refused = cluster.call_node(&zenlive_registry::NodeId::new("n1"), call).await;
    assert!(refused.is_err(), "a link without the secret carries nothing: {refused:?}");
    intruder.shutdown().await;
    assert_eq!(node.node_ids().await, ["n1"], "the node is unharmed");
    let refusals = sample(
        &node.metrics_text().await,
        "zenlive_refusals_total",
        &[("limit", "cluster_handshake")],
    );
    assert!(refusals >= Some(6.0), "every failed handshake counted: {refusals:?}");
    let logged = node.log_text().lines().filter(|l| l.contains("cluster_handshake")).count();
    assert_eq!(logged, 1, "logged once a minute for one address");

    // A peer with the secret that goes quiet is closed after cluster.link_idle_timeout.
    let codec = zenlive::cluster::wire::Bincode;
    let mut link = tokio_util::codec::Framed::new(
        tokio::net::TcpStream::connect(&node.cluster).await.expect("connect"),
        zenlive::cluster::wire::framing(),
    );
    let Some(Ok(challenge)) = link.next().await else { panic!("no challenge") };
    let Ok(LinkMessage::Challenge { nonce, .. }) = codec.decode(&challenge) else {
        panic!("expected a challenge")
    };
    let hello = LinkMessage::Hello {
        version: zenlive::cluster::wire::VERSION,
        node: "quiet".into(),
        proof: zenlive::cluster::wire::proof(SECRET, &nonce, "quiet"),
    };
    link.send(bytes::Bytes::from(codec.encode(&hello).expect("encode"))).await.expect("send hello");
    let welcome = link.next().await.and_then(Result::ok).map(|b| codec.decode(&b));
    assert!(matches!(welcome, Some(Ok(LinkMessage::Welcome { .. }))), "{welcome:?}");
    let ended = tokio::time::timeout(Duration::from_secs(10), link.next()).await;
    assert!(matches!(ended, Ok(None | Some(Err(_)))), "the quiet link is closed: {ended:?}");
}

#[actix_rt::test]
async fn a_new_chat_room_is_placed_on_the_least_loaded_node() {
    let (redis, n1, n2) = two_nodes("place").await;
    let url = redis.url();
    // A stream makes n1 the busier node.
    let _publisher = publish_looped(&n1.rtmp_url("live/busy"));
    wait_for_async("n1's load seen by the cluster", Duration::from_secs(15), || async {
        n1.api("/api/v1/nodes").await.is_some_and(|body| {
            body["nodes"].as_array().is_some_and(|nodes| {
                nodes.iter().any(|n| n["id"] == "n1" && n["load"].as_u64() >= Some(1))
            })
        })
    })
    .await;
    let mut first = member(&n1.http, "live/placed", "ann").await;
    let registry = RedisRegistry::connect(&url, "zenlive:").await.expect("redis");
    let owner = registry
        .lookup(&ActorKey::new(ActorKind::ChatRoom, "live/placed"))
        .await
        .expect("lookup")
        .expect("the room has a home");
    assert_eq!(owner.node.as_str(), "n2", "the room lives on the idle node");
    let mut second = member(&n2.http, "live/placed", "bob").await;
    first
        .send(Message::text(json!({"type": "message", "text": "hi"}).to_string()))
        .await
        .expect("send");
    assert_eq!(next_of(&mut second, "message").await["text"], "hi");
    assert_eq!(next_of(&mut first, "message").await["text"], "hi");
}

#[actix_rt::test]
async fn a_second_process_with_the_same_node_id_refuses_to_start() {
    let redis = RedisServer::start();
    let url = redis.url();
    let first = cluster_node("same-id", "n1", &url).await;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_zenlive"))
        .args(["--node-id", "n1", "--cluster-redis", &url, "--cluster-addr", "127.0.0.1:0"])
        .args(["--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("ZENLIVE_CLUSTER_SECRET", SECRET)
        .env("ZENLIVE_WEBRTC_UDP_ADDR", "127.0.0.1:0")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("gives up within the node TTL")
        .expect("run zenlive");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node id n1 is in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(first.node_ids().await, ["n1"], "the first node carries on");
    assert!(!first.log_text().contains("declared this node dead"), "and was never disturbed");
}

/// A hand-written WHIP offer: enough for the node to reach the name claim, never connected.
const WHIP_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:102 H264/90000\r\n";

/// WebRTC on any node: a WHEP viewer on one node plays a stream published on the other
/// (through the relay, on its own node's UDP port); a WHIP publisher claims its name in the
/// whole cluster, and its stream plays from the other node.
#[actix_rt::test]
async fn webrtc_publishers_and_viewers_work_on_any_node() {
    let (_redis, n1, n2) = two_nodes("webrtc").await;
    wait_for_async("two nodes in /api/v1/nodes", Duration::from_secs(10), || async {
        n2.node_ids().await == ["n1", "n2"]
    })
    .await;

    // RTMP in on n1, WHEP out on n2, the AAC transcoded to Opus on n2 (its relayed copy).
    let _publisher = publish_live(&n1, "live/rtc").await;
    let whep = format!("http://{}/whep/live/rtc", n2.http);
    let (_player, mut lines) =
        webrtc::aiortc("whep_play.py", &whep, &["--frames", "60", "--audio"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "CONNECTED").await;
    assert_eq!(line_starting(&mut lines, "FIRST").await, "320x240");
    let audio: u64 = line_starting(&mut lines, "AUDIO").await.parse().expect("a count");
    assert!(audio > 0, "no Opus decoded on the edge");
    let level: u64 = line_starting(&mut lines, "LEVEL").await.parse().expect("a peak");
    assert!(level >= 1000, "the tone's peak on the edge is {level}: silence?");
    let report = line_starting(&mut lines, "FRAMES").await;
    let (frames, errors) = webrtc::frames_and_errors(&report);
    assert!(frames >= 60, "only {frames} frames decoded on the edge");
    assert_eq!(errors, 0, "decoder errors on the edge");

    // A WHIP publisher of the name live on the other node is told it is taken.
    let client = reqwest::Client::new();
    let second = client
        .post(format!("http://{}/whip/live/rtc", n2.http))
        .header("Content-Type", "application/sdp")
        .body(WHIP_OFFER)
        .send()
        .await
        .expect("request");
    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.expect("a JSON refusal");
    assert_eq!(body["error"]["code"], "publish_refused", "{body}");

    // WHIP in on n2 (H.264 + Opus), RTMP out on n1 as H.264 + AAC.
    let whip = format!("http://{}/whip/live/cam", n2.http);
    let (_camera, mut published) =
        webrtc::aiortc("whip_publish.py", &whip, &["--audio", "--seconds", "60"]);
    assert_eq!(line_starting(&mut published, "STATUS").await, "201");
    line_starting(&mut published, "CONNECTED").await;
    wait_for_async("live/cam on n2", Duration::from_secs(15), || n2.has_stream("live/cam")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cam.flv");
    let out = record(&n1.rtmp_url("live/cam"), 4, &file).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_plays(&file, 3.0, "a WHIP stream of n2 over RTMP on n1").await;
}

/// A WHEP viewer's keyframe request on an edge (its PLI, which the viewer's session turns
/// into a `RequestKeyframe` to the relayed copy) travels to the origin, whose WHIP session
/// asks the publisher's encoder with a PLI.
#[actix_rt::test]
async fn an_edge_passes_keyframe_requests_on_to_the_origin() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (origin, edge) = tokio::join!(
        embedded_node("kf-origin", &url, SECRET),
        embedded_node("kf-edge", &url, SECRET),
    );
    let whip = http_url(&origin, "/whip/live/kf");
    let (_camera, mut published) = webrtc::aiortc("whip_publish.py", &whip, &["--seconds", "60"]);
    assert_eq!(line_starting(&mut published, "STATUS").await, "201");
    line_starting(&mut published, "CONNECTED").await;
    wait_live(&origin, "kf").await;
    let whep = http_url(&edge, "/whep/live/kf");
    let (_player, mut lines) =
        webrtc::aiortc("whep_play.py", &whep, &["--frames", "100000", "--seconds", "60"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "FIRST").await;
    let key = zenlive::StreamKey::new("live", "kf").expect("name");
    let copy = edge.stream(&key).expect("the relayed copy on the edge");

    let count = |node: &zenlive::Node, name: &str, labels: &[(&str, &str)]| {
        sample(&node.metrics_text(), name, labels).unwrap_or(0.0)
    };
    let plis = |node: &zenlive::Node| {
        count(node, "zenlive_webrtc_keyframe_requests_total", &[("protocol", "whip")])
    };
    let calls = |node: &zenlive::Node| count(node, "zenlive_registry_calls_received_total", &[]);
    let (plis_before, calls_before) = (plis(&origin), calls(&origin));
    // Asked again until it arrives: the relay passes on one request per 500 ms, and the
    // WHIP session sends one PLI per 500 ms.
    wait_for_async("the origin to ask its publisher", Duration::from_secs(20), || async {
        copy.actor().send(RequestKeyframe).await.expect("the copy takes it");
        calls(&origin) > calls_before && plis(&origin) > plis_before
    })
    .await;
    edge.shutdown().await;
    origin.shutdown().await;
}

/// Chromium publishes AV1 over WHIP on one node (a tab of `tests/webrtc/whip_publish.html`);
/// the watch page on the other node plays it over WHEP (through the relay, which carries
/// AV1 as Enhanced RTMP does, with its `av1C` record).
#[actix_rt::test]
async fn an_av1_whip_stream_plays_over_whep_on_another_node() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (origin, edge) = tokio::join!(
        embedded_node("av1-origin", &url, SECRET),
        embedded_node("av1-edge", &url, SECRET),
    );
    let mut browser = common::cdp::Browser::start().await;
    let page =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webrtc/whip_publish.html");
    let whip = http_url(&origin, "/whip/live/av1");
    let publisher =
        browser.open(&format!("file://{}?codec=av1#{whip}", page.display()), 640, 480).await;
    let key = zenlive::StreamKey::new("live", "av1").expect("name");
    wait_for("chromium's AV1 stream on the origin", Duration::from_secs(60), || {
        origin.stream(&key).and_then(|s| s.stats().media.video).is_some_and(|v| v.codec == "av1")
    })
    .await;
    let watch = browser.open(&http_url(&edge, "/watch/live/av1"), 1280, 800).await;
    let what = "the edge's watch page to play the origin's AV1 over WebRTC";
    browser.wait_playing_whep(&watch, what).await;
    let copy = edge.stream(&key).expect("the relayed copy on the edge");
    assert_eq!(copy.stats().media.video.map(|v| v.codec), Some("av1"));
    drop((publisher, browser));
    edge.shutdown().await;
    origin.shutdown().await;
}
