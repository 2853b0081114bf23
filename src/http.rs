//! The HTTP front-end: HLS playlists and segments, HTTP-FLV, health. Handlers are thin:
//! they parse the path, look the stream up, and hand over to [`crate::hls`] or
//! [`crate::http_flv`]. Every error is a JSON body with a stable `code`.

use std::fmt;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, HttpResponseBuilder, ResponseError};
use serde_json::json;
use zenlive_actors::StreamKey;

use crate::node::NodeContext;

/// Media and health routes on the HTTP port.
pub fn routes(cfg: &mut web::ServiceConfig) {
    health_routes(cfg);
    cfg.route("/{app}/{stream}/index.m3u8", web::get().to(crate::hls::playlist))
        .route("/{app}/{stream}/{segment}.ts", web::get().to(crate::hls::segment))
        .route("/{app}/{file}", web::get().to(crate::http_flv::play))
        .default_service(web::to(|| async {
            ApiError::not_found("not_found", "no such resource").error_response()
        }));
}

/// Health routes (also served on the metrics port).
pub fn health_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz));
}

async fn healthz(node: web::Data<NodeContext>) -> HttpResponse {
    HttpResponse::Ok().json(
        json!({ "status": "ok", "node": node.node_id.as_str(), "streams": node.directory.len() }),
    )
}

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

/// Parses `{app}/{stream}` from a path, or answers 400.
pub fn stream_key(app: &str, stream: &str) -> Result<StreamKey, ApiError> {
    StreamKey::new(app, stream)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_stream_name", e.to_string()))
}
