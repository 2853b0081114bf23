//! Playback of recordings, judged by real clients: the `zenlive` binary records what FFmpeg
//! publishes (12 s, 4 s segments, a keyframe every second); the listing API shows the
//! recording and its segments; ffprobe and FFmpeg play its VOD HLS playlist end to end (an
//! EVENT playlist while it is recorded); a time-range download is one MP4 that ffprobe
//! reads with the right duration and FFmpeg decodes cleanly; tokens for other streams,
//! hostile paths and absurd ranges are refused with clear JSON errors.

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::recorded::*;
use common::*;
use serde_json::Value;
use zenlive::auth::{Auth, Claims, Role};

const SECRET: &str = "recording-playback-test-secret";

/// A token for `roles`, limited to `stream` when given.
fn token(roles: &[Role], stream: Option<&str>) -> String {
    let mut config = zenlive::Config::default();
    config.auth.jwt_secret = SECRET.to_owned();
    let auth = Auth::new(&config.auth).expect("auth");
    let now = zenlive::auth::unix_now();
    auth.mint(&Claims {
        sub: "tester".into(),
        name: None,
        roles: roles.to_vec(),
        stream: stream.map(str::to_owned),
        exp: now + 600,
        nbf: None,
        iat: Some(now),
        iss: None,
        aud: None,
    })
    .expect("mint")
}

async fn start(name: &str, dir: &Path, format: &str) -> ZenliveProcess {
    let base = dir.to_str().expect("utf-8 path").to_owned();
    let env = [
        ("ZENLIVE_RECORDING_ENABLED", "true"),
        ("ZENLIVE_RECORDING_FORMAT", format),
        ("ZENLIVE_RECORDING_SEGMENT_DURATION", "4s"),
        ("ZENLIVE_STORAGE_BASE_PATH", base.as_str()),
        ("ZENLIVE_AUTH_JWT_SECRET", SECRET),
        ("ZENLIVE_AUTH_REQUIRE_PLAY", "true"),
    ];
    ZenliveProcess::start(name, "n1", &[], &env).await
}

/// `GET` on the HTTP port with a bearer token: (status, body as JSON or text).
async fn get(node: &ZenliveProcess, path: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("http://{}{path}", node.http));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = tokio::time::timeout(Duration::from_secs(20), request.send())
        .await
        .expect("answered in time")
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Polls the listing of `live/{name}` until `cond` holds for its first recording.
async fn wait_recording(
    node: &ZenliveProcess,
    admin: &str,
    name: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) =
            get(node, &format!("/api/v1/recordings/live/{name}"), Some(admin)).await;
        assert_eq!(status, 200, "{body}");
        if let Some(recording) = body["recordings"].get(0).filter(|r| cond(r)) {
            return recording.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// ffprobe's container duration of `input`, in seconds.
async fn probed_duration(input: &str) -> f64 {
    let (ok, out, err) = run(
        "ffprobe",
        &["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", input],
    )
    .await;
    assert!(ok, "ffprobe {input}: {err}");
    out.trim().parse().unwrap_or_else(|_| panic!("ffprobe {input} duration: {out:?} {err}"))
}

/// What FFmpeg prints at `-v error` decoding `input` whole (empty when clean).
async fn decode(input: &str) -> String {
    let (ok, _, err) = run("ffmpeg", &["-v", "error", "-i", input, "-f", "null", "-"]).await;
    assert!(ok, "ffmpeg {input}: {err}");
    err
}

fn seconds(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

#[tokio::test]
async fn a_recording_is_listed_played_as_vod_and_cut_by_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start("playback-fmp4", dir.path(), "fmp4").await;
    let admin = token(&[Role::Admin], None);
    let viewer = token(&[Role::Viewer], Some("live/cam"));
    let mut publisher = publish_live(&node.rtmp_url("live/cam"), 12, false);

    // While it is recorded: listed live, an EVENT playlist without end.
    let live = wait_recording(&node, &admin, "cam", "a live recording with a segment", |r| {
        r["live"] == true && r["segments"].as_array().is_some_and(|s| !s.is_empty())
    })
    .await;
    let playlist_path = live["playlist"].as_str().expect("playlist path").to_owned();
    let (status, text) = get(&node, &playlist_path, Some(&viewer)).await;
    let text = text.as_str().unwrap_or_default().to_owned();
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !text.contains("#EXT-X-ENDLIST"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-MAP:URI=\"0.mp4?s="), "segments carry a session: {text}");

    wait_publisher(&mut publisher, Duration::from_secs(60)).await;

    // Finished: one recording of three segments with the right durations.
    let recording =
        wait_recording(&node, &admin, "cam", "the recording to finish", |r| r["live"] == false)
            .await;
    let (_, all) = get(&node, "/api/v1/recordings", Some(&admin)).await;
    assert_eq!(all["recordings"].as_array().map(Vec::len), Some(1), "{all}");
    let segments = recording["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 3, "{recording}");
    for segment in &segments[..2] {
        let duration = seconds(&segment["duration"]);
        assert!((duration - 4.0).abs() <= FRAME + 0.001, "{segment}");
    }
    let total = seconds(&recording["duration"]);
    assert!((total - 12.0).abs() < 0.5, "{total} s of 12 s: {recording}");
    assert_eq!(recording["format"], "fmp4");

    // The VOD playlist plays end to end.
    let url = format!("http://{}{playlist_path}?token={viewer}", node.http);
    let (_, text) = get(&node, &playlist_path, Some(&viewer)).await;
    let text = text.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.ends_with("#EXT-X-ENDLIST\n"),
        "{text}"
    );
    let played = probed_duration(&url).await;
    assert!((played - total).abs() < 0.25, "the playlist plays {played} s, {total} s recorded");
    let errors = decode(&url).await;
    assert!(errors.trim().is_empty(), "playing the playlist printed:\n{errors}");

    // Seconds 3 to 9 as one MP4: from the keyframe at or before 3 s (one a second).
    let start: DateTime<Utc> =
        recording["start"].as_str().and_then(|s| s.parse().ok()).expect("an RFC 3339 start");
    let from =
        (start + chrono::Duration::seconds(3)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let range = format!("/recordings/live/cam?start={from}&duration=6s");
    let response = reqwest::Client::new()
        .get(format!("http://{}{range}", node.http))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("video/mp4")
    );
    let file = dir.path().join("range.mp4");
    std::fs::write(&file, response.bytes().await.expect("body")).expect("write");
    let file = file.to_str().expect("utf-8").to_owned();
    let duration = probed_duration(&file).await;
    assert!((6.0 - FRAME..=7.0 + FRAME).contains(&duration), "the range is {duration} s");
    let errors = decode(&file).await;
    assert!(errors.trim().is_empty(), "decoding the range printed:\n{errors}");
    let info = probe(&file).await;
    let kinds: Vec<&str> = info["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["codec_type"].as_str())
        .collect();
    assert!(kinds.contains(&"video") && kinds.contains(&"audio"), "{kinds:?}");

    // A unix-seconds start works too.
    let unix = start.timestamp() + 4;
    let (status, _) =
        get(&node, &format!("/recordings/live/cam?start={unix}&duration=2"), Some(&viewer)).await;
    assert_eq!(status, 200);

    // Auth: tokens for another stream, none, or not an admin.
    let other_viewer = token(&[Role::Viewer], Some("live/other"));
    let other_admin = token(&[Role::Admin], Some("live/other"));
    for (path, bearer, status) in [
        (playlist_path.as_str(), Some(other_viewer.as_str()), 403),
        (playlist_path.as_str(), None, 401),
        (range.as_str(), Some(other_viewer.as_str()), 403),
        ("/api/v1/recordings/live/cam", Some(other_admin.as_str()), 403),
        ("/api/v1/recordings/live/cam", Some(viewer.as_str()), 403),
        ("/api/v1/recordings", None, 401),
    ] {
        let (got, body) = get(&node, path, bearer).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    let segment = playlist_path.replace("index.m3u8", "0.mp4");
    assert_eq!(get(&node, &segment, None).await.0, 401, "a segment without a session");
    assert_eq!(get(&node, &format!("{segment}?s=1.x.y"), None).await.0, 401, "a forged session");
    let (_, scoped) = get(&node, "/api/v1/recordings", Some(&other_admin)).await;
    assert_eq!(scoped["recordings"].as_array().map(Vec::len), Some(0), "{scoped}");

    // Hostile paths and ranges.
    let id = recording["id"].as_str().expect("id");
    for (path, status, code) in [
        ("/recordings/live/cam/..%2F..%2Fetc/index.m3u8".to_owned(), 400, "invalid_recording_id"),
        // The client resolves `..` to the download route of stream live/index.m3u8, which
        // this token does not cover.
        ("/recordings/live/cam/../index.m3u8".to_owned(), 403, "forbidden_stream"),
        (
            "/recordings/live/cam/20000101T000000.000Z/index.m3u8".to_owned(),
            404,
            "recording_not_found",
        ),
        (format!("/recordings/live/cam/{id}/99.mp4"), 404, "segment_not_found"),
        (format!("/recordings/live/cam/{id}/0.ts"), 404, "segment_not_found"),
        (format!("/recordings/live/cam/{id}/..%2F..%2Fcam%2Fx.mp4"), 404, "segment_not_found"),
        (format!("/recordings/live/cam/{id}/-1.mp4"), 404, "segment_not_found"),
        ("/recordings/live/.hidden/x/index.m3u8".to_owned(), 400, "invalid_stream_name"),
        ("/recordings/live/cam?start=1700000000&duration=100000".to_owned(), 400, "range_too_long"),
        (
            "/recordings/live/cam?start=9999999999&duration=5".to_owned(),
            404,
            "no_recording_in_range",
        ),
        ("/recordings/live/cam?start=yesterday&duration=5".to_owned(), 400, "invalid_range"),
        ("/recordings/live/cam?start=1700000000&duration=0".to_owned(), 400, "invalid_range"),
        ("/recordings/live/cam?duration=5".to_owned(), 400, "missing_parameter"),
    ] {
        let (got, body) = get(&node, &path, Some(&viewer)).await;
        assert_eq!(got, status, "{path}: {body}");
        if !code.is_empty() {
            assert_eq!(body["error"]["code"], code, "{path}: {body}");
        }
    }
    // A byte range of a segment.
    let response = reqwest::Client::new()
        .get(format!("http://{}{segment}?token={viewer}", node.http))
        .header("range", "bytes=0-7")
        .send()
        .await
        .expect("range");
    assert_eq!(response.status().as_u16(), 206);
    assert_eq!(&response.bytes().await.expect("body")[4..8], b"ftyp");
}

#[tokio::test]
async fn a_ts_recording_plays_over_hls_and_its_download_says_why_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start("playback-ts", dir.path(), "ts").await;
    let admin = token(&[Role::Admin], None);
    let viewer = token(&[Role::Viewer], None);
    let mut publisher = publish_live(&node.rtmp_url("live/ts"), 6, false);
    tokio::time::timeout(Duration::from_secs(60), publisher.wait())
        .await
        .expect("the publisher finishes in time")
        .expect("ffmpeg ran");
    let recording =
        wait_recording(&node, &admin, "ts", "the recording to finish", |r| r["live"] == false)
            .await;
    let playlist = recording["playlist"].as_str().expect("playlist");
    let url = format!("http://{}{playlist}?token={viewer}", node.http);
    let played = probed_duration(&url).await;
    let total = seconds(&recording["duration"]);
    assert!((played - total).abs() < 0.25, "{played} s of {total} s");
    let errors = decode(&url).await;
    assert!(errors.trim().is_empty(), "{errors}");
    let start = recording["start"].as_str().expect("start");
    let (status, body) =
        get(&node, &format!("/recordings/live/ts?start={start}&duration=2"), Some(&viewer)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (501, &Value::from("download_format_unsupported")),
        "{body}"
    );
}
