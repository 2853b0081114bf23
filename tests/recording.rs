//! Recording to local disk, judged by FFmpeg: the real `zenlive` binary records what FFmpeg
//! publishes (H.264 + AAC, a keyframe every second) into 4 s segments in each format, and
//! every segment must probe, decode without an error, last what it should, and continue
//! the previous one's timeline. A `kill -9` mid-segment leaves the finished segments intact
//! and the open `.part` file readable.

mod common;

use std::path::Path;
use std::time::Duration;

use common::recorded::*;
use common::*;

async fn start_recording_node(name: &str, dir: &Path, format: &str) -> ZenliveProcess {
    let base = dir.to_str().expect("utf-8 path").to_owned();
    let env = [
        ("ZENLIVE_RECORDING_ENABLED", "true"),
        ("ZENLIVE_RECORDING_FORMAT", format),
        ("ZENLIVE_RECORDING_SEGMENT_DURATION", "4s"),
        ("ZENLIVE_STORAGE_BASE_PATH", base.as_str()),
    ];
    ZenliveProcess::start(name, "n1", &[], &env).await
}

async fn records_segments_in(format: &str, ext: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_recording_node(&format!("recording-{format}"), dir.path(), format).await;
    let mut publisher = publish_live(&node.rtmp_url("live/rec"), 12, false);
    let status = tokio::time::timeout(Duration::from_secs(60), publisher.wait())
        .await
        .expect("the publisher finishes in time")
        .expect("ffmpeg ran");
    assert!(status.success(), "the publisher succeeded");
    // The stream's end finalizes the open segment.
    wait_for("every segment to be finished", Duration::from_secs(20), || {
        files_under(dir.path(), ".part").is_empty() && files_under(dir.path(), ext).len() >= 3
    })
    .await;
    let segments = files_under(&dir.path().join("live/rec"), ext);
    assert_eq!(segments.len(), 3, "12 s in 4 s segments: {segments:?}");
    let mut timings = Vec::new();
    for segment in &segments {
        let (start, duration) = video_span(segment).await;
        let errors = decode_errors(segment).await;
        assert!(errors.trim().is_empty(), "{}: decoding printed:\n{errors}", segment.display());
        timings.push((start, duration));
    }
    let label = |i: usize| segments[i].display().to_string();
    for (i, (_, duration)) in timings.iter().enumerate().take(2) {
        assert!(
            (duration - 4.0).abs() <= FRAME + 0.001,
            "{}: {duration} s, expected 4 s",
            label(i)
        );
    }
    let total: f64 = timings.iter().map(|t| t.1).sum();
    assert!((total - 12.0).abs() < 0.5, "{total} s recorded of 12 s");
    for i in 0..timings.len() - 1 {
        let (start, duration) = timings[i];
        let next = timings[i + 1].0;
        assert!(
            (start + duration - next).abs() <= FRAME + 0.001,
            "{} starts at {next} s, the one before ends at {} s",
            label(i + 1),
            start + duration
        );
    }
    let metrics = node.metrics_text().await;
    assert_eq!(sample(&metrics, "zenlive_recording_segments_total", &[]), Some(3.0), "{metrics}");
    assert_eq!(sample(&metrics, "zenlive_recorders_active", &[]), Some(0.0));
    assert!(sample(&metrics, "zenlive_recording_bytes_total", &[]).unwrap_or(0.0) > 10_000.0);
}

#[tokio::test]
async fn fragmented_mp4_segments_are_whole_and_continuous() {
    records_segments_in("fmp4", ".mp4").await;
}

#[tokio::test]
async fn mpeg_ts_segments_are_whole_and_continuous() {
    records_segments_in("ts", ".ts").await;
}

#[tokio::test]
async fn flv_segments_are_whole_and_continuous() {
    records_segments_in("flv", ".flv").await;
}

#[tokio::test]
async fn kill_9_mid_segment_leaves_finished_segments_intact_and_the_open_one_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_recording_node("recording-kill9", dir.path(), "fmp4").await;
    let _publisher = publish_live(&node.rtmp_url("live/crash"), 60, false);
    // A finished segment, and the next one's .part with at least two fragments written.
    let (mut part, mut sizes) = (None, Vec::new());
    wait_for("a finished segment and a .part with two fragments", Duration::from_secs(40), || {
        let Some(current) = files_under(dir.path(), ".part").pop() else { return false };
        if part.as_ref() != Some(&current) {
            // A new segment: count its writes from here.
            (part, sizes) = (Some(current.clone()), Vec::new());
        }
        let size = std::fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
        if size > 0 && sizes.last() != Some(&size) {
            sizes.push(size);
        }
        !files_under(dir.path(), ".mp4").is_empty() && sizes.len() >= 2
    })
    .await;
    node.signal("-9");
    let finished = files_under(dir.path(), ".mp4");
    for segment in &finished {
        let (_, duration) = video_span(segment).await;
        assert!((duration - 4.0).abs() <= FRAME + 0.001, "{}: {duration} s", segment.display());
        let errors = decode_errors(segment).await;
        assert!(errors.trim().is_empty(), "{}: {errors}", segment.display());
    }
    let parts = files_under(dir.path(), ".part");
    assert_eq!(parts.len(), 1, "{parts:?}");
    let (_, duration) = video_span(&parts[0]).await;
    assert!(duration >= 1.0, "the torn segment holds its complete fragments: {duration} s");
}
