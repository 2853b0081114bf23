//! WHIP's HTTP side (RFC 9725): `POST /whip/{app}/{key}` with an SDP offer answers
//! `201 Created`, the SDP answer, and `Location: /whip/sessions/{id}`; `DELETE` on that
//! location ends the session; `OPTIONS` answers CORS preflights. Trickle ICE and ICE
//! restarts (`PATCH`) are not supported (`405`): the node is ICE-lite and its answer holds
//! every candidate.
//!
//! A publish goes through [`admission::admit_publish`] like an RTMP one: the token
//! (`Authorization: Bearer`), the `on_publish` deciders and hooks, draining, the name's
//! claim; a refusal is the JSON error every HTTP front-end answers (401/403, 409 for a name
//! that is live, 503 while draining). The offer is checked first ([`super::offer`]) so a
//! useless one claims nothing. The session id is 128 random bits: knowing the resource URL
//! is what allows deleting it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt as _;
use zenlive_actors::Protocol;

use super::offer::{self, MAX_OFFER_BYTES};
use super::session::{negotiate, NegotiateError, Session};
use super::WebRtc;
use crate::admission::{self, Request};
use crate::context::NodeContext;
use crate::http::common::{request_token, stream_key, with_cors, ApiError};

/// The address of the HTTP connection's own end, recorded when it is accepted (the
/// fallback ICE candidate, see [`WebRtc::candidates`]).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub IpAddr);

/// The WHIP routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/whip/sessions/{id}", web::delete().to(delete))
        .route("/whip/sessions/{id}", web::method(actix_web::http::Method::OPTIONS).to(preflight))
        .route("/whip/sessions/{id}", web::patch().to(patch))
        .route("/whip/{app}/{key}", web::post().to(publish))
        .route("/whip/{app}/{key}", web::method(actix_web::http::Method::OPTIONS).to(preflight));
}

pub(super) fn service(node: &NodeContext) -> Result<&Arc<WebRtc>, ApiError> {
    node.webrtc.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "webrtc_disabled", "WebRTC is disabled")
    })
}

fn refused(webrtc: &WebRtc, error: ApiError, code: &str) -> ApiError {
    webrtc.stats.refused("whip", code);
    error
}

/// Reads the body, refusing more than [`MAX_OFFER_BYTES`].
pub(super) async fn read_offer(mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?;
        if body.len() + chunk.len() > MAX_OFFER_BYTES {
            let error = offer::OfferError::TooLarge;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                error.code(),
                error.to_string(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `POST /whip/{app}/{key}`
pub async fn publish(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let webrtc = service(&node)?;
    let (app, key) = path.into_inner();
    let key = stream_key(&app, &key).map_err(|e| refused(webrtc, e, "invalid_stream_name"))?;
    let sdp = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !sdp.is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("application/sdp")) {
        let error = ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a WHIP offer is Content-Type: application/sdp",
        );
        return Err(refused(webrtc, error, "unsupported_media_type"));
    }
    let body = read_offer(payload).await.map_err(|e| refused(webrtc, e, "offer_too_large"))?;
    let (offer, _) = offer::check(&body).map_err(|error| {
        let api = ApiError::new(StatusCode::BAD_REQUEST, error.code(), error.to_string());
        refused(webrtc, api, error.code())
    })?;
    if webrtc.session_count() >= webrtc.config().max_sessions {
        let error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sessions",
            "this node has as many WebRTC sessions as it takes (webrtc.max_sessions)",
        );
        return Err(refused(webrtc, error, "too_many_sessions"));
    }
    let token = request_token(&req);
    let context = node.clone().into_inner();
    let request = Request {
        key: key.clone(),
        protocol: Protocol::Whip,
        peer: req.peer_addr(),
        token: token.as_deref(),
    };
    let publishing = admission::admit_publish(&context, request).await.map_err(|refusal| {
        let code = refusal.code();
        refused(webrtc, ApiError::from(refusal), code)
    })?;
    let local = req.conn_data::<LocalAddr>().map(|l| l.0);
    let now = Instant::now();
    let negotiated = match negotiate(offer, &webrtc.candidates(local), now) {
        Ok(negotiated) => negotiated,
        Err(error) => {
            publishing.publisher.finish("offer not answered");
            let status = match error {
                NegotiateError::Refused(_) => StatusCode::BAD_REQUEST,
                NegotiateError::NoCandidates => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(stream = %key, %error, "whip offer refused");
            let api = ApiError::new(status, "offer_refused", error.to_string());
            return Err(refused(webrtc, api, "offer_refused"));
        }
    };
    let answer = negotiated.answer.clone();
    let id: Arc<str> = Arc::from(session_id());
    let session =
        Session::register(webrtc, Arc::clone(&id), key.clone(), negotiated, publishing, now).await;
    let session = match session {
        Ok(session) => session,
        Err(publishing) => {
            publishing.publisher.finish("too many sessions");
            let error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                "this node has as many WebRTC sessions as it takes (webrtc.max_sessions)",
            );
            return Err(refused(webrtc, error, "too_many_sessions"));
        }
    };
    tracing::info!(stream = %key, session = %id, peer = ?req.peer_addr(), "whip offer answered");
    actix_rt::spawn(context.until_shutdown(session.run()));
    let location = format!("/whip/sessions/{id}");
    let mut response = with_cors(HttpResponse::Created());
    response
        .content_type("application/sdp")
        .insert_header((header::LOCATION, location))
        .insert_header((header::ACCESS_CONTROL_EXPOSE_HEADERS, "Location, Link"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    for url in &webrtc.config().ice_servers {
        response.append_header((header::LINK, format!("<{url}>; rel=\"ice-server\"")));
    }
    Ok(response.body(answer))
}

/// 128 random bits in hex.
pub(super) fn session_id() -> String {
    use rand::Rng;
    let bits: u128 = rand::rng().random();
    format!("{bits:032x}")
}

/// `DELETE /whip/sessions/{id}`: ends the session and its stream.
pub async fn delete(
    node: web::Data<NodeContext>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let webrtc = service(&node)?;
    if webrtc.close_session(Protocol::Whip, &id) {
        Ok(with_cors(HttpResponse::Ok()).finish())
    } else {
        Err(ApiError::not_found("session_not_found", "no such WHIP session"))
    }
}

/// `PATCH /whip/sessions/{id}`: trickle ICE and ICE restarts are not supported.
pub async fn patch() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle_not_supported",
        "this server is ICE-lite and takes no trickled candidates or ICE restarts",
    ))
}

/// `OPTIONS`: the CORS preflight of browsers' WHIP clients.
pub async fn preflight() -> HttpResponse {
    with_cors(HttpResponse::NoContent())
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST, DELETE, PATCH, OPTIONS"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type, If-Match",
        ))
        .insert_header((header::ACCESS_CONTROL_EXPOSE_HEADERS, "Location, Link"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        // Chromium's Private Network Access: a page from elsewhere may reach a node on a
        // private or loopback address.
        .insert_header(("Access-Control-Allow-Private-Network", "true"))
        .finish()
}
