//! Auth on every protocol, with real clients: the token matrix against RTMP publish and play
//! (FFmpeg), HTTP-FLV and HLS (HTTP, and FFmpeg playing HLS with a token); HLS segment
//! sessions; two publishers racing for one name; and the binary's logs never showing a
//! token.

mod common;

use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use zenlive::auth::{unix_now, Auth, Claims, Role};
use zenlive::{Config, Node};

fn key_file(name: &str) -> String {
    format!("{}/tests/data/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A node that requires RS256 tokens for publish and play.
fn rs256_config() -> Config {
    let mut config = test_config();
    config.auth.algorithm = zenlive::config::JwtAlgorithm::Rs256;
    config.auth.public_key = key_file("rsa-public.pem");
    config.auth.private_key = key_file("rsa-private.pem");
    config.auth.require_publish = true;
    config.auth.require_play = true;
    config
}

fn claims(roles: &[Role], stream: &str) -> Claims {
    let now = unix_now();
    Claims {
        sub: "alice".to_owned(),
        name: None,
        roles: roles.to_vec(),
        stream: Some(stream.to_owned()),
        exp: now + 3600,
        nbf: None,
        iat: Some(now),
        iss: None,
        aud: None,
    }
}

/// Every wrong token and the code it must be refused with, for a request on `live/alice`
/// that needs `role`.
fn matrix(auth: &Auth, role: Role, wrong_role: Role) -> Vec<(&'static str, String, &'static str)> {
    let mint = |c: &Claims| auth.mint(c).expect("mint");
    let mut expired = claims(&[role], "live/*");
    expired.exp = unix_now() - 3600;
    let mut early = claims(&[role], "live/*");
    early.nbf = Some(unix_now() + 3600);
    let good = mint(&claims(&[role], "live/*"));
    let (head, rest) = good.rsplit_once('.').expect("a JWT");
    let flipped = if rest.starts_with('A') { "B" } else { "A" };
    let bad_signature = format!("{head}.{flipped}{}", &rest[1..]);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&[Role::Admin], "*")).expect("json"))
    );
    let public = std::fs::read(key_file("rsa-public.pem")).expect("public key");
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims(&[Role::Admin], "*"),
        &EncodingKey::from_secret(&public),
    )
    .expect("sign");
    vec![
        ("no token", String::new(), "token_missing"),
        ("expired", mint(&expired), "token_expired"),
        ("not yet valid", mint(&early), "token_not_yet_valid"),
        ("bad signature", bad_signature, "token_invalid"),
        ("alg none", none, "token_invalid"),
        ("RS256 to HS256 confusion", confused, "token_invalid"),
        ("wrong role", mint(&claims(&[wrong_role], "live/*")), "forbidden_role"),
        ("wrong stream", mint(&claims(&[role], "live/bob")), "forbidden_stream"),
        ("garbage", "not-a-token".to_owned(), "token_invalid"),
        ("64 KB token", "x".repeat(64 * 1024), "token_too_large"),
    ]
}

fn failures(node: &Node, protocol: &str, reason: &str) -> f64 {
    let labels = [("protocol", protocol), ("reason", reason)];
    sample(&node.metrics_text(), "zenlive_auth_failures_total", &labels).unwrap_or(0.0)
}

fn bad_input(node: &Node, reason: &str) -> f64 {
    let labels = [("reason", reason)];
    sample(&node.metrics_text(), "zenlive_bad_input_rejections_total", &labels).unwrap_or(0.0)
}

/// RTMP refusals that count for `case`. FFmpeg truncates a 64 KB stream name before
/// sending it, so that token arrives cut short (invalid), or, from a client that sends it
/// whole, makes the command message too large (bad input).
fn rtmp_refusals(node: &Node, case: &str, code: &str) -> f64 {
    if case == "64 KB token" {
        failures(node, "rtmp", "token_too_large")
            + failures(node, "rtmp", "token_invalid")
            + bad_input(node, "message_too_large")
    } else {
        failures(node, "rtmp", code)
    }
}

fn with_token(url: &str, token: &str) -> String {
    if token.is_empty() {
        url.to_owned()
    } else {
        format!("{url}?token={token}")
    }
}

/// Runs FFmpeg with `args` and waits (bounded) for it to exit; answers whether it
/// succeeded.
async fn ffmpeg(args: &[&str]) -> bool {
    let run = Command::new("ffmpeg")
        .args(["-v", "error", "-rw_timeout", "10000000"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("ffmpeg exits in time")
        .expect("run ffmpeg")
        .success()
}

#[actix_rt::test]
async fn every_protocol_refuses_every_bad_token_and_accepts_good_ones() {
    require("ffmpeg");
    let config = rs256_config();
    let auth = Auth::new(&config.auth).expect("auth");
    let node = start_node(config).await;
    let fixture = fixture(false);
    let fixture = fixture.to_str().expect("utf-8 path");
    let rtmp = rtmp_url(&node, "alice");

    // RTMP publish: each bad token is refused with its reason.
    for (case, token, code) in matrix(&auth, Role::Publisher, Role::Viewer) {
        let before = rtmp_refusals(&node, case, code);
        let url = with_token(&rtmp, &token);
        let ok = ffmpeg(&["-re", "-i", fixture, "-t", "2", "-c", "copy", "-f", "flv", &url]).await;
        assert!(!ok, "RTMP publish with {case} must fail");
        let after = rtmp_refusals(&node, case, code);
        assert!(after > before, "RTMP publish with {case}: counted as {code}");
        assert!(node.streams().is_empty(), "{case}: nothing went live");
    }

    // A good publisher token, in the stream key as OBS users paste it.
    let token = auth.mint(&claims(&[Role::Publisher], "live/alice")).expect("mint");
    let mut publisher = publish(std::path::Path::new(fixture), &with_token(&rtmp, &token));
    wait_live(&node, "alice").await;
    let key = zenlive::StreamKey::parse("live/alice").expect("key");

    // RTMP play.
    for (case, token, code) in matrix(&auth, Role::Viewer, Role::Viewer) {
        if case == "wrong role" {
            continue; // every role may watch
        }
        let before = rtmp_refusals(&node, case, code);
        let url = with_token(&rtmp, &token);
        let ok = ffmpeg(&["-i", &url, "-t", "1", "-f", "null", "-"]).await;
        assert!(!ok, "RTMP play with {case} must fail");
        let after = rtmp_refusals(&node, case, code);
        assert!(after > before, "RTMP play with {case}: counted as {code}");
    }
    let viewer = auth.mint(&claims(&[Role::Viewer], "live/alice")).expect("mint");
    let ok = ffmpeg(&["-i", &with_token(&rtmp, &viewer), "-t", "1", "-f", "null", "-"]).await;
    assert!(ok, "RTMP play with a viewer token");

    // HTTP-FLV, HLS playlists and the admin API: 401/403 with the code in a JSON body.
    // Every role may watch, so "wrong role" is a case for the API only; the API acts on no
    // single stream, so "wrong stream" is a case for the media paths only.
    let client = reqwest::Client::new();
    let http_cases = [
        ("/live/alice.flv", Role::Viewer, Role::Viewer, "wrong role"),
        ("/live/alice/index.m3u8", Role::Viewer, Role::Viewer, "wrong role"),
        ("/api/v1/streams", Role::Admin, Role::Publisher, "wrong stream"),
    ];
    for (path, role, wrong_role, skipped) in http_cases {
        for (case, token, code) in matrix(&auth, role, wrong_role) {
            if case == skipped {
                continue;
            }
            let resp = client
                .get(http_url(&node, path))
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            if case == "64 KB token" && status == 431 {
                continue; // actix-web refuses a header that large before routing
            }
            let expected = if code.starts_with("forbidden") { 403 } else { 401 };
            assert_eq!(status, expected, "{path} with {case}");
            let body: serde_json::Value = resp.json().await.expect("JSON body");
            assert_eq!(body["error"]["code"], code, "{path} with {case}");
            assert!(!body.to_string().contains(&token) || token.is_empty(), "no token echoed");
        }
    }
    let admin = auth.mint(&claims(&[Role::Admin], "*")).expect("mint");
    let resp = client.get(http_url(&node, "/api/v1/streams")).bearer_auth(&admin).send().await;
    assert_eq!(resp.expect("request").status(), 200);

    let mut flv = client
        .get(with_token(&http_url(&node, "/live/alice.flv"), &viewer))
        .send()
        .await
        .expect("request");
    assert_eq!(flv.status(), 200);
    let first = flv.chunk().await.expect("body").expect("bytes");
    assert!(first.starts_with(b"FLV"), "an FLV stream");
    drop(flv);

    // HLS: the playlist lists segments with a session, not the token.
    let mut playlist = String::new();
    for _ in 0..100 {
        let resp = client
            .get(with_token(&http_url(&node, "/live/alice/index.m3u8"), &viewer))
            .send()
            .await
            .expect("request");
        if resp.status() == 200 {
            playlist = resp.text().await.expect("playlist");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!playlist.contains(&viewer), "the JWT is not in segment URLs:\n{playlist}");
    let segment =
        playlist.lines().find(|l| l.contains(".ts?s=")).expect("a segment with a session");
    let ok = client.get(http_url(&node, &format!("/live/alice/{segment}"))).send().await;
    assert_eq!(ok.expect("request").status(), 200, "segment with its session");
    let bare = segment.split('?').next().expect("name");
    let refused = client.get(http_url(&node, &format!("/live/alice/{bare}"))).send().await;
    let refused = refused.expect("request");
    assert_eq!(refused.status(), 401, "segment without a session");
    let body: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "session_invalid");
    let tampered = format!("/live/alice/{}x", segment);
    let refused = client.get(http_url(&node, &tampered)).send().await.expect("request");
    assert_eq!(refused.status(), 401, "tampered session");

    // FFmpeg plays HLS with a token and gets every segment it asks for.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("hls.ts");
    let hls = with_token(&http_url(&node, "/live/alice/index.m3u8"), &viewer);
    let read = record(&hls, 4, &out).await;
    assert!(read.status.success(), "ffmpeg reads HLS: {}", String::from_utf8_lossy(&read.stderr));
    let info = probe(&out).await;
    let duration: f64 =
        info["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("duration");
    assert!(duration > 3.0, "HLS with a token: {duration} s");
    assert!(decode_errors(&out).await.trim().is_empty());

    // A viewer token cannot use the admin API; nothing here may kick the stream.
    assert!(node.stream(&key).is_some());
    let _ = publisher.kill().await;
    node.shutdown().await;
}

#[actix_rt::test]
async fn two_publishers_with_valid_tokens_race_and_exactly_one_wins() {
    let config = rs256_config();
    let auth = Auth::new(&config.auth).expect("auth");
    let node = start_node(config).await;
    let token = auth.mint(&claims(&[Role::Publisher], "live/*")).expect("mint");
    let url = with_token(&rtmp_url(&node, "race"), &token);
    let mut a = publish(&fixture(false), &url);
    let mut b = publish(&fixture(false), &url);
    wait_live(&node, "race").await;
    // The loser is refused promptly; the winner keeps publishing.
    let (first, _) = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::select! {
            status = a.wait() => (status, 'a'),
            status = b.wait() => (status, 'b'),
        }
    })
    .await
    .expect("one publisher is refused");
    assert!(!first.expect("wait").success(), "the loser fails");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let winners =
        [a.try_wait(), b.try_wait()].into_iter().filter(|s| matches!(s, Ok(None))).count();
    assert_eq!(winners, 1, "exactly one publisher still runs");
    assert_eq!(node.streams().len(), 1);
    let _ = a.kill().await;
    let _ = b.kill().await;
    node.shutdown().await;
}

#[actix_rt::test]
async fn the_binary_logs_refusals_without_the_token() {
    let secret = "binary-test-secret-binary-test-secret";
    let mut child = Command::new(env!("CARGO_BIN_EXE_zenlive"))
        .args(["--rtmp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .env("ZENLIVE_AUTH_JWT_SECRET", secret)
        .env("ZENLIVE_WEBRTC_UDP_ADDR", "127.0.0.1:0")
        .env("ZENLIVE_AUTH_REQUIRE_PLAY", "true")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start zenlive");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut printed = String::new();
    let mut buf = [0u8; 4096];
    while !printed.contains("HTTP-FLV:") {
        let n = tokio::time::timeout(Duration::from_secs(30), stdout.read(&mut buf))
            .await
            .expect("the binary prints its URLs")
            .expect("read");
        assert!(n > 0, "stdout closed early: {printed}");
        printed.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let flv = printed
        .lines()
        .find_map(|l| l.strip_prefix("HTTP-FLV:"))
        .map(str::trim)
        .expect("HTTP-FLV URL")
        .to_owned();

    let mut config = Config::default();
    config.auth.jwt_secret = secret.to_owned();
    let auth = Auth::new(&config.auth).expect("auth");
    let mut expired = claims(&[Role::Viewer], "live/*");
    expired.exp = unix_now() - 3600;
    let token = auth.mint(&expired).expect("mint");
    let resp = reqwest::get(with_token(&flv, &token)).await.expect("request");
    assert_eq!(resp.status(), 401);

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().expect("running").to_string()])
        .status();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the binary exits")
        .expect("output");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("token_expired"), "the refusal is logged with its reason:\n{logs}");
    assert!(!logs.contains(&token), "the token never reaches the log");
    let signature = token.rsplit('.').next().expect("signature");
    assert!(!logs.contains(signature), "not even its signature");
}
