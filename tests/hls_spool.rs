//! HLS segments in spool files (`hls.storage = "files"`) and in memory: FFmpeg publishes
//! over RTMP to the `zenlive` binary, FFmpeg and ffprobe read the HLS playlist back; the
//! spool directory is watched as segments enter and leave the window, after a crash
//! (SIGKILL) and when it cannot be written.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// Window 3, one-second segments (the harness's), a one-second reconnect grace.
const WINDOW: usize = 3;

/// The most segments a stream keeps: its window and the grace after it
/// (`zenlive_media::hls::max_grace_segments`).
const MOST_HELD: usize = WINDOW + WINDOW + 2;

async fn start(name: &str, storage: &str, spool: &Path) -> ZenliveProcess {
    let spool = spool.to_str().expect("utf-8 path");
    let env = [
        ("ZENLIVE_HLS_STORAGE", storage),
        ("ZENLIVE_HLS_SPOOL_DIR", spool),
        ("ZENLIVE_HLS_WINDOW", "3"),
        ("ZENLIVE_HLS_RECONNECT_GRACE", "1s"),
    ];
    ZenliveProcess::start(name, name, &[], &env).await
}

/// Every file under `root` (one level of node directories), by path.
fn spooled(root: &Path) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if dir.file_type().is_ok_and(|t| t.is_dir()) {
            for file in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                files.insert(file.path());
            }
        }
    }
    files
}

fn segments(files: &BTreeSet<PathBuf>) -> usize {
    with_extension(files, "ts")
}

fn with_extension(files: &BTreeSet<PathBuf>, extension: &str) -> usize {
    files.iter().filter(|f| f.extension().is_some_and(|e| e == extension)).count()
}

/// FFmpeg reads 4 s of the HLS playlist (once it lists a few segments); the copy must be
/// clean (0 decode errors).
async fn assert_hls_plays(node: &ZenliveProcess, name: &str, label: &str) {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().join("hls.ts");
    let url = format!("http://{}/live/{name}/index.m3u8", node.http);
    let client = reqwest::Client::new();
    wait_for_async("a playlist of three segments", Duration::from_secs(20), || async {
        let Ok(response) = client.get(&url).send().await else { return false };
        let text = response.text().await.unwrap_or_default();
        text.lines().filter(|l| l.ends_with(".ts")).count() >= WINDOW
    })
    .await;
    let read = record(&url, 4, &out).await;
    assert!(read.status.success(), "{label}: {}", String::from_utf8_lossy(&read.stderr));
    assert_good_recording(&out, 4.0, label).await;
}

#[tokio::test]
async fn files_mode_serves_segments_from_files_that_follow_the_window() {
    let spool = tempfile::tempdir().expect("tempdir");
    let node = start("spool-files", "files", spool.path()).await;
    let mut publisher = publish(&fixture(false), &node.rtmp_url("live/files"));
    let root = spool.path().to_owned();
    wait_for("a segment file in the spool", Duration::from_secs(20), || {
        segments(&spooled(&root)) > 0
    })
    .await;

    assert_hls_plays(&node, "files", "hls from files").await;

    // A segment served is the file's bytes.
    let client = reqwest::Client::new();
    let base = format!("http://{}/live/files", node.http);
    let playlist = client.get(format!("{base}/index.m3u8")).send().await.expect("get");
    let playlist = playlist.text().await.expect("text");
    let last = playlist.lines().rfind(|l| l.ends_with(".ts")).expect("a segment URI");
    let body = client.get(format!("{base}/{last}")).send().await.expect("get segment");
    assert_eq!(body.status(), 200);
    let body = body.bytes().await.expect("body");
    assert!(body.len() > 1000 && body[0] == 0x47, "an MPEG-TS segment");
    let on_disk = spooled(&root);
    assert!(
        on_disk.iter().any(|f| std::fs::read(f).is_ok_and(|b| b == body)),
        "segment {last} is one of the spool's files"
    );
    wait_metric(&node, "zenlive_hls_spool_files", Duration::from_secs(10), |v| v >= 1.0).await;
    wait_metric(&node, "zenlive_hls_spool_bytes", Duration::from_secs(10), |v| v > 1000.0).await;

    // Files leave as the window moves on, and no more than the window and its grace
    // are ever held; no temporary file is ever seen complete.
    let first = on_disk.clone();
    let mut most = 0;
    wait_for("the first files to leave the spool", Duration::from_secs(20), || {
        let now = spooled(&root);
        most = most.max(segments(&now));
        assert!(
            now.iter()
                .all(|f| f.extension().is_some_and(|e| e == "ts" || e == "m4s" || e == "tmp")),
            "{now:?}"
        );
        first.iter().all(|f| !now.contains(f))
    })
    .await;
    assert!(most <= MOST_HELD, "{most} segments held, the window and its grace are {MOST_HELD}");
    // LL-HLS (on by default) keeps its complete fMP4 segments in the spool too.
    assert!(with_extension(&spooled(&root), "m4s") > 0, "no LL-HLS segment in the spool");
    assert_eq!(metric(&node, "zenlive_hls_spool_fallbacks_total").await, 0.0);

    // The stream ends: after its grace, nothing is left.
    let _ = publisher.kill().await;
    wait_for("the spool to empty after the grace", Duration::from_secs(20), || {
        let left = spooled(&root);
        segments(&left) == 0 && with_extension(&left, "m4s") == 0
    })
    .await;
    wait_metric(&node, "zenlive_hls_spool_files", Duration::from_secs(10), |v| v == 0.0).await;
    wait_metric(&node, "zenlive_hls_spool_bytes", Duration::from_secs(10), |v| v == 0.0).await;
}

#[tokio::test]
async fn a_crashed_nodes_spool_is_removed_by_the_next_start_and_a_running_ones_is_not() {
    let spool = tempfile::tempdir().expect("tempdir");
    let root = spool.path().to_owned();
    let crashed = start("spool-crashed", "files", &root).await;
    let mut publisher = publish(&fixture(false), &crashed.rtmp_url("live/crash"));
    wait_for("a segment file in the spool", Duration::from_secs(20), || {
        segments(&spooled(&root)) > 0
    })
    .await;
    crashed.signal("-KILL");
    let _ = publisher.kill().await;
    let left = spooled(&root);
    assert!(segments(&left) > 0, "SIGKILL leaves the files behind");

    // The next start removes them; a node running beside it keeps its own.
    let next = start("spool-next", "files", &root).await;
    assert!(left.iter().all(|f| !f.exists()), "the crashed node's files are gone");
    let mut publisher = publish(&fixture(false), &next.rtmp_url("live/next"));
    wait_for("the new node's segment files", Duration::from_secs(20), || {
        segments(&spooled(&root)) > 0
    })
    .await;
    let beside = start("spool-beside", "files", &root).await;
    let kept = spooled(&root);
    assert!(segments(&kept) > 0, "a running node's segments stay");
    assert_hls_plays(&next, "next", "hls beside another node").await;
    let _ = publisher.kill().await;
    drop(beside);
}

#[tokio::test]
async fn an_unusable_spool_keeps_hls_going_from_memory_and_counts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").expect("write");
    // A directory under a regular file cannot be made, whoever runs the test.
    let node = start("spool-unusable", "files", &file.join("spool")).await;
    let mut publisher = publish(&fixture(false), &node.rtmp_url("live/unusable"));
    wait_metric(&node, "zenlive_hls_spool_fallbacks_total", Duration::from_secs(20), |v| v >= 1.0)
        .await;
    assert_hls_plays(&node, "unusable", "hls from the memory fallback").await;
    assert!(node.log_text().contains("segment spool (hls.spool_dir) cannot be used"));
    assert_eq!(metric(&node, "zenlive_hls_spool_files").await, 0.0);
    let _ = publisher.kill().await;
}

#[tokio::test]
async fn memory_mode_serves_hls_and_writes_no_file() {
    let spool = tempfile::tempdir().expect("tempdir");
    let node = start("spool-memory", "memory", spool.path()).await;
    let mut publisher = publish(&fixture(false), &node.rtmp_url("live/memory"));
    assert_hls_plays(&node, "memory", "hls from memory").await;
    assert!(spooled(spool.path()).is_empty(), "memory mode writes nothing to the spool");
    assert!(std::fs::read_dir(spool.path()).expect("dir").next().is_none());
    let _ = publisher.kill().await;
}
