//! The HTTP side WHIP and WHEP share: the offer's media type and size, the session's
//! resource (`201` with its `Location`, `ETag` and `Link` headers, `DELETE`, `PATCH` for
//! trickle ICE, the CORS preflight). [`super::whip`] and [`super::whep`] add what differs:
//! who is let in, and which session runs.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use zenlive_actors::Protocol;

use super::offer::{self, MAX_OFFER_BYTES};
use super::restart::RestartError;
use super::trickle::{self, Fragment, FragmentError, FRAGMENT_TYPE, MAX_FRAGMENT_BYTES};
use super::WebRtc;
use crate::context::NodeContext;
use crate::http::common::{with_cors, ApiError};

/// The address of the HTTP connection's own end, recorded when it is accepted (the
/// fallback ICE candidate, see [`WebRtc::candidates`]).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub IpAddr);

/// The headers a browser's script may read from an answer.
const EXPOSED: &str = "Location, Link, ETag";

/// The node's WebRTC service, or `503` when `[webrtc]` is off.
pub fn service(node: &NodeContext) -> Result<&Arc<WebRtc>, ApiError> {
    node.webrtc.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "webrtc_disabled", "WebRTC is disabled")
    })
}

/// `protocol`'s label in the series and logs.
fn label(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Whep => "whep",
        _ => "whip",
    }
}

/// Counts a refusal of `protocol` with `code`, and answers it.
pub fn refused(webrtc: &WebRtc, protocol: Protocol, error: ApiError, code: &str) -> ApiError {
    webrtc.stats.refused(label(protocol), code);
    error
}

/// Whether the request's `Content-Type` is `expected` (parameters and case aside).
fn has_type(req: &HttpRequest, expected: &str) -> bool {
    let value = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    value.is_some_and(|v| {
        let essence = v.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case(expected)
    })
}

/// Reads an offer: `Content-Type: application/sdp`, at most [`MAX_OFFER_BYTES`].
pub async fn read_offer(
    webrtc: &WebRtc,
    protocol: Protocol,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Vec<u8>, ApiError> {
    if !has_type(req, "application/sdp") {
        let message = format!("a {} offer is Content-Type: application/sdp", label(protocol));
        let error =
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message);
        return Err(refused(webrtc, protocol, error, "unsupported_media_type"));
    }
    let too_large = offer::OfferError::TooLarge;
    match read_body(payload, MAX_OFFER_BYTES).await {
        Ok(body) => Ok(body),
        Err(BodyError::TooLarge) => {
            let error = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                too_large.code(),
                too_large.to_string(),
            );
            Err(refused(webrtc, protocol, error, too_large.code()))
        }
        Err(BodyError::Broken(error)) => Err(refused(webrtc, protocol, error, "invalid_body")),
    }
}

/// Why a body was not read.
enum BodyError {
    /// More than the limit.
    TooLarge,
    /// The connection broke off.
    Broken(ApiError),
}

/// Reads a body of at most `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            BodyError::Broken(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `503` when the node holds `webrtc.max_sessions` sessions.
pub fn too_many_sessions() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_sessions",
        "this node has as many WebRTC sessions as it takes (webrtc.max_sessions)",
    )
}

/// 128 random bits in hex: knowing a session's URL is what allows changing or ending it.
pub fn session_id() -> String {
    use rand::Rng;
    let bits: u128 = rand::rng().random();
    format!("{bits:032x}")
}

/// The `201 Created` of a session `id` of `protocol`: the SDP answer, its resource, the
/// ICE session's tag, and the ICE servers to use.
pub fn created(
    webrtc: &WebRtc,
    protocol: Protocol,
    id: &str,
    etag: &str,
    answer: String,
) -> HttpResponse {
    let location = format!("/{}/sessions/{id}", label(protocol));
    let mut response = with_cors(HttpResponse::Created());
    response
        .content_type("application/sdp")
        .insert_header((header::LOCATION, location))
        .insert_header((header::ETAG, etag))
        .insert_header((header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    for url in &webrtc.config().ice_servers {
        response.append_header((header::LINK, format!("<{url}>; rel=\"ice-server\"")));
    }
    response.body(answer)
}

/// The routes of `protocol`'s sessions: `DELETE`, `PATCH` and `OPTIONS` on
/// `/{whip,whep}/sessions/{id}`, and `OPTIONS` on the offer's path.
pub fn session_routes(cfg: &mut web::ServiceConfig, protocol: Protocol) {
    use actix_web::http::Method;
    let prefix = label(protocol);
    let delete = move |node: web::Data<NodeContext>, id: web::Path<String>| async move {
        self::delete(&node, protocol, &id).await
    };
    let patch = move |node: web::Data<NodeContext>,
                      id: web::Path<String>,
                      req: HttpRequest,
                      payload: web::Payload| async move {
        self::patch(&node, protocol, &id, &req, payload).await
    };
    let session = format!("/{prefix}/sessions/{{id}}");
    cfg.route(&session, web::delete().to(delete))
        .route(&session, web::patch().to(patch))
        .route(&session, web::method(Method::OPTIONS).to(preflight))
        .route(&format!("/{prefix}/{{app}}/{{key}}"), web::method(Method::OPTIONS).to(preflight));
}

/// `DELETE /{whip,whep}/sessions/{id}`: ends the session.
pub async fn delete(
    node: &NodeContext,
    protocol: Protocol,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    let webrtc = service(node)?;
    if webrtc.close_session(protocol, id) {
        Ok(with_cors(HttpResponse::Ok()).finish())
    } else {
        Err(no_session(protocol))
    }
}

fn no_session(protocol: Protocol) -> ApiError {
    let message = format!("no such {} session", label(protocol).to_ascii_uppercase());
    ApiError::not_found("session_not_found", message)
}

/// `PATCH /{whip,whep}/sessions/{id}`: trickled candidates are accepted (`204`), an ICE
/// restart is made and answered (`200` with the new credentials, [`super::restart`]); see
/// [`super::trickle`].
pub async fn patch(
    node: &NodeContext,
    protocol: Protocol,
    id: &str,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let webrtc = service(node)?;
    let ice = webrtc.ice_identity(protocol, id).ok_or_else(|| no_session(protocol))?;
    if !has_type(req, FRAGMENT_TYPE) {
        let message = format!("a trickle ICE PATCH is Content-Type: {FRAGMENT_TYPE}");
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        ));
    }
    let if_match = req.headers().get(header::IF_MATCH).map(|v| v.to_str().unwrap_or_default());
    if if_match.is_some_and(|value| !ice.matches(value)) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "ice_session_changed",
            "If-Match does not name this session's ICE session (its ETag)",
        ));
    }
    let body = match read_body(payload, MAX_FRAGMENT_BYTES).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return Err(fragment_error(FragmentError::TooLarge)),
        Err(BodyError::Broken(error)) => return Err(error),
    };
    let fragment = trickle::read(&body, &ice).map_err(fragment_error)?;
    match fragment {
        Fragment::Trickle { candidates, end } => {
            webrtc.stats.of(protocol).trickled_candidates.inc_by(candidates as u64);
            tracing::debug!(session = %id, candidates, end, "trickled candidates accepted");
            Ok(with_cors(HttpResponse::NoContent()).finish())
        }
        Fragment::Restart { ufrag, pwd } => match webrtc.restart(protocol, id, ufrag, pwd).await {
            Ok(restarted) => {
                tracing::info!(session = %id, "ice restarted");
                Ok(with_cors(HttpResponse::Ok())
                    .content_type(FRAGMENT_TYPE)
                    .insert_header((header::ETAG, restarted.ice.etag()))
                    .insert_header((header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED))
                    .body(restarted.fragment))
            }
            Err(RestartError::NoSession) => Err(no_session(protocol)),
            Err(RestartError::Failed(reason)) => {
                tracing::info!(session = %id, %reason, "ice restart failed");
                Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "ice_restart_failed", reason))
            }
        },
    }
}

fn fragment_error(error: FragmentError) -> ApiError {
    let status = match error {
        FragmentError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, error.code(), error.to_string())
}

/// `OPTIONS`: the CORS preflight of browsers' WHIP and WHEP clients.
pub async fn preflight() -> HttpResponse {
    with_cors(HttpResponse::NoContent())
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST, DELETE, PATCH, OPTIONS"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type, If-Match",
        ))
        .insert_header((header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        // Chromium's Private Network Access: a page from elsewhere may reach a node on a
        // private or loopback address.
        .insert_header(("Access-Control-Allow-Private-Network", "true"))
        .finish()
}
