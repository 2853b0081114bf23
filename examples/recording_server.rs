//! A recording server: RTMP in, HLS out, every stream recorded to an S3 bucket, and each
//! stream's metadata and its recorded segments saved in the application's own PostgreSQL
//! through the node's hooks. (ZenLive records and uploads; the database is the
//! application's, as the design wants: the node keeps no metadata of its own.)
//!
//! ```sh
//! DATABASE_URL="host=127.0.0.1 user=postgres dbname=recordings" \
//! ZENLIVE_STORAGE_S3_BUCKET=recordings \
//! ZENLIVE_STORAGE_S3_ENDPOINT=http://127.0.0.1:8333 ZENLIVE_STORAGE_S3_FORCE_PATH_STYLE=true \
//! AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
//!   cargo run --example recording_server -- 127.0.0.1:1935 127.0.0.1:8080
//! ```
//!
//! Configuration:
//! - Arguments: the RTMP and the HTTP listen address (default `127.0.0.1:1935` and
//!   `127.0.0.1:8080`), then optionally a TOML configuration file (`zenlive.example.toml`
//!   documents its keys), read before the environment.
//! - `DATABASE_URL`: a libpq-style connection string (default
//!   `host=127.0.0.1 user=postgres dbname=postgres`). The tables are created if missing.
//! - Every `ZENLIVE_*` variable of the node applies. `ZENLIVE_STORAGE_S3_BUCKET` is
//!   required; `ZENLIVE_STORAGE_S3_ENDPOINT`,
//!   `_REGION`, `_FORCE_PATH_STYLE`, `_PREFIX` reach an S3-compatible server;
//!   `ZENLIVE_STORAGE_BASE_PATH` is the local upload spool (default `./recordings`);
//!   `ZENLIVE_RECORDING_SEGMENT_DURATION` and `ZENLIVE_RECORDING_FORMAT` shape the segments.
//!   Recording is on for every stream and storage is S3, whatever they say; metrics are off.
//! - Credentials: the usual AWS chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
//!   `AWS_PROFILE`, instance roles).
//!
//! The tables: `streams`, one row per publish (stream, publisher, start, end, how long it was
//! live, bytes in, and once its recording ended the segments, bytes and seconds recorded);
//! `recording_segments`, one row per segment in the bucket (its stream's row, bucket, object
//! key, wall-clock start, media start and duration, bytes; unique by key, since an upload
//! may be announced twice after a crash).
//!
//! Hooks run on the node's threads and must return at once: each one only puts the event on
//! a bounded channel; one task writes the rows, in the order the events came.
//!
//! It prints `PUBLISH <rtmp url>` and `WATCH <hls url>`, then a `SAVED ...` line per row
//! written. Stops on Ctrl-C or SIGTERM: the node stops (recordings are finished), the rows
//! of the events heard so far are written, and it exits. Segments not uploaded by then stay
//! in the spool; the next start uploads them, and their rows are written then.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use zenlive::config::StorageKind;
use zenlive::{Config, NodeBuilder, RecordingEvent, SegmentLocation, StreamEvent};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS streams (
    id                bigserial PRIMARY KEY,
    stream            text NOT NULL,
    protocol          text NOT NULL,
    publisher         text,
    started_at        timestamptz NOT NULL,
    ended_at          timestamptz,
    duration_seconds  double precision,
    bytes_in          bigint,
    recorded_segments bigint,
    recorded_bytes    bigint,
    recorded_seconds  double precision,
    recording_end     text
);
CREATE TABLE IF NOT EXISTS recording_segments (
    id                  bigserial PRIMARY KEY,
    stream_id           bigint REFERENCES streams (id),
    stream              text NOT NULL,
    bucket              text NOT NULL,
    object_key          text NOT NULL UNIQUE,
    started_at          timestamptz,
    media_start_seconds double precision,
    duration_seconds    double precision,
    bytes               bigint NOT NULL,
    recovered           boolean NOT NULL
)";

/// Events waiting for the database, at most.
const QUEUE: usize = 10_000;

/// What the hooks hand the writer task.
enum Event {
    Stream(StreamEvent, SystemTime),
    Recording(RecordingEvent),
    Flush(oneshot::Sender<()>),
}

/// The database writer: one task, the events in order. A stream's row is the one it
/// started (held while it is live); recording events, which may come after the stream
/// ended (uploads take their time), find their row by the stream and the recording's start.
struct Writer {
    db: tokio_postgres::Client,
    live: HashMap<String, i64>,
}

/// The row of `stream` that started last at or before `at` (now when unknown), by SQL.
const ROW_OF: &str = "(SELECT id FROM streams WHERE stream = $1
    AND started_at <= coalesce($2::timestamptz, now()) + interval '2 seconds'
    ORDER BY started_at DESC LIMIT 1)";

impl Writer {
    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            let saved = match event {
                Event::Stream(event, at) => self.stream(event, at).await,
                Event::Recording(event) => self.recording(event).await,
                Event::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            match saved {
                Ok(line) => println!("SAVED {line}"),
                Err(error) => eprintln!("could not save an event: {error}"),
            }
        }
    }

    async fn stream(&mut self, event: StreamEvent, at: SystemTime) -> anyhow::Result<String> {
        match event {
            StreamEvent::Started { key, protocol, user, at, .. } => {
                let row = self
                    .db
                    .query_one(
                        "INSERT INTO streams (stream, protocol, publisher, started_at)
                         VALUES ($1, $2, $3, $4) RETURNING id",
                        &[&key.to_string(), &protocol.as_str(), &user, &at],
                    )
                    .await?;
                let id: i64 = row.get(0);
                self.live.insert(key.to_string(), id);
                Ok(format!("stream-start {key} #{id}"))
            }
            StreamEvent::Ended { key, duration, bytes_in, .. } => {
                let Some(id) = self.live.remove(&key.to_string()) else {
                    anyhow::bail!("{key} ended, but its start was not saved");
                };
                let bytes = i64::try_from(bytes_in).unwrap_or(i64::MAX);
                self.db
                    .execute(
                        "UPDATE streams SET ended_at = $2, duration_seconds = $3, bytes_in = $4
                         WHERE id = $1",
                        &[&id, &at, &duration.as_secs_f64(), &bytes],
                    )
                    .await?;
                Ok(format!("stream-end {key} #{id}"))
            }
        }
    }

    async fn recording(&mut self, event: RecordingEvent) -> anyhow::Result<String> {
        let seconds = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        match event {
            RecordingEvent::Segment {
                stream,
                location,
                start,
                media_start,
                duration,
                bytes,
                recovered,
                ..
            } => {
                let SegmentLocation::S3 { bucket, key } = location else {
                    anyhow::bail!("a segment of {stream} not in S3: {location}");
                };
                let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                let sql = format!(
                    "INSERT INTO recording_segments (stream_id, stream, started_at, bucket,
                         object_key, media_start_seconds, duration_seconds, bytes, recovered)
                     VALUES ({ROW_OF}, $1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (object_key) DO NOTHING"
                );
                self.db
                    .execute(
                        &sql,
                        &[
                            &stream.to_string(),
                            &start,
                            &bucket,
                            &key,
                            &seconds(media_start),
                            &seconds(duration),
                            &bytes,
                            &recovered,
                        ],
                    )
                    .await?;
                Ok(format!("segment s3://{bucket}/{key}"))
            }
            RecordingEvent::Ended { stream, segments, bytes, duration, start, reason } => {
                let (segments, bytes) = (
                    i64::try_from(segments).unwrap_or(i64::MAX),
                    i64::try_from(bytes).unwrap_or(i64::MAX),
                );
                let sql = format!(
                    "UPDATE streams SET recorded_segments = $3, recorded_bytes = $4,
                         recorded_seconds = $5, recording_end = $6
                     WHERE id = {ROW_OF}"
                );
                let updated = self
                    .db
                    .execute(
                        &sql,
                        &[
                            &stream.to_string(),
                            &start,
                            &segments,
                            &bytes,
                            &duration.as_secs_f64(),
                            &reason,
                        ],
                    )
                    .await?;
                anyhow::ensure!(updated == 1, "no stream row for the recording of {stream}");
                Ok(format!("recording-end {stream} segments={segments}"))
            }
        }
    }
}

/// Hands `event` to the writer without waiting (hooks run on the node's threads).
fn hand(tx: &mpsc::Sender<Event>, event: Event) {
    if tx.try_send(event).is_err() {
        // Bounded: if the database falls this far behind, events are dropped, and said so,
        // rather than pile up in memory.
        eprintln!("database writer behind; event dropped");
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
    let rtmp: SocketAddr = args.next().unwrap_or_else(|| "127.0.0.1:1935".into()).parse()?;
    let http: SocketAddr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into()).parse()?;
    let file = args.next().map(PathBuf::from);
    let mut config = Config::load(file.as_deref(), std::env::vars())?;
    (config.rtmp.addr, config.http.addr) = (rtmp, http);
    // WHIP media beside HTTP, on a port the OS picks (the answer advertises it).
    config.webrtc.udp_addr = std::net::SocketAddr::new(config.http.addr.ip(), 0);
    config.metrics.enabled = false;
    config.recording.enabled = true;
    config.recording.paths.clear();
    config.storage.kind = StorageKind::S3;
    anyhow::ensure!(!config.storage.s3.bucket.is_empty(), "set ZENLIVE_STORAGE_S3_BUCKET");

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=postgres".into());
    let (db, connection) = tokio_postgres::connect(&url, NoTls).await?;
    actix_rt::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("database connection: {error}");
        }
    });
    db.batch_execute(SCHEMA).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    actix_rt::spawn(Writer { db, live: HashMap::new() }.run(rx));

    let (starts, ends, segments, recordings) = (tx.clone(), tx.clone(), tx.clone(), tx.clone());
    let node = NodeBuilder::new(config)
        .on_stream_start(move |e| hand(&starts, Event::Stream(e.clone(), SystemTime::now())))
        .on_stream_end(move |e| hand(&ends, Event::Stream(e.clone(), SystemTime::now())))
        .on_recording_segment(move |e| hand(&segments, Event::Recording(e.clone())))
        .on_recording_end(move |e| hand(&recordings, Event::Recording(e.clone())))
        .start()
        .await?;

    let rtmp = node.rtmp_addr().expect("rtmp is on");
    let http = node.http_addr();
    println!("PUBLISH rtmp://{rtmp}/live/demo");
    println!("WATCH http://{http}/live/demo/index.m3u8");

    shutdown_signal().await;
    node.shutdown().await;
    let (done, flushed) = oneshot::channel();
    let _ = tx.send(Event::Flush(done)).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), flushed).await;
    Ok(())
}
