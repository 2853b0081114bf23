//! `examples/recording_server.rs` end to end, as the real program: a PostgreSQL server and a
//! SeaweedFS of the test's own, FFmpeg publishing 12 s, HLS served meanwhile; once the
//! stream ended and its recording was uploaded, the application's rows must say what
//! happened: one stream row with its end and duration, one row per segment whose object is
//! in the bucket with the same size, the segments' durations adding up to what was
//! published.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use common::pg::Postgres;
use common::recorded::*;
use common::s3::{list, SeaweedFs, BUCKET};
use common::*;

/// Seconds FFmpeg publishes.
const PUBLISHED: f64 = 12.0;

/// Reads `lines` until every line of `wanted` was seen (bounded: 60 s each).
async fn saw_all(lines: &mut StdoutLines, wanted: &[&str]) {
    let mut missing: HashSet<&str> = wanted.iter().copied().collect();
    while !missing.is_empty() {
        let line = line_starting(lines, "SAVED ").await;
        missing.retain(|want| !line.starts_with(want));
    }
}

#[actix_rt::test]
async fn streams_and_segments_land_in_postgres_and_the_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Postgres::start();
    server.create_database("recordings").await;
    let s3 = SeaweedFs::start("recording-server", &dir.path().join("s3")).await;
    let mut env: Vec<(&str, String)> = s3.env();
    env.extend([
        ("DATABASE_URL", server.url("recordings")),
        ("ZENLIVE_STORAGE_BASE_PATH", dir.path().join("spool").to_string_lossy().into_owned()),
        ("ZENLIVE_STORAGE_S3_PREFIX", "app/".into()),
        ("ZENLIVE_RECORDING_SEGMENT_DURATION", "4s".into()),
        ("ZENLIVE_HLS_SEGMENT_DURATION", "1s".into()),
    ]);
    let (mut example, mut lines) = start_example("recording_server", &env);
    let publish_url = line_starting(&mut lines, "PUBLISH ").await;
    let watch_url = line_starting(&mut lines, "WATCH ").await;

    let before = SystemTime::now();
    let mut publisher = publish_live(&publish_url, PUBLISHED as u32, false);
    let client = reqwest::Client::new();
    let mut served = false;
    for _ in 0..100 {
        if client.get(&watch_url).send().await.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "HLS is served while the stream is recorded");
    wait_publisher(&mut publisher, Duration::from_secs(60)).await;
    // The stream's end, and its recording's (after the last upload).
    saw_all(&mut lines, &["stream-end live/demo", "recording-end live/demo"]).await;

    let pid = example.id().expect("running").to_string();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    let status = tokio::time::timeout(Duration::from_secs(30), example.wait())
        .await
        .expect("the example stops")
        .expect("wait");
    assert!(status.success(), "the example exits cleanly");

    let db = server.connect("recordings").await;
    let streams = db
        .query(
            "SELECT id, stream, started_at, ended_at, duration_seconds, bytes_in,
                    recorded_segments, recorded_bytes, recorded_seconds, recording_end
             FROM streams",
            &[],
        )
        .await
        .expect("query streams");
    assert_eq!(streams.len(), 1, "one publish, one row");
    let row = &streams[0];
    let id: i64 = row.get("id");
    assert_eq!(row.get::<_, String>("stream"), "live/demo");
    let started: SystemTime = row.get("started_at");
    let ended: Option<SystemTime> = row.get("ended_at");
    let ended = ended.expect("an end time");
    assert!(started >= before - Duration::from_secs(1) && ended > started, "{started:?} {ended:?}");
    let live: f64 = row.get::<_, Option<f64>>("duration_seconds").expect("a duration");
    assert!((live - PUBLISHED).abs() < 2.0, "live for {live} s");
    assert!(row.get::<_, Option<i64>>("bytes_in") > Some(0));
    assert_eq!(row.get::<_, Option<String>>("recording_end").as_deref(), Some("stream ended"));

    let segments = db
        .query(
            "SELECT stream_id, bucket, object_key, started_at, duration_seconds, bytes, recovered
             FROM recording_segments ORDER BY started_at",
            &[],
        )
        .await
        .expect("query segments");
    let objects = list(&s3.client().await, "app/live/demo/").await;
    assert_eq!(segments.len(), objects.len(), "a row per object: {objects:?}");
    assert_eq!(segments.len(), 3, "12 s in 4 s segments");
    let (mut total, mut bytes) = (0.0, 0i64);
    for segment in &segments {
        let key: String = segment.get("object_key");
        let size: i64 = segment.get("bytes");
        assert_eq!(segment.get::<_, Option<i64>>("stream_id"), Some(id), "{key}: its stream");
        assert_eq!(segment.get::<_, String>("bucket"), BUCKET);
        assert!(!segment.get::<_, bool>("recovered"));
        assert!(
            objects.iter().any(|(object, length)| *object == key && *length == size as u64),
            "{key} ({size} bytes) is in the bucket with that size: {objects:?}"
        );
        let start: Option<SystemTime> = segment.get("started_at");
        assert!(start.is_some_and(|s| s >= started - Duration::from_secs(1)), "{key}: {start:?}");
        total += segment.get::<_, Option<f64>>("duration_seconds").expect("a duration");
        bytes += size;
    }
    assert!((total - PUBLISHED).abs() <= 2.0 * FRAME, "{total} s recorded of {PUBLISHED} s");
    assert_eq!(row.get::<_, Option<i64>>("recorded_segments"), Some(3));
    assert_eq!(row.get::<_, Option<i64>>("recorded_bytes"), Some(bytes));
    let recorded: f64 = row.get::<_, Option<f64>>("recorded_seconds").expect("seconds recorded");
    assert!((recorded - total).abs() < 0.001, "{recorded} s against the rows' {total} s");
}
