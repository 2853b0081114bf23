//! Delivery under stress: a viewer that stops reading is dropped while the publisher and
//! other viewers carry on; a publisher that reconnects continues its HLS playlist after an
//! `EXT-X-DISCONTINUITY`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::rtmp::{connected, publishing, read_events, send_results, until};
use common::*;
use rml_rtmp::sessions::{ClientSession, ClientSessionEvent};
use rml_rtmp::time::RtmpTimestamp;
use tokio::net::{TcpSocket, TcpStream};

/// An RTMP player of `name` that has just started playing (with a kernel receive buffer
/// of `recv_buffer` bytes when given).
async fn player(
    addr: SocketAddr,
    name: &str,
    recv_buffer: Option<u32>,
) -> (TcpStream, ClientSession) {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("rcvbuf");
    }
    let stream = socket.connect(addr).await.expect("connect");
    let (mut stream, mut session) = connected(stream).await;
    let request = session.request_playback(name.into()).expect("play request");
    send_results(&mut stream, vec![request]).await;
    until(&mut stream, &mut session, |e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted))
        .await;
    (stream, session)
}

/// An RTMP player with a tiny receive buffer that starts playing `name` and then never
/// reads again.
async fn stalled_player(addr: SocketAddr, name: &str) -> TcpStream {
    player(addr, name, Some(4096)).await.0
}

#[actix_rt::test]
async fn a_viewer_that_stops_reading_is_dropped_and_harms_no_one() {
    let mut config = test_config();
    config.play.max_viewer_lag = Duration::from_secs(2);
    let node = start_node(config).await;
    let mut publisher = publish(&fixture(false), &rtmp_url(&node, "slow"));
    wait_live(&node, "slow").await;

    let stalled = stalled_player(node.rtmp_addr().expect("rtmp"), "slow").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("healthy.flv");
    let healthy = record(&rtmp_url(&node, "slow"), 6, &out).await;
    assert!(healthy.status.success(), "{}", String::from_utf8_lossy(&healthy.stderr));
    assert_good_recording(&out, 6.0, "a healthy viewer beside a stalled one").await;

    let dropped = || node.counters().viewers_dropped_slow.load(Ordering::Relaxed);
    wait_for("the stalled viewer to be dropped", Duration::from_secs(20), || dropped() >= 1).await;
    assert!(
        node.counters().frames_skipped.load(Ordering::Relaxed) > 0,
        "it skipped before it was dropped"
    );
    let key = zenlive::StreamKey::new("live", "slow").expect("key");
    let info = node.stream(&key).expect("still live").info().await.expect("info");
    assert!(info.publishing, "the publisher never waited");
    drop(stalled);
    let _ = publisher.kill().await;
    node.shutdown().await;
}

/// Connects and starts publishing `name`; sends nothing more.
async fn silent_publisher(addr: SocketAddr, name: &str) -> (TcpStream, ClientSession) {
    publishing(TcpStream::connect(addr).await.expect("connect"), name).await
}

#[actix_rt::test]
async fn a_publisher_that_goes_silent_ends_its_stream() {
    let mut config = test_config();
    config.rtmp.idle_timeout = Duration::from_secs(2);
    let node = start_node(config).await;
    let _silent = silent_publisher(node.rtmp_addr().expect("rtmp"), "quiet").await;
    let key = zenlive::StreamKey::new("live", "quiet").expect("key");
    assert!(node.stream(&key).is_some(), "publishing started");
    // The socket stays open but nothing arrives: the idle timeout ends the stream.
    wait_for("the silent publisher's stream to end", Duration::from_secs(15), || {
        node.stream(&key).is_none()
    })
    .await;
    node.shutdown().await;
}

/// An FLV video tag body of `len` bytes: an H.264 NAL unit (keyframe or not).
fn avc_tag(keyframe: bool, len: usize) -> bytes::Bytes {
    let mut tag = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    tag.resize(len.max(5), 0x41);
    tag.into()
}

#[actix_rt::test]
async fn merged_reads_deliver_what_waits_below_the_low_water_mark() {
    // A quarter second of data per read: at 64 kB/s the kernel holds 16 kB per wake-up,
    // and the flush tick runs every second.
    let mut config = test_config();
    config.rtmp.publish_read_delay = Duration::from_millis(250);
    let node = start_node(config).await;
    let (mut stream, mut session) =
        silent_publisher(node.rtmp_addr().expect("rtmp"), "merged").await;
    let key = zenlive::StreamKey::new("live", "merged").expect("key");
    let mut sent = 0u64;
    let mut send = |session: &mut ClientSession, ms: u32, keyframe: bool, len: usize| {
        sent += 1;
        session
            .publish_video_data(avc_tag(keyframe, len), RtmpTimestamp::new(ms), false)
            .expect("video")
    };
    // Two and a half seconds at 32 frames of 2 kB a second: the mark follows the rate.
    for i in 0..80u32 {
        let frame = send(&mut session, i * 31, i % 32 == 0, 2048);
        send_results(&mut stream, vec![frame]).await;
        tokio::time::sleep(Duration::from_millis(31)).await;
    }
    // Then one small frame, and silence with the connection open: whatever the kernel holds
    // below the mark must still arrive (at the next flush tick), long before the idle
    // timeout.
    let last = send(&mut session, 80 * 31, false, 100);
    send_results(&mut stream, vec![last]).await;
    let info = || async { node.stream(&key).expect("live").info().await.expect("info") };
    let mut received = 0;
    for _ in 0..50 {
        received = info().await.ingest.video_frames;
        if received == sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(received, sent, "every frame sent reached the stream");
    assert!(info().await.publishing, "the publisher is still connected");
    drop(stream);
    node.shutdown().await;
}

/// Publishes `frames` video frames of 2 kB every 31 ms to a node with `write_delay`
/// and reads them as a player: the timestamps received, and how many reads brought video.
async fn paced_play(write_delay: Duration, name: &str, frames: u32) -> (Vec<u32>, usize) {
    let mut config = test_config();
    // Frames reach the stream as they are sent: only the player's side merges.
    config.rtmp.publish_read_delay = Duration::ZERO;
    config.play.write_delay = write_delay;
    let node = start_node(config).await;
    let addr = node.rtmp_addr().expect("rtmp");
    let (mut publisher, mut session) = silent_publisher(addr, name).await;
    // The first keyframe makes the stream playable; the player joins after it.
    let first = session
        .publish_video_data(avc_tag(true, 2048), RtmpTimestamp::new(0), false)
        .expect("video");
    send_results(&mut publisher, vec![first]).await;
    let (mut viewer, mut viewer_session) = player(addr, name, None).await;
    let reader = tokio::spawn(async move {
        let (mut stamps, mut reads) = (Vec::new(), 0);
        let mut buf = vec![0u8; 256 * 1024];
        while stamps.last() != Some(&(frames * 31)) {
            let events =
                read_events(&mut viewer, &mut viewer_session, &mut buf, "frames keep coming").await;
            let before = stamps.len();
            for event in events {
                if let ClientSessionEvent::VideoDataReceived { timestamp, .. } = event {
                    stamps.push(timestamp.value);
                }
            }
            reads += usize::from(stamps.len() > before);
        }
        (stamps, reads)
    });
    for i in 1..=frames {
        tokio::time::sleep(Duration::from_millis(31)).await;
        let frame = session
            .publish_video_data(avc_tag(false, 2048), RtmpTimestamp::new(i * 31), false)
            .expect("video");
        send_results(&mut publisher, vec![frame]).await;
    }
    let received = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the player receives the last frame")
        .expect("reader");
    drop(publisher);
    node.shutdown().await;
    received
}

#[actix_rt::test]
async fn paced_player_writes_carry_every_frame_in_fewer_writes() {
    // 40 frames over 1.24 s. At a quarter second per write the player reads a handful of
    // batches; a busier machine only merges more.
    let (stamps, reads) = paced_play(Duration::from_millis(250), "paced", 40).await;
    let after_join: Vec<u32> = stamps.iter().copied().skip_while(|&t| t == 0).collect();
    assert_eq!(after_join, (1..=40).map(|i| i * 31).collect::<Vec<_>>(), "every frame, in order");
    assert!(reads <= 40 / 3, "{reads} reads brought 40 frames: writes were not merged");
    // Without pacing the same frames arrive too (how many reads is up to the machine).
    let (stamps, _) = paced_play(Duration::ZERO, "unpaced", 40).await;
    let after_join: Vec<u32> = stamps.iter().copied().skip_while(|&t| t == 0).collect();
    assert_eq!(after_join, (1..=40).map(|i| i * 31).collect::<Vec<_>>(), "every frame, in order");
}

#[actix_rt::test]
async fn a_reconnecting_publisher_continues_the_playlist_after_a_discontinuity() {
    let node = start_node(test_config()).await;
    let client = reqwest::Client::new();
    let url = http_url(&node, "/live/again/index.m3u8");
    let key = zenlive::StreamKey::new("live", "again").expect("key");

    let mut first = publish(&fixture(false), &rtmp_url(&node, "again"));
    wait_live(&node, "again").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    first.start_kill().expect("kill");
    wait_for("the first session to end", Duration::from_secs(15), || node.stream(&key).is_none())
        .await;
    let between = client.get(&url).send().await.expect("request");
    assert_eq!(between.status(), 200, "the playlist outlives its publisher during the grace");
    let before = between.text().await.expect("text");

    let mut second = publish(&fixture(false), &rtmp_url(&node, "again"));
    wait_live(&node, "again").await;
    let mut playlist = String::new();
    for _ in 0..60 {
        playlist = client.get(&url).send().await.expect("request").text().await.expect("text");
        if playlist.contains("#EXT-X-DISCONTINUITY\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(playlist.contains("#EXT-X-DISCONTINUITY\n"), "before:\n{before}\nafter:\n{playlist}");
    let first_seq = |p: &str| {
        p.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|n| n.parse::<u64>().ok())
    };
    assert!(first_seq(&playlist) >= first_seq(&before), "media sequence never goes back");
    let _ = second.kill().await;
    node.shutdown().await;
}
