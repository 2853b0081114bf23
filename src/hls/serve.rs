//! HLS over HTTP: the playlist and segment handlers, which read the packager's snapshots
//! ([`super::packager`]) and never touch a packager.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use zenlive_actors::{Protocol, StreamKey};

use super::packager::HlsStream;
use crate::admission::{self, Refusal, Request};
use crate::auth::{unix_now, Action};
use crate::context::NodeContext;
use crate::http::common::{request_token, stream_key, with_cors, ApiError};
use crate::metrics::HlsRequest;

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
pub(crate) fn served(
    node: &NodeContext,
    key: &StreamKey,
    bytes: usize,
    kind: HlsRequest,
    started: Instant,
) {
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
    if !node.hls.enabled() {
        return Err(ApiError::not_found("hls_disabled", "HLS is off on this node (hls.enabled)"));
    }
    let session = admit(&node, &req, &key, node.hls.get(&key).is_some()).await?;
    let text = current_playlist(&node, &key).await?;
    let text = match session {
        Some(session) => with_session(&text, &session),
        None => text,
    };
    served(&node, &key, text.len(), HlsRequest::Playlist, started);
    Ok(with_cors(HttpResponse::Ok())
        .content_type("application/vnd.apple.mpegurl")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(text))
}

/// Admits an HLS viewer of `key` for a playlist request (`in_grace`: the stream is between
/// publishers but keeps its playlist) and answers the session its media URIs carry when
/// play needs a token: short-lived, for this viewer instead of the JWT, good until the JWT
/// expires at the latest. HLS viewers read the stream's packager: the ticket starts no
/// session of its own.
pub(crate) async fn admit(
    node: &web::Data<NodeContext>,
    req: &HttpRequest,
    key: &StreamKey,
    in_grace: bool,
) -> Result<Option<String>, ApiError> {
    let token = request_token(req);
    let context = node.clone().into_inner();
    let request = Request {
        key: key.clone(),
        protocol: Protocol::Hls,
        peer: req.peer_addr(),
        token: token.as_deref(),
    };
    let viewer = admission::admit_viewer(&context, request).await.map_err(ApiError::from)?;
    match viewer.find().await {
        Ok(_ticket) => {}
        Err(Refusal::NotLive(_)) if in_grace => {}
        Err(refusal) => return Err(refusal.into()),
    }
    let session = token.zip(viewer.identity.as_ref().map(|i| i.expires));
    Ok(session.filter(|_| node.auth.load().required(Action::Play)).map(|(token, expires)| {
        let auth = node.auth.load();
        let id = auth.sessions().id_for(&token);
        auth.sessions().issue(key, &id, unix_now(), expires)
    }))
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
    let deadline = Instant::now() + node.hls.target_duration() * 2 + Duration::from_secs(1);
    let not_ready =
        || ApiError::not_found("playlist_not_ready", "the first segment is not complete yet");
    // The packager opens as its stream starts; a request in the instant between the two is
    // told to come back, like one that waited for the first segment in vain.
    let hls = match node.hls.get(key) {
        Some(hls) => hls,
        None if node.directory.get(key).is_some() => return Err(not_ready()),
        None => return Err(not_live()),
    };
    // Woken by the packager's publish, not by polling.
    hls.playlist_by(deadline).await.ok_or_else(not_ready)
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
    let stored = hls.published().segments.get(&sequence).cloned().ok_or_else(|| {
        ApiError::not_found(
            "segment_not_found",
            format!("segment {sequence} expired or does not exist"),
        )
    })?;
    let body = stored.body().map_err(|error| {
        tracing::error!(stream = %key, sequence, %error, "hls: a spooled segment cannot be read");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "segment_unreadable",
            format!("segment {sequence} cannot be read"),
        )
    })?;
    served(&node, &key, stored.len() as usize, HlsRequest::Segment, started);
    // A segment behind auth must not be kept by a shared cache (a CDN that ignores the
    // query string would hand it to anyone).
    let cache = if protected { "private, max-age=60" } else { "public, max-age=60" };
    Ok(with_cors(HttpResponse::Ok())
        .content_type("video/mp2t")
        .insert_header((header::CACHE_CONTROL, cache))
        .body(body))
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
pub(crate) fn check_session(
    node: &NodeContext,
    req: &HttpRequest,
    key: &StreamKey,
) -> Result<(), ApiError> {
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
