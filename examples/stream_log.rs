//! An application that owns its data: it mints a publisher token, requires tokens to
//! publish, and saves every stream start and end into PostgreSQL through the SDK's hooks
//! (ZenLive itself persists nothing).
//!
//! Run against a database you own:
//!
//! ```sh
//! DATABASE_URL="host=127.0.0.1 user=postgres dbname=zenlive" \
//!   cargo run --example stream_log -- 127.0.0.1:1935 127.0.0.1:8080
//! ```
//!
//! It prints `PUBLISH rtmp://.../live/demo?token=...` (paste the part after `live/` into
//! OBS's stream key box, or give the URL to FFmpeg) and writes rows into `stream_events`.
//! `ZENLIVE_AUTH_JWT_SECRET` sets the signing secret (a random one otherwise). Stops on
//! Ctrl-C or SIGTERM, after the last rows are written.

use std::time::Duration;

use rand::RngCore;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;
use zenlive::auth::{unix_now, Auth, Claims, Role};
use zenlive::{Config, NodeBuilder, StreamEvent};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stream_events (
    id               bigserial PRIMARY KEY,
    kind             text NOT NULL,          -- 'start' or 'end'
    stream           text NOT NULL,
    user_sub         text,
    protocol         text NOT NULL,
    peer             text,
    at               timestamptz NOT NULL DEFAULT now(),
    duration_seconds double precision,
    bytes_in         bigint,
    bytes_out        bigint,
    reason           text
)";

/// One row to write.
struct Row {
    kind: &'static str,
    stream: String,
    user: Option<String>,
    protocol: &'static str,
    peer: Option<String>,
    duration: Option<f64>,
    bytes_in: Option<i64>,
    bytes_out: Option<i64>,
    reason: Option<String>,
}

fn row(event: &StreamEvent) -> Row {
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    match event {
        StreamEvent::Started { key, protocol, peer, user, .. } => Row {
            kind: "start",
            stream: key.to_string(),
            user: user.clone(),
            protocol: protocol.as_str(),
            peer: peer.map(|p| p.to_string()),
            duration: None,
            bytes_in: None,
            bytes_out: None,
            reason: None,
        },
        StreamEvent::Ended {
            key,
            protocol,
            peer,
            user,
            duration,
            bytes_in,
            bytes_out,
            reason,
            ..
        } => Row {
            kind: "end",
            stream: key.to_string(),
            user: user.clone(),
            protocol: protocol.as_str(),
            peer: peer.map(|p| p.to_string()),
            duration: Some(duration.as_secs_f64()),
            bytes_in: Some(clamp(*bytes_in)),
            bytes_out: Some(clamp(*bytes_out)),
            reason: Some(reason.clone()),
        },
    }
}

/// What the writer task is told.
/// Rows waiting for the database, at most.
const QUEUE: usize = 10_000;

enum Message {
    /// Save a row.
    Save(Row),
    /// Answer once every row sent before this one is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Writes rows in order.
async fn writer(db: tokio_postgres::Client, mut messages: mpsc::Receiver<Message>) {
    while let Some(message) = messages.recv().await {
        let r = match message {
            Message::Save(r) => r,
            Message::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let written = db
            .execute(
                "INSERT INTO stream_events
                   (kind, stream, user_sub, protocol, peer, duration_seconds, bytes_in, bytes_out, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &r.kind, &r.stream, &r.user, &r.protocol, &r.peer, &r.duration, &r.bytes_in,
                    &r.bytes_out, &r.reason,
                ],
            )
            .await;
        match written {
            Ok(_) => println!("SAVED {} {}", r.kind, r.stream),
            Err(error) => eprintln!("could not save a {} event for {}: {error}", r.kind, r.stream),
        }
    }
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

    // Hooks run on actor threads and must return at once: they hand rows to the writer.
    // Bounded: if the database falls this far behind, rows are dropped (and said so)
    // rather than piling up in memory.
    let (tx, rx) = mpsc::channel(QUEUE);
    actix_rt::spawn(writer(db, rx));
    let (on_start, on_end) = (tx.clone(), tx.clone());
    let node = NodeBuilder::new(config.clone())
        .on_stream_start(move |event| {
            if on_start.try_send(Message::Save(row(event))).is_err() {
                eprintln!("database writer behind; event dropped");
            }
        })
        .on_stream_end(move |event| {
            if on_end.try_send(Message::Save(row(event))).is_err() {
                eprintln!("database writer behind; event dropped");
            }
        })
        .start()
        .await?;

    let auth = Auth::new(&config.auth)?;
    let now = unix_now();
    let token = auth
        .mint(&Claims {
            sub: "demo-publisher".into(),
            name: Some("Demo".into()),
            roles: vec![Role::Publisher],
            stream: Some("live/demo".into()),
            exp: now + 24 * 3600,
            nbf: None,
            iat: Some(now),
            iss: None,
            aud: None,
        })
        .map_err(anyhow::Error::msg)?;
    let rtmp = node.rtmp_addr().expect("rtmp is on");
    println!("PUBLISH rtmp://{rtmp}/live/demo?token={token}");

    shutdown_signal().await;
    // Every stream ends (and its end event is queued) before shutdown returns; then wait
    // for the writer to catch up.
    node.shutdown().await;
    let (done, flushed) = tokio::sync::oneshot::channel();
    let _ = tx.send(Message::Flush(done)).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), flushed).await;
    Ok(())
}
