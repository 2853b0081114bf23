//! LL-HLS over HTTP: `GET /{app}/{stream}/ll.m3u8` (with blocking reloads and delta
//! updates) and `GET /{app}/{stream}/ll/{name}` (an init section, a part, a whole segment),
//! reading the packager's playlist ([`super::ll`]) under a short lock.
//!
//! A blocked request waits on the playlist's watch channel (no thread, no polling) for at
//! most three target durations, then gets `503`; every waiter wakes when the stream ends.
//! A request for the part a preload hint names waits for it the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use zenlive_actors::StreamKey;
use zenlive_media::hls::SegmentBytes;
use zenlive_media::llhls::{Blocking, Directives, LlPlaylist, Media};

use super::ll::LlStream;
use super::serve::{admit, served};
use super::store::SegmentBody;
use crate::auth::Action;
use crate::context::NodeContext;
use crate::http::common::{stream_key, with_cors, ApiError};
use crate::metrics::HlsRequest;

fn bad_request(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_ll_hls_request", error.to_string())
}

/// Waits for `ll`'s playlist to change, until `deadline`; false when the deadline passed.
async fn changed_by(changes: &mut tokio::sync::watch::Receiver<u64>, deadline: Instant) -> bool {
    let deadline = tokio::time::Instant::from_std(deadline);
    matches!(tokio::time::timeout_at(deadline, changes.changed()).await, Ok(Ok(())))
}

/// `GET /{app}/{stream}/ll.m3u8[?_HLS_msn=&_HLS_part=&_HLS_skip=YES]`
pub async fn playlist(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let (app, stream) = path.into_inner();
    let key = stream_key(&app, &stream)?;
    if !node.llhls.enabled() {
        return Err(ApiError::not_found(
            "ll_hls_disabled",
            "LL-HLS is off on this node (hls.enabled, hls.ll)",
        ));
    }
    let directives = Directives::parse(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(bad_request)?;
    let session = admit(&node, &req, &key, node.llhls.get(&key).is_some()).await?;
    let ll = current(&node, &key).await?;
    let target = node.llhls.target_duration();
    // Blocking reload: until the playlist holds what was asked, for three targets at most.
    let deadline = Instant::now() + target * 3;
    let mut changes = ll.changes();
    loop {
        match ll.read(|p| p.check(&directives)).map_err(bad_request)? {
            Blocking::Ready => break,
            Blocking::Wait if changed_by(&mut changes, deadline).await => {}
            Blocking::Wait => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ll_hls_not_ready",
                    "the asked segment or part did not come in three target durations",
                ))
            }
        }
    }
    let query = session.map_or_else(String::new, |session| format!("?s={session}"));
    // The first part may not be there yet (the request above asked for nothing).
    let first = Instant::now() + target * 2 + Duration::from_secs(1);
    let text = loop {
        if let Some(text) = ll.render(directives.skip, &query) {
            break text;
        }
        if !changed_by(&mut changes, first).await {
            return Err(ApiError::not_found(
                "playlist_not_ready",
                "the first part is not complete yet",
            ));
        }
    };
    served(&node, &key, text.len(), HlsRequest::Playlist, started);
    Ok(with_cors(HttpResponse::Ok())
        .content_type("application/vnd.apple.mpegurl")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(text))
}

/// The LL-HLS state of `key`, which admission found live: a stream that has just started
/// may not have its packager for an instant.
async fn current(node: &NodeContext, key: &StreamKey) -> Result<Arc<LlStream>, ApiError> {
    match node.llhls.get(key) {
        Some(ll) => Ok(ll),
        None if node.directory.get(key).is_some() => Err(ApiError::not_found(
            "playlist_not_ready",
            "the stream's LL-HLS packager is starting",
        )),
        None => Err(ApiError::not_found("stream_not_found", format!("stream {key} is not live"))),
    }
}

/// What a media name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaName {
    Init(u64),
    Part(u64, u64),
    Segment(u64),
}

/// `init{n}.mp4`, `{msn}.{part}.m4s` or `{msn}.m4s`; anything else is `None`.
fn media_name(name: &str) -> Option<MediaName> {
    let number = |s: &str| {
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    if let Some(n) = name.strip_prefix("init").and_then(|n| n.strip_suffix(".mp4")) {
        return number(n).map(MediaName::Init);
    }
    let stem = name.strip_suffix(".m4s")?;
    match stem.split_once('.') {
        Some((msn, part)) => Some(MediaName::Part(number(msn)?, number(part)?)),
        None => number(stem).map(MediaName::Segment),
    }
}

/// Where the bytes of `name` are, if the playlist holds them.
fn media_of(playlist: &LlPlaylist, name: MediaName) -> Option<Media> {
    match name {
        MediaName::Init(n) => playlist.init(n).map(|b| Media::Held(vec![b])),
        MediaName::Part(msn, part) => playlist.part(msn, part),
        MediaName::Segment(msn) => playlist.segment(msn),
    }
}

/// `GET /{app}/{stream}/ll/{name}`
pub async fn media(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let (app, stream, name) = path.into_inner();
    let key = stream_key(&app, &stream)?;
    let protected = node.auth.load().required(Action::Play);
    if protected {
        super::serve::check_session(&node, &req, &key)?;
    }
    let not_found =
        || ApiError::not_found("segment_not_found", format!("{name} expired or does not exist"));
    let media = media_name(&name).ok_or_else(not_found)?;
    let ll = node.llhls.get(&key).ok_or_else(not_found)?;
    // The part a preload hint names is waited for (a part target or three at most).
    let deadline = Instant::now() + node.llhls.part_target() * 3 + Duration::from_millis(500);
    let mut changes = ll.changes();
    let found = loop {
        let (found, pending) = ll.read(|p| {
            let pending = match media {
                MediaName::Part(msn, part) => p.part_pending(msn, part),
                _ => false,
            };
            (media_of(p, media), pending)
        });
        match found {
            Some(found) => break found,
            None if pending && changed_by(&mut changes, deadline).await => {}
            None => return Err(not_found()),
        }
    };
    // A kept segment is mapped from the spool (outside the playlist's lock).
    let buffers = found.read().map_err(|error| {
        tracing::error!(stream = %key, %name, %error, "ll-hls: a spooled segment cannot be read");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "segment_unreadable", error.to_string())
    })?;
    let body = SegmentBody::from_buffers(SegmentBytes::from_chunks(buffers));
    served(&node, &key, body.len() as usize, HlsRequest::Segment, started);
    let cache = if protected { "private, max-age=60" } else { "public, max-age=60" };
    Ok(with_cors(HttpResponse::Ok())
        .content_type("video/mp4")
        .insert_header((header::CACHE_CONTROL, cache))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_names_parse_strictly() {
        assert_eq!(media_name("init1.mp4"), Some(MediaName::Init(1)));
        assert_eq!(media_name("12.3.m4s"), Some(MediaName::Part(12, 3)));
        assert_eq!(media_name("12.m4s"), Some(MediaName::Segment(12)));
        for bad in [
            "init.mp4",
            "initx.mp4",
            "1.2.3.m4s",
            ".m4s",
            "1..m4s",
            "-1.m4s",
            "1.ts",
            "../1.m4s",
            "99999999999999999999999.m4s",
            "1.m4s.m4s",
        ] {
            assert_eq!(media_name(bad), None, "{bad}");
        }
    }
}
