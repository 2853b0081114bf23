//! Webhooks for people who run the binary: every stream and viewer event is POSTed as JSON
//! to each configured URL, signed, from a bounded queue per URL, in order, retried with
//! backoff for `webhooks.retry_for`. Media never waits: an event that finds a queue full is
//! dropped, logged and counted. Also the HTTP `on_publish` callback (the nginx-rtmp / SRS
//! convention): a 2xx answer allows, a 4xx refuses.
//!
//! A delivery carries `X-ZenLive-Event` (the type), `X-ZenLive-Delivery` (a unique id,
//! for receivers to drop duplicates after a retry) and, when `webhooks.secret` is set,
//! `X-ZenLive-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;
use zenlive_actors::chat::DeliveredMessage;
use zenlive_actors::StreamEvent;

use crate::config::WebhooksConfig;
use crate::hooks::types::{
    decider, unix_seconds, Decider, Decision, PublishRequest, StreamOptions, ViewerEvent,
};
use crate::metrics::Metrics;
use crate::recording::events::{RecordingEvent, SegmentLocation};

/// Longest wait between two attempts of one delivery.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

struct Delivery {
    id: String,
    kind: &'static str,
    body: Bytes,
    queued: Instant,
}

/// The webhook senders. See the module docs.
pub struct Webhooks {
    queues: Vec<(String, mpsc::Sender<Arc<Delivery>>)>,
    node: String,
    sequence: AtomicU64,
    pending: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

/// `t=..,v1=..` for `body` signed with `secret` at `t`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("zenlive/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

fn signed(request: reqwest::RequestBuilder, secret: &str, body: &Bytes) -> reqwest::RequestBuilder {
    let request = request.header("content-type", "application/json").body(body.clone());
    if secret.is_empty() {
        return request;
    }
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    request.header("x-zenlive-signature", signature(secret, t, body))
}

impl Webhooks {
    /// Starts one sender task per URL on the current arbiter; `None` without URLs.
    pub fn start(config: &WebhooksConfig, node: &str, metrics: Arc<Metrics>) -> Option<Arc<Self>> {
        if config.urls.is_empty() {
            return None;
        }
        if config.secret.is_empty() {
            tracing::warn!("webhooks.secret is not set: webhook deliveries are not signed");
        }
        let pending = Arc::new(AtomicU64::new(0));
        let queues = config
            .urls
            .iter()
            .map(|url| {
                let (tx, rx) = mpsc::channel(config.queue.max(1));
                let sender = Sender {
                    client: client(config.timeout),
                    url: url.clone(),
                    secret: config.secret.clone(),
                    retry_for: config.retry_for,
                    pending: Arc::clone(&pending),
                    metrics: Arc::clone(&metrics),
                };
                actix_rt::spawn(sender.run(rx));
                (url.clone(), tx)
            })
            .collect();
        Some(Arc::new(Self {
            queues,
            node: node.to_owned(),
            sequence: AtomicU64::new(0),
            pending,
            metrics,
        }))
    }

    /// Queues a stream event.
    pub fn stream(&self, event: &StreamEvent) {
        let peer = |p: &Option<SocketAddr>| p.map(|p| p.to_string());
        match event {
            StreamEvent::Started { key, protocol, peer: p, user, at } => self.enqueue(
                "stream.start",
                json!({
                    "stream": key.to_string(),
                    "protocol": protocol.as_str(),
                    "peer": peer(p),
                    "user": user,
                    "started_at": unix_seconds(*at),
                }),
            ),
            StreamEvent::Ended {
                key,
                protocol,
                peer: p,
                user,
                duration,
                bytes_in,
                bytes_out,
                frames_in,
                reason,
            } => self.enqueue(
                "stream.end",
                json!({
                    "stream": key.to_string(),
                    "protocol": protocol.as_str(),
                    "peer": peer(p),
                    "user": user,
                    "duration_seconds": duration.as_secs_f64(),
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                    "frames_in": frames_in,
                    "reason": reason,
                }),
            ),
        }
    }

    /// Queues a viewer event.
    pub fn viewer(&self, event: &ViewerEvent) {
        let kind = match event {
            ViewerEvent::Joined { .. } => "viewer.join",
            ViewerEvent::Left { .. } => "viewer.leave",
        };
        let mut data = serde_json::to_value(event).unwrap_or(Value::Null);
        if let Some(map) = data.as_object_mut() {
            map.remove("event");
        }
        self.enqueue(kind, data);
    }

    /// Queues a recording event (`recording.segment`, `recording.end`).
    pub fn recording(&self, event: &RecordingEvent) {
        let seconds = |d: &Option<Duration>| d.map(|d| d.as_secs_f64());
        match event {
            RecordingEvent::Segment {
                stream,
                path,
                location,
                start,
                media_start,
                duration,
                bytes,
                recovered,
            } => {
                let (storage, bucket, key, local) = match location {
                    SegmentLocation::Local(full) => {
                        ("local", None, None, Some(full.display().to_string()))
                    }
                    SegmentLocation::S3 { bucket, key } => {
                        ("s3", Some(bucket.clone()), Some(key.clone()), None)
                    }
                };
                self.enqueue(
                    "recording.segment",
                    json!({
                        "stream": stream.to_string(),
                        "path": path,
                        "storage": storage,
                        "bucket": bucket,
                        "key": key,
                        "local_path": local,
                        "url": location.to_string(),
                        "started_at": start.map(unix_seconds),
                        "media_start_seconds": seconds(media_start),
                        "duration_seconds": seconds(duration),
                        "bytes": bytes,
                        "recovered": recovered,
                    }),
                )
            }
            RecordingEvent::Ended { stream, segments, bytes, duration, start, reason } => self
                .enqueue(
                    "recording.end",
                    json!({
                        "stream": stream.to_string(),
                        "segments": segments,
                        "bytes": bytes,
                        "duration_seconds": duration.as_secs_f64(),
                        "started_at": start.map(unix_seconds),
                        "reason": reason,
                    }),
                ),
        }
    }

    /// Queues a delivered chat message.
    pub fn chat(&self, delivered: &DeliveredMessage) {
        let data = serde_json::to_value(delivered).unwrap_or(Value::Null);
        self.enqueue("chat.message", data);
    }

    fn enqueue(&self, kind: &'static str, data: Value) {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{sequence}", self.node);
        let body = json!({
            "id": id,
            "type": kind,
            "node": self.node,
            "at": unix_seconds(SystemTime::now()),
            "data": data,
        });
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let delivery = Arc::new(Delivery { id, kind, body, queued: Instant::now() });
        for (url, queue) in &self.queues {
            match queue.try_send(Arc::clone(&delivery)) {
                Ok(()) => {
                    self.pending.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.metrics.webhook("dropped");
                    tracing::error!(%url, event = kind, "webhook queue full; event dropped");
                }
            }
        }
    }

    /// Waits up to `limit` for queued deliveries to finish (at shutdown).
    pub async fn drain(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.pending.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One URL's sender: delivers its queue in order.
struct Sender {
    client: reqwest::Client,
    url: String,
    secret: String,
    retry_for: Duration,
    pending: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Sender {
    async fn run(self, mut queue: mpsc::Receiver<Arc<Delivery>>) {
        while let Some(delivery) = queue.recv().await {
            self.deliver(&delivery).await;
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Delivers one event, retrying with backoff until it is accepted, refused for good
    /// (a 4xx other than 408 and 429), or older than the retry window.
    async fn deliver(&self, delivery: &Delivery) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let request = self
                .client
                .post(&self.url)
                .header("x-zenlive-event", delivery.kind)
                .header("x-zenlive-delivery", &delivery.id);
            let outcome = signed(request, &self.secret, &delivery.body).send().await;
            let error = match outcome {
                Ok(resp) if resp.status().is_success() => {
                    self.metrics.webhook("delivered");
                    return;
                }
                Ok(resp)
                    if resp.status().is_client_error()
                        && !matches!(resp.status().as_u16(), 408 | 429) =>
                {
                    self.metrics.webhook("failed");
                    tracing::error!(url = %self.url, event = delivery.kind, id = %delivery.id, status = %resp.status(), "webhook refused by the receiver; not retrying");
                    return;
                }
                Ok(resp) => format!("HTTP {}", resp.status()),
                Err(error) => error.to_string(),
            };
            if delivery.queued.elapsed() + backoff > self.retry_for {
                self.metrics.webhook("failed");
                tracing::error!(url = %self.url, event = delivery.kind, id = %delivery.id, %error, "webhook not delivered within webhooks.retry_for; giving up");
                return;
            }
            self.metrics.webhook("retried");
            tracing::warn!(url = %self.url, event = delivery.kind, id = %delivery.id, %error, retry_in = ?backoff, "webhook delivery failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Where the HTTP `on_publish` callback goes; swapped by a configuration reload.
#[derive(Debug, Clone, Default)]
pub struct PublishCallback {
    /// The URL; empty: every publish is allowed without asking.
    pub url: String,
    /// Signs the request (`webhooks.secret`).
    pub secret: String,
}

/// The options a 2xx answer of the `on_publish` callback chose: a JSON object's `record`
/// (`true` or `false`); anything else (an empty body, text, other keys) chooses nothing.
fn publish_options(body: &str) -> Option<StreamOptions> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let record = value.get("record")?.as_bool()?;
    Some(StreamOptions::default().record(record))
}

/// The longest `on_publish` answer read (for options, or a refusal's reason).
const MAX_OPTIONS_BODY: usize = 4096;

/// `resp`'s body as text (lossy), cut at `max` bytes, and whether it was whole: a callback
/// cannot make the node buffer without bound. A body that breaks off is cut there.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> (String, bool) {
    let mut body = Vec::new();
    let mut whole = true;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > max => {
                body.extend_from_slice(&chunk[..max - body.len()]);
                whole = false;
                break;
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(_) => {
                whole = false;
                break;
            }
        }
    }
    (String::from_utf8_lossy(&body).into_owned(), whole)
}

/// The HTTP `on_publish` callback: POSTs the request as JSON to the current `target`; 2xx
/// allows (a JSON body `{"record": true|false}` also chooses whether the stream is
/// recorded), 4xx refuses (the body's first 200 characters are the reason), anything else
/// leaves the decision to `hooks.on_failure`.
pub fn on_publish_callback(target: Arc<ArcSwap<PublishCallback>>, timeout: Duration) -> Decider {
    let client = client(timeout);
    decider(move |request: PublishRequest| {
        let client = client.clone();
        let PublishCallback { url, secret } = (**target.load()).clone();
        async move {
            if url.is_empty() {
                return Decision::Allow;
            }
            let body = json!({
                "type": "publish",
                "stream": request.stream.to_string(),
                "protocol": request.protocol.as_str(),
                "peer": request.peer.map(|p| p.to_string()),
                "user": request.user.as_ref().map(|u| u.user.clone()),
            });
            let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            match signed(client.post(&url), &secret, &body).send().await {
                Ok(resp) if resp.status().is_success() => {
                    // A body may choose options: `{"record": true}`.
                    let options = match read_capped(resp, MAX_OPTIONS_BODY).await {
                        (body, true) => publish_options(&body),
                        _ => None,
                    };
                    options.map_or(Decision::Allow, Decision::AllowWith)
                }
                Ok(resp) if resp.status().is_client_error() => {
                    let status = resp.status();
                    let (text, _) = read_capped(resp, MAX_OPTIONS_BODY).await;
                    let reason: String = text.trim().chars().take(200).collect();
                    Decision::Deny(if reason.is_empty() {
                        format!("on_publish: {status}")
                    } else {
                        reason
                    })
                }
                Ok(resp) => Decision::Unavailable(format!("on_publish answered {}", resp.status())),
                Err(error) => Decision::Unavailable(format!("on_publish unreachable: {error}")),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_time_and_body() {
        // Python: hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature("secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn an_on_publish_answer_chooses_recording_only_when_it_says_so_plainly() {
        let record = |on| Some(StreamOptions::default().record(on));
        assert_eq!(publish_options(r#"{"record": true}"#), record(true));
        assert_eq!(publish_options(r#"{"record": false, "other": 1}"#), record(false));
        for body in ["", "ok", "{}", "[]", r#"{"record": "yes"}"#, r#"{"record": 1}"#, "{", "null"]
        {
            assert_eq!(publish_options(body), None, "{body:?}");
        }
    }
}
