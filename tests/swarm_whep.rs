//! The load-test swarm's WHEP players (`zenlive-swarm whep`, loadtest/src/whep.rs) against a
//! node on loopback with an FFmpeg RTMP publisher: every player connects (ICE, DTLS, SRTP
//! with the node's ICE-lite WHEP server), receives video from a keyframe, and says so in
//! the JSON summary; the node measures each frame's send delay. Bounded in time; the real
//! load figures live in BENCHMARKS.md.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[actix_rt::test]
async fn swarm_whep_players_receive_video_from_a_keyframe() {
    let node = start_node(test_config()).await;
    let _publisher = publish_looped(&rtmp_url(&node, "swarm"));
    wait_live(&node, "swarm").await;
    let run = tokio::process::Command::new(swarm_binary())
        .args(["whep", "--url", &http_url(&node, "/whep/live/swarm")])
        .args(["--count", "3", "--duration", "3"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the swarm ends after its duration")
        .expect("run zenlive-swarm");
    assert!(out.status.success(), "zenlive-swarm failed");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary}");
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
