//! Helpers of the recording tests: a live FFmpeg publisher with a keyframe every second,
//! the files a recorder left, ffprobe's reading of a segment's video span, and a
//! program run to its end.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use super::{probe, require};

/// One frame at the publisher's 25 fps: the tolerance of every duration.
pub const FRAME: f64 = 0.04;

/// FFmpeg encoding `seconds` of test picture (25 fps, a keyframe every second) and a sine
/// tone in real time and publishing them to `url`; `noisy` adds noise, for a few Mbit/s.
pub fn publish_live(url: &str, seconds: u32, noisy: bool) -> Child {
    require("ffmpeg");
    let video = if noisy {
        "testsrc=size=320x240:rate=25,noise=alls=60:allf=t"
    } else {
        "testsrc=size=320x240:rate=25"
    };
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i", video])
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

/// Every file under `dir` (recursively) whose name ends with `suffix` (`""`: all), sorted.
pub fn files_under(dir: &Path, suffix: &str) -> Vec<PathBuf> {
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

/// The span of `file`'s video as ffprobe reads its packets: (first presentation time,
/// duration), in seconds on the stream's clock. (A container's own "duration" is not used:
/// for FLV and fragmented MP4 FFmpeg reports the end time there, counted from 0, and
/// segments keep the stream's timeline.) Also checks that audio is there.
pub async fn video_span(file: &Path) -> (f64, f64) {
    let info = probe(file).await;
    let streams = info["streams"].as_array().expect("streams");
    let kinds: Vec<&str> = streams.iter().filter_map(|s| s["codec_type"].as_str()).collect();
    assert!(kinds.contains(&"video") && kinds.contains(&"audio"), "{}: {kinds:?}", file.display());
    let (mut start, mut end) = (f64::INFINITY, f64::NEG_INFINITY);
    for (pts, duration) in video_packets(file).await {
        start = start.min(pts);
        end = end.max(pts + duration);
    }
    assert!(start.is_finite(), "{}: no video packets", file.display());
    (start, end - start)
}

/// The largest step, in seconds, between consecutive presentation times of `file`'s video
/// (in presentation order): a frame's duration when the timestamps are continuous.
pub async fn largest_video_step(file: &Path) -> f64 {
    let mut times: Vec<f64> = video_packets(file).await.into_iter().map(|(pts, _)| pts).collect();
    times.sort_by(f64::total_cmp);
    times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

/// `file`'s video packets as ffprobe reads them: (presentation time, duration), seconds.
async fn video_packets(file: &Path) -> Vec<(f64, f64)> {
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
    let packets = packets["packets"].as_array().expect("packets");
    packets
        .iter()
        .map(|packet| {
            let duration = seconds(&packet["duration_time"]);
            (seconds(&packet["pts_time"]), if duration > 0.0 { duration } else { FRAME })
        })
        .filter(|(pts, _)| pts.is_finite())
        .collect()
}

/// Runs `program` with `args` (bounded in time); answers (success, stdout, stderr).
pub async fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    require(program);
    let out = Command::new(program).args(args).stdin(Stdio::null()).kill_on_drop(true).output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("finished in time")
        .expect("run");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Waits up to `limit` for `publisher` (FFmpeg) to finish, and checks it succeeded.
pub async fn wait_publisher(publisher: &mut Child, limit: Duration) {
    let status = tokio::time::timeout(limit, publisher.wait())
        .await
        .expect("the publisher finishes in time")
        .expect("ffmpeg ran");
    assert!(status.success(), "the publisher succeeded");
}

/// The codec names of the streams ffprobe found (`probe`'s answer).
pub fn codec_names(info: &Value) -> Vec<String> {
    info["streams"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["codec_name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// `GET /api/v1/recordings/{stream}` on the node whose HTTP address is `http`, as an admin
/// of a node whose JWT secret is `secret`.
pub async fn recordings_of(http: &str, stream: &str, secret: &str) -> Value {
    let admin = super::mint_token(secret, "ops", None, &[zenlive::auth::Role::Admin]);
    reqwest::Client::new()
        .get(format!("http://{http}/api/v1/recordings/{stream}"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("listing")
        .json()
        .await
        .expect("JSON")
}
