//! HTTPS, WSS and RTMPS with a certificate the test makes itself (openssl): FFmpeg publishes
//! over `rtmps://` and reads HLS over `https://`, an HTTP client that trusts only that certificate fetches the playlist, a
//! WebSocket client joins chat over `wss://`; SIGHUP swaps in a renewed certificate
//! without dropping the chat connection, and a broken renewal leaves the old one serving.

mod common;

use std::path::Path;
use std::process::Command as StdCommand;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::Connector;

/// Writes a self-signed certificate for 127.0.0.1 and localhost named `cn` to `dir`.
fn make_certificate(dir: &Path, cn: &str) {
    let status = StdCommand::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is required: run scripts/test, which installs it");
    assert!(status.success(), "openssl made the certificate");
}

/// The subject of the certificate `addr` serves.
fn served_subject(addr: &str) -> String {
    let script = format!(
        "openssl s_client -connect {addr} -servername localhost </dev/null 2>/dev/null \
         | openssl x509 -noout -subject"
    );
    let out = StdCommand::new("sh").args(["-c", &script]).output().expect("openssl s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[actix_rt::test]
async fn https_and_wss_serve_with_a_certificate_reloaded_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certificate(dir.path(), "zenlive-test-one");
    let cert = dir.path().join("cert.pem").display().to_string();
    let key = dir.path().join("key.pem").display().to_string();
    let env = [
        ("ZENLIVE_TLS_CERT", cert.as_str()),
        ("ZENLIVE_TLS_KEY", key.as_str()),
        ("ZENLIVE_TLS_HTTPS_ADDR", "127.0.0.1:0"),
        ("ZENLIVE_TLS_RTMPS_ADDR", "127.0.0.1:0"),
    ];
    let node = ZenliveProcess::start("tls", "n1", &[], &env).await;
    let mut publisher = publish_looped(&format!("rtmps://{}/live/secure", node.rtmps));
    let pem = std::fs::read(&cert).expect("read the certificate");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
        .build()
        .expect("client");
    let playlist = format!("https://{}/live/secure/index.m3u8", node.https);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if client.get(&playlist).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no playlist over HTTPS");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert!(
        node.has_stream("live/secure").await,
        "FFmpeg published over rtmps:// (the playlist above is its stream)"
    );
    // FFmpeg plays the stream over https:// and over rtmps://.
    let out = dir.path().join("over-https.ts");
    let played = record(&playlist, 3, &out).await;
    assert!(played.status.success(), "{}", String::from_utf8_lossy(&played.stderr));
    assert_good_recording(&out, 2.5, "HLS over HTTPS").await;
    let out = dir.path().join("over-rtmps.flv");
    let played = record(&format!("rtmps://{}/live/secure", node.rtmps), 3, &out).await;
    assert!(played.status.success(), "{}", String::from_utf8_lossy(&played.stderr));
    assert_good_recording(&out, 2.5, "RTMP over TLS").await;
    // Plain bytes on the RTMPS port: a failed TLS handshake, counted, nothing else.
    let mut plain = tokio::net::TcpStream::connect(&node.rtmps).await.expect("connect");
    let _ = tokio::io::AsyncWriteExt::write_all(&mut plain, &[3u8; 1537]).await;
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut sink),
    )
    .await;
    assert!(closed.is_ok(), "plain RTMP on the RTMPS port is closed");

    // Chat over wss://, trusting only the test's certificate.
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(native_tls::Certificate::from_pem(&pem).expect("PEM"))
        .build()
        .expect("connector");
    let url = format!("wss://{}/chat/live/secure", node.https);
    let (mut chat, _) = tokio_tungstenite::connect_async_tls_with_config(
        &url,
        None,
        false,
        Some(Connector::NativeTls(connector)),
    )
    .await
    .expect("a WebSocket over TLS");
    let history = tokio::time::timeout(Duration::from_secs(10), chat.next()).await;
    assert!(matches!(history, Ok(Some(Ok(_)))), "the room answers: {history:?}");

    // A renewed certificate is served after SIGHUP; the open chat connection stays.
    assert!(served_subject(&node.https).contains("zenlive-test-one"));
    make_certificate(dir.path(), "zenlive-test-two");
    node.signal("-HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !served_subject(&node.https).contains("zenlive-test-two") {
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate is served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ping = futures_util::SinkExt::send(
        &mut chat,
        tokio_tungstenite::tungstenite::Message::Ping(Vec::new().into()),
    )
    .await;
    assert!(ping.is_ok(), "the chat connection outlived the reload");

    // A broken renewal: logged, and the certificate in use stays.
    std::fs::write(&cert, "not a certificate").expect("write");
    node.signal("-HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !node.log_text().contains("SIGHUP: not reloaded") {
        assert!(tokio::time::Instant::now() < deadline, "the failed reload is logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served_subject(&node.https).contains("zenlive-test-two"));
    let _ = publisher.kill().await;
}
