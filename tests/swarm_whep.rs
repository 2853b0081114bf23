//! The load-test swarm's WebRTC clients against a node on loopback: WHEP players
//! (`zenlive-swarm whep`, loadtest/src/whep.rs) of an FFmpeg RTMP publisher connect (ICE,
//! DTLS, SRTP with the node's ICE-lite server), receive video from a keyframe and say so in
//! the JSON summary, and the node measures each frame's send delay; a WHIP publisher
//! (`zenlive-swarm whip`) makes a stream those players receive. Bounded in time; the real
//! load figures live in BENCHMARKS.md.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The swarm's path, built on the first call. Make that call before the node starts: the
/// build blocks the thread the in-process node runs on (its registry lease would lapse
/// meanwhile, and a publish be refused).
fn swarm_bin() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(swarm_binary)
}

/// `zenlive-swarm` with `args`, started (killed on drop).
fn swarm(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(swarm_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run zenlive-swarm")
}

/// The JSON summary `child` prints when it ends (bounded: it ends after its duration).
async fn summary(child: tokio::process::Child) -> Value {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the swarm ends after its duration")
        .expect("zenlive-swarm's output");
    assert!(out.status.success(), "zenlive-swarm failed");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary}");
    summary
}

#[actix_rt::test]
async fn swarm_whep_players_receive_video_from_a_keyframe() {
    swarm_bin();
    let node = start_node(test_config()).await;
    let _publisher = publish_looped(&rtmp_url(&node, "swarm"));
    wait_live(&node, "swarm").await;
    let url = http_url(&node, "/whep/live/swarm");
    let summary = summary(swarm(&["whep", "--url", &url, "--count", "3", "--duration", "3"])).await;
    assert_eq!(summary["connected"], 3, "{summary}");
    assert_eq!(summary["players_with_video"], 3, "{summary}");
    assert!(summary["frames"].as_u64() > Some(3), "{summary}");
    // Each player started on a keyframe and counted it.
    assert!(summary["keyframes"].as_u64() >= Some(3), "{summary}");
    assert!(summary["join_ms"]["p99"].as_f64() > Some(0.0), "{summary}");
    assert!(summary["packets"].as_u64() > summary["frames"].as_u64(), "{summary}");

    let text = node.metrics_text();
    let labels = [("protocol", "whep")];
    let delays = sample(&text, "zenlive_webrtc_frame_send_delay_seconds_count", &labels);
    assert!(delays.is_some_and(|n| n >= summary["frames"].as_f64().unwrap_or(0.0)), "{delays:?}");
}

#[actix_rt::test]
async fn a_swarm_whip_publisher_makes_a_stream_whep_players_receive() {
    swarm_bin();
    let node = start_node(test_config()).await;
    let fixture = fixture(false);
    let whip = http_url(&node, "/whip/live/viawhip");
    let file = fixture.to_str().expect("a UTF-8 path");
    let publisher = swarm(&["whip", "--url", &whip, "--file", file, "--duration", "8"]);
    wait_live(&node, "viawhip").await;
    let whep = http_url(&node, "/whep/live/viawhip");
    let players =
        summary(swarm(&["whep", "--url", &whep, "--count", "2", "--duration", "3"])).await;
    assert_eq!(players["players_with_video"], 2, "{players}");
    assert!(players["keyframes"].as_u64() >= Some(2), "{players}");
    let published = summary(publisher).await;
    assert_eq!(published["completed"], 1, "{published}");
    assert!(published["bytes"].as_u64() > Some(0), "{published}");
}
