//! `examples/stream_log.rs` end to end: a PostgreSQL server of the test's own, the example
//! minting a publisher token, FFmpeg publishing with it (and without it, refused), and the
//! stream's start and end saved as rows by the application's hooks.

mod common;

use std::time::Duration;

use common::pg::Postgres;
use common::*;

#[actix_rt::test]
async fn the_application_saves_stream_events_in_its_own_database() {
    let server = Postgres::start();
    server.create_database("stream_log").await;

    let (mut example, mut lines) =
        start_example("stream_log", &[("DATABASE_URL", server.url("stream_log"))]);
    let url = line_starting(&mut lines, "PUBLISH ").await;
    let (bare, _) = url.split_once('?').expect("a token in the URL");

    let refused = publish(&fixture(false), bare);
    let out = tokio::time::timeout(Duration::from_secs(15), refused.wait_with_output())
        .await
        .expect("refused promptly")
        .expect("output");
    assert!(!out.status.success(), "publishing without the token is refused");

    let mut publisher = publish(&fixture(false), &url);
    assert_eq!(line_starting(&mut lines, "SAVED start").await, "live/demo");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = publisher.kill().await;
    assert_eq!(line_starting(&mut lines, "SAVED end").await, "live/demo");

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &example.id().expect("running").to_string()])
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), example.wait())
        .await
        .expect("the example stops")
        .expect("wait");
    assert!(status.success());

    let db = server.connect("stream_log").await;
    let rows = db
        .query(
            "SELECT kind, stream, user_sub, protocol, duration_seconds, bytes_in FROM stream_events ORDER BY id",
            &[],
        )
        .await
        .expect("query");
    assert_eq!(rows.len(), 2, "one start and one end");
    let kinds: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(kinds, ["start", "end"]);
    for r in &rows {
        assert_eq!(r.get::<_, String>(1), "live/demo");
        assert_eq!(r.get::<_, Option<String>>(2).as_deref(), Some("demo-publisher"));
        assert_eq!(r.get::<_, String>(3), "rtmp");
    }
    let duration: Option<f64> = rows[1].get(4);
    let bytes: Option<i64> = rows[1].get(5);
    assert!(duration.is_some_and(|d| d > 1.0), "duration {duration:?}");
    assert!(bytes.is_some_and(|b| b > 10_000), "bytes {bytes:?}");
}
