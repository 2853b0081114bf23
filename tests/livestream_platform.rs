//! `examples/livestream_platform.rs` end to end: a PostgreSQL server of the test's own,
//! FFmpeg publishing with the printed token, HLS served, chat over WebSocket whose messages
//! the application saves (and one it refuses), rows checked.

mod common;

use std::time::Duration;

use common::pg::Postgres;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[actix_rt::test]
async fn stream_watch_chat_and_the_chat_lands_in_postgres() {
    let server = Postgres::start();
    server.create_database("platform").await;

    let (mut example, mut lines) =
        start_example("livestream_platform", &[("DATABASE_URL", server.url("platform"))]);
    let publish_url = line_starting(&mut lines, "PUBLISH ").await;
    let watch_url = line_starting(&mut lines, "WATCH ").await;
    let chat_url = line_starting(&mut lines, "CHAT ").await;

    let mut publisher = publish(&fixture(false), &publish_url);
    let client = reqwest::Client::new();
    let mut served = false;
    for _ in 0..150 {
        if client.get(&watch_url).send().await.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "HLS is served");

    let (mut chat, _) = tokio_tungstenite::connect_async(&chat_url).await.expect("chat connects");
    for text in ["hello", "see http://spam.example", "bye"] {
        let frame = serde_json::json!({ "type": "message", "text": text }).to_string();
        chat.send(Message::text(frame)).await.expect("send");
    }
    let mut refused = false;
    let mut broadcast = Vec::new();
    while broadcast.len() < 2 || !refused {
        let frame = tokio::time::timeout(Duration::from_secs(10), chat.next())
            .await
            .expect("chat event in time")
            .expect("open")
            .expect("frame");
        let Message::Text(text) = frame else { continue };
        let event: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        match event["type"].as_str() {
            Some("message") => broadcast.push(event["text"].as_str().unwrap_or("").to_owned()),
            Some("error") => refused = event["code"] == "rejected",
            _ => {}
        }
    }
    assert_eq!(broadcast, ["hello", "bye"]);
    line_starting(&mut lines, "SAVED chat live/demo").await;
    line_starting(&mut lines, "SAVED chat live/demo").await;

    let _ = publisher.kill().await;
    drop(chat);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &example.id().expect("running").to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), example.wait())
        .await
        .expect("the example stops")
        .expect("wait");
    assert!(status.success());

    let db = server.connect("platform").await;
    let rows = db
        .query("SELECT room, user_id, user_name, text FROM chat_messages ORDER BY message_id", &[])
        .await
        .expect("query");
    let saved: Vec<(String, String, String, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        saved,
        [
            ("live/demo".into(), "guest".into(), "guest".into(), "hello".into()),
            ("live/demo".into(), "guest".into(), "guest".into(), "bye".into()),
        ]
    );
}
