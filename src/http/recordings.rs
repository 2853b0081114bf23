//! Playback of recordings over HTTP: the listing API, VOD HLS playlists and their
//! segments, and time-range downloads. Thin handlers: the decisions are
//! [`crate::recording::vod`]'s, the recordings and their bytes a
//! [`RecordingStore`](crate::recording::playback::RecordingStore)'s (local disk, or the
//! S3 bucket, whichever node recorded them).
//!
//! - `GET /api/v1/recordings[?app=&key=]`, `GET /api/v1/recordings/{app}/{key}`: the
//!   recordings and their segments, as JSON; an admin token, as the rest of `/api/v1` (a
//!   scoped token sees the streams it covers).
//! - `GET /recordings/{app}/{key}/{recording}/index.m3u8` and `.../{n}.{mp4,ts}`: the
//!   playlist and its segments (single byte ranges honoured).
//! - `GET /recordings/{app}/{key}?start=&duration=`: one MP4 of that wall-clock range.
//!
//! Watching a recording needs what watching the live stream needs (`Play` on the stream:
//! a token when `auth.require_play`); segment URIs carry an HLS session (`?s=`) good until
//! the token expires, so a VOD player never needs the token again. The app name
//! `recordings` is taken by these routes on the HTTP port. Every refusal is the usual JSON
//! error; a storage that fails answers 502 (`storage_unavailable`, `storage_corrupt`) or
//! 504 (`storage_timeout`), the details in the node's log.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::body::{BoxBody, SizedStream};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use zenlive_actors::StreamKey;
use zenlive_media::fmp4_cut::{self, CutError};
use zenlive_media::segment::SegmentFormat;

use super::common::{authorize, request_token, stream_key, with_cors, ApiError};
use crate::api::{admit, Access, Target};
use crate::auth::{unix_now, Action, AuthError};
use crate::context::NodeContext;
use crate::recording::catalog::{format_name, Recording, RecordingId, SegmentEntry};
use crate::recording::playback::{SegmentBody, StoreError};
use crate::recording::vod::{self, VodError};

/// Label of auth failures here in `zenlive_auth_failures_total`.
const PROTOCOL: &str = "recordings";

/// The routes; register them before the live HLS and HTTP-FLV ones, whose patterns
/// would take `/recordings/...` for a stream.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/recordings", web::get().to(list))
        .route("/api/v1/recordings/{app}/{key}", web::get().to(list_stream))
        .route("/recordings/{app}/{key}/{recording}/index.m3u8", web::get().to(playlist))
        .route("/recordings/{app}/{key}/{recording}/{segment}", web::get().to(segment))
        .route("/recordings/{app}/{key}", web::get().to(download));
}

fn rfc3339(at: SystemTime) -> String {
    let at: DateTime<Utc> = at.into();
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "recordings: reading the catalog failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "catalog_unreadable",
        "the recordings could not be read",
    )
}

/// A store's failure as an answer; the details (bucket, key, the SDK's words) go to the
/// log, not to the client.
fn store_error(stream: &dyn std::fmt::Display, error: StoreError) -> ApiError {
    match error {
        StoreError::Io(error) => internal(error),
        StoreError::Missing(error) => {
            tracing::warn!(%stream, %error, "recordings: a listed segment could not be read");
            ApiError::not_found("segment_missing", "the segment is listed but cannot be read")
        }
        StoreError::Unavailable(error) => {
            tracing::warn!(%stream, %error, "recordings: the storage failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "storage_unavailable",
                "the recordings' storage failed to answer; try again later",
            )
        }
        StoreError::Timeout(error) => {
            tracing::warn!(%stream, %error, "recordings: the storage timed out");
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "storage_timeout",
                "the recordings' storage did not answer in time; try again later",
            )
        }
        StoreError::Corrupt(error) => {
            tracing::error!(%stream, %error, "recordings: the storage holds something unusable");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "storage_corrupt",
                "the recording's index or media in storage cannot be used",
            )
        }
    }
}

/// A recording as the listing API shows it.
fn describe(recording: &Recording) -> Value {
    let stream = &recording.stream;
    let segments: Vec<Value> = recording
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "index": i,
                "name": vod::segment_name(i, s.format),
                "path": s.path.to_string_lossy(),
                "format": format_name(s.format),
                "start": rfc3339(s.wall_start),
                "media_start": s.media_start.as_secs_f64(),
                "duration": s.duration.as_secs_f64(),
                "bytes": s.bytes,
            })
        })
        .collect();
    json!({
        "stream": stream.to_string(),
        "id": recording.id.to_string(),
        "live": recording.live,
        "start": rfc3339(recording.start()),
        "duration": recording.duration().as_secs_f64(),
        "bytes": recording.segments.iter().map(|s| s.bytes).sum::<u64>(),
        "format": recording.segments.first().map(|s| format_name(s.format)),
        "playlist": format!("/recordings/{}/{}/{}/index.m3u8", stream.app(), stream.name(), recording.id),
        "segments": segments,
    })
}

/// The listing's optional filter.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    app: Option<String>,
    key: Option<String>,
    /// The token may come in the query too.
    #[allow(dead_code)]
    token: Option<String>,
}

fn bad_query(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", error.to_string())
}

/// `GET /api/v1/recordings[?app=&key=]`
async fn list(node: web::Data<NodeContext>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let identity = admit(&node, &req, Access::Admin, false, Target::Listing)?;
    let query = web::Query::<ListQuery>::from_query(req.query_string()).map_err(bad_query)?;
    let (app, key) = (query.app.clone(), query.key.clone());
    // Checked as parts of a stream name: the filter is compared, never used as a path.
    if let Some(part) = app.as_ref().or(key.as_ref()) {
        let app = app.as_deref().unwrap_or("app");
        stream_key(app, key.as_deref().unwrap_or(part))?;
    }
    // A stream named whole is listed by its own prefix.
    let within = match (&app, &key) {
        (Some(app), Some(key)) => StreamKey::new(app, key).ok(),
        _ => None,
    };
    let select = Arc::new(move |stream: &StreamKey| {
        app.as_deref().is_none_or(|a| a == stream.app())
            && key.as_deref().is_none_or(|k| k == stream.name())
            && identity.as_ref().is_none_or(|i| i.covers(stream))
    });
    let recordings = node
        .playback
        .store
        .recordings(within, select)
        .await
        .map_err(|e| store_error(&"the listing", e))?;
    let list: Vec<Value> = recordings.iter().map(describe).collect();
    Ok(HttpResponse::Ok().json(json!({ "recordings": list })))
}

/// `GET /api/v1/recordings/{app}/{key}`
async fn list_stream(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (app, name) = path.into_inner();
    let key = stream_key(&app, &name)?;
    admit(&node, &req, Access::Admin, false, Target::Stream(&key))?;
    let recordings = node
        .playback
        .store
        .recordings(Some(key.clone()), Arc::new(|_: &StreamKey| true))
        .await
        .map_err(|e| store_error(&key, e))?;
    let list: Vec<Value> = recordings.iter().map(describe).collect();
    Ok(HttpResponse::Ok().json(json!({ "stream": key.to_string(), "recordings": list })))
}

/// The stream and recording of a playback path, after the caller may play the stream.
fn parse_recording(app: &str, name: &str, id: &str) -> Result<(StreamKey, RecordingId), ApiError> {
    let key = stream_key(app, name)?;
    let id = RecordingId::parse(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_recording_id",
            "a recording id looks like 20231114T221320.123Z (see GET /api/v1/recordings)",
        )
    })?;
    Ok((key, id))
}

async fn find_recording(
    node: &NodeContext,
    key: &StreamKey,
    id: RecordingId,
) -> Result<Recording, ApiError> {
    let found = node.playback.store.recording(key.clone(), id).await;
    found.map_err(|e| store_error(key, e))?.ok_or_else(|| {
        ApiError::not_found("recording_not_found", format!("stream {key} has no recording {id}"))
    })
}

/// `GET /recordings/{app}/{key}/{recording}/index.m3u8`
async fn playlist(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (app, name, id) = path.into_inner();
    let (key, id) = parse_recording(&app, &name, &id)?;
    let identity = authorize(&node, &req, Action::Play, Some(&key), PROTOCOL)?;
    let recording = find_recording(&node, &key, id).await?;
    let auth = node.auth.load();
    // A VOD player reads the playlist once: its segments' session lasts as long as the
    // token it was issued for (the live HLS one is renewed with every playlist instead).
    let session = match (identity, request_token(&req)) {
        (Some(identity), Some(token)) if auth.required(Action::Play) => {
            let now = unix_now();
            let sessions = auth.sessions().with_ttl(identity.expires.saturating_sub(now));
            Some(sessions.issue(&key, &sessions.id_for(&token), now, identity.expires))
        }
        _ => None,
    };
    let text = vod::playlist(&recording, session.as_deref()).map_err(|e| match e {
        VodError::NotHls => ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_hls", e.to_string()),
    })?;
    // A live recording's playlist grows with every segment; a finished one never changes.
    let cache = if recording.live { "no-cache" } else { "private, max-age=60" };
    Ok(with_cors(HttpResponse::Ok())
        .content_type("application/vnd.apple.mpegurl")
        .insert_header((header::CACHE_CONTROL, cache))
        .body(text))
}

/// Checks a segment request: its `?s=` session for `key` when it has one, the token
/// otherwise.
fn check_segment_access(
    node: &NodeContext,
    req: &HttpRequest,
    key: &StreamKey,
) -> Result<(), ApiError> {
    let session = req.query_string().split('&').find_map(|pair| pair.strip_prefix("s="));
    match session {
        Some(session) => {
            node.auth.load().sessions().verify(session, key, unix_now()).map(|_| ()).map_err(
                |error: AuthError| {
                    node.metrics.auth_failure(PROTOCOL, error.code());
                    ApiError::new(StatusCode::UNAUTHORIZED, error.code(), error.to_string())
                },
            )
        }
        None => authorize(node, req, Action::Play, Some(key), PROTOCOL).map(|_| ()),
    }
}

/// `GET /recordings/{app}/{key}/{recording}/{n}.{ext}`
async fn segment(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (app, name, id, segment) = path.into_inner();
    let (key, id) = parse_recording(&app, &name, &id)?;
    check_segment_access(&node, &req, &key)?;
    let not_found = || {
        ApiError::not_found(
            "segment_not_found",
            format!("recording {id} of {key} has no segment {segment:?}"),
        )
    };
    let (index, format) = vod::parse_segment_name(&segment).ok_or_else(not_found)?;
    let recording = find_recording(&node, &key, id).await?;
    let entry =
        recording.segments.get(index).filter(|s| s.format == format).ok_or_else(not_found)?;
    let content_type = match entry.format {
        SegmentFormat::Fmp4 => "video/mp4",
        SegmentFormat::Ts => "video/mp2t",
        SegmentFormat::Flv => "video/x-flv",
    };
    let len = entry.bytes;
    let asked = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(ByteRange::Full, |r| parse_range(r, len));
    let (status, start, end, content_range) = match asked {
        ByteRange::Full => (StatusCode::OK, 0, len, None),
        ByteRange::Part(start, end) => (
            StatusCode::PARTIAL_CONTENT,
            start,
            end + 1,
            Some(format!("bytes {start}-{end}/{len}")),
        ),
        ByteRange::Unsatisfiable => {
            return Ok(with_cors(HttpResponse::RangeNotSatisfiable())
                .insert_header((header::CONTENT_RANGE, format!("bytes */{len}")))
                .finish());
        }
    };
    let body = node.playback.store.segment(entry, start, end).await;
    let body = match body.map_err(|e| store_error(&key, e))? {
        SegmentBody::Bytes(bytes) => BoxBody::new(bytes),
        SegmentBody::Stream(stream) => BoxBody::new(SizedStream::new(end - start, stream)),
        SegmentBody::Redirect(url) => {
            // The URL expires: never cached.
            return Ok(with_cors(HttpResponse::Found())
                .insert_header((header::LOCATION, url))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish());
        }
    };
    let mut response = with_cors(HttpResponse::build(status));
    response
        .content_type(content_type)
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "private, max-age=3600"));
    if let Some(content_range) = content_range {
        response.insert_header((header::CONTENT_RANGE, content_range));
    }
    Ok(response.body(body))
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole file (no header, or one this server ignores, as HTTP allows).
    Full,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

/// Parses a `Range` header for a file of `len` bytes: one range of bytes
/// (`bytes=a-b`, `bytes=a-`, `bytes=-n`); several ranges or anything malformed is
/// answered whole.
pub fn parse_range(header: &str, len: u64) -> ByteRange {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return ByteRange::Full };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return ByteRange::Full };
    let number = |s: &str| {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first, last) {
        ("", suffix) => match number(suffix) {
            Some(0) if len > 0 => ByteRange::Unsatisfiable,
            Some(n) if len > 0 => ByteRange::Part(len - n.min(len), len - 1),
            Some(_) => ByteRange::Unsatisfiable,
            None => ByteRange::Full,
        },
        (start, end) => {
            let Some(start) = number(start) else { return ByteRange::Full };
            let end = match end {
                "" => len.saturating_sub(1),
                end => match number(end) {
                    Some(end) if end >= start => end.min(len.saturating_sub(1)),
                    _ => return ByteRange::Full,
                },
            };
            if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part(start, end)
            }
        }
    }
}

/// A download's query.
#[derive(Debug, Default, Deserialize)]
struct DownloadQuery {
    start: Option<String>,
    duration: Option<String>,
    /// The token may come in the query too.
    #[allow(dead_code)]
    token: Option<String>,
}

/// The wall-clock range a download's query asks for, checked against `max`.
fn download_range(query: &str, max: Duration) -> Result<(SystemTime, Duration), ApiError> {
    let query = web::Query::<DownloadQuery>::from_query(query).map_err(bad_query)?;
    let missing = |what: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_parameter",
            format!(
                "{what} is required: ?start=<RFC 3339 or Unix seconds>&duration=<seconds or 30s>"
            ),
        )
    };
    let bad = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_range", why);
    // A `+` of an unencoded offset (`+01:00`) arrives as a space.
    let start = query.start.as_deref().ok_or_else(|| missing("start"))?.replace(' ', "+");
    let start = vod::parse_start(&start).map_err(bad)?;
    let duration = query.duration.as_deref().ok_or_else(|| missing("duration"))?;
    let duration = vod::parse_duration(duration).map_err(bad)?;
    if duration > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "range_too_long",
            format!(
                "{} s asked, at most {} s per download (recording.max_download)",
                duration.as_secs_f64(),
                max.as_secs_f64()
            ),
        ));
    }
    Ok((start, duration))
}

/// `GET /recordings/{app}/{key}?start=&duration=`
async fn download(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (app, name) = path.into_inner();
    let key = stream_key(&app, &name)?;
    authorize(&node, &req, Action::Play, Some(&key), PROTOCOL)?;
    let playback = node.playback.clone();
    let (start, duration) = download_range(req.query_string(), playback.max_duration)?;
    let recordings = playback
        .store
        .recordings(Some(key.clone()), Arc::new(|_: &StreamKey| true))
        .await
        .map_err(|e| store_error(&key, e))?;
    let (recording, plan) = recordings
        .iter()
        .find_map(|r| vod::plan_download(r, start, duration).map(|plan| (r, plan)))
        .ok_or_else(|| {
            ApiError::not_found(
                "no_recording_in_range",
                format!(
                    "stream {key} has no finished segment from {} for {} s",
                    rfc3339(start),
                    duration.as_secs_f64()
                ),
            )
        })?;
    let entries: Vec<&SegmentEntry> =
        plan.segments.iter().filter_map(|&i| recording.segments.get(i)).collect();
    if let Some(other) = entries.iter().find(|s| s.format != SegmentFormat::Fmp4) {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "download_format_unsupported",
            format!(
                "time-range downloads are built from fmp4 segments; this recording is {} (its segments can be fetched from the listing)",
                format_name(other.format)
            ),
        ));
    }
    if plan.bytes > playback.max_bytes {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "range_too_large",
            format!(
                "the range spans {} bytes of segments, at most {} per download (recording.max_download_bytes): ask for less",
                plan.bytes, playback.max_bytes
            ),
        ));
    }
    let Ok(_permit) = playback.downloads.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "downloads_busy",
            "other downloads are being built; try again in a moment",
        ));
    };
    let mut files = Vec::with_capacity(entries.len());
    for entry in &entries {
        let bytes = playback.store.read(entry).await.map_err(|e| store_error(&key, e))?;
        files.push(bytes);
    }
    let (from, to) = (plan.from, plan.to);
    let cut = web::block(move || fmp4_cut::cut(&files, from, to))
        .await
        .map_err(internal)?
        .map_err(|error| match error {
            CutError::Empty => ApiError::not_found("no_recording_in_range", error.to_string()),
            CutError::TracksChanged(_) => ApiError::new(
                StatusCode::CONFLICT,
                "tracks_changed",
                format!("{error}: ask for a range on one side of the change"),
            ),
            error => {
                tracing::warn!(stream = %key, %error, "recordings: segments could not be cut");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cut_failed", error.to_string())
            }
        })?;
    let head = entries[0];
    // The cut's wall-clock start: its keyframe's place in the first segment.
    let offset = (cut.start.to_duration()).saturating_sub(head.media_start);
    let begins = head.wall_start + offset;
    let filename = format!(
        "{}_{}_{}.mp4",
        key.app(),
        key.name(),
        DateTime::<Utc>::from(begins).format("%Y%m%dT%H%M%S%.3fZ")
    );
    Ok(with_cors(HttpResponse::Ok())
        .content_type("video/mp4")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .insert_header(("x-recording-id", recording.id.to_string()))
        .insert_header(("x-range-start", rfc3339(begins)))
        .insert_header((
            "x-range-duration",
            format!("{:.3}", cut.duration.to_duration().as_secs_f64()),
        ))
        .body(cut.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_hostile_ones_fall_back_or_refuse() {
        assert_eq!(parse_range("bytes=0-99", 1000), ByteRange::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 1000), ByteRange::Part(100, 999));
        assert_eq!(parse_range("bytes=-10", 1000), ByteRange::Part(990, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), ByteRange::Part(0, 999));
        assert_eq!(parse_range("bytes=900-5000", 1000), ByteRange::Part(900, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), ByteRange::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), ByteRange::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), ByteRange::Unsatisfiable);
        for ignored in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=99999999999999999999-",
            "bytes= 1 - 2",
            "bytes=0x1-2",
        ] {
            assert_eq!(parse_range(ignored, 1000), ByteRange::Full, "{ignored:?}");
        }
    }

    #[test]
    fn download_queries_are_checked() {
        let hour = Duration::from_secs(3600);
        let (start, duration) =
            download_range("start=1700000000&duration=30s", hour).expect("valid");
        assert_eq!(start, SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert_eq!(duration, Duration::from_secs(30));
        // An unencoded `+` offset.
        let (start, _) =
            download_range("start=2023-11-14T23:13:20+01:00&duration=5", hour).expect("valid");
        assert_eq!(start, SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        for (query, code) in [
            ("", "missing_parameter"),
            ("start=1700000000", "missing_parameter"),
            ("duration=5", "missing_parameter"),
            ("start=x&duration=5", "invalid_range"),
            ("start=1700000000&duration=-5", "invalid_range"),
            ("start=1700000000&duration=2h", "range_too_long"),
            // A broken escape stays as it is, and is no duration.
            ("start=1700000000&duration=%ZZ", "invalid_range"),
            ("start=1&start=2&duration=5", "invalid_query"),
            ("start=1700000000&duration=5&bogus=1", ""),
        ] {
            match download_range(query, hour) {
                Ok(_) => assert_eq!(code, "", "{query}"),
                Err(error) => assert!(
                    error.to_string().starts_with(code) && !code.is_empty(),
                    "{query}: {error}"
                ),
            }
        }
    }
}
