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
        let kinds: Vec<&str> = info["streams"]
            .as_array()
            .expect("streams array")
            .iter()
            .filter_map(|s| s["codec_type"].as_str())
            .collect();
        assert_eq!(kinds.len(), 2, "{label}: streams {kinds:?}");
        assert!(kinds.contains(&"video") && kinds.contains(&"audio"), "{label}: {kinds:?}");
    }

    let _ = publisher.kill().await;
    node.shutdown().await;
}

#[actix_rt::test]
async fn rtmp_flv_and_hls_play_a_stream_without_bframes() {
    all_outputs_play(false).await;
}

#[actix_rt::test]
async fn rtmp_flv_and_hls_play_a_stream_with_bframes() {
    all_outputs_play(true).await;
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
