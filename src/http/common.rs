//! What every HTTP handler shares: the JSON error ([`ApiError`], also how a refused
//! publisher or viewer is answered), CORS, the request's token and its auth check, and
//! stream names from paths.

use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use serde_json::json;
use zenlive_actors::StreamKey;

use crate::admission::Refusal;
use crate::auth::{token, Action, Identity};
use crate::context::NodeContext;

/// An HTTP error answered as JSON: `{"error": {"code": .., "message": ..}}`, where `code` is
/// stable for programs and `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// A 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
}

impl From<Refusal> for ApiError {
    /// How HTTP front-ends (HTTP-FLV, HLS, WHIP/WHEP) answer a refused publisher or viewer.
    fn from(refusal: Refusal) -> Self {
        let code = refusal.code();
        match refusal {
            Refusal::Auth(error) if error.is_forbidden() => {
                Self::new(StatusCode::FORBIDDEN, code, error.to_string())
            }
            Refusal::Auth(error) => Self::new(StatusCode::UNAUTHORIZED, code, error.to_string()),
            Refusal::Denied(reason) => Self::new(StatusCode::FORBIDDEN, code, reason),
            refusal @ Refusal::NotLive(_) => Self::not_found(code, refusal.to_string()),
            refusal @ Refusal::Draining => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, code, refusal.to_string())
            }
            refusal @ Refusal::Start(_) => {
                Self::new(StatusCode::CONFLICT, code, refusal.to_string())
            }
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        with_cors(HttpResponse::build(self.status))
            .json(json!({ "error": { "code": self.code, "message": self.message } }))
    }
}

/// Adds the CORS header media responses carry.
pub fn with_cors(mut builder: HttpResponseBuilder) -> HttpResponseBuilder {
    builder.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"));
    builder
}

/// The token of an HTTP request: `Authorization: Bearer`, else `?token=`.
pub fn request_token(req: &HttpRequest) -> Option<String> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token::from_bearer)
        .map(str::to_owned);
    bearer.or_else(|| token::from_query(req.query_string()))
}

/// Asks [`Auth`](crate::auth::Auth) whether the request may do `action` on `stream`; a
/// refusal is logged (without the token), counted under `protocol`, and answered 401 or
/// 403 with the reason's code.
pub fn authorize(
    node: &NodeContext,
    req: &HttpRequest,
    action: Action,
    stream: Option<&StreamKey>,
    protocol: &'static str,
) -> Result<Option<Identity>, ApiError> {
    let token = request_token(req);
    node.auth.load().check(token.as_deref(), action, stream).map_err(|error| {
        node.metrics.auth_failure(protocol, error.code());
        let peer = req.peer_addr().map(|p| p.to_string()).unwrap_or_default();
        let stream = stream.map(|s| s.to_string()).unwrap_or_default();
        tracing::warn!(%peer, %stream, protocol, reason = error.code(), %error, "auth refused");
        let status =
            if error.is_forbidden() { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        ApiError::new(status, error.code(), error.to_string())
    })
}

/// Parses `{app}/{stream}` from a path, or answers 400.
pub fn stream_key(app: &str, stream: &str) -> Result<StreamKey, ApiError> {
    StreamKey::new(app, stream)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_stream_name", e.to_string()))
}
