//! Playback of recordings stored in S3 (a real SeaweedFS the tests start), from any node
//! sharing the bucket: the `zenlive` binary records what FFmpeg publishes (12 s, 4 s
//! segments) and uploads it; a second node that records nothing lists it, serves its
//! EVENT playlist while it is recorded and its VOD playlist after, which ffprobe and FFmpeg
//! play end to end with no decode error, and cuts a time range ffprobe judges; a third
//! node answers segments with redirects to presigned URLs, which FFmpeg follows. Then the
//! hostile cases: a manifest that is garbage or too large, a segment missing from the
//! bucket, S3 frozen (504) and S3 gone (502), each a clear JSON error.

mod common;

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use common::recorded::*;
use common::s3::{list, SeaweedFs, BUCKET};
use common::*;
use serde_json::Value;
use zenlive::auth::Role;

const SECRET: &str = "recording-s3-playback-test-secret";

/// An admin token, for the listing API.
fn admin() -> String {
    mint_token(SECRET, "tester", None, &[Role::Admin])
}

/// A `zenlive` process on `s3` with its own spool; `record` turns recording on.
async fn start(
    name: &str,
    dir: &Path,
    s3: &SeaweedFs,
    record: bool,
    extra: &[(&str, &str)],
) -> ZenliveProcess {
    let spool = dir.join(format!("{name}-spool")).to_str().expect("utf-8 path").to_owned();
    let mut env: Vec<(&str, String)> = vec![
        ("ZENLIVE_RECORDING_ENABLED", record.to_string()),
        ("ZENLIVE_RECORDING_SEGMENT_DURATION", "4s".into()),
        ("ZENLIVE_STORAGE_BASE_PATH", spool),
        ("ZENLIVE_STORAGE_S3_PREFIX", "rec/".into()),
        ("ZENLIVE_AUTH_JWT_SECRET", SECRET.into()),
    ];
    env.extend(s3.env());
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ZenliveProcess::start(name, name, &[], &env).await
}

/// `GET` on a node's HTTP port (with an admin token for the API; playback needs none
/// here), redirects not followed: (status, headers, body as JSON or text).
async fn get(node: &ZenliveProcess, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut request = client.get(format!("http://{}{path}", node.http));
    if path.starts_with("/api/") {
        request = request.bearer_auth(admin());
    }
    let request = request.send();
    let response = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("answered in time")
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// Polls `node`'s listing of `live/{name}` until `cond` holds for its first recording.
async fn wait_recording(
    node: &ZenliveProcess,
    name: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, body) = get(node, &format!("/api/v1/recordings/live/{name}")).await;
        assert_eq!(status, 200, "{}: {body}", node.id);
        if let Some(recording) = body["recordings"].get(0).filter(|r| cond(r)) {
            return recording.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: timed out waiting for {what}: {body}",
            node.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// ffprobe's container duration of `input` (read with the input options `options`), in
/// seconds.
async fn probed_duration(input: &str, options: &[&str]) -> f64 {
    let mut args = vec!["-v", "error"];
    args.extend(options);
    args.extend(["-show_entries", "format=duration", "-of", "csv=p=0", input]);
    let (ok, out, err) = run("ffprobe", &args).await;
    assert!(ok, "ffprobe {input}: {err}");
    out.trim().parse().unwrap_or_else(|_| panic!("ffprobe {input} duration: {out:?} {err}"))
}

/// What FFmpeg prints at `-v error` decoding `input` whole, read with the input options
/// `options` (empty when clean).
async fn decode(input: &str, options: &[&str]) -> String {
    let mut args = vec!["-v", "error"];
    args.extend(options);
    args.extend(["-i", input, "-f", "null", "-"]);
    let (ok, _, err) = run("ffmpeg", &args).await;
    assert!(ok, "ffmpeg {input}: {err}");
    err
}

fn seconds(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// The playlist at `path` on `node` plays `total` seconds, decoding cleanly.
async fn plays(node: &ZenliveProcess, path: &str, total: f64) {
    let url = format!("http://{}{path}", node.http);
    // Redirected segments come from another host, on which FFmpeg's HLS reader cannot
    // reuse its connection to the node (it says so at the error level, then reconnects):
    // one connection per request, as players that follow redirects do.
    let options: &[&str] =
        if node.id.contains("redirect") { &["-http_persistent", "0"] } else { &[] };
    let played = probed_duration(&url, options).await;
    assert!((played - total).abs() < 0.25, "{}: plays {played} s, {total} s recorded", node.id);
    let errors = decode(&url, options).await;
    assert!(errors.trim().is_empty(), "{}: playing printed:\n{errors}", node.id);
}

#[tokio::test]
async fn a_recording_in_s3_plays_from_every_node_sharing_the_bucket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s3 = SeaweedFs::start("s3-playback", &dir.path().join("s3")).await;
    let recorder = start("s3-play-recorder", dir.path(), &s3, true, &[]).await;
    // Nodes that record nothing: one proxies segments, one redirects to presigned URLs.
    let other = start("s3-play-other", dir.path(), &s3, false, &[]).await;
    let redirects = start(
        "s3-play-redirect",
        dir.path(),
        &s3,
        false,
        &[("ZENLIVE_STORAGE_S3_PLAYBACK", "redirect")],
    )
    .await;
    let mut publisher = publish_live(&recorder.rtmp_url("live/cam"), 12, false);

    // While it is recorded: every node lists it live, with an EVENT playlist without end.
    for node in [&recorder, &other] {
        let live = wait_recording(node, "cam", "a live recording with a segment", |r| {
            r["live"] == true && r["segments"].as_array().is_some_and(|s| !s.is_empty())
        })
        .await;
        let path = live["playlist"].as_str().expect("playlist path");
        let (status, _, text) = get(node, path).await;
        let text = text.as_str().unwrap_or_default().to_owned();
        assert_eq!(status, 200, "{text}");
        assert!(
            text.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !text.contains("#EXT-X-ENDLIST"),
            "{}: {text}",
            node.id
        );
        assert!(text.contains("#EXT-X-MAP:URI=\"0.mp4\",BYTERANGE="), "{text}");
    }

    wait_publisher(&mut publisher, Duration::from_secs(60)).await;

    // Finished: the node that did not record sees three segments, no longer live.
    let recording =
        wait_recording(&other, "cam", "the recording to finish", |r| r["live"] == false).await;
    let segments = recording["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 3, "{recording}");
    for segment in &segments[..2] {
        let duration = seconds(&segment["duration"]);
        assert!((duration - 4.0).abs() <= FRAME + 0.001, "{segment}");
    }
    let total = seconds(&recording["duration"]);
    assert!((total - 12.0).abs() < 0.5, "{total} s of 12 s: {recording}");
    assert_eq!(recording["format"], "fmp4");
    let on_recorder =
        wait_recording(&recorder, "cam", "the recording to finish", |r| r["live"] == false).await;
    assert_eq!(on_recorder, recording, "every node lists the same recording");
    let (_, _, all) = get(&other, "/api/v1/recordings").await;
    assert_eq!(all["recordings"].as_array().map(Vec::len), Some(1), "{all}");
    let (_, _, none) = get(&other, "/api/v1/recordings?app=other").await;
    assert_eq!(none["recordings"].as_array().map(Vec::len), Some(0), "{none}");
    // Nothing is left in the recorder's spool: the catalog lives in the bucket.
    let spool = dir.path().join("s3-play-recorder-spool");
    wait_for("an empty spool", Duration::from_secs(10), || files_under(&spool, "").is_empty())
        .await;
    let client = s3.client().await;
    let objects = list(&client, "rec/").await;
    let manifests: Vec<_> = objects.iter().filter(|(k, _)| k.contains("/.catalog/")).collect();
    assert_eq!(manifests.len(), 1, "one manifest per recording: {objects:?}");
    assert_eq!(list(&client, "rec/live/cam/").await.len(), 3, "{objects:?}");

    // The VOD playlist plays end to end from every node, segments proxied or redirected.
    let playlist = recording["playlist"].as_str().expect("playlist path").to_owned();
    for node in [&recorder, &other, &redirects] {
        let (_, _, text) = get(node, &playlist).await;
        let text = text.as_str().unwrap_or_default().to_owned();
        assert!(
            text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.ends_with("#EXT-X-ENDLIST\n"),
            "{}: {text}",
            node.id
        );
        plays(node, &playlist, total).await;
    }
    let segment = playlist.replace("index.m3u8", "0.mp4");
    let (status, headers, _) = get(&redirects, &segment).await;
    let location = headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(status, 302);
    assert!(
        location.starts_with(&s3.endpoint) && location.contains("X-Amz-Signature="),
        "{location}"
    );

    // A byte range of a segment, proxied.
    let response = reqwest::Client::new()
        .get(format!("http://{}{segment}", other.http))
        .header("range", "bytes=0-7")
        .send()
        .await
        .expect("range");
    assert_eq!(response.status().as_u16(), 206);
    assert_eq!(
        response.headers().get("content-range").and_then(|v| v.to_str().ok()),
        Some(format!("bytes 0-7/{}", segments[0]["bytes"]).as_str())
    );
    assert_eq!(&response.bytes().await.expect("body")[4..8], b"ftyp");
    // A whole segment, streamed: exactly its recorded bytes.
    let whole =
        reqwest::get(format!("http://{}{}", other.http, playlist.replace("index.m3u8", "2.mp4")))
            .await
            .expect("segment");
    assert_eq!(whole.status().as_u16(), 200);
    let body = whole.bytes().await.expect("body");
    assert_eq!(Some(body.len() as u64), segments[2]["bytes"].as_u64());

    // Seconds 3 to 9 as one MP4, cut by the node that did not record.
    let start: DateTime<Utc> =
        recording["start"].as_str().and_then(|s| s.parse().ok()).expect("an RFC 3339 start");
    let from =
        (start + chrono::Duration::seconds(3)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let response = reqwest::Client::new()
        .get(format!("http://{}/recordings/live/cam?start={from}&duration=6s", other.http))
        .send()
        .await
        .expect("download");
    assert_eq!(response.status().as_u16(), 200);
    let file = dir.path().join("range.mp4");
    std::fs::write(&file, response.bytes().await.expect("body")).expect("write");
    let file = file.to_str().expect("utf-8").to_owned();
    let duration = probed_duration(&file, &[]).await;
    assert!((6.0 - FRAME..=7.0 + FRAME).contains(&duration), "the range is {duration} s");
    let errors = decode(&file, &[]).await;
    assert!(errors.trim().is_empty(), "decoding the range printed:\n{errors}");
    let (_, span) = video_span(Path::new(&file)).await;
    assert!(span >= 6.0 - FRAME, "{span} s of video");

    // Hostile paths, as with local storage.
    let id = recording["id"].as_str().expect("id");
    for (path, status, code) in [
        ("/recordings/live/cam/..%2F..%2Fetc/index.m3u8".to_owned(), 400, "invalid_recording_id"),
        (
            "/recordings/live/cam/20000101T000000.000Z/index.m3u8".to_owned(),
            404,
            "recording_not_found",
        ),
        (format!("/recordings/live/cam/{id}/99.mp4"), 404, "segment_not_found"),
        (format!("/recordings/live/cam/{id}/..%2F..%2Fcam%2Fx.mp4"), 404, "segment_not_found"),
        ("/recordings/live/.hidden/x/index.m3u8".to_owned(), 400, "invalid_stream_name"),
        (
            "/recordings/live/cam?start=9999999999&duration=5".to_owned(),
            404,
            "no_recording_in_range",
        ),
    ] {
        let (got, _, body) = get(&other, &path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
}

/// Puts `body` at `key` in the test bucket.
async fn put(client: &aws_sdk_s3::Client, key: &str, body: Vec<u8>) {
    client
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .expect("PutObject");
}

#[tokio::test]
async fn broken_manifests_missing_segments_and_s3_faults_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s3 = SeaweedFs::start("s3-playback-faults", &dir.path().join("s3")).await;
    let node = start(
        "s3-play-faults",
        dir.path(),
        &s3,
        false,
        &[
            ("ZENLIVE_STORAGE_S3_ATTEMPT_TIMEOUT", "1s"),
            ("ZENLIVE_STORAGE_S3_OPERATION_TIMEOUT", "3s"),
        ],
    )
    .await;
    let client = s3.client().await;
    // A manifest that is not one, one too large, one under a name that is no recording,
    // and a good one whose segment is not in the bucket.
    let catalog = "rec/.catalog/live/cam";
    put(&client, &format!("{catalog}/20240101T000000.000Z.json"), b"{not json".to_vec()).await;
    put(&client, &format!("{catalog}/20240101T000001.000Z.json"), vec![b' '; 9 << 20]).await;
    put(&client, &format!("{catalog}/not-an-id.json"), b"{}".to_vec()).await;
    let good = serde_json::json!({
        "version": 1,
        "stream": "live/cam",
        "recording": "20240101T000002.000Z",
        "live": false,
        "updated_ms": 1_704_067_202_000u64,
        "segments": [{
            "version": 1,
            "stream": "live/cam",
            "recording": "20240101T000002.000Z",
            "path": "live/cam/gone.mp4",
            "format": "fmp4",
            "wall_start_ms": 1_704_067_202_000u64,
            "media_start_us": 0,
            "duration_us": 4_000_000,
            "bytes": 5000,
            "init_bytes": 700,
            "init_digest": "00",
        }],
    });
    put(&client, &format!("{catalog}/20240101T000002.000Z.json"), good.to_string().into_bytes())
        .await;

    // The listing shows the good recording only.
    let (status, _, body) = get(&node, "/api/v1/recordings").await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["recordings"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, ["20240101T000002.000Z"], "{body}");
    for (path, status, code) in [
        ("/recordings/live/cam/20240101T000000.000Z/index.m3u8", 502, "storage_corrupt"),
        ("/recordings/live/cam/20240101T000001.000Z/index.m3u8", 502, "storage_corrupt"),
        ("/recordings/live/cam/20240101T000002.000Z/0.mp4", 404, "segment_missing"),
        ("/recordings/live/cam?start=1704067203&duration=2", 404, "segment_missing"),
    ] {
        let (got, _, body) = get(&node, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
    let (status, _, text) =
        get(&node, "/recordings/live/cam/20240101T000002.000Z/index.m3u8").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.as_str().is_some_and(|t| t.contains("#EXT-X-ENDLIST")), "{text}");

    // S3 frozen: the attempts time out, and the answer says so in time.
    s3.freeze();
    let asked = std::time::Instant::now();
    let (status, _, body) = get(&node, "/api/v1/recordings").await;
    assert_eq!((status, &body["error"]["code"]), (504, &Value::from("storage_timeout")), "{body}");
    assert!(asked.elapsed() < Duration::from_secs(10), "answered after {:?}", asked.elapsed());
    s3.thaw();
    // S3 gone: refused connections.
    s3.kill();
    for path in ["/api/v1/recordings", "/recordings/live/cam/20240101T000002.000Z/index.m3u8"] {
        let (status, _, body) = get(&node, path).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (502, &Value::from("storage_unavailable")),
            "{path}: {body}"
        );
    }
    // Back: answers again once SeaweedFS is ready (it answers InternalError for a moment
    // after its port opens: 502 until then).
    s3.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = get(&node, "/api/v1/recordings/live/cam").await;
        if status == 200 {
            assert_eq!(body["recordings"].as_array().map(Vec::len), Some(1), "{body}");
            break;
        }
        assert_eq!((status, &body["error"]["code"]), (502, &Value::from("storage_unavailable")));
        assert!(tokio::time::Instant::now() < deadline, "S3 is back but the node says {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!node.log_text().contains("panicked"), "no panic");
}
