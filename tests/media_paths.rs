//! FFmpeg publishes over RTMP; FFmpeg reads the stream back over RTMP play, HTTP-FLV and
//! HLS; ffprobe judges codecs, resolution, duration, clean decoding and A/V sync.

mod common;

use common::*;

async fn all_outputs_play(bframes: bool) {
    let node = start_node(test_config()).await;
    let name = if bframes { "bframes" } else { "plain" };
    let mut publisher = publish(&fixture(bframes), &rtmp_url(&node, name));
    wait_live(&node, name).await;
    // Let HLS complete a few one-second segments.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let (rtmp_out, flv_out, hls_out) =
        (dir.path().join("rtmp.flv"), dir.path().join("http.flv"), dir.path().join("hls.ts"));
    let rtmp_in = rtmp_url(&node, name);
    let flv_in = http_url(&node, &format!("/live/{name}.flv"));
    let hls_in = http_url(&node, &format!("/live/{name}/index.m3u8"));
    let (a, b, c) = tokio::join!(
        record(&rtmp_in, 4, &rtmp_out),
        record(&flv_in, 4, &flv_out),
        record(&hls_in, 4, &hls_out)
    );
    for (label, out) in [("rtmp", &a), ("http-flv", &b), ("hls", &c)] {
        assert!(
            out.status.success(),
            "{label} reader failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_good_recording(&rtmp_out, 4.0, "rtmp").await;
    assert_good_recording(&flv_out, 4.0, "http-flv").await;
    assert_good_recording(&hls_out, 4.0, "hls").await;
    // A player sees the stream's two tracks and nothing else (no subtitle or data stream
    // made of the messages that start a play).
    for (label, url) in [("rtmp", &rtmp_in), ("http-flv", &flv_in)] {
        let info = probe(url).await;
        let kinds = track_kinds(&info);
        assert_eq!(kinds.len(), 2, "{label}: streams {kinds:?}");
        assert!(kinds.contains(&"video") && kinds.contains(&"audio"), "{label}: {kinds:?}");
    }

    let _ = publisher.kill().await;
    node.shutdown().await;
}

/// The kinds of the streams (`video`, `audio`, ...) in ffprobe's description `info`.
fn track_kinds(info: &serde_json::Value) -> Vec<&str> {
    let streams = info["streams"].as_array().expect("streams array");
    streams.iter().filter_map(|s| s["codec_type"].as_str()).collect()
}

#[actix_rt::test]
async fn rtmp_flv_and_hls_play_a_stream_without_bframes() {
    all_outputs_play(false).await;
}

#[actix_rt::test]
async fn rtmp_flv_and_hls_play_a_stream_with_bframes() {
    all_outputs_play(true).await;
}

/// An HTTP-FLV player is promised only the tracks a stream has: FFmpeg waits forever for
/// an audio track its FLV header announced.
#[actix_rt::test]
async fn a_video_only_stream_plays_over_http_flv() {
    require("ffmpeg");
    let node = start_node(test_config()).await;
    let url = rtmp_url(&node, "silent");
    let mut publisher = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(fixture(false))
        .args(["-an", "-c", "copy", "-f", "flv", &url])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg publisher");
    wait_live(&node, "silent").await;
    let key = zenlive::StreamKey::new("live", "silent").expect("valid name");
    wait_for("the video track to be declared", std::time::Duration::from_secs(15), || {
        node.stream(&key).is_some_and(|stream| stream.stats().media.video.is_some())
    })
    .await;
    let info = probe(http_url(&node, "/live/silent.flv")).await;
    assert_eq!(track_kinds(&info), ["video"], "only the video track is announced and found");
    let _ = publisher.kill().await;
    node.shutdown().await;
}

#[actix_rt::test]
async fn unsupported_codecs_are_refused_with_an_rtmp_error() {
    require("ffmpeg");
    let node = start_node(test_config()).await;
    let url = rtmp_url(&node, "sorenson");
    // Sorenson H.263 (FLV codec id 2) with AAC: HLS cannot carry it.
    let out = tokio::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-t",
            "5",
        ])
        .args(["-c:v", "flv", "-f", "flv", &url])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), out)
        .await
        .expect("ffmpeg ends")
        .expect("run");
    assert!(!out.status.success(), "the publisher is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only H.264 is accepted"),
        "FFmpeg shows the server's reason: {stderr}"
    );
    let key = zenlive::StreamKey::new("live", "sorenson").expect("key");
    wait_for("the refused stream to end", std::time::Duration::from_secs(10), || {
        node.stream(&key).is_none()
    })
    .await;
    node.shutdown().await;
}
