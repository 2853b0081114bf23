//! Hostile RTMP input: each case is closed with a counted rejection, and an unrelated live
//! stream (FFmpeg publishing, HLS serving) carries on unaffected.

mod common;

use std::time::Duration;

use common::rtmp::{expect_closed, handshaken, type0};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use zenlive::RejectReason;

#[actix_rt::test]
async fn hostile_rtmp_input_is_rejected_without_harm() {
    let mut config = test_config();
    config.rtmp.handshake_timeout = Duration::from_secs(1);
    config.rtmp.idle_timeout = Duration::from_secs(2);
    let node = start_node(config).await;
    let addr = node.rtmp_addr().expect("rtmp");
    let mut publisher = publish(&fixture(false), &rtmp_url(&node, "bystander"));
    wait_live(&node, "bystander").await;
    let rejections =
        || node.counters().bad_input_rejections.load(std::sync::atomic::Ordering::Relaxed);
    // Each rejection is also exported by reason; `None`: any reason will do.
    let by_reason = |reason: RejectReason| {
        node.counters().rejections().find(|(r, _)| *r == reason).map_or(0, |(_, n)| n)
    };
    let check_reason = |case: &str, reason: Option<RejectReason>, before: u64| {
        let Some(reason) = reason else { return };
        assert!(by_reason(reason) > before, "{case}: counted as {}", reason.as_str());
        let line = format!("zenlive_bad_input_rejections_total{{reason=\"{}\"}}", reason.as_str());
        assert!(node.metrics_text().contains(&line), "{case}: {line} in /metrics");
    };

    let mut chunk_size = type0(2, 1, 4);
    chunk_size.extend_from_slice(&0x8000_0000u32.to_be_bytes());
    let mut chunk_size_max = type0(2, 1, 4);
    chunk_size_max.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    let mut unknown = type0(3, 99, 4);
    unknown.extend_from_slice(&[1, 2, 3, 4]);
    let mut huge_metadata = type0(3, 18, 0x00ff_ffff);
    huge_metadata.extend(std::iter::repeat_n(0x02u8, 128));
    let garbage: Vec<u8> =
        (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let cases: [(&str, Vec<u8>, Option<RejectReason>); 5] = [
        ("garbage after the handshake", garbage, None),
        ("chunk size 2^31", chunk_size, Some(RejectReason::ChunkSize)),
        ("chunk size 2^31 - 1", chunk_size_max, Some(RejectReason::ChunkSize)),
        ("unknown message type", unknown, Some(RejectReason::UnknownMessageType)),
        ("16 MB metadata message", huge_metadata, Some(RejectReason::MessageTooLarge)),
    ];
    for (case, bytes, reason) in cases {
        let before = rejections();
        let before_reason = reason.map_or(0, by_reason);
        let mut stream = handshaken(addr).await;
        // The server may close before everything is written: that is the point.
        let _ = stream.write_all(&bytes).await;
        expect_closed(stream, case).await;
        wait_for(&format!("{case} to be counted"), Duration::from_secs(5), || {
            rejections() > before
        })
        .await;
        check_reason(case, reason, before_reason);
    }

    // A truncated chunk, then silence: closed by the idle timeout.
    let before = rejections();
    let before_reason = by_reason(RejectReason::IdleTimeout);
    let mut stream = handshaken(addr).await;
    stream.write_all(&type0(3, 20, 200)[..7]).await.expect("write");
    expect_closed(stream, "truncated chunk").await;
    wait_for("the truncated chunk to be counted", Duration::from_secs(5), || rejections() > before)
        .await;
    check_reason("truncated chunk", Some(RejectReason::IdleTimeout), before_reason);

    // Slowloris: one byte of handshake, then nothing.
    let before = rejections();
    let before_reason = by_reason(RejectReason::HandshakeTimeout);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&[3]).await.expect("write");
    expect_closed(stream, "slowloris").await;
    wait_for("the slowloris to be counted", Duration::from_secs(5), || rejections() > before).await;
    check_reason("slowloris", Some(RejectReason::HandshakeTimeout), before_reason);

    // A handshake that is not RTMP's (version byte 6, RTMPE).
    let before_reason = by_reason(RejectReason::Handshake);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut c0c1 = vec![6u8];
    c0c1.resize(1537, 0);
    let _ = stream.write_all(&c0c1).await;
    expect_closed(stream, "bad handshake").await;
    wait_for("the bad handshake to be counted", Duration::from_secs(5), || {
        by_reason(RejectReason::Handshake) > before_reason
    })
    .await;
    check_reason("bad handshake", Some(RejectReason::Handshake), before_reason);

    // The bystander never noticed.
    let key = zenlive::StreamKey::new("live", "bystander").expect("key");
    let info = node.stream(&key).expect("bystander still live").info().await.expect("info");
    assert!(info.publishing);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bystander.flv");
    let read = record(&rtmp_url(&node, "bystander"), 2, &out).await;
    assert!(
        read.status.success(),
        "bystander still plays: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(decode_errors(&out).await.trim().is_empty());

    let _ = publisher.kill().await;
    node.shutdown().await;
}
