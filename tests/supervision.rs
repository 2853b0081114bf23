//! Supervision that really works: a panic inside one stream actor's handler restarts that
//! actor with fresh state under a new registry epoch; its publisher re-attaches, and the
//! node and every other stream carry on.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::recorded::files_under;
use common::*;
use zenlive::StreamKey;
use zenlive_actors::stream::InjectPanic;
use zenlive_registry::{ActorKey, ActorKind};

#[actix_rt::test]
async fn a_panicking_stream_actor_is_restarted_and_others_are_unaffected() {
    let node = start_node(test_config()).await;
    let mut victim_pub = publish(&fixture(false), &rtmp_url(&node, "victim"));
    let mut other_pub = publish(&fixture(false), &rtmp_url(&node, "other"));
    wait_live(&node, "victim").await;
    wait_live(&node, "other").await;
    let victim = StreamKey::new("live", "victim").expect("key");
    let registry_key = ActorKey::new(ActorKind::Stream, victim.to_string());
    let epoch_before =
        node.registry().lookup(&registry_key).await.expect("lookup").expect("owned").epoch;

    // A viewer of the other stream records across the crash.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("other.flv");
    let other_url = rtmp_url(&node, "other");
    let viewer =
        tokio::spawn(
            async move { record(&other_url, 5, &out).await.status.success().then_some(out) },
        );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let addr = node.stream(&victim).expect("victim live").actor();
    let _ = addr.send(InjectPanic).await; // the handler panics: the reply never comes
    let restarts = || node.counters().stream_restarts.load(Ordering::Relaxed);
    wait_for("the supervisor to restart the stream", Duration::from_secs(5), || restarts() == 1)
        .await;

    // The restarted instance is a different actor, under a newer epoch, and its publisher
    // re-attached and keeps pushing media into it.
    let restarted = node.stream(&victim).expect("victim restarted");
    assert!(restarted.actor() != addr, "a new actor instance");
    let mut frames_after = 0;
    for _ in 0..60 {
        if let Some(info) = restarted.info().await {
            if info.publishing && info.ingest.frames > 30 {
                frames_after = info.ingest.frames;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(frames_after > 30, "the publisher re-attached and pushes frames into the fresh actor");
    let owner = node.registry().lookup(&registry_key).await.expect("lookup").expect("re-claimed");
    assert!(owner.epoch > epoch_before, "re-claimed under a newer fencing epoch");

    // The other stream's viewer never noticed.
    let recorded = viewer.await.expect("viewer task").expect("other stream still played");
    assert_good_recording(&recorded, 5.0, "other stream across the crash").await;

    let _ = victim_pub.kill().await;
    let _ = other_pub.kill().await;
    node.shutdown().await;
}

/// The segment numbers a playlist names, in order.
fn segment_numbers(playlist: &str) -> Vec<u64> {
    playlist.lines().filter_map(|l| l.strip_suffix(".ts")).filter_map(|n| n.parse().ok()).collect()
}

#[actix_rt::test]
async fn a_panicking_hls_packager_restarts_with_a_discontinuity_and_rtmp_viewers_never_notice() {
    let node = start_node(test_config()).await;
    let mut publisher = publish(&fixture(false), &rtmp_url(&node, "packaged"));
    wait_live(&node, "packaged").await;
    let client = reqwest::Client::new();
    let url = http_url(&node, "/live/packaged/index.m3u8");
    let playlist = || async {
        let response = client.get(&url).send().await.expect("request");
        if response.status() == 200 {
            response.text().await.expect("text")
        } else {
            String::new()
        }
    };

    // An RTMP viewer records across the packager's crash.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("packaged.flv");
    let rtmp = rtmp_url(&node, "packaged");
    let viewer =
        tokio::spawn(async move { record(&rtmp, 8, &out).await.status.success().then_some(out) });

    let mut before = String::new();
    for _ in 0..100 {
        before = playlist().await;
        if segment_numbers(&before).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(segment_numbers(&before).len() >= 2, "two segments before the crash:\n{before}");
    zenlive_actors::faults::arm(zenlive_actors::faults::Fault::OutputPanic);
    let restarts =
        || sample(&node.metrics_text(), "zenlive_actor_restarts_total", &[("kind", "hls")]);
    wait_for("the packager's restart", Duration::from_secs(5), || restarts() == Some(1.0)).await;

    let mut after = String::new();
    for _ in 0..100 {
        after = playlist().await;
        if after.contains("#EXT-X-DISCONTINUITY\n")
            && segment_numbers(&after).len() > segment_numbers(&before).len()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after.contains("#EXT-X-DISCONTINUITY\n"), "before:\n{before}\nafter:\n{after}");
    let (old, new) = (segment_numbers(&before), segment_numbers(&after));
    assert!(new.windows(2).all(|w| w[1] == w[0] + 1), "numbering carries on: {new:?}");
    assert!(new.first() >= old.first() && new.last() > old.last(), "{old:?} then {new:?}");
    assert_eq!(
        node.counters().stream_restarts.load(Ordering::Relaxed),
        0,
        "the stream never noticed"
    );

    let recorded = viewer.await.expect("viewer task").expect("the RTMP viewer kept playing");
    assert_good_recording(&recorded, 8.0, "RTMP across the packager's crash").await;
    let _ = publisher.kill().await;
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_crashing_recorder_restarts_in_a_new_segment_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.recording.enabled = true;
    config.recording.segment_duration = Duration::from_secs(2);
    config.storage.base_path = dir.path().to_string_lossy().into_owned();
    let node = start_node(config).await;
    let mut publisher = publish(&fixture(false), &rtmp_url(&node, "taped"));
    wait_live(&node, "taped").await;
    wait_for("a finished segment", Duration::from_secs(30), || {
        !files_under(dir.path(), ".mp4").is_empty()
    })
    .await;

    zenlive_actors::faults::arm(zenlive_actors::faults::Fault::RecorderPanic);
    let restarts =
        || sample(&node.metrics_text(), "zenlive_actor_restarts_total", &[("kind", "recorder")]);
    wait_for("the recorder's restart", Duration::from_secs(20), || restarts() == Some(1.0)).await;
    let before = files_under(dir.path(), ".mp4").len();
    wait_for("a segment after the restart", Duration::from_secs(30), || {
        files_under(dir.path(), ".mp4").len() > before
    })
    .await;
    assert_eq!(
        node.counters().stream_restarts.load(Ordering::Relaxed),
        0,
        "the stream never noticed"
    );
    assert!(node.stream(&StreamKey::new("live", "taped").expect("key")).is_some(), "still live");
    let _ = publisher.kill().await;
    node.shutdown().await;
    // Every finished segment is a readable MP4 with video (the one the crash cut stays a
    // `.part`, readable up to its last fragment).
    for segment in files_under(dir.path(), ".mp4") {
        let info = probe(&segment).await;
        let kinds: Vec<&str> = info["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .filter_map(|s| s["codec_type"].as_str())
            .collect();
        assert!(kinds.contains(&"video"), "{}: {kinds:?}", segment.display());
    }
}
