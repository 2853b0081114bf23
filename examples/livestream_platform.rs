//! A small live-streaming platform: RTMP in (with a publisher token), HLS out, and a chat
//! room beside the stream whose messages the application saves into PostgreSQL through
//! the `on_chat_delivered` hook (ZenLive delivers chat; it does not store it).
//!
//! ```sh
//! DATABASE_URL="host=127.0.0.1 user=postgres dbname=platform" \
//!   cargo run --example livestream_platform -- 127.0.0.1:1935 127.0.0.1:8080
//! ```
//!
//! It prints `PUBLISH <rtmp url with token>`, `WATCH <hls url>` and `CHAT <websocket url
//! with a viewer token>`; every chat message lands in the `chat_messages` table. A message
//! containing "http" is refused by the `on_chat_message` hook (no links in chat).
//! `ZENLIVE_AUTH_JWT_SECRET` sets the signing secret (random otherwise). Stops on Ctrl-C
//! or SIGTERM after the last rows are written.

use std::time::Duration;

use rand::RngCore;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use zenlive::auth::{unix_now, Auth, Claims, Role};
use zenlive::chat::{ChatDecision, DeliveredMessage};
use zenlive::{Config, NodeBuilder};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chat_messages (
    id         bigserial PRIMARY KEY,
    room       text NOT NULL,
    message_id bigint NOT NULL,
    user_id    text,
    user_name  text,
    text       text NOT NULL,
    sent_at    timestamptz NOT NULL
)";

/// Rows waiting for the database, at most.
const QUEUE: usize = 10_000;

enum Message {
    Save(DeliveredMessage),
    Flush(oneshot::Sender<()>),
}

async fn writer(db: tokio_postgres::Client, mut messages: mpsc::Receiver<Message>) {
    while let Some(message) = messages.recv().await {
        let d = match message {
            Message::Save(d) => d,
            Message::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let id = i64::try_from(d.message.id).unwrap_or(i64::MAX);
        let seconds = d.message.ts as f64 / 1000.0;
        let user = d.message.user.as_ref();
        let written = db
            .execute(
                "INSERT INTO chat_messages (room, message_id, user_id, user_name, text, sent_at)
                 VALUES ($1, $2, $3, $4, $5, to_timestamp($6))",
                &[
                    &d.room,
                    &id,
                    &user.map(|u| &u.id),
                    &user.map(|u| &u.name),
                    &d.message.text,
                    &seconds,
                ],
            )
            .await;
        match written {
            Ok(_) => println!("SAVED chat {} #{}", d.room, d.message.id),
            Err(error) => eprintln!("could not save chat message {}: {error}", d.message.id),
        }
    }
}

fn mint(auth: &Auth, sub: &str, role: Role, stream: &str) -> anyhow::Result<String> {
    let now = unix_now();
    auth.mint(&Claims {
        sub: sub.into(),
        name: Some(sub.into()),
        roles: vec![role],
        stream: Some(stream.into()),
        exp: now + 24 * 3600,
        nbf: None,
        iat: Some(now),
        iss: None,
        aud: None,
    })
    .map_err(anyhow::Error::msg)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").with_writer(std::io::stderr).init();
    let mut args = std::env::args().skip(1);
    let mut config = Config::default();
    config.rtmp.addr = args.next().unwrap_or_else(|| "127.0.0.1:1935".into()).parse()?;
    config.http.addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into()).parse()?;
    // WHIP media beside HTTP, on a port the OS picks (the answer advertises it).
    config.webrtc.udp_addr = std::net::SocketAddr::new(config.http.addr.ip(), 0);
    config.metrics.enabled = false;
    config.hls.segment_duration = Duration::from_secs(2);
    config.auth.jwt_secret = std::env::var("ZENLIVE_AUTH_JWT_SECRET").unwrap_or_else(|_| {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        secret.iter().map(|b| format!("{b:02x}")).collect()
    });
    config.auth.require_publish = true;

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=postgres".into());
    let (db, connection) = tokio_postgres::connect(&url, NoTls).await?;
    actix_rt::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("database connection: {error}");
        }
    });
    db.batch_execute(SCHEMA).await?;
    // Bounded: if the database falls this far behind, rows are dropped (and said so)
    // rather than piling up in memory.
    let (tx, rx) = mpsc::channel(QUEUE);
    actix_rt::spawn(writer(db, rx));

    let save = tx.clone();
    let node = NodeBuilder::new(config.clone())
        .on_chat_message(|request| async move {
            if request.text.contains("http") {
                ChatDecision::Reject("no links in chat".into())
            } else {
                ChatDecision::Allow
            }
        })
        .on_chat_delivered(move |delivered| {
            if save.try_send(Message::Save(delivered.clone())).is_err() {
                eprintln!("database writer behind; event dropped");
            }
        })
        .start()
        .await?;

    let auth = Auth::new(&config.auth)?;
    let rtmp = node.rtmp_addr().expect("rtmp is on");
    let http = node.http_addr();
    let publisher = mint(&auth, "host", Role::Publisher, "live/demo")?;
    let viewer = mint(&auth, "guest", Role::Viewer, "live/demo")?;
    println!("PUBLISH rtmp://{rtmp}/live/demo?token={publisher}");
    println!("WATCH http://{http}/live/demo/index.m3u8");
    println!("CHAT ws://{http}/chat/live/demo?token={viewer}");

    shutdown_signal().await;
    node.shutdown().await;
    let (done, flushed) = oneshot::channel();
    let _ = tx.send(Message::Flush(done)).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), flushed).await;
    Ok(())
}
