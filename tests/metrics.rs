//! Metrics end to end: FFmpeg publishes a 30 fps, 2.5 Mbit/s stream and two FFmpeg players
//! watch; `/metrics` must report what the media really is, pass `promtool check metrics`,
//! carry every metric the Grafana dashboard queries, and forget the stream once it ends.
//! Health, readiness and the stream statistics API ride along.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use zenlive::Node;

/// FFmpeg reading `url` and decoding nothing (killed on drop).
fn player(url: &str) -> Child {
    require("ffmpeg");
    Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "10000000",
            "-i",
            url,
            "-c",
            "copy",
            "-f",
            "null",
            "-",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg player")
}

fn metrics_url(node: &Node, path: &str) -> String {
    format!("http://{}{path}", node.metrics_addr().expect("metrics enabled"))
}

/// Media bits per second of an FLV file, from ffprobe's packet sizes.
async fn real_bitrate(file: &Path) -> f64 {
    require("ffprobe");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "packet=size", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .await
        .expect("run ffprobe");
    let bytes: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum();
    let info = probe(file).await;
    let duration: f64 =
        info["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("duration");
    bytes as f64 * 8.0 / duration
}

/// Every metric name a dashboard expression mentions.
fn dashboard_metrics(dashboard: &Value, names: &mut BTreeSet<String>) {
    match dashboard {
        Value::Object(map) => {
            for (key, value) in map {
                if let (true, Some(expr)) = (key == "expr", value.as_str()) {
                    for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                        if word.starts_with("zenlive_") || word.starts_with("process_") {
                            names.insert(word.to_owned());
                        }
                    }
                }
                dashboard_metrics(value, names);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_metrics(v, names)),
        _ => {}
    }
}

#[actix_rt::test]
async fn metrics_follow_the_media_and_vanish_with_the_stream() {
    let fixture = fixture_cbr();
    let real = real_bitrate(&fixture).await;
    let mut config = test_config();
    config.metrics.max_stream_series = 1;
    let node = start_node(config).await;
    let client = reqwest::Client::new();
    let mut publisher = publish(&fixture, &rtmp_url(&node, "m"));
    wait_live(&node, "m").await;
    // A second stream without viewers: over the series cap, so only counted as omitted.
    let mut unwatched = publish(&common::fixture(false), &rtmp_url(&node, "unwatched"));
    wait_live(&node, "unwatched").await;
    let _rtmp = player(&rtmp_url(&node, "m"));
    let _flv = player(&http_url(&node, "/live/m.flv"));

    // Wait (bounded) until both players are counted and 8 s of media filled the 5 s window.
    let stream = ("stream", "live/m");
    let mut text = String::new();
    for _ in 0..150 {
        text = client
            .get(metrics_url(&node, "/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text");
        let viewers =
            |protocol| sample(&text, "zenlive_stream_viewers", &[stream, ("protocol", protocol)]);
        let uptime = sample(&text, "zenlive_stream_uptime_seconds", &[stream]);
        if viewers("rtmp") == Some(1.0)
            && viewers("http-flv") == Some(1.0)
            && uptime.unwrap_or(0.0) > 8.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let get =
        |name: &str| sample(&text, name, &[stream]).unwrap_or_else(|| panic!("{name} in:\n{text}"));
    assert_eq!(get("zenlive_stream_viewers"), 2.0, "two viewers:\n{text}");
    let fps = get("zenlive_stream_frames_per_second");
    assert!((fps - 30.0).abs() <= 1.0, "fps {fps}");
    let bitrate = get("zenlive_stream_ingest_bytes_per_second") * 8.0;
    assert!((bitrate - real).abs() / real <= 0.15, "bitrate {bitrate} vs real {real}");
    let keyframes = get("zenlive_stream_keyframe_interval_seconds");
    assert!((keyframes - 2.0).abs() < 0.1, "keyframe interval {keyframes}");
    let info = text.lines().find(|l| l.starts_with("zenlive_stream_info{")).expect("info");
    for label in
        [r#"width="640""#, r#"height="360""#, r#"video_codec="h264""#, r#"audio_codec="aac""#]
    {
        assert!(info.contains(label), "{label} in {info}");
    }
    assert!(get("zenlive_stream_received_bytes_total") > 0.0);
    let rtmp_connections = sample(&text, "zenlive_connections", &[("protocol", "rtmp")]);
    assert!(rtmp_connections.unwrap_or(0.0) >= 2.0, "publisher and player: {rtmp_connections:?}");
    assert_eq!(sample(&text, "zenlive_streams", &[]), Some(2.0));
    assert_eq!(sample(&text, "zenlive_metrics_streams_omitted", &[]), Some(1.0));
    assert!(!text.contains(r#"stream="live/unwatched""#), "the unwatched stream is omitted");

    // The same numbers from the API and the SDK.
    let api: Value = client
        .get(metrics_url(&node, "/api/v1/streams/live/m"))
        .send()
        .await
        .expect("GET stream stats")
        .json()
        .await
        .expect("JSON");
    let api_fps = api["stats"]["rates"]["fps"].as_f64().expect("fps");
    assert!((api_fps - 30.0).abs() <= 1.0, "{api}");
    assert_eq!(api["stats"]["media"]["video"]["width"], 640, "{api}");
    let key = zenlive::StreamKey::new("live", "m").expect("key");
    let sdk = node.stream(&key).expect("live").stats();
    assert_eq!(sdk.media.video.as_ref().map(|v| v.height), Some(360));

    // An HLS playlist and segment, so the request histograms have samples.
    let mut playlist = String::new();
    for _ in 0..100 {
        let resp = client.get(http_url(&node, "/live/m/index.m3u8")).send().await.expect("GET");
        if resp.status() == 200 {
            playlist = resp.text().await.expect("playlist");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let segment = playlist.lines().find(|l| l.ends_with(".ts")).expect("a segment");
    let resp = client.get(http_url(&node, &format!("/live/m/{segment}"))).send().await;
    assert_eq!(resp.expect("GET segment").status(), 200);
    let text = node.metrics_text();
    let hls_bytes =
        sample(&text, "zenlive_stream_sent_bytes_total", &[stream, ("protocol", "hls")]);
    assert!(hls_bytes.unwrap_or(0.0) > 0.0, "HLS bytes counted");
    let segments = sample(&text, "zenlive_stream_hls_segments_total", &[stream]);
    assert!(segments.unwrap_or(0.0) > 0.0, "HLS segments counted");

    // promtool accepts the exposition.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is required: run scripts/test, which installs it");
    let mut stdin = promtool.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).await.expect("feed promtool");
    drop(stdin);
    let checked = promtool.wait_with_output().await.expect("promtool runs");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Every metric the dashboard queries exists.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/zenlive.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard file"))
            .expect("the dashboard is valid JSON");
    let mut names = BTreeSet::new();
    dashboard_metrics(&dashboard, &mut names);
    assert!(names.len() >= 10, "the dashboard queries metrics: {names:?}");
    for name in &names {
        let present = text.lines().any(|l| {
            l.strip_prefix(name.as_str()).is_some_and(|rest| rest.starts_with(['{', ' ']))
        });
        assert!(present, "the dashboard queries {name}, which /metrics does not export");
    }

    // The scrape configuration example is valid too.
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus.yml");
    let checked = Command::new("promtool").arg("check").arg("config").arg(&config).output().await;
    let checked = checked.expect("promtool runs");
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));

    // The streams end: their series go with them.
    let _ = unwatched.kill().await;
    let _ = publisher.kill().await;
    wait_for("the streams to end", Duration::from_secs(20), || node.streams().is_empty()).await;
    let text = node.metrics_text();
    assert!(!text.contains(r#"stream="live/m""#), "series left behind:\n{text}");
    assert_eq!(sample(&text, "zenlive_streams", &[]), Some(0.0));
    node.shutdown().await;
}

#[actix_rt::test]
async fn health_and_readiness_answer_on_both_ports() {
    let node = start_node(test_config()).await;
    let client = reqwest::Client::new();
    for base in [http_url(&node, ""), metrics_url(&node, "")] {
        for path in ["/healthz", "/readyz"] {
            let resp = client.get(format!("{base}{path}")).send().await.expect("GET");
            assert_eq!(resp.status(), 200, "{base}{path}");
            let body: Value = resp.json().await.expect("JSON");
            assert!(body["status"] == "ok" || body["status"] == "ready", "{path}: {body}");
        }
    }
    let resp = client.get(metrics_url(&node, "/api/v1/streams")).send().await.expect("GET");
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["streams"], Value::Array(Vec::new()));
    let resp = client.get(metrics_url(&node, "/api/v1/streams/live/none")).send().await;
    let resp = resp.expect("GET");
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "stream_not_found");
    node.shutdown().await;
}
