//! WHIP's HTTP side (RFC 9725): `POST /whip/{app}/{key}` with an SDP offer answers
//! `201 Created`, the SDP answer, `Location: /whip/sessions/{id}` and an `ETag`; `DELETE`
//! on that location ends the session; `PATCH` takes trickled candidates and ICE restarts
//! ([`super::trickle`], [`super::restart`]); `OPTIONS` answers CORS preflights
//! ([`super::resource`], shared with WHEP).
//!
//! A publish goes through [`admission::admit_publish`] like an RTMP one: the token
//! (`Authorization: Bearer`), the `on_publish` deciders and hooks, draining, the name's
//! claim; a refusal is the JSON error every HTTP front-end answers (401/403, 409 for a name
//! that is live, 503 while draining). The offer is checked first ([`super::offer`]) so a
//! useless one claims nothing. The session id is 128 random bits: knowing the resource URL
//! is what allows deleting it.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use zenlive_actors::Protocol;

use super::offer;
use super::resource::{self, service, session_id, too_many_sessions, LocalAddr};
use super::session::{negotiate, NegotiateError, Session};
use crate::admission::{self, Request};
use crate::context::NodeContext;
use crate::http::common::{request_token, stream_key, ApiError};

/// The WHIP routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/whip/{app}/{key}", web::post().to(publish));
    resource::session_routes(cfg, Protocol::Whip);
}

/// `POST /whip/{app}/{key}`
pub async fn publish(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let webrtc = service(&node)?;
    let refused = |error, code: &str| resource::refused(webrtc, Protocol::Whip, error, code);
    let (app, key) = path.into_inner();
    let key = stream_key(&app, &key).map_err(|e| refused(e, "invalid_stream_name"))?;
    let body = resource::read_offer(webrtc, Protocol::Whip, &req, payload).await?;
    let (offer, summary) = offer::check(&body).map_err(|error| {
        let api = ApiError::new(StatusCode::BAD_REQUEST, error.code(), error.to_string());
        refused(api, error.code())
    })?;
    if webrtc.session_count() >= webrtc.config().max_sessions {
        return Err(refused(too_many_sessions(), "too_many_sessions"));
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
        refused(ApiError::from(refusal), code)
    })?;
    let local = req.conn_data::<LocalAddr>().map(|l| l.0);
    let now = Instant::now();
    let negotiated = match negotiate(offer, &webrtc.candidates(local), summary.publish_video(), now)
    {
        Ok(negotiated) => negotiated,
        Err(error) => {
            publishing.publisher.finish("offer not answered");
            let status = match error {
                NegotiateError::Refused(_) => StatusCode::BAD_REQUEST,
                NegotiateError::NoCandidates => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(stream = %key, %error, "whip offer refused");
            let api = ApiError::new(status, "offer_refused", error.to_string());
            return Err(refused(api, "offer_refused"));
        }
    };
    let answer = negotiated.answer.clone();
    let etag = negotiated.ice.etag();
    let id: Arc<str> = Arc::from(session_id());
    let session =
        Session::register(webrtc, Arc::clone(&id), key.clone(), negotiated, publishing, now).await;
    let session = match session {
        Ok(session) => session,
        Err(publishing) => {
            publishing.publisher.finish("too many sessions");
            return Err(refused(too_many_sessions(), "too_many_sessions"));
        }
    };
    tracing::info!(stream = %key, session = %id, peer = ?req.peer_addr(), "whip offer answered");
    actix_rt::spawn(context.until_shutdown(session.run()));
    Ok(resource::created(webrtc, Protocol::Whip, &id, &etag, answer))
}
