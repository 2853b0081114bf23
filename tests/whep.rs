//! WHEP playback end to end: FFmpeg publishes RTMP (or aiortc publishes WHIP) to a node on
//! loopback, and real WebRTC players (aiortc, scripted in `tests/webrtc/whep_play.py`, and
//! headless Chromium with `tests/webrtc/whep_play.html`) play it over WHEP and decode it.
//! Hostile offers, tokens, names and deletes get their refusals and harm nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::webrtc::{aiortc, frames_and_errors};
use common::*;
use parking_lot::Mutex;
use tokio::process::{Child, Command};
use zenlive::auth::Role;
use zenlive::hooks::ViewerEvent;
use zenlive::{Config, Node, NodeBuilder, StreamKey};
use zenlive_actors::Protocol;

const SECRET: &str = "whep-test-secret-whep-test-secret";

/// A hand-written offer to receive H.264: valid enough for the node's first look.
const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n\
    a=rtpmap:102 H264/90000\r\n";

fn whep_url(node: &Node, name: &str) -> String {
    http_url(node, &format!("/whep/live/{name}"))
}

/// FFmpeg publishing `file` in a loop, in realtime, to `url` (killed on drop).
fn publish_file_looped(file: &Path, url: &str) -> Child {
    require("ffmpeg");
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg publisher")
}

/// The `AUDIO <frames>` and `LEVEL <peak>` lines of a `--audio` player.
async fn audio_and_level(lines: &mut StdoutLines) -> (u64, u64) {
    let audio = line_starting(lines, "AUDIO").await.parse().expect("a count");
    let level = line_starting(lines, "LEVEL").await.parse().expect("a level");
    (audio, level)
}

/// The AAC → Opus transcoders' series `name` (0 when absent).
fn transcode(text: &str, name: &str) -> f64 {
    sample(text, name, &[("direction", "aac_to_opus")]).unwrap_or(0.0)
}

#[actix_rt::test]
async fn an_rtmp_stream_plays_in_aiortc_over_whep_from_a_keyframe() {
    let events: Arc<Mutex<Vec<ViewerEvent>>> = Arc::default();
    let (joins, leaves) = (Arc::clone(&events), Arc::clone(&events));
    let node = NodeBuilder::new(test_config())
        .on_viewer_join(move |e| joins.lock().push(e.clone()))
        .on_viewer_leave(move |e| leaves.lock().push(e.clone()))
        .start()
        .await
        .expect("node starts");
    let _publisher = publish_looped(&rtmp_url(&node, "rtmp"));
    wait_live(&node, "rtmp").await;
    let (_player, mut lines) = aiortc(
        "whep_play.py",
        &whep_url(&node, "rtmp"),
        &["--frames", "90", "--audio", "--delete"],
    );
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    let location = line_starting(&mut lines, "LOCATION").await;
    assert!(location.starts_with("/whep/sessions/"), "{location}");
    line_starting(&mut lines, "CONNECTED").await;
    assert_eq!(line_starting(&mut lines, "FIRST").await, "320x240");
    // Checked while the player plays: it deletes its session once it has its frames.
    let text = node.metrics_text();
    assert_eq!(sample(&text, "zenlive_webrtc_sessions", &[("protocol", "whep")]), Some(1.0));
    let viewers = [("stream", "live/rtmp"), ("protocol", "whep")];
    assert_eq!(sample(&text, "zenlive_stream_viewers", &viewers), Some(1.0));
    // The AAC tone arrives as Opus (transcoded on the node) that aiortc decodes.
    let (audio, level) = audio_and_level(&mut lines).await;
    assert!(audio >= 50, "only {audio} Opus frames decoded");
    assert!(level >= 1000, "the tone's peak is {level}: silence?");
    let (frames, errors) = frames_and_errors(&line_starting(&mut lines, "FRAMES").await);
    assert!(frames >= 90, "only {frames} frames decoded");
    // The first packet a viewer gets starts a keyframe with its SPS and PPS: the decoder
    // never saw a frame it could not decode.
    assert_eq!(errors, 0, "decoder errors");

    let text = node.metrics_text();
    let sent = sample(&text, "zenlive_webrtc_rtp_packets_sent_total", &[("protocol", "whep")]);
    assert!(sent.is_some_and(|n| n > 90.0), "{sent:?}");
    assert_eq!(line_starting(&mut lines, "DELETED").await, "200");
    line_starting(&mut lines, "DONE").await;
    wait_for("the whep session to end", Duration::from_secs(15), || {
        sample(&node.metrics_text(), "zenlive_webrtc_sessions", &[("protocol", "whep")])
            == Some(0.0)
    })
    .await;
    wait_for("the viewer to leave", Duration::from_secs(15), || events.lock().len() == 2).await;
    wait_for("the transcoder to stop", Duration::from_secs(15), || {
        transcode(&node.metrics_text(), "zenlive_transcode_active") == 0.0
    })
    .await;
    let events = events.lock().clone();
    assert!(
        matches!(&events[0], ViewerEvent::Joined { protocol: Protocol::Whep, .. }),
        "{events:?}"
    );
    assert!(matches!(&events[1], ViewerEvent::Left { protocol: Protocol::Whep, .. }), "{events:?}");
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_whip_publisher_plays_in_a_whep_viewer_with_opus_passed_through() {
    let node = start_node(test_config()).await;
    let (_publisher, mut published) = aiortc(
        "whip_publish.py",
        &http_url(&node, "/whip/live/relay"),
        &["--audio", "--seconds", "60"],
    );
    assert_eq!(line_starting(&mut published, "STATUS").await, "201");
    line_starting(&mut published, "CONNECTED").await;
    wait_live(&node, "relay").await;
    let (_player, mut lines) =
        aiortc("whep_play.py", &whep_url(&node, "relay"), &["--frames", "60", "--audio"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "CONNECTED").await;
    assert_eq!(line_starting(&mut lines, "FIRST").await, "320x240");
    let (audio, level) = audio_and_level(&mut lines).await;
    assert!(audio > 0, "no Opus decoded");
    assert!(level > 0, "silence");
    let (frames, errors) = frames_and_errors(&line_starting(&mut lines, "FRAMES").await);
    assert!(frames >= 60, "only {frames} frames decoded");
    assert_eq!(errors, 0, "decoder errors");
    // The publisher's Opus went through as it came: no AAC → Opus transcoder ran (the
    // stream also carries AAC, made from that Opus for the other outputs).
    let text = node.metrics_text();
    assert_eq!(transcode(&text, "zenlive_transcode_active"), 0.0);
    assert_eq!(transcode(&text, "zenlive_transcode_frames_in_total"), 0.0);
    node.shutdown().await;
}

/// aiortc publishes VP8 over WHIP (its default codec when H.264 is not preferred): the
/// stream's stats name VP8, an aiortc WHEP viewer offering VP8 decodes it without an
/// error, an offer that takes H.264 only is refused with `406 codec_not_offered`, and an
/// RTMP player gets the stream's audio (AAC transcoded from the Opus) and no video track.
#[actix_rt::test]
async fn a_vp8_whip_stream_plays_in_a_vp8_whep_viewer_and_h264_only_offers_are_refused() {
    let node = start_node(test_config()).await;
    let (_publisher, mut published) = aiortc(
        "whip_publish.py",
        &http_url(&node, "/whip/live/vp8"),
        &["--codec", "vp8", "--audio", "--seconds", "60"],
    );
    assert_eq!(line_starting(&mut published, "STATUS").await, "201");
    line_starting(&mut published, "CONNECTED").await;
    wait_live(&node, "vp8").await;
    let key = StreamKey::new("live", "vp8").expect("name");
    wait_for("the stream's video codec", Duration::from_secs(20), || {
        node.stream(&key).and_then(|s| s.stats().media.video).is_some_and(|v| v.codec == "vp8")
    })
    .await;

    let (_player, mut lines) = aiortc(
        "whep_play.py",
        &whep_url(&node, "vp8"),
        &["--codec", "vp8", "--frames", "60", "--audio"],
    );
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "CONNECTED").await;
    assert_eq!(line_starting(&mut lines, "FIRST").await, "320x240");
    let (audio, level) = audio_and_level(&mut lines).await;
    assert!(audio > 0 && level > 0, "audio {audio}, level {level}");
    let (frames, errors) = frames_and_errors(&line_starting(&mut lines, "FRAMES").await);
    assert!(frames >= 60, "only {frames} VP8 frames decoded");
    assert_eq!(errors, 0, "decoder errors");

    // An offer that takes H.264 only: the stream's VP8 is not transcoded, so it is refused.
    let (_h264, mut refused) = aiortc("whep_play.py", &whep_url(&node, "vp8"), &["--frames", "1"]);
    assert_eq!(line_starting(&mut refused, "STATUS").await, "406");
    let body: serde_json::Value =
        serde_json::from_str(&line_starting(&mut refused, "BODY").await).expect("JSON");
    assert_eq!(body["error"]["code"], "codec_not_offered", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("vp8")), "{body}");

    // RTMP cannot carry VP8: a player gets the audio only.
    let dir = tempfile::tempdir().expect("tempdir");
    let flv = dir.path().join("vp8-rtmp.flv");
    let out = record(&rtmp_url(&node, "vp8"), 3, &flv).await;
    assert!(out.status.success(), "ffmpeg read RTMP: {}", String::from_utf8_lossy(&out.stderr));
    let info = probe(&flv).await;
    let kinds: Vec<&str> = info["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .filter_map(|s| s["codec_type"].as_str())
        .collect();
    assert_eq!(kinds, ["audio"], "{info}");
    assert_eq!(info["streams"][0]["codec_name"], "aac", "{info}");
    assert!(node.stream(&key).is_some(), "the stream runs on");
    node.shutdown().await;
}

#[actix_rt::test]
async fn whep_viewers_of_an_rtmp_stream_share_one_transcoder_while_they_need_it() {
    let node = start_node(test_config()).await;
    let _publisher = publish_looped(&rtmp_url(&node, "shared"));
    wait_live(&node, "shared").await;
    let url = whep_url(&node, "shared");
    let args = ["--audio", "--frames", "1000000", "--seconds", "120", "--delete"];
    let (mut first, mut first_lines) = aiortc("whep_play.py", &url, &args);
    let (mut second, mut second_lines) = aiortc("whep_play.py", &url, &args);
    for lines in [&mut first_lines, &mut second_lines] {
        assert_eq!(line_starting(lines, "STATUS").await, "201");
        line_starting(lines, "FIRST").await;
    }
    let text = || node.metrics_text();
    let out = || transcode(&text(), "zenlive_transcode_frames_out_total");
    wait_for("both viewers watching", Duration::from_secs(15), || {
        sample(
            &text(),
            "zenlive_stream_viewers",
            &[("stream", "live/shared"), ("protocol", "whep")],
        ) == Some(2.0)
    })
    .await;
    wait_for("Opus frames made", Duration::from_secs(30), || out() >= 100.0).await;
    assert_eq!(transcode(&text(), "zenlive_transcode_active"), 1.0, "one transcoder for two");

    // A panic inside the transcoder is caught and counted; the audio goes on, the stream
    // and its viewers never notice.
    zenlive_actors::faults::arm(zenlive_actors::faults::Fault::TranscoderPanic);
    wait_for("the panic counted", Duration::from_secs(30), || {
        transcode(&text(), "zenlive_transcode_errors_total") >= 1.0
    })
    .await;
    let made = out();
    wait_for("Opus after the panic", Duration::from_secs(30), || out() >= made + 100.0).await;
    assert_eq!(transcode(&text(), "zenlive_transcode_active"), 1.0);
    assert!(node.stream(&StreamKey::new("live", "shared").expect("name")).is_some());

    // The first viewer leaves: the other still needs the transcoder.
    drop(first.stdin.take());
    let (audio, level) = audio_and_level(&mut first_lines).await;
    assert!(audio >= 100 && level >= 1000, "{audio} Opus frames decoded, peak {level}");
    let (_, errors) = frames_and_errors(&line_starting(&mut first_lines, "FRAMES").await);
    assert_eq!(errors, 0, "video decoder errors");
    assert_eq!(line_starting(&mut first_lines, "DELETED").await, "200");
    wait_for("one viewer left", Duration::from_secs(15), || {
        sample(&text(), "zenlive_webrtc_sessions", &[("protocol", "whep")]) == Some(1.0)
    })
    .await;
    let made = out();
    wait_for("Opus for the other", Duration::from_secs(30), || out() >= made + 50.0).await;
    assert_eq!(transcode(&text(), "zenlive_transcode_active"), 1.0);

    // The last one leaves: the transcoder stops.
    drop(second.stdin.take());
    let (audio, level) = audio_and_level(&mut second_lines).await;
    assert!(audio >= 100 && level >= 1000, "{audio} Opus frames decoded, peak {level}");
    assert_eq!(line_starting(&mut second_lines, "DELETED").await, "200");
    wait_for("the transcoder to stop", Duration::from_secs(15), || {
        transcode(&text(), "zenlive_transcode_active") == 0.0
    })
    .await;
    assert!(node.stream(&StreamKey::new("live", "shared").expect("name")).is_some());
    node.shutdown().await;
}

/// Headless Chromium with a fresh profile and remote debugging on a free port, opening
/// `url`; its DevTools address once it listens.
async fn chromium(url: &str, profile: &Path) -> (Child, String) {
    let found = std::process::Command::new("chromium").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "chromium is required for this test: run scripts/test, which installs it"
    );
    let browser = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .args(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"])
        .args(["--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required"])
        .arg("--remote-debugging-port=0")
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chromium");
    let port_file: PathBuf = profile.join("DevToolsActivePort");
    wait_for("chromium's DevTools port", Duration::from_secs(30), || port_file.exists()).await;
    let mut port = String::new();
    wait_for("chromium's DevTools port", Duration::from_secs(10), || {
        port = std::fs::read_to_string(&port_file).unwrap_or_default();
        port.lines().next().is_some_and(|l| l.parse::<u16>().is_ok())
    })
    .await;
    let port = port.lines().next().unwrap_or_default().to_owned();
    (browser, format!("http://127.0.0.1:{port}"))
}

/// The title of the page Chromium shows (its report, see whep_play.html).
async fn page_title(devtools: &str) -> String {
    let Ok(response) = reqwest::get(format!("{devtools}/json/list")).await else {
        return String::new();
    };
    let pages: serde_json::Value = response.json().await.unwrap_or_default();
    pages
        .as_array()
        .and_then(|pages| pages.iter().find(|p| p["type"] == "page"))
        .and_then(|page| page["title"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the page reports `getStats()` that `done` accepts; the last report.
async fn chromium_stats(
    devtools: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        last = page_title(devtools).await;
        if let Some(json) = last.strip_prefix("STATS ") {
            // DevTools lists titles HTML-escaped.
            let json = json.replace("&quot;", "\"").replace("&amp;", "&");
            let stats: serde_json::Value = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("JSON stats ({e}): {json:?}"));
            if done(&stats) {
                return stats;
            }
        }
        assert!(!last.starts_with("ERROR"), "the page failed: {last}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("chromium did not get there in time; its last report: {last}");
}

fn whep_page(node: &Node, name: &str) -> String {
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webrtc/whep_play.html");
    format!("file://{}#{}", page.display(), whep_url(node, name))
}

#[actix_rt::test]
async fn headless_chromium_plays_an_rtmp_stream_over_whep() {
    let node = start_node(test_config()).await;
    let _publisher = publish_looped(&rtmp_url(&node, "browser"));
    wait_live(&node, "browser").await;
    let profile = tempfile::tempdir().expect("tempdir");
    let (_browser, devtools) = chromium(&whep_page(&node, "browser"), profile.path()).await;
    let samples = |s: &serde_json::Value| s["totalSamplesReceived"].as_f64().unwrap_or(0.0);
    let stats = chromium_stats(&devtools, Duration::from_secs(60), |s| {
        s["framesDecoded"].as_u64().is_some_and(|n| n >= 60) && samples(s) >= 48_000.0
    })
    .await;
    assert_eq!(stats["codec"], "video/H264", "{stats}");
    assert_eq!((stats["width"].as_u64(), stats["height"].as_u64()), (Some(320), Some(240)));
    assert!(stats["keyFramesDecoded"].as_u64().is_some_and(|n| n >= 1), "{stats}");
    // The RTMP stream's AAC tone plays as Opus: decoded samples with energy in them, and
    // more of them as it plays.
    assert_eq!(stats["audioCodec"], "audio/opus", "{stats}");
    let energy = |s: &serde_json::Value| s["totalAudioEnergy"].as_f64().unwrap_or(0.0);
    assert!(energy(&stats) > 0.0, "silence: {stats}");
    let before = samples(&stats);
    let later = chromium_stats(&devtools, Duration::from_secs(30), |s| {
        samples(s) >= before + 48_000.0 && s["audioLevel"].as_f64().is_some_and(|l| l > 0.0)
    })
    .await;
    assert!(energy(&later) > energy(&stats), "{later}");
    // Lip sync: the capture instants (NTP, from the RTCP sender reports) of the audio and
    // the picture playing at the same moment end up close. Measured here: up to 440 ms
    // apart in the first seconds (the cached GOP's burst), then 10 to 50 ms, the audio
    // behind (the transcoder sends it a little later than the picture of its instant).
    let apart = |s: &serde_json::Value| {
        let playout = |key: &str| s[key].as_f64().filter(|t| *t > 0.0);
        playout("videoPlayout").zip(playout("audioPlayout")).map(|(v, a)| v - a)
    };
    let synced = chromium_stats(&devtools, Duration::from_secs(30), |s| {
        apart(s).is_some_and(|ms| ms.abs() <= 150.0)
    })
    .await;
    eprintln!("chromium over WHEP, audio {:?} ms behind the picture: {synced}", apart(&synced));
    assert_eq!(transcode(&node.metrics_text(), "zenlive_transcode_active"), 1.0);
    node.shutdown().await;
}

/// ICE-TCP: a node that offers no UDP candidate (`webrtc.udp_candidates = false`), only a
/// passive TCP one; Chromium plays over TCP.
#[actix_rt::test]
async fn headless_chromium_plays_over_ice_tcp_when_no_udp_is_offered() {
    let mut config = test_config();
    config.webrtc.tcp_addr = "127.0.0.1:0".to_owned();
    config.webrtc.udp_candidates = false;
    let node = start_node(config).await;
    let _publisher = publish_looped(&rtmp_url(&node, "tcp"));
    wait_live(&node, "tcp").await;
    let profile = tempfile::tempdir().expect("tempdir");
    let (_browser, devtools) = chromium(&whep_page(&node, "tcp"), profile.path()).await;
    let stats = chromium_stats(&devtools, Duration::from_secs(60), |s| {
        s["framesDecoded"].as_u64().is_some_and(|n| n >= 30)
    })
    .await;
    assert_eq!(stats["codec"], "video/H264", "{stats}");
    let text = node.metrics_text();
    let tcp = sample(&text, "zenlive_webrtc_tcp_connections", &[]).unwrap_or(0.0);
    assert!(tcp >= 1.0, "the viewer is not on ICE-TCP: {text}");
    node.shutdown().await;
}

/// What WebRTC players do with H.264 B-frames (FFmpeg's x264 default). Measured with
/// Chromium 156: it decodes only the keyframes (every other frame fails in its decoder,
/// which then asks for a keyframe with a PLI several times a second), so a B-frame stream
/// plays at the keyframe rate; the node passes the stream on unchanged, warns once per
/// stream, and docs/webrtc.md says to publish without B-frames. aiortc (FFmpeg's decoder)
/// decodes every frame. The figures are printed, not asserted beyond "pictures arrive".
#[actix_rt::test]
async fn a_stream_with_b_frames_reaches_chromium_at_its_keyframes_and_aiortc_whole() {
    let node = start_node(test_config()).await;
    let _publisher = publish_file_looped(&fixture(true), &rtmp_url(&node, "bframes"));
    wait_live(&node, "bframes").await;
    let (_player, mut lines) =
        aiortc("whep_play.py", &whep_url(&node, "bframes"), &["--frames", "90"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    let (frames, errors) = frames_and_errors(&line_starting(&mut lines, "FRAMES").await);
    eprintln!("aiortc with B-frames: {frames} frames decoded, {errors} decoder errors");
    assert!(frames >= 90, "only {frames} frames decoded");
    let profile = tempfile::tempdir().expect("tempdir");
    let (_browser, devtools) = chromium(&whep_page(&node, "bframes"), profile.path()).await;
    let stats = chromium_stats(&devtools, Duration::from_secs(60), |s| {
        s["keyFramesDecoded"].as_u64().is_some_and(|n| n >= 5)
    })
    .await;
    eprintln!("chromium with B-frames: {stats}");
    // Its keyframe requests arrive and are passed on to the publisher, rate-limited (an
    // RTMP publisher cannot act on them).
    let text = node.metrics_text();
    let plis = sample(&text, "zenlive_webrtc_plis_received_total", &[("protocol", "whep")]);
    let passed = sample(&text, "zenlive_webrtc_keyframe_requests_total", &[("protocol", "whep")]);
    assert!(plis.is_some_and(|n| n >= 1.0), "{plis:?}");
    assert!(passed.is_some_and(|n| n >= 1.0 && Some(n) <= plis), "{passed:?} of {plis:?}");
    node.shutdown().await;
}

#[actix_rt::test]
async fn hostile_whep_requests_are_refused_with_reasons() {
    let node = start_node(test_config()).await;
    let client = reqwest::Client::new();
    let url = whep_url(&node, "nothing");
    let post = |body: Vec<u8>, content_type: &'static str| {
        client.post(&url).header("Content-Type", content_type).body(body).send()
    };
    let media_less = b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_vec();
    let audio_only = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
    for (body, content_type, status, code) in [
        (OFFER.as_bytes().to_vec(), "application/sdp", 404, "stream_not_found"),
        (b"not an offer".to_vec(), "application/sdp", 400, "invalid_sdp"),
        (vec![b'v'; 100 * 1024], "application/sdp", 413, "offer_too_large"),
        (media_less, "application/sdp", 400, "no_media"),
        (audio_only.as_bytes().to_vec(), "application/sdp", 400, "unsupported_codecs"),
        (OFFER.as_bytes().to_vec(), "text/plain", 415, "unsupported_media_type"),
    ] {
        let response = post(body, content_type).await.expect("request");
        assert_eq!(response.status(), status, "{code}");
        let body: serde_json::Value = response.json().await.expect("a JSON refusal");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let text = node.metrics_text();
    assert_eq!(sample(&text, "zenlive_webrtc_refused_total", &[("protocol", "whep")]), Some(6.0));

    // A live stream, a WHIP session and a WHEP session: neither's resource can be deleted
    // through the other protocol's path, nor can a made-up one.
    let (_publisher, mut published) =
        aiortc("whip_publish.py", &http_url(&node, "/whip/live/live"), &["--seconds", "60"]);
    assert_eq!(line_starting(&mut published, "STATUS").await, "201");
    let whip = line_starting(&mut published, "LOCATION").await;
    line_starting(&mut published, "CONNECTED").await;
    wait_live(&node, "live").await;
    let (_player, mut lines) =
        aiortc("whep_play.py", &whep_url(&node, "live"), &["--frames", "1000", "--seconds", "60"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    let whep = line_starting(&mut lines, "LOCATION").await;
    line_starting(&mut lines, "FIRST").await;
    let whip_id = whip.trim_start_matches("/whip/sessions/");
    let whep_id = whep.trim_start_matches("/whep/sessions/");
    for path in [
        format!("/whep/sessions/{whip_id}"),
        format!("/whip/sessions/{whep_id}"),
        "/whep/sessions/00000000000000000000000000000000".to_owned(),
        "/whep/sessions/..%2F..%2Fwhip".to_owned(),
    ] {
        let response = client.delete(http_url(&node, &path)).send().await.expect("request");
        assert_eq!(response.status(), 404, "{path}");
    }
    // Trickle ICE takes an ICE fragment, nothing else (tests/whip.rs tries the rest).
    let patch = client.patch(http_url(&node, &whep)).send().await.expect("request");
    assert_eq!(patch.status(), 415);
    let preflight = client.request(reqwest::Method::OPTIONS, &url).send().await.expect("request");
    assert_eq!(preflight.status(), 204);
    // Both sessions still run.
    let text = node.metrics_text();
    assert_eq!(sample(&text, "zenlive_webrtc_sessions", &[("protocol", "whep")]), Some(1.0));
    assert_eq!(sample(&text, "zenlive_webrtc_sessions", &[("protocol", "whip")]), Some(1.0));
    assert!(node.stream(&StreamKey::new("live", "live").expect("name")).is_some());
    node.shutdown().await;
}

/// A viewer's token for `stream` only.
fn scoped_token(stream: &str) -> String {
    let mut config = Config::default();
    config.auth.jwt_secret = SECRET.to_owned();
    let auth = zenlive::auth::Auth::new(&config.auth).expect("auth");
    let now = zenlive::auth::unix_now();
    auth.mint(&zenlive::auth::Claims {
        sub: "scoped".to_owned(),
        name: None,
        roles: vec![Role::Viewer],
        stream: Some(stream.to_owned()),
        exp: now + 600,
        nbf: None,
        iat: Some(now),
        iss: None,
        aud: None,
    })
    .expect("mint")
}

#[actix_rt::test]
async fn whep_goes_through_the_viewer_auth() {
    let mut config: Config = test_config();
    config.auth.jwt_secret = SECRET.to_owned();
    config.auth.require_play = true;
    let node = start_node(config).await;
    let _publisher = publish_looped(&rtmp_url(&node, "paid"));
    wait_live(&node, "paid").await;
    let client = reqwest::Client::new();
    let url = whep_url(&node, "paid");
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
    // A token without a role that plays, and one for another stream.
    for token in [mint_token(SECRET, "nobody", None, &[]), scoped_token("live/other")] {
        let response = offer(Some(token)).await.expect("request");
        assert_eq!(response.status(), 403);
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let text = node.metrics_text();
    let failures = sample(&text, "zenlive_auth_failures_total", &[("protocol", "whep")]);
    assert_eq!(failures, Some(3.0));

    let viewer = mint_token(SECRET, "watcher", None, &[Role::Viewer]);
    let (_player, mut lines) =
        aiortc("whep_play.py", &url, &["--token", &viewer, "--frames", "30"]);
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    let (frames, _) = frames_and_errors(&line_starting(&mut lines, "FRAMES").await);
    assert!(frames >= 30, "only {frames} frames decoded");
    node.shutdown().await;
}

/// Packet loss: a UDP relay between aiortc and the node (`--drop-every` in
/// `tests/webrtc/whep_play.py`) drops every 25th RTP packet the node sends; aiortc asks for
/// them again (RTCP NACK), the node counts the NACKs and its NACK responder sends the
/// packets again, and the player decodes the stream.
#[actix_rt::test]
async fn lost_packets_are_asked_for_and_sent_again() {
    let node = start_node(test_config()).await;
    let _publisher = publish_looped(&rtmp_url(&node, "lossy"));
    wait_live(&node, "lossy").await;
    let (_player, mut lines) = aiortc(
        "whep_play.py",
        &whep_url(&node, "lossy"),
        &["--frames", "150", "--drop-every", "25"],
    );
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "CONNECTED").await;
    let loss = line_starting(&mut lines, "LOSS").await;
    let (frames, errors) = frames_and_errors(&line_starting(&mut lines, "FRAMES").await);
    eprintln!("with loss: {loss}; {frames} frames decoded, {errors} decoder errors");
    let words: Vec<&str> = loss.split_whitespace().collect();
    let (dropped, resent): (u64, u64) = match words[..] {
        ["DROPPED", d, "RESENT", r] => (d.parse().expect("a count"), r.parse().expect("a count")),
        _ => panic!("unexpected report {loss:?}"),
    };
    assert!(dropped > 0, "the relay dropped nothing");
    assert!(resent > 0, "no dropped packet was sent again: {loss}");
    assert!(frames >= 150, "only {frames} frames decoded");
    let nacks = sample(&node.metrics_text(), "zenlive_webrtc_nacks_received_total", &[]);
    assert!(nacks.is_some_and(|n| n >= 1.0), "{nacks:?}");
    node.shutdown().await;
}

/// The stream's WebRTC round trip and losses: a relay between aiortc and the node drops
/// every 20th RTP packet the node sends, and its retransmissions too (`--lose-every`), so
/// aiortc's RTCP receiver reports count them lost; the node computes each report's round
/// trip (RFC 3550 `A - LSR - DLSR`). Both appear as the stream's series while the viewer
/// watches, and go with it.
#[actix_rt::test]
async fn a_whep_viewers_round_trip_and_losses_are_the_streams_series() {
    let node = start_node(test_config()).await;
    let _publisher = publish_looped(&rtmp_url(&node, "quality"));
    wait_live(&node, "quality").await;
    let (mut player, mut lines) = aiortc(
        "whep_play.py",
        &whep_url(&node, "quality"),
        &["--frames", "100000", "--seconds", "60", "--lose-every", "20", "--delete"],
    );
    assert_eq!(line_starting(&mut lines, "STATUS").await, "201");
    line_starting(&mut lines, "CONNECTED").await;
    let labels = [("stream", "live/quality"), ("protocol", "whep")];
    let value = |name: &str| sample(&node.metrics_text(), name, &labels);
    wait_for("a round trip and a loss in the stream's series", Duration::from_secs(30), || {
        value("zenlive_webrtc_stream_rtt_last_seconds").is_some_and(|rtt| rtt > 0.0)
            && value("zenlive_webrtc_stream_packets_lost_total").is_some_and(|n| n > 0.0)
    })
    .await;
    let text = node.metrics_text();
    let rtt = sample(&text, "zenlive_webrtc_stream_rtt_last_seconds", &labels).unwrap_or(-1.0);
    let measured = sample(&text, "zenlive_webrtc_stream_rtt_seconds_count", &labels);
    let lost = sample(&text, "zenlive_webrtc_stream_packets_lost_total", &labels);
    let fraction = sample(&text, "zenlive_webrtc_stream_fraction_lost", &labels);
    eprintln!("rtt {rtt} s ({measured:?} measurements), lost {lost:?}, fraction {fraction:?}");
    // Loopback and a Python relay on a loaded machine: milliseconds, and not nothing.
    assert!(rtt > 0.0 && rtt < 5.0, "implausible round trip {rtt}");
    assert!(measured.is_some_and(|n| n >= 1.0), "{measured:?}");
    assert!(fraction.is_some_and(|f| (0.0..=1.0).contains(&f)), "{fraction:?}");

    // The player stops (stdin closed) and deletes its session: the series go with it.
    drop(player.stdin.take());
    let loss = line_starting(&mut lines, "LOSS").await;
    eprintln!("relay: {loss}");
    assert_eq!(line_starting(&mut lines, "DELETED").await, "200");
    wait_for("the stream's WebRTC quality series to go", Duration::from_secs(10), || {
        value("zenlive_webrtc_stream_rtt_last_seconds").is_none()
            && value("zenlive_webrtc_stream_packets_lost_total").is_none()
    })
    .await;
    node.shutdown().await;
}
