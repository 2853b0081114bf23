//! Typed references by name (`zenlive::refs`) end to end: `zenlive` processes on 127.0.0.1
//! sharing one real `redis-server`, FFmpeg publishing and playing, and an embedded node for
//! the SDK's side. A kick from a node that neither publishes nor relays the stream ends the
//! origin's publisher and the edge's viewers (the edge-kick bug); messages to a paused
//! owner are applied by at most one owner; hostile envelopes on the cluster port are refused
//! and counted.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::process::Child;
use zenlive::auth::Role;
use zenlive::cluster::wire::{
    self, encode_payload, Bincode, Call, Codec, Envelope, Message, RemoteError,
};
use zenlive::refs::RefError;
use zenlive_actors::chat::SystemMessage;
use zenlive_actors::stream::{GetStats, Kick};
use zenlive_actors::{Protocol, StreamKey};
use zenlive_registry::testsuite::RedisServer;
use zenlive_registry::{ActorKey, ActorKind, RedisRegistry, Registry};

const SECRET: &str = "refs-test-secret-refs-test-secret-refs";

async fn cluster_node(test: &str, id: &str, redis_url: &str) -> ZenliveProcess {
    let args = ["--node-id", id, "--cluster-redis", redis_url, "--cluster-addr", "127.0.0.1:0"];
    let env = [("ZENLIVE_CLUSTER_SECRET", SECRET), ("ZENLIVE_AUTH_JWT_SECRET", SECRET)];
    ZenliveProcess::start(&format!("refs-{test}-{id}"), id, &args, &env).await
}

/// A node embedded in this process (the application's), joined to the cluster.
async fn embedded_node(id: &str, redis_url: &str) -> zenlive::Node {
    let mut config = test_config();
    config.node.id = id.to_owned();
    config.cluster.enabled = true;
    config.cluster.redis_url = redis_url.to_owned();
    config.cluster.addr = any_port();
    config.cluster.secret = SECRET.to_owned();
    start_node(config).await
}

/// Publishes `stream` to `node` in a loop and waits until the node has it live.
async fn publish_live(node: &ZenliveProcess, stream: &str) -> Child {
    let publisher = publish_looped(&node.rtmp_url(stream));
    let what = format!("{stream} on {}", node.id);
    wait_for_async(&what, Duration::from_secs(15), || node.has_stream(stream)).await;
    publisher
}

/// Publishes to `url`, again every second until a publisher stays connected.
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

/// An FFmpeg HTTP-FLV player of `stream` on `node` (reading for at most 60 s), once the
/// node counts it as a viewer.
async fn play_on(node: &ZenliveProcess, stream: &str, dir: &std::path::Path) -> Child {
    let out = dir.join(format!("{}-{}.flv", node.id, stream.replace('/', "-")));
    let url = format!("http://{}/{stream}.flv", node.http);
    let player = tokio::process::Command::new("ffmpeg")
        .args(["-y", "-v", "error", "-rw_timeout", "10000000", "-i", &url])
        .args(["-t", "60", "-c", "copy"])
        .arg(out)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg player");
    wait_for_async("the player counted on the edge", Duration::from_secs(15), || async {
        let text = node.metrics_text().await;
        sample(&text, "zenlive_stream_viewers", &[("stream", stream), ("protocol", "http-flv")])
            == Some(1.0)
    })
    .await;
    player
}

/// Waits (at most 30 s: CI's machine may be loaded) for `child` to exit.
async fn exits(child: &mut Child, what: &str) {
    let waited = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    assert!(waited.is_ok(), "{what} did not end in time");
}

/// Whether every thread of process `pid` is stopped (state `T` in `/proc/pid/task/*/stat`).
fn all_threads_stopped(pid: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.filter_map(Result::ok).all(|task| {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
    })
}

fn key(name: &str) -> StreamKey {
    StreamKey::parse(name).expect("stream key")
}

#[actix_rt::test]
async fn a_kick_from_any_node_ends_the_origins_publisher_and_the_edges_viewers() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (n1, n2) = tokio::join!(cluster_node("kick", "n1", &url), cluster_node("kick", "n2", &url));
    let n3 = embedded_node("n3", &url).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // From n3, which neither publishes nor relays live/k, through the SDK.
    let mut publisher = publish_live(&n1, "live/k").await;
    let mut player = play_on(&n2, "live/k", dir.path()).await;
    let stream = n3.stream_ref(&key("live/k"));
    assert!(!stream.is_local(), "n3 does not run live/k");
    let stats = stream.send(GetStats).await.expect("the owner's statistics");
    assert_eq!(stats.publisher_protocol, Protocol::Rtmp, "n1's stream, not a relayed copy");
    let kicked = stream.send(Kick { reason: "kicked from n3".into() }).await;
    assert_eq!(kicked, Ok(true), "n1's publisher was attached");
    exits(&mut publisher, "the publisher on n1").await;
    exits(&mut player, "the viewer on n2").await;
    assert!(n1.log_text().contains("kicked from n3"), "n1 applied the kick");
    wait_for_async("live/k gone from n2", Duration::from_secs(10), || async {
        !n2.has_stream("live/k").await
    })
    .await;
    assert_eq!(stream.send(GetStats).await.err(), Some(RefError::NotFound), "no owner now");

    // Through the admin API of n2, the edge: the origin's publisher ends, not n2's copy alone.
    let mut publisher = publish_live(&n1, "live/e").await;
    let mut player = play_on(&n2, "live/e", dir.path()).await;
    let details = n2.api("/api/v1/streams/live/e").await.expect("details from n2");
    assert_eq!(details["stats"]["publisher_protocol"], "rtmp", "the owner's details: {details}");
    let token = mint_token(SECRET, "ops", None, &[Role::Admin]);
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/streams/live/e/kick", n2.http))
        .bearer_auth(token)
        .send()
        .await
        .expect("kick request");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["kicked"], true, "{body}");
    exits(&mut publisher, "the publisher on n1").await;
    exits(&mut player, "the viewer on n2").await;
    assert!(n1.log_text().contains("kicked by an admin"), "n1 applied the kick");

    // A chat room opened on n1 (by a member there) gets a system message from n3 through
    // its ref; a room open nowhere is not started by asking.
    let token = mint_token(SECRET, "ann", Some("ann"), &[Role::Viewer]);
    let url = format!("ws://{}/chat/live/r?token={token}", n1.http);
    let (mut member, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket");
    let room = n3.room_ref("live/r");
    wait_for_async("the room's home answers n3", Duration::from_secs(10), || async {
        room.send(SystemMessage { text: "from n3".into() }).await.is_ok()
    })
    .await;
    let system = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(frame)) = member.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
                let event: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                if event["type"] == "system" {
                    return event;
                }
            }
        }
        panic!("the member's socket closed");
    })
    .await
    .expect("the system message reached the member");
    assert_eq!(system["text"], "from n3");
    assert_eq!(
        n3.room_ref("live/nowhere").send(SystemMessage { text: "hello".into() }).await,
        Err(RefError::NotFound)
    );
    n3.shutdown().await;
}

#[actix_rt::test]
async fn a_message_sent_while_the_owner_is_paused_is_applied_by_one_owner_at_most() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (n1, n2) =
        tokio::join!(cluster_node("pause", "n1", &url), cluster_node("pause", "n2", &url));
    let n3 = embedded_node("n3", &url).await;
    let _first = publish_live(&n1, "live/p").await;
    let stream = n3.stream_ref(&key("live/p"));
    stream.send(GetStats).await.expect("n1 answers while it runs");

    n1.signal("-STOP");
    // `kill` returns once the signal is queued; each thread stops at its next return to user
    // space. Wait until every thread of n1 is stopped.
    wait_for_async("n1 stopped", Duration::from_secs(5), || async {
        all_threads_stopped(&n1.pid())
    })
    .await;
    // To the paused owner: no answer, and the caller is told it may or may not be applied.
    let paused = stream.send(Kick { reason: "sent to the paused owner".into() }).await;
    assert!(
        matches!(&paused, Err(RefError::Timeout { node }) if node.as_str() == "n1"),
        "{paused:?}"
    );
    // n1's registration expires (node TTL 6 s), so n2 can claim the name.
    let mut second = publish_when_accepted(&n2.rtmp_url("live/p"), Duration::from_secs(30)).await;
    let registry = RedisRegistry::connect(&url, "zenlive:").await.expect("redis");
    let live_p = ActorKey::new(ActorKind::Stream, "live/p");
    wait_for_async("n2 owns live/p", Duration::from_secs(10), || async {
        registry.lookup(&live_p).await.ok().flatten().is_some_and(|o| o.node.as_str() == "n2")
    })
    .await;
    // Still paused: a message now reaches the new owner, exactly once.
    let moved = stream.send(Kick { reason: "sent to the new owner".into() }).await;
    assert_eq!(moved, Ok(true), "n2 applied it");
    exits(&mut second, "the publisher on n2").await;

    n1.signal("-CONT");
    // n1 reads what was queued for it while stopped and refuses it: it can no longer prove
    // its lease (self-fencing), whatever its lease keeper has noticed yet.
    wait_for_async("n1 refuses the queued kick", Duration::from_secs(15), || async {
        let text = n1.metrics_text().await;
        sample(&text, "zenlive_registry_calls_refused_total", &[("reason", "not_owner")])
            >= Some(1.0)
    })
    .await;
    // (The name is free again since n2's publisher was kicked, so n1, whose first publisher
    // is still connected, may claim it again under a new epoch: that is the registry's rule
    // for a lapsed lease on a free name. The paused message still must not apply.)
    let (log1, log2) = (n1.log_text(), n2.log_text());
    assert!(!log1.contains("sent to the paused owner"), "the old owner never applied it");
    assert!(!log2.contains("sent to the paused owner"), "nor the new one");
    assert!(!log1.contains("sent to the new owner"), "the old owner never saw the second");
    assert!(log2.contains("sent to the new owner"), "the new owner applied the second");
    n3.shutdown().await;
}

#[actix_rt::test]
async fn hostile_envelopes_are_refused_and_counted() {
    let redis = RedisServer::start();
    let url = redis.url();
    let n1 = cluster_node("hostile", "n1", &url).await;
    let _publisher = publish_live(&n1, "live/h").await;
    let registry = RedisRegistry::connect(&url, "zenlive:").await.expect("redis");
    let owner = registry
        .lookup(&ActorKey::new(ActorKind::Stream, "live/h"))
        .await
        .expect("lookup")
        .expect("n1 owns live/h");
    let kick = |reason: &str| Envelope {
        message: "stream.kick".into(),
        payload: encode_payload(&Kick { reason: reason.into() }).expect("payload"),
    };
    let envelope = |e: &Envelope| encode_payload(e).expect("envelope");
    let call = |kind: &str, epoch: Option<u64>, body: Vec<u8>, correlation: u64| Call {
        kind: kind.into(),
        name: "live/h".into(),
        from: "prober".into(),
        epoch,
        seq: correlation,
        correlation,
        body,
    };
    let unknown = Envelope { message: "stream.explode".into(), payload: vec![] };
    let bad_body = Envelope { message: "stream.kick".into(), payload: vec![0xff; 9] };
    let cases: Vec<(Call, RemoteError)> = vec![
        (
            call("ref.stream", Some(owner.epoch + 7), envelope(&kick("stale")), 1),
            RemoteError::NotOwner,
        ),
        (call("ref.stream", None, envelope(&kick("no epoch")), 2), RemoteError::NotOwner),
        (call("ref.nope", Some(owner.epoch), envelope(&kick("kind")), 3), RemoteError::NoHandler),
        (call("ref.stream", Some(owner.epoch), envelope(&unknown), 4), RemoteError::UnknownMessage),
        (
            call("ref.stream", Some(owner.epoch), vec![0xfe; 40], 5),
            RemoteError::BadRequest(String::new()),
        ),
        (
            call("ref.stream", Some(owner.epoch), envelope(&bad_body), 6),
            RemoteError::BadRequest(String::new()),
        ),
    ];
    let mut link = handshaken_link(&n1.cluster, SECRET).await;
    for (call, expected) in cases {
        let correlation = call.correlation;
        let bytes = Bincode.encode(&Message::Call(call)).expect("encode");
        link.send(Bytes::from(bytes)).await.expect("send call");
        let reply = tokio::time::timeout(Duration::from_secs(5), link.next())
            .await
            .expect("a reply in time")
            .expect("open")
            .expect("frame");
        let Ok(Message::Reply { correlation: answered, result }) = Bincode.decode(&reply) else {
            panic!("expected a reply");
        };
        assert_eq!(answered, correlation);
        match (result, expected) {
            (Err(RemoteError::BadRequest(_)), RemoteError::BadRequest(_)) => {}
            (result, expected) => assert_eq!(result, Err(expected), "case {correlation}"),
        }
    }
    assert!(n1.has_stream("live/h").await, "no hostile envelope kicked the stream");
    assert!(!n1.log_text().contains("publisher kicked"), "nothing was applied");

    // A 100 MB length prefix closes that link only.
    let mut raw = link.into_inner();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(&(100u32 * 1024 * 1024).to_be_bytes()).await.expect("write prefix");
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the node closes the link");

    let text = n1.metrics_text().await;
    for (reason, at_least) in [
        ("not_owner", 2.0),
        ("unknown_kind", 1.0),
        ("unknown_message", 1.0),
        ("bad_envelope", 1.0),
        ("bad_body", 1.0),
        ("bad_frame", 1.0),
    ] {
        let counted = sample(&text, "zenlive_registry_calls_refused_total", &[("reason", reason)]);
        assert!(counted >= Some(at_least), "{reason}: {counted:?}\n{text}");
    }

    // Nothing else is harmed: a well-formed kick with the right epoch still works.
    let mut link = handshaken_link(&n1.cluster, SECRET).await;
    let good = call("ref.stream", Some(owner.epoch), envelope(&kick("well formed")), 9);
    link.send(Bytes::from(Bincode.encode(&Message::Call(good)).expect("encode")))
        .await
        .expect("send");
    let reply = link.next().await.expect("open").expect("frame");
    let Ok(Message::Reply { result: Ok(body), .. }) = Bincode.decode(&reply) else {
        panic!("expected an answer");
    };
    assert_eq!(wire::decode_payload::<bool>(&body), Ok(true));
    assert_eq!(n1.node_ids().await, ["n1"], "the node is unharmed");
}
