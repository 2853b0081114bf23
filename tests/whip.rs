//! WHIP ingest end to end: aiortc (a real WebRTC stack, scripted in
//! `tests/webrtc/whip_publish.py`) publishes H.264 and Opus to a node on loopback; the node
//! transcodes the Opus to AAC, and FFmpeg reads the stream back over RTMP, HTTP-FLV and HLS
//! as H.264 + AAC and decodes it without an error. Headless Chromium publishes its fake
//! camera and microphone the same way, and as VP8, which an aiortc WHEP viewer decodes.
//! Hostile offers, tokens, names and datagrams get their refusals and harm nothing.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::webrtc::aiortc;
use common::*;
use tokio::process::{Child, Command};
use zenlive::auth::Role;
use zenlive::{Config, Node};

const SECRET: &str = "whip-test-secret-whip-test-secret";

/// A hand-written offer: valid enough for the node's first look, never connected.
const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:102 H264/90000\r\n";

/// The aiortc publisher on `url` with `args`, and its report lines.
fn whip_publisher(url: &str, args: &[&str]) -> (Child, StdoutLines) {
    aiortc("whip_publish.py", url, args)
}

fn whip_url(node: &Node, name: &str) -> String {
    http_url(node, &format!("/whip/live/{name}"))
}

async fn metrics(node: &Node) -> String {
    node.metrics_text()
}

#[actix_rt::test]
async fn an_aiortc_publish_plays_over_http_flv_and_rtmp_without_decode_errors() {
    let node = start_node(test_config()).await;
    let (mut publisher, mut lines) =
        whip_publisher(&whip_url(&node, "cam"), &["--audio", "--seconds", "60"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    let location = line_starting(&mut lines, "LOCATION").await;
    assert!(location.starts_with("/whip/sessions/"), "{location}");
    line_starting(&mut lines, "CONNECTED").await;
    wait_live(&node, "cam").await;

    // Garbage on the UDP port while the stream runs: STUN-, DTLS- and RTP-looking bytes
    // from an address no session knows.
    let udp = node.webrtc_addr().expect("webrtc enabled");
    let garbage = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for i in 0..500u32 {
        let mut datagram = vec![(i % 4) as u8 * 0x40, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42];
        datagram.extend_from_slice(&i.to_be_bytes().repeat(1 + (i % 60) as usize));
        garbage.send_to(&datagram, udp).expect("send garbage");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let rtmp = dir.path().join("whip-rtmp.flv");
    let out = record(&rtmp_url(&node, "cam"), 3, &rtmp).await;
    assert!(out.status.success(), "ffmpeg read RTMP: {}", String::from_utf8_lossy(&out.stderr));
    let info = probe(&rtmp).await;
    let streams = info["streams"].as_array().expect("streams");
    let video = streams.iter().find(|s| s["codec_type"] == "video").expect("video");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(320), Some(240)));
    // The Opus track, transcoded: AAC-LC, 48 kHz stereo.
    assert_aac(&info);
    let errors = decode_errors(&rtmp).await;
    assert!(errors.trim().is_empty(), "decoding printed errors:\n{errors}");
    let frames = count_frames(&rtmp).await;
    assert!(frames >= 45, "only {frames} video frames over RTMP");
    // 3 s of 1024-sample frames at 48 kHz is 140; the publisher's first second may be cut.
    let audio = count_audio_frames(&rtmp).await;
    assert!(audio >= 100, "only {audio} AAC frames over RTMP");
    // HTTP-FLV: read for 3 s and judged (the bytes, not a live FFmpeg reader).
    let flv = dir.path().join("whip.flv");
    std::fs::write(&flv, http_flv_bytes(&node, "/live/cam.flv", Duration::from_secs(3)).await)
        .expect("write");
    let frames = count_frames(&flv).await;
    assert!(frames >= 45, "only {frames} video frames over HTTP-FLV");
    assert_aac(&probe(&flv).await);
    let audio = count_audio_frames(&flv).await;
    assert!(audio >= 100, "only {audio} AAC frames over HTTP-FLV");
    let errors = decode_errors(&flv).await;
    assert!(errors.trim().is_empty(), "decoding HTTP-FLV printed errors:\n{errors}");
    // HLS: the packager's MPEG-TS segments carry the AAC too.
    let hls = http_url(&node, "/live/cam/index.m3u8");
    wait_for_async("an HLS segment", Duration::from_secs(20), || hls_has_segments(&hls)).await;
    let ts = dir.path().join("whip-hls.ts");
    let out = record(&hls, 3, &ts).await;
    assert!(out.status.success(), "ffmpeg read HLS: {}", String::from_utf8_lossy(&out.stderr));
    let info = probe(&ts).await;
    assert_aac(&info);
    let h264 =
        info["streams"].as_array().is_some_and(|s| s.iter().any(|s| s["codec_name"] == "h264"));
    assert!(h264, "no H.264 over HLS: {info}");
    let errors = decode_errors(&ts).await;
    assert!(errors.trim().is_empty(), "decoding HLS printed errors:\n{errors}");
    let audio = count_audio_frames(&ts).await;
    assert!(audio >= 50, "only {audio} AAC frames over HLS: {info}");

    let text = metrics(&node).await;
    assert_eq!(sample(&text, "zenlive_webrtc_sessions", &[("protocol", "whip")]), Some(1.0));
    let packets =
        sample(&text, "zenlive_webrtc_rtp_packets_received_total", &[("protocol", "whip")]);
    assert!(packets.is_some_and(|n| n > 100.0), "{packets:?}");
    let unroutable = sample(&text, "zenlive_webrtc_udp_dropped_total", &[("reason", "unroutable")]);
    // The kernel may drop part of a 500-datagram burst before the node reads it.
    assert!(unroutable.is_some_and(|n| n > 0.0), "garbage counted: {unroutable:?}");
    let direction = [("direction", "opus_to_aac")];
    assert_eq!(sample(&text, "zenlive_transcode_active", &direction), Some(1.0));
    let made = sample(&text, "zenlive_transcode_frames_out_total", &direction);
    assert!(made.is_some_and(|n| n > 200.0), "AAC frames made: {made:?}");
    let cpu = sample(&text, "zenlive_transcode_cpu_seconds_total", &direction);
    assert!(cpu.is_some_and(|s| s > 0.0), "transcoder CPU time: {cpu:?}");
    assert_eq!(sample(&text, "zenlive_transcode_errors_total", &direction), Some(0.0));
    // The stream's loss series (the node's receive statistics; loopback loses nothing).
    let quality = [("stream", "live/cam"), ("protocol", "whip")];
    let lost = sample(&text, "zenlive_webrtc_stream_packets_lost_total", &quality);
    assert!(lost.is_some_and(|n| n >= 0.0), "the stream's loss series: {lost:?}");

    // The publisher leaves (its stdin closes): the stream ends.
    drop(publisher.stdin.take());
    line_starting(&mut lines, "DONE").await;
    let key = zenlive::StreamKey::new("live", "cam").expect("name");
    wait_for("the stream to end", Duration::from_secs(40), || node.stream(&key).is_none()).await;
    wait_for("the session to end", Duration::from_secs(40), || {
        sample(&node.metrics_text(), "zenlive_webrtc_sessions", &[("protocol", "whip")])
            == Some(0.0)
    })
    .await;
    let lost = sample(&node.metrics_text(), "zenlive_webrtc_stream_packets_lost_total", &quality);
    assert_eq!(lost, None, "the stream's loss series went with its session");
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_whip_stream_is_recorded_as_h264_and_aac_in_fragmented_mp4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.recording.enabled = true;
    config.recording.format = zenlive::config::RecordingFormat::Fmp4;
    config.recording.segment_duration = Duration::from_secs(4);
    config.storage.base_path = dir.path().to_str().expect("utf-8 path").to_owned();
    let node = start_node(config).await;
    let (_publisher, mut lines) =
        whip_publisher(&whip_url(&node, "rec"), &["--audio", "--seconds", "12"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "CONNECTED").await;
    line_starting(&mut lines, "DONE").await;
    // The session's end ends the stream, which finishes the open segment.
    let segments = || {
        let mut found = Vec::new();
        let mut stack = vec![dir.path().join("live/rec")];
        while let Some(at) = stack.pop() {
            for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    found.push(path);
                }
            }
        }
        found.sort();
        found
    };
    wait_for("the recording to be finished", Duration::from_secs(40), || {
        let files = segments();
        !files.is_empty()
            && files.iter().all(|f| f.extension().is_some_and(|e| e == "mp4"))
            && node.stream(&zenlive::StreamKey::new("live", "rec").expect("name")).is_none()
    })
    .await;
    let files = segments();
    assert!(files.len() >= 2, "12 s in 4 s segments: {files:?}");
    let mut total = 0.0;
    for file in &files {
        let info = probe(file).await;
        let codecs = common::recorded::codec_names(&info);
        assert!(
            codecs.iter().any(|c| c == "h264") && codecs.iter().any(|c| c == "aac"),
            "{}: {codecs:?}",
            file.display()
        );
        let errors = decode_errors(file).await;
        assert!(errors.trim().is_empty(), "{}: decoding printed:\n{errors}", file.display());
        total += common::recorded::video_span(file).await.1;
    }
    // aiortc's first second may go to ICE and DTLS.
    assert!((9.0..=12.5).contains(&total), "{total} s recorded: {files:?}");
    node.shutdown().await;
}

/// What `path` of the node's HTTP port sends in `span`.
async fn http_flv_bytes(node: &Node, path: &str, span: Duration) -> Vec<u8> {
    let mut response = reqwest::get(http_url(node, path)).await.expect("GET");
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + span;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
        body.extend_from_slice(&chunk);
    }
    body
}

/// Whether the HLS playlist at `url` lists two segments or more.
async fn hls_has_segments(url: &str) -> bool {
    let Ok(response) = reqwest::get(url).await else { return false };
    response.text().await.is_ok_and(|p| p.matches("#EXTINF").count() >= 2)
}

/// Asserts that ffprobe's description `info` has an AAC-LC track at 48 kHz, stereo (the
/// transcoded Opus).
fn assert_aac(info: &serde_json::Value) {
    let streams = info["streams"].as_array().expect("streams");
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").expect("an audio track");
    assert_eq!(audio["codec_name"], "aac", "{info}");
    assert_eq!(audio["profile"], "LC", "{info}");
    assert_eq!(audio["sample_rate"], "48000", "{info}");
    assert_eq!(audio["channels"], 2, "{info}");
}

/// How many audio frames FFmpeg decodes from `file`.
async fn count_audio_frames(file: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .await
        .expect("run ffprobe");
    // MPEG-TS prints the stream once more under its program: take the first line.
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|line| line.trim().trim_end_matches(',').parse().ok()).unwrap_or(0)
}

/// How many video frames FFmpeg decodes from `file`.
async fn count_frames(file: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .await
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[actix_rt::test]
async fn delete_on_the_location_ends_the_session_and_the_stream() {
    let node = start_node(test_config()).await;
    let (_publisher, mut lines) =
        whip_publisher(&whip_url(&node, "gone"), &["--delete-after", "1"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "CONNECTED").await;
    wait_live(&node, "gone").await;
    assert_eq!(line_starting(&mut lines, "DELETED").await, "200");
    let key = zenlive::StreamKey::new("live", "gone").expect("name");
    wait_for("the stream to end", Duration::from_secs(15), || node.stream(&key).is_none()).await;
    node.shutdown().await;
}

#[actix_rt::test]
async fn hostile_offers_are_refused_with_reasons_and_claim_nothing() {
    let node = start_node(test_config()).await;
    let client = reqwest::Client::new();
    let url = whip_url(&node, "hostile");
    let post = |body: Vec<u8>, content_type: &'static str| {
        client.post(&url).header("Content-Type", content_type).body(body).send()
    };
    let media_less = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_vec();
    // A codec no node ingests (VP8 and H.264 are taken).
    let unknown_codec = OFFER.replace("H264", "XV99").into_bytes();
    for (body, content_type, status, code) in [
        (b"not an offer".to_vec(), "application/sdp", 400, "invalid_sdp"),
        (vec![b'v'; 100 * 1024], "application/sdp", 413, "offer_too_large"),
        (media_less, "application/sdp", 400, "no_media"),
        (unknown_codec, "application/sdp", 400, "unsupported_codecs"),
        (OFFER.as_bytes().to_vec(), "text/plain", 415, "unsupported_media_type"),
    ] {
        let response = post(body, content_type).await.expect("request");
        assert_eq!(response.status(), status, "{code}");
        let body: serde_json::Value = response.json().await.expect("a JSON refusal");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    assert!(node.stream(&zenlive::StreamKey::new("live", "hostile").expect("name")).is_none());

    let unknown = http_url(&node, "/whip/sessions/00000000000000000000000000000000");
    let response = client.delete(&unknown).send().await.expect("request");
    assert_eq!(response.status(), 404);
    let response = client.patch(&unknown).send().await.expect("request");
    assert_eq!(response.status(), 404);
    let response = client.request(reqwest::Method::OPTIONS, &url).send().await.expect("preflight");
    assert_eq!(response.status(), 204);
    let allowed = response.headers()["access-control-allow-methods"].to_str().expect("ascii");
    assert!(allowed.contains("POST"), "{allowed}");

    let refused = sample(&node.metrics_text(), "zenlive_webrtc_refused_total", &[]);
    assert_eq!(refused, Some(5.0));
    node.shutdown().await;
}

/// Trickle ICE (RFC 9725 §4.3): aiortc sends its candidates again in a `PATCH` after the
/// answer, as a trickling client does; the ICE-lite node takes them (`204`). An ICE
/// restart without a password, a stale `If-Match` and hostile fragments are refused with
/// reasons, and the session carries on (Chromium's ICE restart is
/// `headless_chromium_restarts_ice_on_its_whip_session_and_keeps_publishing`).
#[actix_rt::test]
async fn trickled_candidates_are_taken_and_bad_fragments_refused() {
    let node = start_node(test_config()).await;
    let (_publisher, mut lines) =
        whip_publisher(&whip_url(&node, "trickle"), &["--trickle", "--seconds", "60"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    let location = line_starting(&mut lines, "LOCATION").await;
    let etag = line_starting(&mut lines, "ETAG").await;
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2, "{etag}");
    assert_eq!(line_starting(&mut lines, "TRICKLED").await, "204");
    line_starting(&mut lines, "CONNECTED").await;
    wait_live(&node, "trickle").await;
    let text = node.metrics_text();
    let trickled =
        sample(&text, "zenlive_webrtc_trickled_candidates_total", &[("protocol", "whip")]);
    assert!(trickled.is_some_and(|n| n >= 1.0), "{trickled:?}");

    let client = reqwest::Client::new();
    let resource = http_url(&node, &location);
    let fragment = "application/trickle-ice-sdpfrag";
    let restart = "a=ice-ufrag:newU\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
        a=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n";
    let candidate = "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n";
    for (body, content_type, if_match, status, code) in [
        (restart.to_owned(), fragment, "*", 400, "invalid_restart"),
        (candidate.to_owned(), fragment, "\"stale\"", 412, "ice_session_changed"),
        ("not a fragment".to_owned(), fragment, "*", 400, "invalid_fragment"),
        ("a=candidate:1 1 udp\r\n".to_owned(), fragment, "*", 400, "invalid_fragment"),
        ("a".repeat(20 * 1024), fragment, "*", 413, "fragment_too_large"),
        (candidate.to_owned(), "application/sdp", "*", 415, "unsupported_media_type"),
    ] {
        let response = client
            .patch(&resource)
            .header("Content-Type", content_type)
            .header("If-Match", if_match)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), status, "{code}");
        let body: serde_json::Value = response.json().await.expect("a JSON refusal");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    // The same session on the WHEP path is no resource.
    let whep = resource.replace("/whip/sessions/", "/whep/sessions/");
    let response = client
        .patch(&whep)
        .header("Content-Type", fragment)
        .body(candidate)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    // A late candidate with the session's own tag is taken, and the session carries on.
    let response = client
        .patch(&resource)
        .header("Content-Type", fragment)
        .header("If-Match", &etag)
        .body(candidate)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 204);
    let text = node.metrics_text();
    assert_eq!(sample(&text, "zenlive_webrtc_sessions", &[("protocol", "whip")]), Some(1.0));
    assert!(node.stream(&zenlive::StreamKey::new("live", "trickle").expect("name")).is_some());
    node.shutdown().await;
}

#[actix_rt::test]
async fn whip_goes_through_the_publisher_auth_and_the_name_claim() {
    let mut config: Config = test_config();
    config.auth.jwt_secret = SECRET.to_owned();
    config.auth.require_publish = true;
    let node = start_node(config).await;
    let client = reqwest::Client::new();
    let url = whip_url(&node, "owned");
    let offer = |token: Option<String>| {
        let mut request = client.post(&url).header("Content-Type", "application/sdp").body(OFFER);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = offer(None).await.expect("request");
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert!(body["error"]["code"].is_string(), "{body}");
    let viewer = mint_token(SECRET, "watcher", None, &[Role::Viewer]);
    assert_eq!(offer(Some(viewer)).await.expect("request").status(), 403);
    let text = node.metrics_text();
    let failures = sample(&text, "zenlive_auth_failures_total", &[("protocol", "whip")]);
    assert_eq!(failures, Some(2.0));

    // A real publisher with a publisher's token gets in; a second one for the live name
    // is told the name is taken.
    let publisher_token = mint_token(SECRET, "caster", None, &[Role::Publisher]);
    let (_publisher, mut lines) =
        whip_publisher(&url, &["--token", &publisher_token, "--seconds", "30"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "CONNECTED").await;
    wait_live(&node, "owned").await;
    let second = offer(Some(publisher_token)).await.expect("request");
    assert_eq!(second.status(), 409);
    let body: serde_json::Value = second.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "publish_refused", "{body}");
    node.shutdown().await;
}

/// Headless Chromium publishing its fake camera and microphone to `name` on `node` with
/// `tests/webrtc/whip_publish.html`, preferring `codec` (`h264`, `vp8`, `vp9`, `av1`); it stops when the
/// returned child is dropped.
fn chromium_publisher(node: &Node, name: &str, codec: &str) -> (Child, tempfile::TempDir) {
    let found = std::process::Command::new("chromium").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "chromium is required for this test: run scripts/test, which installs it"
    );
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webrtc/whip_publish.html");
    let url = format!("file://{}?codec={codec}#{}", page.display(), whip_url(node, name));
    let profile = tempfile::tempdir().expect("tempdir");
    let browser = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .args(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        .arg("--allow-loopback-in-peer-connection")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chromium");
    (browser, profile)
}

/// A node whose answers offer ICE-TCP on a free loopback port and no UDP candidate.
fn tcp_only_config() -> Config {
    let mut config = test_config();
    config.webrtc.tcp_addr = "127.0.0.1:0".to_owned();
    config.webrtc.udp_candidates = false;
    config
}

#[actix_rt::test]
async fn headless_chromium_publishes_over_ice_tcp_when_no_udp_is_offered() {
    let node = start_node(tcp_only_config()).await;
    let _browser = chromium_publisher(&node, "tcp", "h264");
    let key = zenlive::StreamKey::new("live", "tcp").expect("name");
    wait_for("chromium's stream over ICE-TCP to go live", Duration::from_secs(60), || {
        node.stream(&key).is_some()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let flv = dir.path().join("chromium-tcp.flv");
    let out = record(&rtmp_url(&node, "tcp"), 4, &flv).await;
    assert!(out.status.success(), "ffmpeg read RTMP: {}", String::from_utf8_lossy(&out.stderr));
    let info = probe(&flv).await;
    let streams = info["streams"].as_array().expect("streams");
    assert!(streams.iter().any(|s| s["codec_name"] == "h264"), "{info}");
    // That frames arrive, not how fast: Chromium starts slowly over TCP on a busy host.
    let frames = count_frames(&flv).await;
    assert!(frames >= 10, "only {frames} video frames over RTMP");
    let text = metrics(&node).await;
    let sample = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels).unwrap_or(0.0);
    assert!(sample("zenlive_webrtc_tcp_connections_total", &[]) >= 1.0, "{text}");
    assert!(sample("zenlive_webrtc_tcp_connections", &[]) >= 1.0, "{text}");
    // Nothing came by UDP: the node offered none.
    assert_eq!(sample("zenlive_webrtc_udp_dropped_total", &[("reason", "unroutable")]), 0.0);
    node.shutdown().await;
}

/// Reads `stream` until the node closes it (end of file or reset); false if it stays open
/// for `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 512];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[actix_rt::test]
async fn hostile_ice_tcp_clients_are_closed_counted_and_harm_no_session() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let mut config = test_config();
    config.webrtc.tcp_addr = "127.0.0.1:0".to_owned();
    let node = start_node(config).await;
    let tcp = node.webrtc_tcp_addr().expect("ICE-TCP on");
    let refused = |text: &str, reason: &str| {
        sample(text, "zenlive_webrtc_tcp_refused_total", &[("reason", reason)]).unwrap_or(0.0)
    };
    let bound = Duration::from_secs(15);

    // Garbage in a frame, an HTTP request (its first bytes read as a length longer than any
    // packet), a binding request naming no session: each closed at once and counted.
    let unknown: &[u8] = &[
        0, 28, 0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0, 6, 0, 3,
        b'x', b':', b'y', 0,
    ];
    let cases: [(&[u8], &str); 3] = [
        (b"\x00\x05hello", "not_stun"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "oversized"),
        (unknown, "unknown_session"),
    ];
    for (bytes, reason) in cases {
        let mut stream = TcpStream::connect(tcp).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        assert!(closed_within(&mut stream, bound).await, "{reason}: left open");
        wait_for_async(reason, bound, || async { refused(&metrics(&node).await, reason) >= 1.0 })
            .await;
    }

    // 1000 connections that send nothing (slowloris): all but the first few refused at
    // once, those closed when their handshake time is up.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(tcp).await.expect("connect"));
    }
    // Meanwhile a publisher over UDP is unaffected.
    let (mut publisher, mut lines) = whip_publisher(&whip_url(&node, "calm"), &["--seconds", "30"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "CONNECTED").await;
    wait_live(&node, "calm").await;
    for stream in &mut idle {
        assert!(closed_within(stream, bound).await, "an idle connection was left open");
    }
    let text = metrics(&node).await;
    let (too_many, timeout) = (refused(&text, "too_many"), refused(&text, "timeout"));
    assert_eq!(too_many + timeout, 1000.0, "{text}");
    assert!(too_many >= 900.0 && timeout >= 1.0, "{text}");
    wait_for_async("the connections gauge to fall", bound, || async {
        sample(&metrics(&node).await, "zenlive_webrtc_tcp_connections", &[]) == Some(0.0)
    })
    .await;
    assert!(node.stream(&zenlive::StreamKey::new("live", "calm").expect("name")).is_some());
    let _ = publisher.kill().await;
    node.shutdown().await;
}

#[actix_rt::test]
async fn headless_chromium_publishes_its_fake_camera_over_whip() {
    let node = start_node(test_config()).await;
    let _browser = chromium_publisher(&node, "browser", "h264");
    let key = zenlive::StreamKey::new("live", "browser").expect("name");
    wait_for("chromium's stream to go live", Duration::from_secs(60), || {
        node.stream(&key).is_some()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let flv = dir.path().join("chromium.flv");
    let out = record(&rtmp_url(&node, "browser"), 4, &flv).await;
    assert!(out.status.success(), "ffmpeg read RTMP: {}", String::from_utf8_lossy(&out.stderr));
    let info = probe(&flv).await;
    let streams = info["streams"].as_array().expect("streams");
    assert!(streams.iter().any(|s| s["codec_name"] == "h264"), "{info}");
    // The fake microphone's Opus, transcoded.
    assert_aac(&info);
    let errors = decode_errors(&flv).await;
    assert!(errors.trim().is_empty(), "decoding printed errors:\n{errors}");
    assert!(count_frames(&flv).await >= 30, "too few frames");
    // 4 s is 187 frames; Chromium may start its microphone late on a busy host.
    let audio = count_audio_frames(&flv).await;
    assert!(audio >= 60, "only {audio} AAC frames over RTMP: {info}");
    // And over HLS.
    let hls = http_url(&node, "/live/browser/index.m3u8");
    wait_for_async("an HLS segment", Duration::from_secs(20), || hls_has_segments(&hls)).await;
    let ts = dir.path().join("chromium-hls.ts");
    let out = record(&hls, 3, &ts).await;
    assert!(out.status.success(), "ffmpeg read HLS: {}", String::from_utf8_lossy(&out.stderr));
    assert_aac(&probe(&ts).await);
    let errors = decode_errors(&ts).await;
    assert!(errors.trim().is_empty(), "decoding HLS printed errors:\n{errors}");
    node.shutdown().await;
}

/// Chromium publishes VP8 (its fake camera, `setCodecPreferences`) over WHIP, and an aiortc
/// WHEP viewer offering VP8 decodes it with no decoder error.
#[actix_rt::test]
async fn headless_chromium_publishes_vp8_that_aiortc_plays_over_whep() {
    let node = start_node(test_config()).await;
    let (_browser, _profile) = chromium_publisher(&node, "vp8", "vp8");
    let key = zenlive::StreamKey::new("live", "vp8").expect("name");
    wait_for("chromium's VP8 stream", Duration::from_secs(60), || {
        node.stream(&key).and_then(|s| s.stats().media.video).is_some_and(|v| v.codec == "vp8")
    })
    .await;
    let whep = http_url(&node, "/whep/live/vp8");
    let (_player, mut lines) = aiortc("whep_play.py", &whep, &["--codec", "vp8", "--frames", "60"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "CONNECTED").await;
    line_starting(&mut lines, "FIRST").await;
    let report = line_starting(&mut lines, "FRAMES").await;
    let words: Vec<&str> = report.split_whitespace().collect();
    let [frames, "ERRORS", errors] = words[..] else { panic!("unexpected report {report:?}") };
    assert!(frames.parse::<u64>().is_ok_and(|n| n >= 60), "{report}");
    assert_eq!(errors, "0", "decoder errors: {report}");
    node.shutdown().await;
}

/// Chromium publishes `codec` (VP9 or AV1: its fake camera, `setCodecPreferences`) over
/// WHIP. The stream carries it with the configuration record the node made (`vpcC`,
/// `av1C`); the watch page, open in a second Chromium before the stream goes live (so
/// its offer comes as soon as the stream is live, before its first video keyframe), plays
/// it over WHEP; FFmpeg reads it from the LL-HLS (fMP4) playlist and from the recording
/// (fMP4 segments) as `probed` with AAC and decodes it without an error.
async fn chromium_codec_end_to_end(codec: &str, probed: &str) {
    let recordings = tempfile::tempdir().expect("tempdir");
    let mut config = test_config();
    config.recording.enabled = true;
    config.recording.format = zenlive::config::RecordingFormat::Fmp4;
    config.recording.segment_duration = Duration::from_secs(2);
    config.storage.base_path = recordings.path().to_str().expect("utf-8 path").to_owned();
    let node = start_node(config).await;
    let mut browser = common::cdp::Browser::start().await;
    let watch = browser.open(&http_url(&node, &format!("/watch/live/{codec}")), 1280, 800).await;
    browser
        .wait(
            &watch,
            "the watch page to wait for the stream",
            Duration::from_secs(30),
            "document.querySelector('#player-status').textContent.includes('Waiting')",
            "document.querySelector('#player-status').textContent",
        )
        .await;
    let (_publisher, _profile) = chromium_publisher(&node, codec, codec);
    let key = zenlive::StreamKey::new("live", codec).expect("name");
    wait_for(&format!("chromium's {codec} stream"), Duration::from_secs(60), || {
        node.stream(&key).and_then(|s| s.stats().media.video).is_some_and(|v| v.codec == codec)
    })
    .await;

    browser.wait_playing_whep(&watch, &format!("the watch page to play {codec} over WebRTC")).await;
    drop(browser);

    let dir = tempfile::tempdir().expect("tempdir");
    let mp4 = dir.path().join(format!("{codec}.mp4"));
    let out = record(&http_url(&node, &format!("/live/{codec}/ll.m3u8")), 3, &mp4).await;
    assert!(out.status.success(), "ffmpeg read LL-HLS: {}", String::from_utf8_lossy(&out.stderr));
    let info = probe(&mp4).await;
    let streams = info["streams"].as_array().expect("streams");
    assert!(streams.iter().any(|s| s["codec_name"] == probed), "{info}");
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "{info}");
    let frames = count_frames(&mp4).await;
    assert!(frames >= 30, "only {frames} {codec} frames over LL-HLS");
    let errors = decode_errors(&mp4).await;
    assert!(errors.trim().is_empty(), "decoding {codec} from LL-HLS printed errors:\n{errors}");

    // A finished recording segment (the one being written ends in .part).
    let stream_dir = recordings.path().join(format!("live/{codec}"));
    wait_for("a finished recording segment", Duration::from_secs(30), || {
        !common::recorded::files_under(&stream_dir, ".mp4").is_empty()
    })
    .await;
    let segment = common::recorded::files_under(&stream_dir, ".mp4").remove(0);
    let codecs = common::recorded::codec_names(&probe(&segment).await);
    assert!(
        codecs.contains(&probed.to_owned()) && codecs.contains(&"aac".to_owned()),
        "{codecs:?}"
    );
    let errors = decode_errors(&segment).await;
    assert!(errors.trim().is_empty(), "decoding the {codec} recording printed:\n{errors}");
    node.shutdown().await;
}

#[actix_rt::test]
async fn headless_chromium_publishes_vp9_that_plays_over_whep_and_ll_hls() {
    chromium_codec_end_to_end("vp9", "vp9").await;
}

#[actix_rt::test]
async fn headless_chromium_publishes_av1_that_plays_over_whep_and_ll_hls() {
    chromium_codec_end_to_end("av1", "av1").await;
}

/// Chromium restarts ICE on its WHIP session (`pc.restartIce()`, then `PATCH` with its new
/// credentials): the node answers `200` with credentials of its own and a new `ETag`,
/// Chromium's ICE transport connects under the new credentials, and the stream goes on.
#[actix_rt::test]
async fn headless_chromium_restarts_ice_on_its_whip_session_and_keeps_publishing() {
    let node = start_node(test_config()).await;
    let mut browser = common::cdp::Browser::start().await;
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webrtc/whip_publish.html");
    let url = format!("file://{}?restart=1#{}", page.display(), whip_url(&node, "restart"));
    let tab = browser.open(&url, 640, 480).await;
    browser
        .wait(
            &tab,
            "chromium's ICE restart",
            Duration::from_secs(60),
            "document.title.startsWith('RESTARTED')",
            "document.title",
        )
        .await;
    let title = browser.eval(&tab, "document.title").await;
    let etag = title.as_str().and_then(|t| t.strip_prefix("RESTARTED ")).expect("an ETag");
    assert!(etag.starts_with('"') && etag.len() > 6, "{title}");
    let key = zenlive::StreamKey::new("live", "restart").expect("name");
    let frames = || node.stream(&key).map_or(0, |s| s.stats().frames_in);
    let after_restart = frames();
    wait_for("frames after the restart", Duration::from_secs(20), || frames() > after_restart + 60)
        .await;
    let text = metrics(&node).await;
    assert_eq!(
        sample(&text, "zenlive_webrtc_ice_restarts_total", &[("protocol", "whip")]),
        Some(1.0),
        "{text}"
    );
    drop(browser);
    node.shutdown().await;
}

/// Chromium restarts ICE on its WHEP session (the same page, playing): the node answers
/// with new credentials, Chromium connects under them and decodes 30 more frames.
#[actix_rt::test]
async fn headless_chromium_restarts_ice_on_its_whep_session_and_keeps_playing() {
    let node = start_node(test_config()).await;
    let _publisher = publish_looped(&rtmp_url(&node, "replay"));
    wait_live(&node, "replay").await;
    let mut browser = common::cdp::Browser::start().await;
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webrtc/whip_publish.html");
    let whep = http_url(&node, "/whep/live/replay");
    let url = format!("file://{}?play=1&restart=1#{whep}", page.display());
    let tab = browser.open(&url, 640, 480).await;
    browser
        .wait(
            &tab,
            "chromium's ICE restart while playing",
            Duration::from_secs(60),
            "document.title.startsWith('RESTARTED \"')",
            "document.title",
        )
        .await;
    let text = metrics(&node).await;
    assert_eq!(
        sample(&text, "zenlive_webrtc_ice_restarts_total", &[("protocol", "whep")]),
        Some(1.0),
        "{text}"
    );
    drop(browser);
    node.shutdown().await;
}

/// FFmpeg 8's own WHIP muxer (PyAV's libraries, built with GnuTLS, whose DTLS key is on
/// P-224) publishes H.264 and Opus: ICE and DTLS complete, the stream is live with its
/// H.264, and Debian's FFmpeg reads it back over RTMP as H.264 + AAC.
#[actix_rt::test]
async fn ffmpeg_8_publishes_over_whip() {
    let node = start_node(test_config()).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webrtc/ffmpeg_whip.py");
    let mut publisher = Command::new("python3")
        .arg(script)
        .args([whip_url(&node, "ff8").as_str(), "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the FFmpeg 8 WHIP publisher (PyAV, installed by scripts/test)");
    let mut said = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        publisher.stdout.take().expect("stdout"),
    ));
    let first = tokio::time::timeout(Duration::from_secs(30), said.next_line()).await;
    assert!(
        matches!(&first, Ok(Ok(Some(line))) if line == "PUBLISHING"),
        "FFmpeg 8's WHIP session came up: {first:?}"
    );
    let key = zenlive::StreamKey::new("live", "ff8").expect("name");
    wait_for("FFmpeg 8's H.264 over WHIP", Duration::from_secs(30), || {
        node.stream(&key).and_then(|s| s.stats().media.video).is_some_and(|v| v.codec == "h264")
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let flv = dir.path().join("ff8.flv");
    let out = record(&rtmp_url(&node, "ff8"), 3, &flv).await;
    assert!(out.status.success(), "ffmpeg read RTMP: {}", String::from_utf8_lossy(&out.stderr));
    let info = probe(&flv).await;
    let streams = info["streams"].as_array().expect("streams");
    assert!(streams.iter().any(|s| s["codec_name"] == "h264"), "{info}");
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "{info}");
    assert!(count_frames(&flv).await >= 30, "{info}");
    node.shutdown().await;
}
