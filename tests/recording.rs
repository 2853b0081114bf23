//! Recording to local disk, judged by FFmpeg: the real `zenlive` binary records what FFmpeg
//! publishes (H.264 + AAC, a keyframe every second) into 4 s segments in each format, and
//! every segment must probe, decode without an error, last what it should, and continue
//! the previous one's timeline. A `kill -9` mid-segment leaves the finished segments intact
//! and the open `.part` file readable.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::process::{Child, Command};

/// One frame at the publisher's 25 fps: the tolerance of every duration.
const FRAME: f64 = 0.04;

/// FFmpeg encoding `seconds` of test picture (25 fps, a keyframe every second) and a sine
/// tone in real time and publishing them to `url`.
fn publish_live(url: &str, seconds: u32) -> Child {
    require("ffmpeg");
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0"])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg publisher")
}

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

/// Every file under `dir` (recursively) whose name ends with `suffix`, sorted by name.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn seconds(value: &Value) -> f64 {
    value.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

/// The span of `file`'s video as ffprobe reads its packets: (first presentation time, end
/// of the last frame), in seconds on the stream's clock. (A container's own "duration" is
/// not used: for FLV and fragmented MP4 FFmpeg reports the end time there, counted from 0,
/// and segments here keep the stream's timeline.) Also checks that audio is there.
async fn timing(file: &Path) -> (f64, f64) {
    let info = probe(file).await;
    let streams = info["streams"].as_array().expect("streams");
    let kinds: Vec<&str> = streams.iter().filter_map(|s| s["codec_type"].as_str()).collect();
    assert!(kinds.contains(&"video") && kinds.contains(&"audio"), "{}: {kinds:?}", file.display());
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-of", "json"])
        .args(["-show_entries", "packet=pts_time,duration_time"])
        .arg(file)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("ffprobe ends")
        .expect("run ffprobe");
    let packets: Value = serde_json::from_slice(&out.stdout).expect("ffprobe prints JSON");
    let (mut start, mut end) = (f64::INFINITY, f64::NEG_INFINITY);
    for packet in packets["packets"].as_array().expect("packets") {
        let pts = seconds(&packet["pts_time"]);
        let duration = seconds(&packet["duration_time"]);
        let duration = if duration > 0.0 { duration } else { FRAME };
        start = start.min(pts);
        end = end.max(pts + duration);
    }
    assert!(start.is_finite(), "{}: no video packets", file.display());
    (start, end - start)
}

async fn records_segments_in(format: &str, ext: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_recording_node(&format!("recording-{format}"), dir.path(), format).await;
    let mut publisher = publish_live(&node.rtmp_url("live/rec"), 12);
    let status = tokio::time::timeout(Duration::from_secs(60), publisher.wait())
        .await
        .expect("the publisher finishes in time")
        .expect("ffmpeg ran");
    assert!(status.success(), "the publisher succeeded");
    // The stream's end finalizes the open segment.
    wait_for("every segment to be finished", Duration::from_secs(20), || {
        files(dir.path(), ".part").is_empty() && files(dir.path(), ext).len() >= 3
    })
    .await;
    let segments = files(&dir.path().join("live/rec"), ext);
    assert_eq!(segments.len(), 3, "12 s in 4 s segments: {segments:?}");
    let mut timings = Vec::new();
    for segment in &segments {
        let (start, duration) = timing(segment).await;
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
    let _publisher = publish_live(&node.rtmp_url("live/crash"), 60);
    // A finished segment, and the next one's .part with at least two fragments written.
    let (mut part, mut sizes) = (None, Vec::new());
    wait_for("a finished segment and a .part with two fragments", Duration::from_secs(40), || {
        let Some(current) = files(dir.path(), ".part").pop() else { return false };
        if part.as_ref() != Some(&current) {
            // A new segment: count its writes from here.
            (part, sizes) = (Some(current.clone()), Vec::new());
        }
        let size = std::fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
        if size > 0 && sizes.last() != Some(&size) {
            sizes.push(size);
        }
        !files(dir.path(), ".mp4").is_empty() && sizes.len() >= 2
    })
    .await;
    node.signal("-9");
    let finished = files(dir.path(), ".mp4");
    for segment in &finished {
        let (_, duration) = timing(segment).await;
        assert!((duration - 4.0).abs() <= FRAME + 0.001, "{}: {duration} s", segment.display());
        let errors = decode_errors(segment).await;
        assert!(errors.trim().is_empty(), "{}: {errors}", segment.display());
    }
    let parts = files(dir.path(), ".part");
    assert_eq!(parts.len(), 1, "{parts:?}");
    let (_, duration) = timing(&parts[0]).await;
    assert!(duration >= 1.0, "the torn segment holds its complete fragments: {duration} s");
}
