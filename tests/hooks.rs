//! Hooks and webhooks with real clients: SDK deciders allow and refuse FFmpeg publishers and
//! players (and fall back to `hooks.on_failure` when they panic or stall); viewer join and
//! leave are announced with durations and bytes; a webhook receiver started here gets every
//! event once, in order, signed; a receiver that is down gets them after it comes back,
//! without slowing media; the HTTP `on_publish` callback decides.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::webhooks::{free_addr, receiver, verify, Log, SECRET};
use common::*;
use parking_lot::Mutex;
use zenlive::hooks::{Decision, ViewerEvent};
use zenlive::{NodeBuilder, StreamEvent};

async fn play_rtmp(url: &str, seconds: &str) -> bool {
    let run = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", url, "-t", seconds, "-c", "copy", "-f", "null", "-"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("ffmpeg exits")
        .expect("ffmpeg runs")
        .success()
}

#[actix_rt::test]
async fn sdk_deciders_and_viewer_notifications() {
    let events: Arc<Mutex<Vec<ViewerEvent>>> = Arc::default();
    let ended: Arc<Mutex<Vec<StreamEvent>>> = Arc::default();
    let (join_log, leave_log, end_log) =
        (Arc::clone(&events), Arc::clone(&events), Arc::clone(&ended));
    let mut config = test_config();
    config.hooks.timeout = Duration::from_secs(1);
    let node = NodeBuilder::new(config)
        .on_publish(|request| async move {
            tokio::time::sleep(Duration::from_millis(20)).await; // really async
            if request.stream.to_string() == "live/blocked" {
                Decision::Deny("blocked by the application".into())
            } else {
                Decision::Allow
            }
        })
        .on_play(|request| async move {
            match request.stream.to_string().as_str() {
                "live/panics" => panic!("a buggy hook"),
                "live/stalls" => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Decision::Allow
                }
                _ => Decision::Allow,
            }
        })
        .on_viewer_join(move |e| join_log.lock().push(e.clone()))
        .on_viewer_leave(move |e| leave_log.lock().push(e.clone()))
        .on_stream_end(move |e| end_log.lock().push(e.clone()))
        .start()
        .await
        .expect("node starts");

    let blocked = publish(&fixture(false), &rtmp_url(&node, "blocked"));
    let status = tokio::time::timeout(Duration::from_secs(15), blocked.wait_with_output())
        .await
        .expect("refused promptly")
        .expect("output");
    assert!(!status.status.success(), "the hook refused the publisher");
    assert!(String::from_utf8_lossy(&status.stderr).contains("blocked by the application"));

    let mut publishers = Vec::new();
    for name in ["ok", "panics", "stalls"] {
        publishers.push(publish(&fixture(false), &rtmp_url(&node, name)));
        wait_live(&node, name).await;
    }
    // hooks.on_failure = deny: a panicking and a stalling decider both refuse.
    assert!(!play_rtmp(&rtmp_url(&node, "panics"), "1").await, "panicking hook -> deny");
    assert!(!play_rtmp(&rtmp_url(&node, "stalls"), "1").await, "stalled hook -> deny");
    // The node is fine, and a normal viewer watches 2 s and is announced both ways.
    assert!(play_rtmp(&rtmp_url(&node, "ok"), "2").await);
    wait_for("the viewer to leave", Duration::from_secs(10), || events.lock().len() >= 2).await;
    let events = events.lock().clone();
    match (&events[0], &events[1]) {
        (
            ViewerEvent::Joined { stream, protocol, .. },
            ViewerEvent::Left { seconds, bytes, stream: left, .. },
        ) => {
            assert_eq!((stream.to_string(), protocol.as_str()), ("live/ok".into(), "rtmp"));
            assert_eq!(left, stream);
            assert!(*seconds > 0.0 && *bytes > 10_000, "{seconds} s, {bytes} B");
        }
        other => panic!("join then leave, got {other:?}"),
    }
    for mut p in publishers {
        let _ = p.kill().await;
    }
    wait_for("the streams to end", Duration::from_secs(15), || ended.lock().len() == 3).await;
    let ended = ended.lock().clone();
    let ok = ended.iter().find(|e| e.key().to_string() == "live/ok").expect("live/ok ended");
    let StreamEvent::Ended { bytes_in, bytes_out, protocol, .. } = ok else { panic!("{ok:?}") };
    assert!(*bytes_in > 0 && *bytes_out > 10_000 && protocol.as_str() == "rtmp", "{ok:?}");
    node.shutdown().await;
}

#[actix_rt::test]
async fn webhooks_arrive_once_in_order_signed() {
    let addr = free_addr();
    let log: Log = Arc::default();
    let receiver = receiver(addr, Arc::clone(&log));
    let mut config = test_config();
    config.webhooks.urls = vec![format!("http://{addr}/events")];
    config.webhooks.secret = SECRET.to_owned();
    config.webhooks.on_publish_url = format!("http://{addr}/on_publish");
    let node = NodeBuilder::new(config).start().await.expect("node starts");

    // The HTTP on_publish callback refuses live/no.
    let refused = publish(&fixture(false), &rtmp_url(&node, "no"));
    let out = tokio::time::timeout(Duration::from_secs(15), refused.wait_with_output())
        .await
        .expect("refused promptly")
        .expect("output");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not on my watch"), "reason relayed");

    let mut publisher = publish(&fixture(false), &rtmp_url(&node, "w"));
    wait_live(&node, "w").await;
    assert!(play_rtmp(&rtmp_url(&node, "w"), "1").await);
    let kinds = || -> Vec<String> {
        log.lock()
            .iter()
            .filter(|r| r.path == "/events")
            .map(|r| r.body["type"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    // FFmpeg has gone, but the node learns of it from the socket: wait for the leave before
    // stopping the publisher, or the two ends race and either order is right.
    wait_for("the viewer to leave", Duration::from_secs(20), || kinds().len() >= 3).await;
    let _ = publisher.kill().await;
    wait_for("the stream to end", Duration::from_secs(15), || node.streams().is_empty()).await;
    wait_for("four events", Duration::from_secs(20), || kinds().len() >= 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // nothing more arrives
    assert_eq!(kinds(), ["stream.start", "viewer.join", "viewer.leave", "stream.end"]);
    let received = log.lock().clone();
    let mut ids = std::collections::HashSet::new();
    for r in received.iter().filter(|r| r.path == "/events") {
        verify(r);
        assert!(ids.insert(r.body["id"].to_string()), "each event once");
        assert_eq!(r.body["data"]["stream"], "live/w");
    }
    let end = received.iter().rev().find(|r| r.body["type"] == "stream.end").expect("end");
    assert!(end.body["data"]["bytes_in"].as_u64() > Some(0));
    assert!(end.body["data"]["duration_seconds"].as_f64() > Some(0.5));
    let publish_calls = received.iter().filter(|r| r.path == "/on_publish").count();
    assert_eq!(publish_calls, 2, "asked before each publish");
    node.shutdown().await;
    receiver.stop(true).await;
}

#[actix_rt::test]
async fn a_receiver_that_is_down_gets_the_events_later_and_media_does_not_wait() {
    let addr = free_addr(); // nothing listens here yet
    let mut config = test_config();
    config.webhooks.urls = vec![format!("http://{addr}/events")];
    config.webhooks.secret = SECRET.to_owned();
    let node = NodeBuilder::new(config).start().await.expect("node starts");
    let mut publisher = publish(&fixture(false), &rtmp_url(&node, "down"));
    wait_live(&node, "down").await;
    // Media flows at full rate while every delivery fails.
    let key = zenlive::StreamKey::parse("live/down").expect("key");
    wait_for("the rate window to fill", Duration::from_secs(15), || {
        node.stream_stats(&key).is_some_and(|s| s.uptime > Duration::from_secs(6))
    })
    .await;
    let fps = node.stream_stats(&key).expect("live").rates.fps;
    assert!((fps - 30.0).abs() <= 1.0, "fps {fps} while the receiver is down");
    assert!(node.metrics_text().contains("zenlive_webhook_deliveries_total{result=\"retried\"}"));
    let _ = publisher.kill().await;
    wait_for("the stream to end", Duration::from_secs(15), || node.streams().is_empty()).await;

    // The receiver comes back; the retries deliver both events, in order.
    let log: Log = Arc::default();
    let receiver = receiver(addr, Arc::clone(&log));
    wait_for("the events after the receiver returns", Duration::from_secs(40), || {
        log.lock().len() >= 2
    })
    .await;
    let kinds: Vec<_> = log.lock().iter().map(|r| r.body["type"].clone()).collect();
    assert_eq!(kinds, ["stream.start", "stream.end"]);
    log.lock().iter().for_each(verify);
    node.shutdown().await;
    receiver.stop(true).await;
}

#[actix_rt::test]
async fn chat_messages_go_out_as_webhooks() {
    use futures_util::SinkExt;

    let addr = free_addr();
    let log: Log = Arc::default();
    let receiver = receiver(addr, Arc::clone(&log));
    let mut config = test_config();
    config.auth.jwt_secret = "chat-webhook-secret-chat-webhook-secret".to_owned();
    config.webhooks.urls = vec![format!("http://{addr}/events")];
    config.webhooks.secret = SECRET.to_owned();
    let token =
        mint_token(&config.auth.jwt_secret, "ann", Some("Ann"), &[zenlive::auth::Role::Viewer]);
    let node = NodeBuilder::new(config).start().await.expect("node starts");
    let url = format!("ws://{}/chat/live/hooked?token={token}", node.http_addr());
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("connects");
    let message = serde_json::json!({"type": "message", "text": "hello webhooks"}).to_string();
    socket.send(tokio_tungstenite::tungstenite::Message::text(message)).await.expect("send");
    wait_for("the chat.message webhook", Duration::from_secs(10), || {
        log.lock().iter().any(|r| r.body["type"] == "chat.message")
    })
    .await;
    let received = log.lock().clone();
    let event = received.iter().find(|r| r.body["type"] == "chat.message").expect("event");
    verify(event);
    assert_eq!(event.body["data"]["room"], "live/hooked");
    assert_eq!(event.body["data"]["message"]["text"], "hello webhooks");
    assert_eq!(event.body["data"]["message"]["user"]["name"], "Ann");
    drop(socket);
    node.shutdown().await;
    receiver.stop(true).await;
}

#[actix_rt::test]
async fn a_reload_points_webhooks_and_the_publish_callback_at_new_urls() {
    let addr = free_addr();
    let log: Log = Arc::default();
    let receiver = receiver(addr, Arc::clone(&log));
    let mut config = test_config();
    config.webhooks.urls = vec![format!("http://{addr}/first")];
    config.webhooks.secret = SECRET.to_owned();
    config.webhooks.on_publish_url = format!("http://{addr}/first-publish");
    let node = NodeBuilder::new(config.clone()).start().await.expect("node starts");
    let paths_for = |stream: &str| -> Vec<String> {
        log.lock()
            .iter()
            .filter(|r| r.body["stream"] == stream || r.body["data"]["stream"] == stream)
            .map(|r| r.path.clone())
            .collect()
    };
    let mut first = publish(&fixture(false), &rtmp_url(&node, "a"));
    wait_live(&node, "a").await;
    wait_for("live/a announced", Duration::from_secs(20), || {
        paths_for("live/a").contains(&"/first".to_owned())
    })
    .await;

    config.webhooks.urls = vec![format!("http://{addr}/second")];
    config.webhooks.on_publish_url = format!("http://{addr}/second-publish");
    let reloaded = node.reload(&config).expect("a valid configuration");
    assert_eq!(reloaded.applied, ["webhooks.on_publish_url", "webhooks.urls"]);
    assert!(reloaded.need_restart.is_empty(), "{reloaded:?}");
    let mut second = publish(&fixture(false), &rtmp_url(&node, "b"));
    wait_live(&node, "b").await;
    wait_for("live/b announced to the new URL", Duration::from_secs(20), || {
        paths_for("live/b").contains(&"/second".to_owned())
    })
    .await;
    let paths = paths_for("live/b");
    assert!(paths.contains(&"/second-publish".to_owned()), "asked the new callback: {paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("/first")), "not the old URLs: {paths:?}");
    let _ = first.kill().await;
    let _ = second.kill().await;
    node.shutdown().await;
    receiver.stop(true).await;
}
