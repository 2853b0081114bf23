//! Choosing what is recorded, end to end with FFmpeg publishing to embedded nodes: with
//! `recording.auto = false` nothing is recorded until asked; the publish decider's answer
//! records a stream; the SDK and the admin API start and stop a live stream's recording by
//! name, from the node that owns it or from another node of a cluster (real Redis); the
//! recorder claims `recorder/{app}/{key}` in the registry while it records, and what it
//! wrote plays.

mod common;

use std::path::Path;
use std::time::Duration;

use common::recorded::*;
use common::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use zenlive::auth::Role;
use zenlive::recording::actor::GetRecording;
use zenlive::refs::RefError;
use zenlive::{
    Config, Decision, Node, NodeBuilder, OutputChange, RecordingEvent, StreamKey, StreamOptions,
};
use zenlive_registry::testsuite::RedisServer;
use zenlive_registry::{ActorKey, ActorKind};

const SECRET: &str = "recording-control-secret-recording-control";

/// Recording on, but only on request, into `dir` in 1 s segments; admin tokens signed with
/// [`SECRET`] (publishing needs none).
fn manual_config(dir: &Path) -> Config {
    let mut config = test_config();
    config.recording.enabled = true;
    config.recording.auto = false;
    config.recording.segment_duration = Duration::from_secs(1);
    config.storage.base_path = dir.to_str().expect("utf-8 path").to_owned();
    config.auth.jwt_secret = SECRET.to_owned();
    config
}

/// Starts a node that tells `ends` of every recording's end and records `live/chosen`
/// because its publish decider says so.
async fn start(config: Config, ends: mpsc::UnboundedSender<RecordingEvent>) -> Node {
    NodeBuilder::new(config)
        .on_publish(|request| async move {
            if request.stream.name() == "chosen" {
                Decision::AllowWith(StreamOptions::default().record(true))
            } else {
                Decision::Allow
            }
        })
        .on_recording_end(move |event| {
            let _ = ends.send(event.clone());
        })
        .start()
        .await
        .expect("node starts")
}

fn key(name: &str) -> StreamKey {
    StreamKey::new("live", name).expect("key")
}

fn recorder_name(name: &str) -> ActorKey {
    ActorKey::new(ActorKind::Recorder, format!("live/{name}"))
}

/// Finished segments (no `.part`) recorded of `live/{name}` under `dir`.
fn segments(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    files_under(&dir.join("live").join(name), ".mp4")
}

async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let token = mint_token(SECRET, "ops", None, &[Role::Admin]);
    let mut request = reqwest::Client::new().request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits for the end event of `name`'s recording.
async fn ended(ends: &mut mpsc::UnboundedReceiver<RecordingEvent>, name: &str) -> RecordingEvent {
    let wait = async {
        loop {
            let event = ends.recv().await.expect("the node is running");
            if event.stream().name() == name {
                return event;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait).await.expect("the recording ends")
}

#[actix_rt::test]
async fn a_recording_starts_and_stops_by_name_and_on_the_deciders_word() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ends_tx, mut ends) = mpsc::unbounded_channel();
    let node = start(manual_config(dir.path()), ends_tx).await;
    let _chosen = publish_live(&rtmp_url(&node, "chosen"), 60, false);
    let _manual = publish_live(&rtmp_url(&node, "manual"), 60, false);
    wait_live(&node, "manual").await;

    // The decider's choice records `chosen`; `auto = false` leaves `manual` alone.
    wait_for("a segment of the chosen stream", Duration::from_secs(30), || {
        !segments(dir.path(), "chosen").is_empty()
    })
    .await;
    assert!(files_under(&dir.path().join("live/manual"), "").is_empty(), "manual is not recorded");
    let not_recording = node.recorder_ref(&key("manual")).send(GetRecording).await;
    assert_eq!(not_recording.err(), Some(RefError::NotFound));
    let registry = node.registry();
    assert!(registry.lookup(&recorder_name("manual")).await.expect("lookup").is_none());

    // By name through the SDK.
    assert_eq!(node.set_recording(&key("manual"), true).await, Ok(OutputChange::Started));
    assert_eq!(node.set_recording(&key("manual"), true).await, Ok(OutputChange::AlreadyRunning));
    wait_for("a segment of the manual stream", Duration::from_secs(30), || {
        segments(dir.path(), "manual").len() >= 2
    })
    .await;
    let status = node.recorder_ref(&key("manual")).send(GetRecording).await.expect("status");
    assert_eq!((status.format.as_str(), status.stopping), ("fmp4", false));
    assert!(status.segments >= 1 && status.bytes > 0, "{status:?}");
    assert_eq!(status.node, node.id().to_string());
    let owner = registry.lookup(&recorder_name("manual")).await.expect("lookup");
    assert_eq!(owner.map(|o| o.node), Some(node.id().clone()), "the recorder's name is claimed");

    // And through the admin API (a token with the admin role).
    let url = http_url(&node, "/api/v1/streams/live/manual/recording");
    let (status, body) = call(reqwest::Method::GET, &url, None).await;
    assert_eq!((status, body["recording"].as_bool()), (200, Some(true)), "{body}");
    let (status, body) = call(reqwest::Method::POST, &url, Some(json!({ "record": false }))).await;
    assert_eq!((status, body["change"].as_str()), (200, Some("stopped")), "{body}");
    let RecordingEvent::Ended { reason, segments: count, .. } = ended(&mut ends, "manual").await
    else {
        unreachable!("only end events are sent")
    };
    assert_eq!(reason, "stopped on request");
    assert!(count >= 2, "{count} segments");
    wait_for("the manual stream's segments to be finished", Duration::from_secs(10), || {
        files_under(&dir.path().join("live/manual"), ".part").is_empty()
    })
    .await;
    for segment in segments(dir.path(), "manual") {
        let errors = decode_errors(&segment).await;
        assert!(errors.trim().is_empty(), "{}: decoding printed:\n{errors}", segment.display());
    }
    // The claim is let go, and the stream goes on.
    let mut released = false;
    for _ in 0..100 {
        if registry.lookup(&recorder_name("manual")).await.expect("lookup").is_none() {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(released, "the recorder's name is released once it stopped");
    assert!(node.stream(&key("manual")).is_some(), "the stream is still live");
    let (status, body) = call(reqwest::Method::GET, &url, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_recording")), "{body}");

    // Hostile and pointless requests get clear answers.
    let (status, body) = call(reqwest::Method::POST, &url, Some(json!({ "record": "yes" }))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_body")), "{body}");
    let gone = http_url(&node, "/api/v1/streams/live/nobody/recording");
    let (status, body) = call(reqwest::Method::POST, &gone, Some(json!({ "record": true }))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("stream_not_found")), "{body}");
    assert_eq!(node.set_recording(&key("nobody"), true).await, Err(RefError::NotFound));
}

#[actix_rt::test]
async fn another_node_starts_and_stops_a_recording_where_the_stream_is() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = |id: &str| {
        let mut config = manual_config(dir.path());
        config.node.id = id.to_owned();
        config.cluster.enabled = true;
        config.cluster.redis_url = redis.url();
        config.cluster.addr = any_port();
        config.cluster.secret = SECRET.to_owned();
        config
    };
    let (ends_tx, mut ends) = mpsc::unbounded_channel();
    let origin = start(cluster("n1"), ends_tx.clone()).await;
    let other = start(cluster("n2"), ends_tx).await;
    let _publisher = publish_live(&rtmp_url(&origin, "remote"), 60, false);
    wait_live(&origin, "remote").await;

    assert_eq!(other.set_recording(&key("remote"), true).await, Ok(OutputChange::Started));
    wait_for("a segment recorded at the origin", Duration::from_secs(30), || {
        !segments(dir.path(), "remote").is_empty()
    })
    .await;
    let status = other.recorder_ref(&key("remote")).send(GetRecording).await.expect("status");
    assert_eq!(status.node, "n1", "the stream is recorded where it is published");
    assert!(other.stream(&key("remote")).is_none(), "n2 holds no copy of the stream");

    let url = http_url(&other, "/api/v1/streams/live/remote/recording");
    let (status, body) = call(reqwest::Method::GET, &url, None).await;
    assert_eq!((status, body["node"].as_str()), (200, Some("n1")), "{body}");
    let (status, body) = call(reqwest::Method::POST, &url, Some(json!({ "record": false }))).await;
    assert_eq!((status, body["change"].as_str()), (200, Some("stopped")), "{body}");
    let RecordingEvent::Ended { reason, .. } = ended(&mut ends, "remote").await else {
        unreachable!("only end events are sent")
    };
    assert_eq!(reason, "stopped on request");
    assert!(origin.stream(&key("remote")).is_some(), "the stream is still live at the origin");
}
