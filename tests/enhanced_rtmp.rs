//! Enhanced RTMP: HEVC, AV1 and VP9 video in FourCC tags, as OBS 30+ and FFmpeg 6.1+ send
//! them. The publisher and the players are FFmpeg 8 (the libraries inside PyAV's wheels,
//! `tests/ertmp/*.py`; Debian's FFmpeg 5.1 cannot write or read such tags): the real
//! `zenlive` binary takes each codec with AAC, plays it back over RTMP and HTTP-FLV (every
//! frame decoded, no error), records it in fragmented MP4 (`hvc1`/`av01`/`vp09`, judged by
//! Debian's ffprobe and FFmpeg), says why MPEG-TS HLS does not carry it, sends AV1 and
//! VP9 to the watch page over WHEP in headless Chromium, and refuses HEVC to WHEP with the
//! reason.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::recorded::*;
use common::*;
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// A PyAV script of `tests/ertmp/` with `args` (killed on drop) and its stdout lines.
fn script(name: &str, args: &[&str]) -> (Child, StdoutLines) {
    let found = std::process::Command::new("python3")
        .args(["-c", "import av"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "PyAV (PyPI `av`, pulled in by aiortc) is required: run scripts/test, which installs it"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ertmp").join(name);
    let mut child = Command::new("python3")
        .arg(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn a PyAV script");
    let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, lines)
}

/// What `tests/ertmp/play.py` read of `input` (up to `frames` video frames; 0: all).
async fn play(input: &str, frames: u32) -> Value {
    let (mut child, mut lines) = script("play.py", &[input, &frames.to_string()]);
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the player reports in time")
        .expect("read")
        .unwrap_or_else(|| panic!("play.py {input} printed nothing"));
    let _ = child.wait().await;
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("play.py {input}: {e}: {line}"))
}

/// A node recording every stream in fragmented MP4 (4 s segments) under `dir`.
async fn start_node(name: &str, dir: &Path) -> ZenliveProcess {
    let base = dir.to_str().expect("utf-8 path");
    let env = [
        ("ZENLIVE_RECORDING_ENABLED", "true"),
        ("ZENLIVE_RECORDING_FORMAT", "fmp4"),
        ("ZENLIVE_RECORDING_SEGMENT_DURATION", "4s"),
        ("ZENLIVE_STORAGE_BASE_PATH", base),
    ];
    ZenliveProcess::start(name, "n1", &[], &env).await
}

/// Publishes `codec` (`hevc`, `av1`, `vp9`) for 10 s to a fresh node and judges every way
/// out; `decoder` is the FFmpeg 8 decoder's name for it, `probed` Debian ffprobe's.
async fn codec_end_to_end(codec: &str, decoder: &str, probed: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node(&format!("ertmp-{codec}"), dir.path()).await;
    let key = format!("live/{codec}");
    let url = node.rtmp_url(&key);
    let (mut publisher, mut said) = script("publish.py", &[&url, codec, "10"]);
    let first = tokio::time::timeout(Duration::from_secs(30), said.next_line()).await;
    assert!(
        matches!(&first, Ok(Ok(Some(line))) if line == "PUBLISHING"),
        "the publisher connected: {first:?}"
    );

    // While it is live: RTMP and HTTP-FLV players get the codec, every frame decodes.
    let flv = format!("http://{}/{key}.flv", node.http);
    let (rtmp, http_flv) = tokio::join!(play(&url, 60), play(&flv, 60));
    for (how, got) in [("RTMP", &rtmp), ("HTTP-FLV", &http_flv)] {
        assert_eq!(got["video"], decoder, "{how}: {got}");
        assert_eq!(got["audio"], "aac", "{how}: {got}");
        assert_eq!(got["errors"], 0, "{how}: {got}");
        // A second of frames at least: the players start a while after the publisher on a
        // busy machine (PyAV's start), and the publish lasts 10 s.
        assert!(got["frames"].as_u64() >= Some(30), "{how}: {got}");
        assert_eq!((got["width"].as_u64(), got["height"].as_u64()), (Some(320), Some(240)));
    }

    // MPEG-TS HLS carries H.264 only: the log says so for this stream.
    wait_for("the HLS refusal in the log", Duration::from_secs(20), || {
        node.log_text().contains("MPEG-TS HLS carries H.264 video only")
    })
    .await;

    // The publisher's end finishes the recording: fMP4 segments of the codec, whole.
    let done = tokio::time::timeout(Duration::from_secs(60), said.next_line()).await;
    assert!(
        matches!(&done, Ok(Ok(Some(line))) if line.starts_with("DONE")),
        "the publisher finished: {done:?}"
    );
    let _ = publisher.wait().await;
    wait_for("every segment finished", Duration::from_secs(30), || {
        files_under(dir.path(), ".part").is_empty() && files_under(dir.path(), ".mp4").len() >= 2
    })
    .await;
    let segments = files_under(&dir.path().join(&key), ".mp4");
    let mut total = 0.0;
    for segment in &segments {
        let info = probe(segment).await;
        let codecs = common::recorded::codec_names(&info);
        assert!(
            codecs.iter().any(|c| c == probed) && codecs.iter().any(|c| c == "aac"),
            "{}: {codecs:?}",
            segment.display()
        );
        let errors = decode_errors(segment).await;
        assert!(errors.trim().is_empty(), "{}: decoding printed:\n{errors}", segment.display());
        let read = play(segment.to_str().expect("utf-8"), 0).await;
        assert_eq!(read["errors"], 0, "{}: {read}", segment.display());
        let span =
            read["last_pts"].as_f64().unwrap_or(0.0) - read["first_pts"].as_f64().unwrap_or(0.0);
        total += span + 1.0 / 30.0;
    }
    assert!((8.5..=10.5).contains(&total), "{total} s recorded of 10 s: {segments:?}");
}

#[tokio::test]
async fn hevc_from_ffmpeg_8_plays_over_rtmp_and_http_flv_and_is_recorded() {
    codec_end_to_end("hevc", "hevc", "hevc").await;
}

/// An offer to receive H.264, VP8, VP9 and AV1 video, as a browser's WHEP player makes it.
const WHEP_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    a=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 98 45 102\r\nc=IN IP4 0.0.0.0\r\n\
    a=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=ice-ufrag:abcd\r\n\
    a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 \
    00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
    a=setup:actpass\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:98 VP9/90000\r\n\
    a=fmtp:98 profile-id=0\r\na=rtpmap:45 AV1/90000\r\na=rtpmap:102 H264/90000\r\n\
    a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

/// FFmpeg 8 publishes AV1 and VP9 over Enhanced RTMP at once; the watch page in headless
/// Chromium plays each over WHEP (sent as they came, AV1 with its sequence header before
/// key frames); an HEVC stream is refused to WHEP with the reason (`406`).
#[tokio::test]
async fn av1_and_vp9_from_ffmpeg_8_play_over_whep_in_chromium_and_hevc_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start_node("ertmp-whep", dir.path()).await;
    let mut publishers = Vec::new();
    for codec in ["av1", "vp9", "hevc"] {
        let (publisher, mut said) =
            script("publish.py", &[&node.rtmp_url(&format!("live/{codec}")), codec, "60"]);
        let first = tokio::time::timeout(Duration::from_secs(30), said.next_line()).await;
        assert!(
            matches!(&first, Ok(Ok(Some(line))) if line == "PUBLISHING"),
            "the {codec} publisher connected: {first:?}"
        );
        publishers.push((publisher, said));
    }

    // Once the HEVC stream is live and has declared its video (until then: 404, then an
    // H.264 answer for a stream with no video yet), WHEP refuses it.
    let whep = || async {
        reqwest::Client::new()
            .post(format!("http://{}/whep/live/hevc", node.http))
            .header("Content-Type", "application/sdp")
            .body(WHEP_OFFER)
            .send()
            .await
            .expect("WHEP POST")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let answer = whep().await;
        if answer.status() == 406 || tokio::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.status(), 406);
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "codec_not_supported", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("hevc")), "{body}");

    let mut browser = common::cdp::Browser::start().await;
    for codec in ["av1", "vp9"] {
        let url = format!("http://{}/watch/live/{codec}", node.http);
        let watch = browser.open(&url, 1280, 800).await;
        let what = format!("the watch page to play FFmpeg's {codec} over WebRTC");
        browser.wait_playing_whep(&watch, &what).await;
    }
    drop(browser);
    drop(publishers);
}

#[tokio::test]
async fn av1_from_ffmpeg_8_plays_over_rtmp_and_http_flv_and_is_recorded() {
    codec_end_to_end("av1", "libdav1d", "av1").await;
}

#[tokio::test]
async fn vp9_from_ffmpeg_8_plays_over_rtmp_and_http_flv_and_is_recorded() {
    codec_end_to_end("vp9", "vp9", "vp9").await;
}
