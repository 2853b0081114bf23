//! HLS: one packager per live stream, and the HTTP handlers that serve its playlist and
//! segments from memory.
//!
//! The packager is an output of every stream ([`HlsOutput`], started and supervised by the
//! stream's life like any [`Output`]): an internal viewer whose `HlsSink` converts the
//! codec-neutral frames to H.264 Annex B and ADTS AAC and feeds the sans-IO [`Segmenter`]. A
//! packager restarted after a crash continues from the last published segment after an
//! `EXT-X-DISCONTINUITY`. After each completed segment it publishes an immutable snapshot (playlist
//! text plus the window's segments, shared `Bytes`) that HTTP handlers read without
//! touching the packager. When the publisher leaves, the segmenter is parked for
//! `hls.reconnect_grace`; a publisher that comes back within it continues the same playlist
//! after an `EXT-X-DISCONTINUITY`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use zenlive_actors::{
    ArbiterPool, Codec, CodecConfig, FrameKind, FrameSink, MediaFrame, Offer, Output, OutputStream,
    Protocol, StreamKey, StreamStats,
};
use zenlive_media::aac::{adts_header, AudioSpecificConfig};
use zenlive_media::avc::{to_annexb, AvcDecoderConfig};
use zenlive_media::hls::{HlsConfig as SegmenterConfig, SegmentBytes, Segmenter};
use zenlive_media::ts::Tracks;

use crate::admission::{self, Refusal, Request};
use crate::auth::{unix_now, Action};
use crate::config::HlsConfig;
use crate::http::{request_token, stream_key, with_cors, ApiError};
use crate::metrics::HlsRequest;
use crate::node::NodeContext;

/// Largest segment kept in memory; a longer GOP is cut early.
const MAX_SEGMENT_BYTES: usize = 32 * 1024 * 1024;

/// What HTTP handlers read: replaced whole after every completed segment.
#[derive(Default)]
struct Published {
    playlist: Option<Bytes>,
    segments: HashMap<u64, SegmentBytes>,
}

/// One stream's HLS state.
struct HlsStream {
    published: RwLock<Arc<Published>>,
    /// The segmenter between publishers (during the reconnect grace).
    parked: Mutex<Option<Segmenter>>,
    /// Bumped on every start and end, so a grace timer knows whether it is stale.
    generation: AtomicU64,
    /// What a packager restarted after a crash continues from: the finished segments and
    /// their numbering as of the last published segment (a fresh segmenter, new timeline).
    resume: Mutex<Option<Segmenter>>,
}

impl HlsStream {
    fn publish(&self, segmenter: &Segmenter) {
        let playlist = segmenter.playlist().map(Bytes::from);
        let segments = segmenter
            .segment_numbers()
            .filter_map(|n| segmenter.segment(n).map(|s| (n, s)))
            .collect();
        *self.published.write() = Arc::new(Published { playlist, segments });
    }
}

/// All HLS streams of the node.
pub struct HlsManager {
    enabled: bool,
    segmenter: SegmenterConfig,
    grace: Duration,
    pool: ArbiterPool,
    streams: RwLock<HashMap<StreamKey, Arc<HlsStream>>>,
    /// Segments produced, node-wide.
    pub segments_produced: Arc<AtomicU64>,
}

impl HlsManager {
    /// A manager packaging with `config`.
    pub fn new(config: &HlsConfig, pool: ArbiterPool) -> Self {
        Self {
            enabled: config.enabled,
            segmenter: SegmenterConfig {
                target_duration: config.segment_duration,
                window_segments: config.window,
                max_segment_bytes: MAX_SEGMENT_BYTES,
            },
            grace: config.reconnect_grace,
            pool,
            streams: RwLock::new(HashMap::new()),
            segments_produced: Arc::new(AtomicU64::new(0)),
        }
    }

    fn get(&self, key: &StreamKey) -> Option<Arc<HlsStream>> {
        self.streams.read().get(key).cloned()
    }

    /// The packager's sink for a stream that starts (or, after a crash, starts again):
    /// it continues the playlist the stream had, if any, after a discontinuity.
    fn open_packager(&self, stream: &OutputStream) -> Box<dyn FrameSink> {
        let key = &stream.key;
        let hls = Arc::clone(self.streams.write().entry(key.clone()).or_insert_with(|| {
            Arc::new(HlsStream {
                published: RwLock::default(),
                parked: Mutex::new(None),
                generation: AtomicU64::new(0),
                resume: Mutex::new(None),
            })
        }));
        hls.generation.fetch_add(1, Ordering::Relaxed);
        let segmenter = if stream.restarts > 0 {
            // Fresh state after a crash: the finished segments and numbering go on, the
            // segment being built is lost.
            hls.resume.lock().take()
        } else {
            hls.parked.lock().take().map(|mut s| {
                s.mark_discontinuity();
                s
            })
        };
        Box::new(HlsSink {
            key: key.clone(),
            stream: hls,
            segmenter,
            config: self.segmenter.clone(),
            avc: None,
            aac: None,
            annexb: Vec::new(),
            adts: Vec::new(),
            published_sequence: None,
            produced: Arc::clone(&self.segments_produced),
            stats: Arc::clone(&stream.stats),
            warned: false,
        })
    }

    /// The stream ended: its playlist and segments stay for `hls.reconnect_grace`.
    fn schedule_expiry(self: &Arc<Self>, key: &StreamKey) {
        let Some(stream) = self.get(key) else { return };
        let generation = stream.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let manager = Arc::clone(self);
        let key = key.clone();
        let grace = self.grace;
        self.pool.next().spawn(async move {
            tokio::time::sleep(grace).await;
            let mut streams = manager.streams.write();
            let stale = streams
                .get(&key)
                .is_some_and(|s| s.generation.load(Ordering::Relaxed) == generation);
            if stale {
                streams.remove(&key);
                tracing::debug!(stream = %key, "hls playlist expired");
            }
        });
    }
}

/// The HLS packager as an output of every stream (see [`zenlive_actors::output`]).
pub struct HlsOutput(pub Arc<HlsManager>);

impl Output for HlsOutput {
    fn name(&self) -> &'static str {
        "hls"
    }

    fn open(&self, stream: &OutputStream) -> Option<Box<dyn FrameSink>> {
        self.0.enabled.then(|| self.0.open_packager(stream))
    }

    fn ended(&self, key: &StreamKey) {
        if self.0.enabled {
            self.0.schedule_expiry(key);
        }
    }
}

/// The packager's end of its viewer session.
struct HlsSink {
    key: StreamKey,
    stream: Arc<HlsStream>,
    segmenter: Option<Segmenter>,
    config: SegmenterConfig,
    avc: Option<(CodecConfig, AvcDecoderConfig)>,
    aac: Option<(CodecConfig, AudioSpecificConfig)>,
    annexb: Vec<u8>,
    adts: Vec<u8>,
    published_sequence: Option<u64>,
    produced: Arc<AtomicU64>,
    stats: Arc<StreamStats>,
    warned: bool,
}

impl HlsSink {
    fn warn(&mut self, what: &str, detail: impl std::fmt::Display) {
        // Once per stream: a broken publisher would otherwise log every frame.
        if !self.warned {
            self.warned = true;
            tracing::warn!(stream = %self.key, %detail, "hls: {what}; skipping such frames");
        }
    }

    fn segmenter(&mut self) -> &mut Segmenter {
        if self.segmenter.is_none() {
            // The program map lists every track the publisher declared, including one whose
            // first frame has not come yet.
            for kind in [FrameKind::Video, FrameKind::Audio] {
                if let Some(config) = self.stats.config(kind) {
                    self.configure(Some(&config));
                }
            }
        }
        let tracks = Tracks { video: self.avc.is_some(), audio: self.aac.is_some() };
        let config = &self.config;
        self.segmenter.get_or_insert_with(|| Segmenter::new(config.clone(), tracks))
    }

    /// Takes `config` as its track's configuration unless it already is.
    fn configure(&mut self, config: Option<&CodecConfig>) {
        let Some(config) = config else { return };
        match config.codec() {
            Codec::H264 if !self.avc.as_ref().is_some_and(|(c, _)| c.same(config)) => {
                match AvcDecoderConfig::parse(config.record()) {
                    Ok(parsed) => self.avc = Some((config.clone(), parsed)),
                    Err(e) => self.warn("bad AVC configuration", e),
                }
            }
            Codec::Aac if !self.aac.as_ref().is_some_and(|(c, _)| c.same(config)) => {
                match AudioSpecificConfig::parse(config.record()) {
                    Ok(parsed) => self.aac = Some((config.clone(), parsed)),
                    Err(e) => self.warn("bad AAC configuration", e),
                }
            }
            _ => {}
        }
    }

    fn video(&mut self, frame: &MediaFrame, now: SystemTime) {
        if frame.codec() != Codec::H264 {
            return self.warn("MPEG-TS HLS carries H.264 video only", frame.codec().as_str());
        }
        self.configure(frame.config());
        let Some((_, config)) = &self.avc else { return };
        self.annexb.clear();
        if let Err(e) = to_annexb(config, frame.payload(), frame.keyframe(), &mut self.annexb) {
            return self.warn("bad AVC frame", e);
        }
        let annexb = std::mem::take(&mut self.annexb);
        let cts = (frame.pts() - frame.dts()).as_millis().clamp(i32::MIN.into(), i32::MAX.into());
        self.segmenter().push_video(
            frame.dts().as_rtmp_millis(),
            cts as i32,
            frame.keyframe(),
            &annexb,
            now,
        );
        self.annexb = annexb;
    }

    fn audio(&mut self, frame: &MediaFrame, now: SystemTime) {
        if frame.codec() != Codec::Aac {
            return self.warn("MPEG-TS HLS carries AAC audio only", frame.codec().as_str());
        }
        self.configure(frame.config());
        let Some((_, config)) = &self.aac else { return };
        let header = match adts_header(config, frame.payload().len()) {
            Ok(h) => h,
            Err(e) => return self.warn("AAC frame cannot be carried in ADTS", e),
        };
        self.adts.clear();
        self.adts.extend_from_slice(&header);
        self.adts.extend_from_slice(frame.payload());
        let adts = std::mem::take(&mut self.adts);
        self.segmenter().push_audio(frame.pts().as_rtmp_millis(), &adts, now);
        self.adts = adts;
    }

    fn publish_if_new(&mut self) {
        let Some(segmenter) = &self.segmenter else { return };
        let latest = segmenter.last_sequence();
        if latest != self.published_sequence {
            if latest.is_some() {
                self.produced.fetch_add(1, Ordering::Relaxed);
                self.stats.hls_segment();
            }
            self.published_sequence = latest;
            self.stream.publish(segmenter);
            let tracks = Tracks { video: self.avc.is_some(), audio: self.aac.is_some() };
            *self.stream.resume.lock() = Some(segmenter.successor(tracks));
        }
    }
}

impl FrameSink for HlsSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        if zenlive_actors::faults::fire(zenlive_actors::faults::Fault::OutputPanic) {
            panic!("fault injection: the HLS packager panics");
        }
        let now = SystemTime::now();
        match frame.kind() {
            FrameKind::Video => self.video(frame, now),
            FrameKind::Audio => self.audio(frame, now),
            FrameKind::Data => {}
        }
        self.publish_if_new();
        Offer::Accepted(frame.payload().len())
    }

    fn finish(&mut self, _reason: &str) {
        if let Some(mut segmenter) = self.segmenter.take() {
            segmenter.finish();
            self.stream.publish(&segmenter);
            *self.stream.parked.lock() = Some(segmenter);
        }
    }
}

fn lookup(
    node: &NodeContext,
    app: &str,
    stream: &str,
) -> Result<(StreamKey, Arc<HlsStream>), ApiError> {
    let key = stream_key(app, stream)?;
    match node.hls.get(&key) {
        Some(hls) => Ok((key, hls)),
        None => Err(ApiError::not_found("stream_not_found", format!("stream {key} is not live"))),
    }
}

/// Counts bytes served over HLS for the live stream `key` (not during a reconnect grace,
/// when no stream is live), and the request's latency.
fn served(node: &NodeContext, key: &StreamKey, bytes: usize, kind: HlsRequest, started: Instant) {
    if let Some(entry) = node.directory.get(key) {
        entry.stats.bytes_out(Protocol::Hls, bytes as u64);
    }
    node.metrics.hls_request(kind, started.elapsed());
}

/// `GET /{app}/{stream}/index.m3u8`
pub async fn playlist(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let (app, stream) = path.into_inner();
    let key = stream_key(&app, &stream)?;
    if !node.hls.enabled {
        return Err(ApiError::not_found("hls_disabled", "HLS is off on this node (hls.enabled)"));
    }
    let token = request_token(&req);
    let context = node.clone().into_inner();
    let request = Request {
        key: key.clone(),
        protocol: Protocol::Hls,
        peer: req.peer_addr(),
        token: token.as_deref(),
    };
    let viewer = admission::admit_viewer(&context, request).await.map_err(ApiError::from)?;
    // HLS viewers read the stream's packager: the ticket starts no session of its own. A
    // stream between publishers (the reconnect grace) is not live but keeps its playlist.
    match viewer.find().await {
        Ok(_ticket) => {}
        Err(Refusal::NotLive(_)) if node.hls.get(&key).is_some() => {}
        Err(refusal) => return Err(refusal.into()),
    }
    let token_expires = viewer.identity.as_ref().map(|i| i.expires);
    let text = current_playlist(&node, &key).await?;
    let session = request_token(&req).zip(token_expires);
    let text = match session.filter(|_| node.auth.load().required(Action::Play)) {
        // Segment URLs carry a short-lived session for this viewer instead of the JWT,
        // good until the JWT expires at the latest.
        Some((token, expires)) => {
            let auth = node.auth.load();
            let id = auth.sessions().id_for(&token);
            with_session(&text, &auth.sessions().issue(&key, &id, unix_now(), expires))
        }
        None => text,
    };
    served(&node, &key, text.len(), HlsRequest::Playlist, started);
    Ok(with_cors(HttpResponse::Ok())
        .content_type("application/vnd.apple.mpegurl")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(text))
}

/// The playlist of `key`, which admission found live (here, or relayed from its owner). A
/// stream that has just started (here or on its relay) has no segment yet, so the request
/// waits for the first one (up to two segment durations and a second) rather than failing a
/// player that arrived early.
async fn current_playlist(
    node: &web::Data<NodeContext>,
    key: &StreamKey,
) -> Result<Bytes, ApiError> {
    let not_live = || ApiError::not_found("stream_not_found", format!("stream {key} is not live"));
    let deadline = Instant::now() + node.hls.segmenter.target_duration * 2 + Duration::from_secs(1);
    loop {
        let hls = node.hls.get(key);
        if let Some(playlist) = hls.as_ref().and_then(|h| h.published.read().playlist.clone()) {
            return Ok(playlist);
        }
        if hls.is_none() && node.directory.get(key).is_none() {
            return Err(not_live());
        }
        if Instant::now() >= deadline {
            return Err(ApiError::not_found(
                "playlist_not_ready",
                "the first segment is not complete yet",
            ));
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /{app}/{stream}/{sequence}.ts`
pub async fn segment(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let (app, stream, name) = path.into_inner();
    let protected = node.auth.load().required(Action::Play);
    if protected {
        check_session(&node, &req, &stream_key(&app, &stream)?)?;
    }
    let (key, hls) = lookup(&node, &app, &stream)?;
    let sequence = name
        .parse::<u64>()
        .map_err(|_| ApiError::not_found("segment_not_found", "no such segment"))?;
    let published = Arc::clone(&hls.published.read());
    let bytes = published.segments.get(&sequence).cloned().ok_or_else(|| {
        ApiError::not_found(
            "segment_not_found",
            format!("segment {sequence} expired or does not exist"),
        )
    })?;
    served(&node, &key, bytes.len(), HlsRequest::Segment, started);
    // A segment behind auth must not be kept by a shared cache (a CDN that ignores the
    // query string would hand it to anyone).
    let cache = if protected { "private, max-age=60" } else { "public, max-age=60" };
    Ok(with_cors(HttpResponse::Ok())
        .content_type("video/mp2t")
        .insert_header((header::CACHE_CONTROL, cache))
        .body(SegmentBody { segment: bytes, next: 0 }))
}

/// A segment as a response body: its chunks in turn, shared, with its length up front.
struct SegmentBody {
    segment: SegmentBytes,
    next: usize,
}

impl MessageBody for SegmentBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.segment.len() as u64)
    }

    fn poll_next(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let chunk = this.segment.chunks().get(this.next).cloned();
        this.next += 1;
        Poll::Ready(chunk.map(Ok))
    }
}

/// The playlist with `?s=session` appended to every segment URI.
fn with_session(playlist: &Bytes, session: &str) -> Bytes {
    let text = String::from_utf8_lossy(playlist);
    let mut out = String::with_capacity(text.len() + 64 * 8);
    for line in text.lines() {
        out.push_str(line);
        if !line.is_empty() && !line.starts_with('#') {
            out.push_str("?s=");
            out.push_str(session);
        }
        out.push('\n');
    }
    Bytes::from(out)
}

/// Checks a segment request's `?s=` session for `key`: 401 when missing, forged, for
/// another stream or expired.
fn check_session(node: &NodeContext, req: &HttpRequest, key: &StreamKey) -> Result<(), ApiError> {
    let session = req
        .query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("s="))
        .ok_or(crate::auth::AuthError::Session);
    let checked = session.and_then(|s| node.auth.load().sessions().verify(s, key, unix_now()));
    checked.map(|_| ()).map_err(|error| {
        node.metrics.auth_failure("hls", error.code());
        tracing::warn!(stream = %key, reason = error.code(), "hls segment refused");
        ApiError::new(StatusCode::UNAUTHORIZED, error.code(), error.to_string())
    })
}
