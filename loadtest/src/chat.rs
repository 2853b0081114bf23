//! Chat load: members that read a room over WebSocket and senders that post at a fixed
//! rate. Each message's text is `t:<unix microseconds>` at send time, so every member
//! measures delivery latency (sender and members share this machine's clock). Members only
//! look for that marker in each frame instead of parsing the JSON, so one client process
//! can read hundreds of thousands of frames per second.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// What one member saw.
#[derive(Debug, Default)]
pub struct MemberStats {
    /// Chat messages received.
    pub deliveries: u64,
    /// Delivery latencies, microseconds.
    pub latencies_us: Vec<u32>,
    /// `error` events received.
    pub errors: u64,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// An HS256 token for `sub` (its name too), valid an hour, signed with `secret`.
pub fn mint(secret: &str, sub: &str) -> String {
    let now = now_us() / 1_000_000;
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "sub": sub, "name": sub, "roles": ["viewer"], "exp": now + 3600, "iat": now,
    });
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// The send time carried in a message frame, if it is one of ours.
fn sent_at(frame: &str) -> Option<u64> {
    let rest = frame.split_once("\"text\":\"t:")?.1;
    let digits = rest.split('"').next()?;
    digits.parse().ok()
}

/// Reads the room at `url` until `deadline`.
pub async fn member(url: String, deadline: Instant) -> Result<MemberStats> {
    let (mut socket, _) =
        tokio_tungstenite::connect_async(&url).await.context("connect: websocket")?;
    let mut stats = MemberStats::default();
    loop {
        let frame = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => break,
            Ok(None) => anyhow::bail!("closed: by the server"),
            Ok(Some(frame)) => frame.context("read: websocket")?,
        };
        if let Message::Text(text) = frame {
            if let Some(sent) = sent_at(&text) {
                stats.deliveries += 1;
                let latency = now_us().saturating_sub(sent);
                stats.latencies_us.push(u32::try_from(latency).unwrap_or(u32::MAX));
            } else if text.contains("\"type\":\"error\"") {
                stats.errors += 1;
            }
        }
    }
    let _ = socket.close(None).await;
    Ok(stats)
}

/// Posts `rate` messages per second to the room at `url` until `deadline`; answers how many.
pub async fn sender(url: String, rate: f64, deadline: Instant) -> Result<u64> {
    let (mut socket, _) =
        tokio_tungstenite::connect_async(&url).await.context("connect: websocket")?;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let mut sent = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = ticks.tick() => {
                let text = format!(r#"{{"type":"message","text":"t:{}"}}"#, now_us());
                socket.send(Message::text(text)).await.context("write: websocket")?;
                sent += 1;
            }
            // Keep reading so the server never sees this member as slow.
            frame = socket.next() => {
                if frame.is_none() {
                    anyhow::bail!("closed: by the server");
                }
            }
        }
    }
    let _ = socket.close(None).await;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_send_time_and_mints_a_three_part_token() {
        let frame = r#"{"type":"message","id":3,"text":"t:1795520585930123","user":{"id":"a"}}"#;
        assert_eq!(sent_at(frame), Some(1_795_520_585_930_123));
        assert_eq!(sent_at(r#"{"type":"message","text":"hello"}"#), None);
        assert_eq!(mint("s", "k6").split('.').count(), 3);
    }
}
