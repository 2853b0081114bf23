//! Recording to S3, against a real S3-compatible server (SeaweedFS) the tests start
//! themselves, judged by FFmpeg: segments reach the bucket (ListObjectsV2), each
//! downloaded object probes and decodes cleanly with the right duration, and the spool is
//! emptied behind them. Then the faults: the S3 server killed and restarted (nothing lost,
//! in order, viewers unaffected), frozen with SIGSTOP (attempts time out, the spool stays
//! bounded, memory does not grow), the node killed mid-recording (the spool uploads after
//! its restart); a segment larger than the multipart threshold goes up in parts and arrives
//! whole; and the hooks' and signed webhooks' fields.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::recorded::*;
use common::s3::{download, list, SeaweedFs, BUCKET};
use common::*;
use zenlive::config::StorageKind;
use zenlive::{NodeBuilder, RecordingEvent, SegmentLocation};

async fn start_node(
    name: &str,
    spool: &Path,
    s3: &SeaweedFs,
    extra: &[(&str, &str)],
) -> ZenliveProcess {
    let base = spool.to_str().expect("utf-8 path").to_owned();
    let mut env: Vec<(&str, String)> = vec![
        ("ZENLIVE_RECORDING_ENABLED", "true".into()),
        ("ZENLIVE_RECORDING_SEGMENT_DURATION", "4s".into()),
        ("ZENLIVE_STORAGE_BASE_PATH", base),
    ];
    env.extend(s3.env());
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ZenliveProcess::start(name, "n1", &[], &env).await
}

/// Downloads every object under `prefix` and judges them as one recording: each decodes
/// cleanly, all but the last last `segment` seconds, each continues the one before.
/// Returns the total duration.
async fn judge_bucket(client: &aws_sdk_s3::Client, prefix: &str, segment: f64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let objects = list(client, prefix).await;
    assert!(!objects.is_empty(), "no objects under {prefix}");
    let mut timings = Vec::new();
    for (key, _) in &objects {
        let file = download(client, key, dir.path()).await;
        let errors = decode_errors(&file).await;
        assert!(errors.trim().is_empty(), "{key}: decoding printed:\n{errors}");
        timings.push((key.clone(), video_span(&file).await));
    }
    for (i, (key, (start, duration))) in timings.iter().enumerate() {
        if i + 1 < timings.len() {
            assert!(
                (duration - segment).abs() <= FRAME + 0.001,
                "{key}: {duration} s, expected {segment} s"
            );
            let next = timings[i + 1].1 .0;
            assert!(
                (start + duration - next).abs() <= FRAME + 0.001,
                "{} starts at {next} s, {key} ends at {} s",
                timings[i + 1].0,
                start + duration
            );
        }
    }
    timings.iter().map(|(_, (_, d))| d).sum()
}

/// A node's configuration (for one in this process) recording every stream in segments
/// of `segment` to `s3`, its spool in `dir`.
fn in_process_config(dir: &Path, s3: &SeaweedFs, segment: Duration) -> zenlive::Config {
    common::s3::set_credentials();
    let mut config = test_config();
    config.recording.enabled = true;
    config.recording.segment_duration = segment;
    config.storage.kind = StorageKind::S3;
    config.storage.base_path = dir.join("spool").to_string_lossy().into_owned();
    config.storage.s3 = s3.config();
    config
}

/// Segments that are only media files (no sidecar, no .part) left in the spool.
fn spool_left(spool: &Path) -> Vec<PathBuf> {
    files_under(spool, "").into_iter().collect()
}

#[tokio::test]
async fn segments_are_uploaded_whole_in_order_and_leave_the_spool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = SeaweedFs::start("s3-upload", &dir.path().join("s3")).await;
    let spool = dir.path().join("spool");
    let node = start_node("s3-upload", &spool, &s3, &[("ZENLIVE_STORAGE_S3_PREFIX", "rec/")]).await;
    let started = std::time::Instant::now();
    wait_publisher(
        &mut publish_live(&node.rtmp_url("live/up"), 12, false),
        Duration::from_secs(60),
    )
    .await;
    wait_metric(&node, "zenlive_recording_uploads_total", Duration::from_secs(30), |v| v >= 3.0)
        .await;
    let took = started.elapsed();
    let client = s3.client().await;
    let objects = list(&client, "rec/live/up/").await;
    assert_eq!(objects.len(), 3, "12 s in 4 s segments: {objects:?}");
    let total = judge_bucket(&client, "rec/live/up/", 4.0).await;
    assert!((total - 12.0).abs() < 0.5, "{total} s recorded of 12 s");
    wait_for("an empty spool", Duration::from_secs(10), || spool_left(&spool).is_empty()).await;
    let metrics = node.metrics_text().await;
    let bytes: u64 = objects.iter().map(|(_, size)| size).sum();
    assert_eq!(sample(&metrics, "zenlive_recording_uploaded_bytes_total", &[]), Some(bytes as f64));
    assert_eq!(sample(&metrics, "zenlive_recording_upload_queue", &[]), Some(0.0));
    assert_eq!(sample(&metrics, "zenlive_recording_spool_bytes", &[]), Some(0.0));
    assert_eq!(sample(&metrics, "zenlive_recording_upload_failures_total", &[]), Some(0.0));
    eprintln!("12 s recorded and uploaded ({bytes} bytes) {took:?} after the publisher started");
}

#[tokio::test]
async fn s3_killed_and_restarted_loses_nothing_and_viewers_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s3 = SeaweedFs::start("s3-outage", &dir.path().join("s3")).await;
    let spool = dir.path().join("spool");
    let node = start_node("s3-outage", &spool, &s3, &[]).await;
    let url = node.rtmp_url("live/outage");
    let mut publisher = publish_live(&url, 28, false);
    let watched = dir.path().join("viewer.flv");
    let viewer = {
        let (url, watched) = (url.clone(), watched.clone());
        tokio::spawn(async move {
            // Until the stream ends: RTMP play, copied to a file.
            tokio::time::sleep(Duration::from_millis(500)).await;
            record(&url, 40, &watched).await
        })
    };
    wait_metric(&node, "zenlive_recording_uploads_total", Duration::from_secs(20), |v| v >= 1.0)
        .await;
    s3.kill();
    // Segments wait, and their uploads fail, while S3 is gone.
    wait_metric(&node, "zenlive_recording_upload_queue", Duration::from_secs(20), |v| v >= 2.0)
        .await;
    wait_metric(&node, "zenlive_recording_upload_failures_total", Duration::from_secs(10), |v| {
        v >= 1.0
    })
    .await;
    let waiting = metric(&node, "zenlive_recording_upload_queue").await;
    s3.restart().await;
    wait_publisher(&mut publisher, Duration::from_secs(60)).await;
    // The last segment is finished when the node sees the stream end, a moment after the
    // publisher exits: wait for all seven uploads, not only for an empty queue.
    wait_metric(&node, "zenlive_recording_uploads_total", Duration::from_secs(60), |v| v >= 7.0)
        .await;
    wait_metric(&node, "zenlive_recording_upload_queue", Duration::from_secs(60), |v| v == 0.0)
        .await;
    let client = s3.client().await;
    let objects = list(&client, "live/outage/").await;
    assert_eq!(
        objects.len(),
        7,
        "28 s in 4 s segments, {waiting} of them waited out the outage: {objects:?}"
    );
    let total = judge_bucket(&client, "live/outage/", 4.0).await;
    assert!((total - 28.0).abs() < 0.5, "{total} s recorded of 28 s");
    assert!(spool_left(&spool).is_empty(), "{:?}", spool_left(&spool));
    let log = node.log_text();
    assert!(log.contains("recording upload failed; retrying"), "failures are logged");
    // In order: each stream's uploads follow its segments' order.
    let uploaded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("recording segment uploaded"))
        .filter_map(|l| l.split("key=").nth(1)?.split_whitespace().next())
        .collect();
    let mut sorted = uploaded.clone();
    sorted.sort();
    assert_eq!(uploaded, sorted, "uploads in recording order");
    // The viewer saw the whole stream, outage or not.
    let out = viewer.await.expect("viewer task");
    assert!(out.status.success(), "viewer: {}", String::from_utf8_lossy(&out.stderr));
    let (_, watched_for) = video_span(&watched).await;
    assert!(watched_for > 25.0, "the RTMP viewer got {watched_for} s of 28 s");
}

#[tokio::test]
async fn s3_frozen_times_out_attempts_bounds_the_spool_and_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = SeaweedFs::start("s3-frozen", &dir.path().join("s3")).await;
    let spool = dir.path().join("spool");
    let node = start_node(
        "s3-frozen",
        &spool,
        &s3,
        &[
            ("ZENLIVE_RECORDING_SEGMENT_DURATION", "1s"),
            ("ZENLIVE_STORAGE_S3_ATTEMPT_TIMEOUT", "1s"),
            ("ZENLIVE_STORAGE_S3_OPERATION_TIMEOUT", "3s"),
            ("ZENLIVE_STORAGE_SPOOL_MAX_BYTES", "1048576"),
        ],
    )
    .await;
    let _publisher = publish_live(&node.rtmp_url("live/frozen"), 90, true);
    wait_metric(&node, "zenlive_recording_uploads_total", Duration::from_secs(20), |v| v >= 1.0)
        .await;
    s3.freeze();
    // The spool fills to its bound; then segments are skipped, loudly.
    wait_metric(&node, "zenlive_recording_segments_skipped_total", Duration::from_secs(30), |v| {
        v >= 1.0
    })
    .await;
    wait_metric(&node, "zenlive_recording_upload_failures_total", Duration::from_secs(10), |v| {
        v >= 1.0
    })
    .await;
    let rss_full = node.rss();
    let mut spool_max = 0.0f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        spool_max = spool_max.max(metric(&node, "zenlive_recording_spool_bytes").await);
        let on_disk: u64 = files_under(&spool, "")
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        // The bound, plus at most one segment that began before it was reached, plus the
        // open one.
        assert!(on_disk < 4 << 20, "spool on disk: {on_disk} bytes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rss_later = node.rss();
    assert!(spool_max < (2 << 20) as f64, "spool bytes {spool_max}");
    assert!(
        rss_later < rss_full + (8 << 20),
        "memory grew from {rss_full} to {rss_later} while S3 was frozen"
    );
    let log = node.log_text();
    assert!(log.contains("recording paused: the upload spool is full"), "the pause is logged");
    assert!(log.contains("timed out") || log.contains("timeout"), "attempts time out");
    s3.thaw();
    // Uploads drain the spool and recording resumes by itself.
    let uploaded = metric(&node, "zenlive_recording_uploads_total").await;
    wait_metric(&node, "zenlive_recording_uploads_total", Duration::from_secs(40), |v| {
        v >= uploaded + 3.0
    })
    .await;
    wait_for("recording to resume", Duration::from_secs(30), || {
        node.log_text().contains("the upload spool has room again: recording resumes")
    })
    .await;
}

#[tokio::test]
async fn node_killed_mid_recording_uploads_its_spool_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = SeaweedFs::start("s3-kill9", &dir.path().join("s3")).await;
    let spool = dir.path().join("spool");
    let node = start_node("s3-kill9", &spool, &s3, &[]).await;
    let _publisher = publish_live(&node.rtmp_url("live/crash"), 60, false);
    wait_metric(&node, "zenlive_recording_uploads_total", Duration::from_secs(20), |v| v >= 1.0)
        .await;
    // S3 stops answering, so finished segments stay in the spool.
    s3.freeze();
    wait_for("two segments in the spool and a .part with data", Duration::from_secs(30), || {
        let all = files_under(&spool, "");
        let finished = all.iter().filter(|f| f.extension().is_some_and(|e| e == "mp4")).count();
        let part = all.iter().any(|f| {
            f.to_string_lossy().ends_with(".part")
                && std::fs::metadata(f).is_ok_and(|m| m.len() > 50_000)
        });
        finished >= 2 && part
    })
    .await;
    node.signal("-9");
    let left: Vec<PathBuf> = files_under(&spool, "")
        .into_iter()
        .filter(|f| !f.to_string_lossy().ends_with(".json"))
        .collect();
    drop(node);
    s3.thaw();
    let client = s3.client().await;
    let before = list(&client, "live/crash/").await.len();
    const SECRET: &str = "s3-kill9-listing-secret";
    let node =
        start_node("s3-kill9-restarted", &spool, &s3, &[("ZENLIVE_AUTH_JWT_SECRET", SECRET)]).await;
    // Every segment left (the .part too, as written) is uploaded, and the spool empties.
    wait_for("an empty spool", Duration::from_secs(60), || files_under(&spool, "").is_empty())
        .await;
    let objects = list(&client, "live/crash/").await;
    assert!(
        objects.len() >= before + left.len() - 1,
        "{before} before, {left:?} left, now {objects:?}"
    );
    let log = node.log_text();
    assert!(log.contains("queued for upload"), "the restart queues the spool");
    assert!(log.contains("a segment cut by a crash"), "the .part is finalized");
    let dl = tempfile::tempdir().expect("tempdir");
    let mut durations = Vec::new();
    for (key, _) in &objects {
        let file = download(&client, key, dl.path()).await;
        let (_, duration) = video_span(&file).await;
        assert!(duration >= 1.0, "{key}: {duration} s");
        durations.push(duration);
    }
    // Every uploaded segment is listed in the recording's manifest, the one a crash cut
    // short too (its times read from the media), and the recording is over.
    let listing = recordings_of(&node.http, "live/crash", SECRET).await;
    let recordings = listing["recordings"].as_array().expect("recordings");
    assert_eq!(recordings.len(), 1, "{listing}");
    assert_eq!(recordings[0]["live"], false, "{listing}");
    let segments = recordings[0]["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), objects.len(), "{listing}");
    let last = segments.last().expect("a segment")["duration"].as_f64().expect("duration");
    let probed = durations.last().copied().unwrap_or_default();
    assert!((last - probed).abs() <= FRAME + 0.001, "listed {last} s, ffprobe {probed} s");
}

#[actix_rt::test]
async fn hooks_hear_each_uploaded_segment_then_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = SeaweedFs::start("s3-hooks", &dir.path().join("s3")).await;
    let mut config = in_process_config(dir.path(), &s3, Duration::from_secs(4));
    config.storage.s3.prefix = "hooked/".into();
    let events: Arc<Mutex<Vec<RecordingEvent>>> = Arc::default();
    let (segments, ends) = (Arc::clone(&events), Arc::clone(&events));
    let node = NodeBuilder::new(config)
        .on_recording_segment(move |e| segments.lock().expect("lock").push(e.clone()))
        .on_recording_end(move |e| ends.lock().expect("lock").push(e.clone()))
        .start()
        .await
        .expect("node starts");
    let before = SystemTime::now();
    wait_publisher(&mut publish_live(&rtmp_url(&node, "hook"), 10, false), Duration::from_secs(60))
        .await;
    wait_for("the end event", Duration::from_secs(30), || {
        events.lock().expect("lock").iter().any(|e| matches!(e, RecordingEvent::Ended { .. }))
    })
    .await;
    let events = events.lock().expect("lock").clone();
    let client = s3.client().await;
    let objects = list(&client, "hooked/live/hook/").await;
    assert_eq!(events.len(), objects.len() + 1, "{events:?}");
    let (mut count, mut sum) = (0u64, 0);
    for (event, (object, size)) in events.iter().zip(&objects) {
        let RecordingEvent::Segment {
            stream,
            path,
            location,
            start,
            duration,
            bytes,
            recovered,
            ..
        } = event
        else {
            panic!("segment events first, in order: {events:?}")
        };
        assert_eq!(stream.to_string(), "live/hook");
        assert_eq!(format!("hooked/{path}"), *object);
        assert_eq!(*location, SegmentLocation::S3 { bucket: BUCKET.into(), key: object.clone() });
        assert_eq!(bytes, size);
        assert!(!recovered);
        assert!(start.is_some_and(|s| s >= before - Duration::from_secs(1)), "{start:?}");
        if (count as usize) + 1 < objects.len() {
            let d = duration.expect("a duration").as_secs_f64();
            assert!((d - 4.0).abs() <= FRAME + 0.001, "{d}");
        }
        count += 1;
        sum += bytes;
    }
    let Some(RecordingEvent::Ended { stream, segments, bytes, reason, .. }) = events.last() else {
        panic!("the end last: {events:?}")
    };
    assert_eq!((stream.to_string().as_str(), *segments, *bytes), ("live/hook", count, sum));
    assert_eq!(reason, "stream ended");
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_segment_above_the_threshold_goes_up_in_parts_and_arrives_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = SeaweedFs::start("s3-multipart", &dir.path().join("s3")).await;
    // A noisy picture makes about 4 Mbit/s: 12 s are over 5 MiB, the least S3 allows for
    // a part, and go up in two parts; the last 2 s in one PutObject.
    let mut config = in_process_config(dir.path(), &s3, Duration::from_secs(12));
    config.storage.s3.multipart_threshold = 5 << 20;
    config.storage.s3.part_size = 5 << 20;
    config.storage.s3.prefix = "parts/".into();
    let events: Arc<Mutex<Vec<RecordingEvent>>> = Arc::default();
    let (segments, ends) = (Arc::clone(&events), Arc::clone(&events));
    let node = NodeBuilder::new(config)
        .on_recording_segment(move |e| segments.lock().expect("lock").push(e.clone()))
        .on_recording_end(move |e| ends.lock().expect("lock").push(e.clone()))
        .start()
        .await
        .expect("node starts");
    wait_publisher(&mut publish_live(&rtmp_url(&node, "big"), 14, true), Duration::from_secs(60))
        .await;
    wait_for("the end event", Duration::from_secs(60), || {
        events.lock().expect("lock").iter().any(|e| matches!(e, RecordingEvent::Ended { .. }))
    })
    .await;
    let events = events.lock().expect("lock").clone();
    let client = s3.client().await;
    let dl = tempfile::tempdir().expect("tempdir");
    let mut multipart = 0;
    for event in &events {
        let RecordingEvent::Segment { location: SegmentLocation::S3 { key, .. }, bytes, .. } =
            event
        else {
            continue;
        };
        let head = client.head_object().bucket(BUCKET).key(key).send().await.expect("HeadObject");
        assert_eq!(head.content_length(), Some(*bytes as i64), "{key}: the size the hook said");
        // A multipart object's ETag is the parts' MD5s' MD5 and their count: "...-2".
        let etag = head.e_tag().unwrap_or_default().trim_matches('"').to_owned();
        if *bytes > 5 << 20 {
            assert!(etag.ends_with("-2"), "{key} ({bytes} bytes) went up in two parts: {etag}");
            multipart += 1;
        } else {
            assert!(!etag.contains('-'), "{key} ({bytes} bytes) went up whole: {etag}");
        }
        let file = download(&client, key, dl.path()).await;
        assert_eq!(std::fs::metadata(&file).map(|m| m.len()).ok(), Some(*bytes));
        let errors = decode_errors(&file).await;
        assert!(errors.trim().is_empty(), "{key}: decoding printed:\n{errors}");
    }
    assert_eq!(multipart, 1, "the 12 s segment went up in parts: {events:?}");
    let total = judge_bucket(&client, "parts/live/big/", 12.0).await;
    assert!((total - 14.0).abs() < 0.5, "{total} s recorded of 14 s");
    node.shutdown().await;
}

#[actix_rt::test]
async fn signed_webhooks_tell_of_each_uploaded_segment_then_the_end() {
    use common::webhooks::{free_addr, receiver, verify, Log, SECRET};
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = SeaweedFs::start("s3-webhooks", &dir.path().join("s3")).await;
    let addr = free_addr();
    let log: Log = Arc::default();
    let receiver = receiver(addr, Arc::clone(&log));
    let mut config = in_process_config(dir.path(), &s3, Duration::from_secs(4));
    config.webhooks.urls = vec![format!("http://{addr}/events")];
    config.webhooks.secret = SECRET.to_owned();
    let node = NodeBuilder::new(config).start().await.expect("node starts");
    wait_publisher(
        &mut publish_live(&rtmp_url(&node, "hooked"), 10, false),
        Duration::from_secs(60),
    )
    .await;
    let recording = || -> Vec<common::webhooks::Received> {
        let log = log.lock();
        log.iter()
            .filter(|r| r.body["type"].as_str().unwrap_or("").starts_with("recording."))
            .cloned()
            .collect()
    };
    wait_for("recording.end", Duration::from_secs(60), || {
        recording().iter().any(|r| r.body["type"] == "recording.end")
    })
    .await;
    let received = recording();
    let objects = list(&s3.client().await, "live/hooked/").await;
    assert_eq!(received.len(), objects.len() + 1, "a segment event per object, then the end");
    let mut total = 0.0;
    for (r, (key, size)) in received.iter().zip(&objects) {
        verify(r);
        assert_eq!(r.path, "/events");
        let data = &r.body["data"];
        assert_eq!(r.body["type"], "recording.segment", "segments first, in order: {data}");
        assert_eq!(data["stream"], "live/hooked");
        assert_eq!((data["storage"].as_str(), data["bucket"].as_str()), (Some("s3"), Some(BUCKET)));
        assert_eq!(data["key"].as_str(), Some(key.as_str()));
        assert_eq!(data["url"].as_str(), Some(format!("s3://{BUCKET}/{key}").as_str()));
        assert_eq!(data["bytes"].as_u64(), Some(*size));
        assert_eq!(data["recovered"], false);
        assert!(data["started_at"].as_f64().is_some(), "{data}");
        total += data["duration_seconds"].as_f64().expect("a duration");
    }
    assert!((total - 10.0).abs() < 0.5, "{total} s of 10 s");
    let end = received.last().expect("the end");
    verify(end);
    assert_eq!(end.body["type"], "recording.end");
    let data = &end.body["data"];
    assert_eq!(data["stream"], "live/hooked");
    assert_eq!(data["segments"].as_u64(), Some(objects.len() as u64));
    let bytes: u64 = objects.iter().map(|(_, size)| size).sum();
    assert_eq!(data["bytes"].as_u64(), Some(bytes));
    assert_eq!(data["reason"], "stream ended");
    let duration = data["duration_seconds"].as_f64().expect("a duration");
    assert!((duration - total).abs() < 0.001, "{duration} s against the segments' {total} s");
    node.shutdown().await;
    receiver.stop(true).await;
}
