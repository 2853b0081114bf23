//! Low-Latency HLS end to end: FFmpeg publishes over RTMP (a keyframe a second); the node
//! serves `/{app}/{key}/ll.m3u8` with 333 ms parts of 2 s fMP4 segments beside the MPEG-TS
//! playlist. FFmpeg reads the LL playlist and decodes it without an error, its video
//! timestamps continuous; a complete segment (spooled) is its parts; a blocking
//! reload for the hinted part is answered once the part exists and lists it; a delta
//! update skips; malformed and too-far requests get 400; hundreds of blocked requests are
//! all answered when the stream ends.

mod common;

use std::time::Duration;

use common::recorded::{publish_live, FRAME};
use common::*;

async fn get(url: &str) -> (u16, String) {
    let response = tokio::time::timeout(Duration::from_secs(30), reqwest::get(url))
        .await
        .expect("answered in time")
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// The (msn, part) of the playlist's preload hint.
fn preload_hint(playlist: &str) -> (u64, u64) {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ll/"))
        .and_then(|h| h.split(".m4s").next())
        .and_then(|h| h.split_once('.'))
        .and_then(|(m, p)| Some((m.parse().ok()?, p.parse().ok()?)))
        .unwrap_or_else(|| panic!("no preload hint in {playlist}"))
}

#[actix_rt::test]
async fn ll_hls_plays_blocks_skips_and_refuses_bad_requests() {
    require("ffmpeg");
    let mut config = test_config();
    config.hls.ll = true;
    // A playlist longer than CAN-SKIP-UNTIL (six 2 s targets), so delta updates skip.
    config.hls.window = 12;
    let node = start_node(config).await;
    let mut publisher = publish_live(&rtmp_url(&node, "cam"), 40, false);
    wait_live(&node, "cam").await;
    let url = http_url(&node, "/live/cam/ll.m3u8");
    // The first parts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let playlist = loop {
        let (status, text) = get(&url).await;
        if status == 200 && text.contains("#EXTINF") {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "no LL-HLS playlist: {status} {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for tag in [
        "#EXT-X-VERSION:9",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.999,CAN-SKIP-UNTIL=12.0",
        "#EXT-X-PART-INF:PART-TARGET=0.333",
        "#EXT-X-MAP:URI=\"ll/init1.mp4\"",
        ",INDEPENDENT=YES",
    ] {
        assert!(playlist.contains(tag), "{tag} missing from {playlist}");
    }

    // A blocking reload for the hinted part: answered once it exists, and it lists it.
    let (msn, part) = preload_hint(&playlist);
    let (status, blocked) = get(&format!("{url}?_HLS_msn={msn}&_HLS_part={part}")).await;
    assert_eq!(status, 200, "{blocked}");
    assert!(blocked.contains(&format!("URI=\"ll/{msn}.{part}.m4s\"")), "{blocked}");
    // The hinted part itself, fetched before it is complete, comes when it is.
    let (next_msn, next_part) = preload_hint(&blocked);
    let part_url = http_url(&node, &format!("/live/cam/ll/{next_msn}.{next_part}.m4s"));
    let response = reqwest::get(&part_url).await.expect("part");
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.expect("part bytes");
    assert_eq!(&bytes[4..8], b"moof", "a part is a moof + mdat");

    // Malformed and too-far requests: 400 at once.
    let last = blocked
        .lines()
        .filter_map(|l| l.strip_prefix("ll/").and_then(|l| l.strip_suffix(".m4s")))
        .filter_map(|l| l.parse::<u64>().ok())
        .max()
        .expect("a segment");
    for query in [
        "_HLS_msn=abc".to_owned(),
        "_HLS_part=1".to_owned(),
        "_HLS_msn=-1".to_owned(),
        "_HLS_msn=99999999999999999999999".to_owned(),
        format!("_HLS_msn={}", last + 10),
    ] {
        let (status, body) = get(&format!("{url}?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains("invalid_ll_hls_request"), "{query}: {body}");
    }
    for name in ["x.m4s", "1.2.3.m4s", "init.mp4", "999999.m4s"] {
        let (status, _) = get(&http_url(&node, &format!("/live/cam/ll/{name}"))).await;
        assert_eq!(status, 404, "{name}");
    }

    // FFmpeg reads the LL playlist as fMP4 HLS: H.264 + AAC, no decode error.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ll.mp4");
    let out = record(&url, 4, &file).await;
    assert!(out.status.success(), "ffmpeg read LL-HLS: {}", String::from_utf8_lossy(&out.stderr));
    let info = probe(&file).await;
    let codecs = common::recorded::codec_names(&info);
    assert!(codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"), "{codecs:?}");
    let errors = decode_errors(&file).await;
    assert!(errors.trim().is_empty(), "decoding LL-HLS printed:\n{errors}");
    let duration: f64 =
        info["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    assert!(duration >= 4.0 - 2.0 * FRAME, "{duration} s read");
    // Continuous: no frame further from the one before than a frame and a half.
    let step = common::recorded::largest_video_step(&file).await;
    assert!(step > 0.0 && step <= 1.5 * FRAME, "a {step} s step between frames read from LL-HLS");

    // A complete segment (in the spool by now, hls.storage = "files") is its parts in order.
    let (_, now) = get(&url).await;
    let complete = now
        .lines()
        .filter_map(|l| l.strip_prefix("ll/").and_then(|l| l.split(".m4s").next()))
        .filter_map(|l| l.parse::<u64>().ok())
        .max()
        .expect("a complete segment");
    let fetch = |name: String| {
        let url = http_url(&node, &format!("/live/cam/ll/{name}"));
        async move {
            let response = reqwest::get(&url).await.expect("media");
            (response.status().as_u16(), response.bytes().await.expect("bytes"))
        }
    };
    let (status, segment) = fetch(format!("{complete}.m4s")).await;
    assert_eq!(status, 200);
    let mut parts = Vec::new();
    for n in 0.. {
        let (status, part) = fetch(format!("{complete}.{n}.m4s")).await;
        if status != 200 {
            break;
        }
        parts.extend_from_slice(&part);
    }
    assert!(segment.len() > 10_000 && &segment[4..8] == b"moof", "{} bytes", segment.len());
    assert!(
        parts == segment,
        "segment {complete}: its parts are {} bytes of {}",
        parts.len(),
        segment.len()
    );
    let metrics = node.metrics_text();
    assert!(metrics.lines().any(|l| l == "zenlive_hls_spool_fallbacks_total 0"), "{metrics}");

    // A delta update once the playlist is longer than CAN-SKIP-UNTIL (12 s).
    wait_for_async("a delta update", Duration::from_secs(40), || {
        let url = format!("{url}?_HLS_skip=YES");
        async move { get(&url).await.1.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=") }
    })
    .await;

    // Hundreds of requests blocked on a segment two ahead; the stream ends; all answered.
    let (_, now) = get(&url).await;
    let (msn, _) = preload_hint(&now);
    let client = reqwest::Client::new();
    let waiting: Vec<_> = (0..300)
        .map(|_| {
            let request = client.get(format!("{url}?_HLS_msn={}", msn + 2)).send();
            tokio::spawn(async move {
                let response = request.await.expect("answered");
                (response.status().as_u16(), response.text().await.unwrap_or_default())
            })
        })
        .collect();
    let _ = publisher.kill().await;
    for task in waiting {
        let (status, body) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("every blocked request answered")
            .expect("task");
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("#EXT-X-ENDLIST") || body.contains(&format!("\nll/{}.m4s", msn + 2)),
            "{body}"
        );
    }
    node.shutdown().await;
}
