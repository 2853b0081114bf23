//! The `zenlive` binary and the `embed` example, run as real processes: they start on the
//! addresses given, serve a stream FFmpeg publishes, and stop cleanly.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Reads `child`'s stdout lines until one contains `needle`; returns that line.
async fn line_with(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    needle: &str,
) -> String {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("stdout ended before a line with {needle:?}");
    })
    .await;
    found.unwrap_or_else(|_| panic!("no line with {needle:?} in time"))
}

fn url_in(line: &str, scheme: &str) -> String {
    let start = line.find(scheme).expect("a URL");
    line[start..].split_whitespace().next().expect("URL text").to_owned()
}

fn terminate(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
}

#[actix_rt::test]
async fn the_binary_serves_a_stream_and_exits_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zenlive"))
        .args([
            "--rtmp-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("ZENLIVE_HLS_SEGMENT_DURATION", "1")
        .env("ZENLIVE_WEBRTC_UDP_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start zenlive");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let rtmp = url_in(&line_with(&mut lines, "Play RTMP:").await, "rtmp://");
    let hls = url_in(&line_with(&mut lines, "HLS:").await, "http://");
    let metrics = url_in(&line_with(&mut lines, "Metrics:").await, "http://");
    let health = url_in(&line_with(&mut lines, "Health:").await, "http://");

    let mut publisher = publish(&fixture(false), &rtmp);
    let client = reqwest::Client::new();
    let mut served = false;
    for _ in 0..100 {
        if client.get(&hls).send().await.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "the binary serves the HLS playlist");
    let health: serde_json::Value =
        client.get(&health).send().await.expect("health").json().await.expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["streams"], 1);
    let text = client.get(&metrics).send().await.expect("metrics").text().await.expect("text");
    assert!(text.lines().any(|l| l == "zenlive_streams 1"), "/metrics:\n{text}");

    terminate(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
    let _ = publisher.kill().await;
}

#[actix_rt::test]
async fn the_embed_example_hears_events_and_kicks_by_name() {
    let (mut child, mut lines) =
        start_example("embed", &[("ZENLIVE_EXAMPLE_EXIT_AFTER", "40".into())]);
    let ready = line_with(&mut lines, "READY").await;
    let rtmp_addr =
        ready.split("rtmp=Some(").nth(1).and_then(|s| s.split(')').next()).expect("rtmp address");
    let mut publisher = publish(&fixture(false), &format!("rtmp://{rtmp_addr}/live/demo"));

    line_with(&mut lines, "EVENT stream started: live/demo").await;
    // The application's output sees the stream's frames (the fixture has a keyframe a
    // second or so).
    let keyframe = line_with(&mut lines, "OUTPUT live/demo: keyframe 2 (h264)").await;
    assert!(keyframe.ends_with("since the last") && !keyframe.contains("- since"), "{keyframe}");
    let stats = line_with(&mut lines, "STATS live/demo").await;
    assert!(stats.contains("Some((320, 240))"), "resolution from the SPS: {stats}");
    let kicked = line_with(&mut lines, "KICKED live/demo").await;
    assert!(kicked.ends_with("true"), "{kicked}");
    let ended = line_with(&mut lines, "EVENT stream ended: live/demo").await;
    assert!(ended.contains("kicked"), "{ended}");
    let status = tokio::time::timeout(Duration::from_secs(20), publisher.wait())
        .await
        .expect("publisher stops")
        .expect("wait");
    assert!(!status.success(), "the kicked publisher's connection was closed");
    let _ = child.kill().await;
}

/// Runs `zenlive` with `args` and `env` to its end (bounded), for its exit and stderr.
async fn run_zenlive(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_zenlive"));
    command.args(args).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    command.env("ZENLIVE_WEBRTC_UDP_ADDR", "127.0.0.1:0");
    // A spool of its own: the shared default holds spools of nodes other tests killed,
    // whose removal the node logs at its start, before the line judged here.
    let spool = tempfile::tempdir().expect("tempdir");
    command.env("ZENLIVE_HLS_SPOOL_DIR", spool.path());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("exits by itself")
        .expect("run zenlive");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[actix_rt::test]
async fn start_failures_are_one_line_that_names_the_cause_and_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let (ok, stderr) = run_zenlive(
        &["--rtmp-addr", "127.0.0.1:0", "--http-addr", &port, "--metrics-addr", "127.0.0.1:0"],
        &[],
    )
    .await;
    assert!(!ok);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&port) && stderr.contains("--http-addr"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    for (env, says) in [
        (("ZENLIVE_HSL_WINDOW", "3"), "ZENLIVE_HSL_WINDOW"),
        (("ZENLIVE_LOG_LEVEL", "verbose"), "log.level"),
        (("ZENLIVE_RTMP_IDLE_TIMEOUT", "-5"), "rtmp.idle_timeout"),
        (("ZENLIVE_RTMP_ADDR", "nowhere"), "HOST:PORT"),
    ] {
        let (ok, stderr) = run_zenlive(&["check"], &[env]).await;
        assert!(!ok, "{env:?} is refused");
        assert!(stderr.contains(says) && stderr.trim().lines().count() == 1, "{env:?}: {stderr}");
    }
    let (ok, stderr) = run_zenlive(&["check"], &[("ZENLIVE_NODE_ID", "1")]).await;
    assert!(ok, "a numeric id is a string: {stderr}");
    // A deprecated key still works; `check` names the key that replaces it.
    let (ok, stderr) = run_zenlive(&["check"], &[("ZENLIVE_RTMP_MAX_VIEWER_LAG", "5s")]).await;
    assert!(ok, "deprecated, not refused: {stderr}");
    assert!(
        stderr.contains("warning: ZENLIVE_RTMP_MAX_VIEWER_LAG is deprecated")
            && stderr.contains("play.max_viewer_lag"),
        "{stderr}"
    );
    let (ok, stderr) = run_zenlive(&["check"], &[("ZENLIVE_HOOKS_ON_FAILURE", "maybe")]).await;
    assert!(!ok && stderr.contains("`deny` or `allow`"), "the allowed values: {stderr}");
    let (ok, stderr) = run_zenlive(&["check", "--rtmp-addr", "localhost:1935"], &[]).await;
    assert!(ok, "host names resolve: {stderr}");
    // Global flags after the subcommand.
    let (ok, stderr) = run_zenlive(
        &["token", "--sub", "a", "--role", "admin", "--config", "/dev/null"],
        &[("ZENLIVE_AUTH_JWT_SECRET", "binary-test-secret")],
    )
    .await;
    assert!(ok, "{stderr}");
}

#[actix_rt::test]
async fn sighup_reloads_auth_and_the_log_level_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("zenlive.toml");
    let (first, second) = ("first-secret-of-the-binary-test", "second-secret-of-the-binary-test");
    let config = |secret: &str, window: u32, level: &str, pending: u32| {
        format!(
            "[auth]\njwt_secret = \"{secret}\"\n[hls]\nwindow = {window}\n[log]\nlevel = \"{level}\"\n\
             [rtmp]\nmax_pending_per_address = {pending}\n"
        )
    };
    std::fs::write(&file, config(first, 6, "info", 1)).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_zenlive"))
        .arg("--config")
        .arg(&file)
        .args(["--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("ZENLIVE_WEBRTC_UDP_ADDR", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start zenlive");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let rtmp = url_in(&line_with(&mut lines, "Play RTMP:").await, "rtmp://");
    let rtmp = rtmp.trim_start_matches("rtmp://").split('/').next().expect("host:port").to_owned();
    let hls = url_in(&line_with(&mut lines, "HLS:").await, "http://");
    let api = hls.replace("/live/test/index.m3u8", "/api/v1/streams");
    let mut errors = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let client = reqwest::Client::new();
    let status = |token: String| {
        let (client, api) = (client.clone(), api.clone());
        async move { client.get(&api).bearer_auth(token).send().await.expect("API").status().as_u16() }
    };
    let admin = |secret: &str| mint_token(secret, "ops", None, &[zenlive::auth::Role::Admin]);
    assert_eq!(status(admin(first)).await, 200);
    // One connection not publishing yet is all an address may hold.
    let _held = tokio::net::TcpStream::connect(&rtmp).await.expect("connect");
    let over = |expect_closed: bool| {
        let rtmp = rtmp.clone();
        async move {
            let mut socket = tokio::net::TcpStream::connect(&rtmp).await.expect("connect");
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(
                Duration::from_secs(if expect_closed { 10 } else { 1 }),
                tokio::io::AsyncReadExt::read(&mut socket, &mut byte),
            )
            .await;
            (matches!(read, Ok(Ok(0) | Err(_))), socket)
        }
    };
    assert!(over(true).await.0, "a second pending connection is closed at once");

    std::fs::write(&file, config(second, 8, "debug", 4)).expect("rewrite");
    let pid = child.id().expect("running").to_string();
    let hup = std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
    assert!(hup.success());
    let said = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = errors.next_line().await.expect("read stderr") {
            if line.contains("SIGHUP") {
                return line;
            }
        }
        panic!("stderr ended without a word about SIGHUP");
    })
    .await
    .expect("the node answers SIGHUP in time");
    assert!(
        said.contains("applied: auth.jwt_secret, log.level, rtmp.max_pending_per_address"),
        "{said}"
    );
    assert!(said.contains("needs a restart: hls.window"), "{said}");
    assert!(!said.contains(second), "no secret in the log");
    assert!(!said.contains('\u{1b}'), "no colour codes off a terminal: {said:?}");
    assert_eq!(status(admin(first)).await, 401, "the old secret is gone");
    assert_eq!(status(admin(second)).await, 200, "the new one is in force");
    let (closed, _second_pending) = over(false).await;
    assert!(!closed, "the raised cap is in force");

    // An invalid file changes nothing and stops nothing.
    std::fs::write(&file, "[hls]\nwindow = 0\n").expect("rewrite");
    let hup = std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
    assert!(hup.success());
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = errors.next_line().await.expect("read stderr") {
            if line.contains("SIGHUP") && line.contains("nothing changed") {
                return;
            }
        }
        panic!("stderr ended without the refusal");
    })
    .await
    .expect("the refusal is logged");
    assert_eq!(status(admin(second)).await, 200, "still running as it was");
    terminate(&child);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    assert!(status.expect("exits").expect("wait").success());
}
