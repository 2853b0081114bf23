//! Shared helpers for the end-to-end tests: a node on loopback with free ports, FFmpeg as
//! publisher and player, ffprobe as judge. Everything is bounded in time and cleaned up.

#![allow(dead_code)]

pub mod cdp;
pub mod link;
pub mod pg;
pub mod process;
pub mod recorded;
pub mod rtmp;
pub mod s3;
pub mod webhooks;
pub mod webrtc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
use zenlive::{Config, Node, NodeBuilder};

#[allow(unused_imports)]
pub use link::handshaken_link;
#[allow(unused_imports)]
pub use process::{log_dir, metric, wait_metric, ZenliveProcess};

/// Loopback with an OS-chosen port.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("literal address")
}

/// A config for tests: loopback, free ports, short HLS segments.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.rtmp.addr = any_port();
    config.http.addr = any_port();
    config.metrics.addr = any_port();
    config.webrtc.udp_addr = any_port();
    config.node.workers = 2;
    config.hls.segment_duration = Duration::from_secs(1);
    config.hls.window = 6;
    config
}

/// Starts a node with `config`.
pub async fn start_node(config: Config) -> Node {
    NodeBuilder::new(config).start().await.expect("node starts")
}

/// `rtmp://127.0.0.1:port/live/{name}`
pub fn rtmp_url(node: &Node, name: &str) -> String {
    format!("rtmp://{}/live/{name}", node.rtmp_addr().expect("rtmp enabled"))
}

/// `http://127.0.0.1:port{path}`
pub fn http_url(node: &Node, path: &str) -> String {
    format!("http://{}{path}", node.http_addr())
}

/// Panics with a clear message unless `tool` is on PATH (scripts/test installs it).
pub fn require(tool: &str) {
    let found = std::process::Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(found.is_ok(), "{tool} is required for this test: run scripts/test, which installs it");
}

fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/generated");
    std::fs::create_dir_all(&dir).expect("create tests/data/generated");
    dir
}

/// A 20-second 320x240 30 fps H.264 + AAC FLV fixture; `bframes` selects x264's default
/// B-frames, otherwise none. Generated once (atomically: tests run in parallel).
pub fn fixture(bframes: bool) -> PathBuf {
    static PLAIN: OnceLock<PathBuf> = OnceLock::new();
    static BFRAMES: OnceLock<PathBuf> = OnceLock::new();
    let cell = if bframes { &BFRAMES } else { &PLAIN };
    cell.get_or_init(|| {
        let name = if bframes { "fixture-bframes.flv" } else { "fixture.flv" };
        let mut video = vec!["-g", "30", "-b:v", "600k", "-b:a", "96k"];
        if !bframes {
            video.extend(["-bf", "0"]);
        }
        generate(name, "320x240", 20, &video)
    })
    .clone()
}

/// A 30-second 640x360 30 fps H.264 at a constant 2.5 Mbit/s (x264 CBR with filler, no
/// B-frames, a keyframe every 2 s) + AAC 128 kbit/s FLV fixture, for measuring rates.
pub fn fixture_cbr() -> PathBuf {
    static CBR: OnceLock<PathBuf> = OnceLock::new();
    CBR.get_or_init(|| {
        let video = [
            "-g",
            "60",
            "-bf",
            "0",
            "-b:v",
            "2500k",
            "-maxrate",
            "2500k",
            "-minrate",
            "2500k",
            "-bufsize",
            "1250k",
            "-x264-params",
            "nal-hrd=cbr:force-cfr=1",
            "-b:a",
            "128k",
        ];
        generate("fixture-cbr.flv", "640x360", 30, &video)
    })
    .clone()
}

/// Encodes `seconds` of FFmpeg's 30 fps test picture at `size` and a sine tone into `name`
/// (H.264 + AAC FLV) with the extra `options`; reuses an earlier file.
fn generate(name: &str, size: &str, seconds: u32, options: &[&str]) -> PathBuf {
    require("ffmpeg");
    let path = data_dir().join(name);
    if path.exists() {
        return path;
    }
    let tmp = data_dir().join(format!("{name}.{}.tmp", std::process::id()));
    let duration = seconds.to_string();
    let source = format!("testsrc2=size={size}:rate=30");
    let mut args: Vec<&str> = vec![
        "-y",
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        &source,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        &duration,
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
    ];
    args.extend_from_slice(options);
    args.extend(["-f", "flv"]);
    let tmp_str = tmp.to_str().expect("utf-8 path").to_owned();
    args.push(&tmp_str);
    let status = std::process::Command::new("ffmpeg").args(&args).status().expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not generate {name}");
    std::fs::rename(&tmp, &path).expect("move fixture into place");
    path
}

/// FFmpeg publishing `file` in realtime to `url` (killed on drop).
pub fn publish(file: &Path, url: &str) -> Child {
    require("ffmpeg");
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-i"])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg publisher")
}

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`wait_for`], for a condition that must be awaited (an HTTP request, say).
pub async fn wait_for_async<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the node lists `name` (under `live/`) as live.
pub async fn wait_live(node: &Node, name: &str) {
    let key = zenlive::StreamKey::new("live", name).expect("valid name");
    wait_for(&format!("stream {key} to go live"), Duration::from_secs(15), || {
        node.stream(&key).is_some()
    })
    .await;
}

/// FFmpeg reading `input` for `seconds` and copying it into `out` (no re-encode).
pub async fn record(input: &str, seconds: u32, out: &Path) -> std::process::Output {
    require("ffmpeg");
    let run = Command::new("ffmpeg")
        .args([
            "-y",
            "-v",
            "error",
            "-rw_timeout",
            "10000000",
            "-i",
            input,
            "-t",
            &seconds.to_string(),
            "-c",
            "copy",
        ])
        .arg(out)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(u64::from(seconds) + 30), run)
        .await
        .expect("ffmpeg reader finished in time")
        .expect("run ffmpeg reader")
}

/// ffprobe's JSON description of the streams and format of `input`: a file, or a live URL
/// (given up on after 10 s without data, 30 s in all).
pub async fn probe(input: impl AsRef<std::ffi::OsStr>) -> Value {
    require("ffprobe");
    let input = input.as_ref();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "10000000", "-print_format", "json"])
        .args(["-show_streams", "-show_format"])
        .arg(input)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("ffprobe ends")
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        input.to_string_lossy(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe prints JSON")
}

/// Decodes `file` fully; returns what FFmpeg printed at `-v error` (empty when clean).
/// Frames keep the file's own time base (`-enc_time_base -1`): a browser's frame rate
/// varies, and rounding its times to a guessed rate would make two frames' times collide
/// in FFmpeg's null output, which it prints as an error of ours.
pub async fn decode_errors(file: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .await
        .expect("run ffmpeg decoder");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a recording must be: H.264 320x240 and AAC, about `seconds` long, decoding
/// cleanly, audio and video starting and ending together.
pub async fn assert_good_recording(file: &Path, seconds: f64, label: &str) {
    let info = probe(file).await;
    let streams = info["streams"].as_array().expect("streams array");
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap_or_else(|| panic!("{label}: no video"));
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .unwrap_or_else(|| panic!("{label}: no audio"));
    assert_eq!(video["codec_name"], "h264", "{label}: video codec");
    assert_eq!(audio["codec_name"], "aac", "{label}: audio codec");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(320), Some(240)),
        "{label}: resolution"
    );
    let duration: f64 =
        info["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("duration");
    assert!(
        (duration - seconds).abs() < 1.5,
        "{label}: duration {duration} s, expected about {seconds} s"
    );
    let start =
        |s: &Value| s["start_time"].as_str().and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0);
    let skew = (start(video) - start(audio)).abs();
    assert!(skew < 0.5, "{label}: audio and video start {skew} s apart");
    let errors = decode_errors(file).await;
    assert!(errors.trim().is_empty(), "{label}: decoding printed errors:\n{errors}");
}

/// Cargo, to build a binary from a test, without the variables Cargo sets for the test
/// (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, ...): build scripts that read one (ring's does)
/// would see it changed and run again, and everything above them would be rebuilt, here
/// and in the next ordinary build.
fn nested_cargo() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO"));
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_") && !matches!(key, "CARGO_HOME" | "CARGO_TARGET_DIR") {
            command.env_remove(key);
        }
    }
    command
}

/// The path of example `name`, built first in the tests' own profile (a no-op when it is
/// fresh).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let release = profile_dir.ends_with("release");
    let status = nested_cargo()
        .args(["build", "--example", name])
        .args(release.then_some("--release"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build --example");
    assert!(status.success(), "building example {name}");
    profile_dir.join("examples").join(name)
}

/// The path of the load-test swarm (`zenlive-swarm`, loadtest/), built first in the tests'
/// own profile (a no-op when it is fresh). Built with the workspace's features, so its
/// dependencies are the ones the tests' build compiled already.
pub fn swarm_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let release = profile_dir.ends_with("release");
    let status = nested_cargo()
        .args(["build", "--workspace", "--bin", "zenlive-swarm"])
        .args(release.then_some("--release"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build -p zenlive-loadtest");
    assert!(status.success(), "building zenlive-swarm");
    profile_dir.join("zenlive-swarm")
}

/// The stdout lines of a child process.
pub type StdoutLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// Starts example `name` on loopback (RTMP and HTTP on free ports) with `env`; answers the
/// child (killed on drop) and its stdout lines.
pub fn start_example(name: &str, env: &[(&str, String)]) -> (Child, StdoutLines) {
    use tokio::io::AsyncBufReadExt;
    let mut command = Command::new(example_binary(name));
    command.args(["127.0.0.1:0", "127.0.0.1:0"]);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start example {name}: {e}"));
    let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, lines)
}

/// A token for `sub` (display `name`, `roles`, all streams, valid 10 minutes) signed with the
/// HMAC `secret`.
pub fn mint_token(
    secret: &str,
    sub: &str,
    name: Option<&str>,
    roles: &[zenlive::auth::Role],
) -> String {
    let mut config = Config::default();
    config.auth.jwt_secret = secret.to_owned();
    let auth = zenlive::auth::Auth::new(&config.auth).expect("auth");
    let now = zenlive::auth::unix_now();
    auth.mint(&zenlive::auth::Claims {
        sub: sub.to_owned(),
        name: name.map(str::to_owned),
        roles: roles.to_vec(),
        stream: None,
        exp: now + 600,
        nbf: None,
        iat: Some(now),
        iss: None,
        aud: None,
    })
    .expect("mint")
}

/// The sum of the samples of metric `name` whose labels include every `labels` pair.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        if metric != name {
            continue;
        }
        let have: Vec<(&str, &str)> = rest
            .trim_end_matches('}')
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|want| have.contains(want)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    found
}

/// Reads `lines` until one starts with `prefix`; answers the rest of it (bounded: 60 s).
pub async fn line_starting(lines: &mut StdoutLines, prefix: &str) -> String {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
        panic!("stdout ended before a line starting {prefix:?}");
    });
    found.await.unwrap_or_else(|_| panic!("no line starting {prefix:?} in time"))
}

/// FFmpeg publishing the fixture in a loop, in realtime, to `url` (killed on drop).
pub fn publish_looped(url: &str) -> Child {
    require("ffmpeg");
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(fixture(false))
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg publisher")
}
