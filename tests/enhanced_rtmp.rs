//! Enhanced RTMP: HEVC, AV1 and VP9 video in FourCC tags, as OBS 30+ and FFmpeg 6.1+ send
//! them. The publisher and the players are FFmpeg 8 (the libraries inside PyAV's wheels,
//! `tests/ertmp/*.py`; Debian's FFmpeg 5.1 cannot write or read such tags): the real
//! `zenlive` binary takes each codec with AAC, plays it back over RTMP and HTTP-FLV (every
//! frame decoded, no error), records it in fragmented MP4 (`hvc1`/`av01`/`vp09`, judged by
//! Debian's ffprobe and FFmpeg), and says why MPEG-TS HLS and WHEP do not carry it.

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
        assert!(got["frames"].as_u64() >= Some(60), "{how}: {got}");
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

#[tokio::test]
async fn av1_from_ffmpeg_8_plays_over_rtmp_and_http_flv_and_is_recorded() {
    codec_end_to_end("av1", "libdav1d", "av1").await;
}

#[tokio::test]
async fn vp9_from_ffmpeg_8_plays_over_rtmp_and_http_flv_and_is_recorded() {
    codec_end_to_end("vp9", "vp9", "vp9").await;
}
