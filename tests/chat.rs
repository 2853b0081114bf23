//! Chat with real WebSocket clients (tokio-tungstenite): members get history on join and
//! every message exactly once in the same order, with acks; bad input gets an error code
//! or a close and harms nobody else; a member that stops reading is dropped while the
//! others keep receiving.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use zenlive::auth::Role;
use zenlive::Config;
use zenlive_actors::chat::{Moderate, SystemMessage};
use zenlive_actors::chat_protocol::ClientCommand;

const SECRET: &str = "chat-test-secret-chat-test-secret-chat";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn config() -> Config {
    let mut config = test_config();
    config.auth.jwt_secret = SECRET.to_owned();
    config.chat.burst = 20;
    // These tests are about rooms, not who may open one: anyone may, stream or not
    // (`tests/hostile_clients.rs` covers the default).
    config.chat.rooms_without_stream = zenlive::config::RoomsWithoutStream::Anyone;
    config
}

fn token(sub: &str, name: Option<&str>, roles: &[Role]) -> String {
    mint_token(SECRET, sub, name, roles)
}

async fn connect(node: &zenlive::Node, room: &str, token: Option<&str>) -> Socket {
    let mut url = format!("ws://{}/chat/{room}", node.http_addr());
    if let Some(token) = token {
        url.push_str(&format!("?token={token}"));
    }
    let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connects");
    socket
}

/// The next JSON event (skipping pings), within 10 s.
async fn next(socket: &mut Socket) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("an event in time")
            .expect("the socket stays open")
            .expect("a frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON event"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next event of `kind`, skipping others (joins, other members' messages).
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    for _ in 0..1000 {
        let event = next(socket).await;
        if event["type"] == kind {
            return event;
        }
    }
    panic!("no {kind} event among the next 1000");
}

async fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::text(value.to_string())).await.expect("send");
}

#[actix_rt::test]
async fn every_member_gets_every_message_once_in_order() {
    let node = start_node(config()).await;
    let alice_token = token("alice", Some("Alice"), &[Role::Viewer]);
    let bob_token = token("bob", Some("Bob"), &[Role::Viewer]);
    let mut alice = connect(&node, "live/show", Some(&alice_token)).await;
    let mut bob = connect(&node, "live/show", Some(&bob_token)).await;
    let mut reader = connect(&node, "live/show", None).await;
    for socket in [&mut alice, &mut bob, &mut reader] {
        let history = next_of(socket, "history").await;
        assert_eq!(history["messages"], json!([]));
    }

    for i in 0..5 {
        send(
            &mut alice,
            json!({ "type": "message", "text": format!("a{i}"), "client_id": format!("ca{i}") }),
        )
        .await;
        send(
            &mut bob,
            json!({ "type": "message", "text": format!("b{i}"), "client_id": format!("cb{i}") }),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut alice_acks = Vec::new();
    for (n, socket) in [&mut alice, &mut bob, &mut reader].into_iter().enumerate() {
        let mut texts = Vec::new();
        let mut acks = Vec::new();
        while texts.len() < 10 {
            let event = next(socket).await;
            match event["type"].as_str() {
                Some("message") => {
                    texts.push((event["id"].as_u64().expect("id"), event["text"].clone()));
                    assert!(event["user"]["name"].is_string(), "{event}");
                }
                Some("ack") => acks.push(event),
                Some("join" | "leave") => {}
                _ => panic!("unexpected {event}"),
            }
        }
        seen.push(texts);
        if n == 0 {
            alice_acks = acks;
        }
    }
    assert_eq!(seen[0], seen[1], "same messages, same order");
    assert_eq!(seen[1], seen[2], "the anonymous reader too");
    let mut ids: Vec<u64> = seen[0].iter().map(|(id, _)| *id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each message once");

    // Acks name the ids the room gave to the client's messages.
    while alice_acks.len() < 5 {
        alice_acks.push(next_of(&mut alice, "ack").await);
    }
    for ack in &alice_acks {
        let id = ack["id"].as_u64().expect("id");
        let text = &seen[0].iter().find(|(m, _)| *m == id).expect("acked message was broadcast").1;
        let client_id = ack["client_id"].as_str().expect("client id");
        assert_eq!(text.as_str().map(|t| t.replace('a', "ca")), Some(client_id.to_owned()));
    }

    // The room holds its name in the registry, like a stream.
    let key = zenlive_registry::ActorKey::new(zenlive_registry::ActorKind::ChatRoom, "live/show");
    let owner = node.registry().lookup(&key).await.expect("registry answers");
    assert_eq!(owner.map(|o| o.node), Some(node.id().clone()), "the room is placed on this node");

    // A newcomer gets the history, oldest first.
    let mut late = connect(&node, "live/show", None).await;
    let history = next_of(&mut late, "history").await;
    let texts: Vec<_> =
        history["messages"].as_array().expect("array").iter().map(|m| m["text"].clone()).collect();
    assert_eq!(texts, seen[0].iter().map(|(_, t)| t.clone()).collect::<Vec<_>>());

    // Counted in the metrics: 10 messages, each delivered to the three members.
    let text = node.metrics_text();
    let value = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels).unwrap_or(0.0);
    assert!(value("zenlive_chat_messages_total", &[]) >= 10.0, "{text}");
    assert!(value("zenlive_chat_deliveries_total", &[]) >= 30.0, "{text}");
    assert_eq!(value("zenlive_actors", &[("kind", "chat_member")]), 4.0, "four members live");

    // The application posts to the room by name.
    node.chat_room("live/show").do_send(SystemMessage { text: "welcome".into() });
    let system = next_of(&mut late, "system").await;
    assert_eq!(system["text"], "welcome");
    node.shutdown().await;
}

#[actix_rt::test]
async fn bad_input_gets_an_error_or_a_close_and_harms_nobody_else() {
    let node = start_node(config()).await;
    let mallory_token = token("mallory", Some("Mallory"), &[Role::Viewer]);
    let bob_token = token("bob", Some("Bob"), &[Role::Viewer]);
    let mut mallory = connect(&node, "live/bad", Some(&mallory_token)).await;
    let mut bob = connect(&node, "live/bad", Some(&bob_token)).await;
    next_of(&mut mallory, "history").await;
    next_of(&mut bob, "history").await;

    let cases = [
        (Message::text("not json"), "invalid"),
        (Message::text(r#"{"type":"launch"}"#), "invalid"),
        (Message::binary(vec![1u8, 2, 3]), "invalid"),
        (Message::text(json!({"type":"message","text":"x".repeat(501)}).to_string()), "too_long"),
        (Message::text(json!({"type":"message","text":"   "}).to_string()), "empty"),
        (Message::text(json!({"type":"ban","user":"bob"}).to_string()), "forbidden"),
        (Message::text(json!({"type":"clear"}).to_string()), "forbidden"),
    ];
    for (frame, code) in cases {
        let shown = format!("{frame:?}").chars().take(60).collect::<String>();
        mallory.send(frame).await.expect("send");
        let error = next_of(&mut mallory, "error").await;
        assert_eq!(error["code"], code, "{shown}");
    }
    // A text frame that is not UTF-8 closes that connection.
    let mut garbled = connect(&node, "live/bad", Some(&mallory_token)).await;
    next_of(&mut garbled, "history").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0xfd], OpCode::Data(Data::Text), true);
    let _ = garbled.send(Message::Frame(frame)).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = garbled.next().await {
            match frame {
                Ok(Message::Close(close)) => return close.map(|c| c.code),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("closed in time");
    assert!(
        matches!(closed, Some(CloseCode::Invalid | CloseCode::Protocol) | None),
        "invalid UTF-8 closes: {closed:?}"
    );

    // Muted by the application: posting is refused with `muted`.
    let mute = ClientCommand::Mute { user: "mallory".into(), seconds: 60 };
    node.chat_room("live/bad").do_send(Moderate { command: mute });
    next_of(&mut mallory, "muted").await;
    send(&mut mallory, json!({"type":"message","text":"let me speak"})).await;
    assert_eq!(next_of(&mut mallory, "error").await["code"], "muted");
    let unmute = ClientCommand::Mute { user: "mallory".into(), seconds: 0 };
    node.chat_room("live/bad").do_send(Moderate { command: unmute });
    next_of(&mut mallory, "muted").await;

    // Banned: kicked now, refused on rejoin.
    node.chat_room("live/bad")
        .do_send(Moderate { command: ClientCommand::Ban { user: "eve".into() } });
    let eve_token = token("eve", Some("Eve"), &[Role::Viewer]);
    let mut eve = connect(&node, "live/bad", Some(&eve_token)).await;
    assert_eq!(next_of(&mut eve, "error").await["code"], "banned", "a banned user cannot rejoin");

    // Flooding past the rate limit (burst 20).
    let mut limited = false;
    for i in 0..40 {
        send(&mut mallory, json!({"type":"message","text":format!("flood {i}")})).await;
    }
    for _ in 0..80 {
        let event = next(&mut mallory).await;
        if event["type"] == "error" && event["code"] == "rate_limited" {
            limited = true;
            break;
        }
    }
    assert!(limited, "the flood hits the rate limit");

    // An anonymous reader cannot post.
    let mut anonymous = connect(&node, "live/bad", None).await;
    next_of(&mut anonymous, "history").await;
    send(&mut anonymous, json!({"type":"message","text":"hi"})).await;
    assert_eq!(next_of(&mut anonymous, "error").await["code"], "sign_in_required");
    // A signed-in user whose token has no name is told so.
    let nameless = token("nameless", None, &[Role::Viewer]);
    let mut nameless = connect(&node, "live/bad", Some(&nameless)).await;
    next_of(&mut nameless, "history").await;
    send(&mut nameless, json!({"type":"message","text":"hi"})).await;
    assert_eq!(next_of(&mut nameless, "error").await["code"], "name_required");

    // A 1 MB frame closes that connection (1009) without being buffered.
    let mut big = connect(&node, "live/bad", Some(&mallory_token)).await;
    next_of(&mut big, "history").await;
    let _ = big.send(Message::text("x".repeat(1 << 20))).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = big.next().await {
            match frame {
                Ok(Message::Close(Some(close))) => return Some(close.code),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("closed in time");
    assert!(matches!(closed, Some(CloseCode::Size) | None), "closed: {closed:?}");

    // Bob never noticed: he still posts and receives.
    send(&mut bob, json!({"type":"message","text":"still here","client_id":"b"})).await;
    let ack = next_of(&mut bob, "ack").await;
    assert_eq!(ack["client_id"], "b");
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_member_that_stops_reading_is_dropped_and_the_others_carry_on() {
    let node = start_node(config()).await;
    let mut stuck = connect(&node, "live/slow", None).await;
    next_of(&mut stuck, "history").await;
    let mut reader = connect(&node, "live/slow", None).await;
    next_of(&mut reader, "history").await;

    // The reader keeps reading in the background; `stuck` never reads again. Messages go
    // out in batches of 100, each once the reader has the one before, so the reader is never
    // more than a batch behind however busy the machine is, while `stuck` falls further
    // behind with every batch until its queue overflows.
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&seen);
    let counting = actix_rt::spawn(async move {
        let mut systems = 0;
        while systems < 10_000 {
            match tokio::time::timeout(Duration::from_secs(20), reader.next()).await {
                Ok(Some(Ok(Message::Text(text)))) if text.contains("\"system\"") => {
                    systems += 1;
                    counted.store(systems, Ordering::Relaxed);
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        systems
    });
    let room = node.chat_room("live/slow");
    let text = "y".repeat(2000);
    for batch in 1..=100 {
        for _ in 0..100 {
            room.do_send(SystemMessage { text: text.clone() });
        }
        wait_for("the reader to take a batch", Duration::from_secs(20), || {
            seen.load(Ordering::Relaxed) >= batch * 100
        })
        .await;
    }
    let received = counting.await.expect("reader task");
    assert_eq!(received, 10_000, "the reading member got every message");
    wait_for("the stuck member to be dropped", Duration::from_secs(20), || {
        node.counters().chat_members_dropped_slow.load(Ordering::Relaxed) >= 1
    })
    .await;
    drop(stuck);
    node.shutdown().await;
}

#[actix_rt::test]
async fn the_application_allows_rejects_rewrites_and_sees_every_message() {
    use std::sync::Arc;
    use zenlive_actors::chat::{ChatDecision, DeliveredMessage};

    let delivered: Arc<parking_lot::Mutex<Vec<DeliveredMessage>>> = Arc::default();
    let log = Arc::clone(&delivered);
    let node = zenlive::NodeBuilder::new(config())
        .on_chat_message(|request| async move {
            tokio::time::sleep(Duration::from_millis(10)).await; // really async
            if request.text.contains("forbidden") {
                ChatDecision::Reject("not here".into())
            } else if request.text == "hello" {
                ChatDecision::Rewrite("HELLO".into())
            } else {
                ChatDecision::Allow
            }
        })
        .on_chat_delivered(move |message| log.lock().push(message.clone()))
        .start()
        .await
        .expect("node starts");
    let ann = token("ann", Some("Ann"), &[Role::Viewer]);
    let mut socket = connect(&node, "live/hooked", Some(&ann)).await;
    next_of(&mut socket, "history").await;

    send(&mut socket, json!({"type":"message","text":"a forbidden word","client_id":"1"})).await;
    let error = next_of(&mut socket, "error").await;
    assert_eq!(
        (error["code"].as_str(), error["client_id"].as_str()),
        (Some("rejected"), Some("1"))
    );
    assert_eq!(error["reason"], "not here");

    send(&mut socket, json!({"type":"message","text":"hello","client_id":"2"})).await;
    let message = next_of(&mut socket, "message").await;
    assert_eq!(message["text"], "HELLO", "rewritten before broadcast");
    send(&mut socket, json!({"type":"message","text":"plain","client_id":"3"})).await;
    assert_eq!(next_of(&mut socket, "message").await["text"], "plain");

    wait_for("the deliveries", Duration::from_secs(5), || delivered.lock().len() == 2).await;
    let texts: Vec<_> = delivered.lock().iter().map(|d| d.message.text.clone()).collect();
    assert_eq!(texts, ["HELLO", "plain"], "the application sees what was delivered, in order");
    assert!(delivered.lock().iter().all(|d| d.room == "live/hooked"));
    node.shutdown().await;
}

#[actix_rt::test]
async fn clients_cannot_open_rooms_without_bound() {
    let mut config = config();
    config.chat.max_rooms = 1;
    let node = start_node(config).await;
    let mut first = connect(&node, "live/one", None).await;
    next_of(&mut first, "history").await;
    let url = format!("ws://{}/chat/live/two", node.http_addr());
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503, "a second room is refused");
        }
        other => panic!("expected a 503, got {:?}", other.map(|_| ())),
    }
    // The room that exists still takes members.
    let mut again = connect(&node, "live/one", None).await;
    next_of(&mut again, "history").await;
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_reload_changes_the_rules_of_live_rooms() {
    let mut config = config();
    let node = start_node(config.clone()).await;
    let ann = token("ann", Some("Ann"), &[Role::Viewer]);
    let mut member = connect(&node, "live/rules", Some(&ann)).await;
    next_of(&mut member, "history").await;
    send(&mut member, json!({"type":"message","text":"twelve chars"})).await;
    next_of(&mut member, "ack").await;

    config.chat.max_length = 5;
    config.chat.blocked_words = vec!["spam".into()];
    let reloaded = node.reload(&config).expect("valid");
    assert_eq!(reloaded.applied, ["chat.blocked_words", "chat.max_length"]);
    send(&mut member, json!({"type":"message","text":"twelve chars"})).await;
    assert_eq!(next_of(&mut member, "error").await["code"], "too_long", "the live room's rule");
    send(&mut member, json!({"type":"message","text":"spam"})).await;
    assert_eq!(next_of(&mut member, "error").await["code"], "blocked_word");
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_shutdown_closes_members_with_a_reason_to_reconnect() {
    let node = start_node(config()).await;
    let mut member = connect(&node, "live/closing", None).await;
    next_of(&mut member, "history").await;
    // The shutdown waits for the member's connection to close, so it runs beside the read.
    let shutdown = actix_rt::spawn(node.shutdown());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        let frame = tokio::time::timeout_at(deadline, member.next()).await.expect("closed in time");
        match frame {
            Some(Ok(Message::Close(close))) => break close.map(|c| c.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(CloseCode::Restart), "1012: reconnect");
    tokio::time::timeout(Duration::from_secs(20), shutdown)
        .await
        .expect("the shutdown ends")
        .expect("the shutdown does not panic");
}
