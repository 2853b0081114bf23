//! The HTTP front-end: HLS playlists and segments, HTTP-FLV, health. Handlers are thin:
//! they parse the path, look the stream up, and hand over to [`crate::hls`] or
//! [`crate::http_flv`]. Every error is a JSON body with a stable `code`.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, HttpResponseBuilder};
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
            error(StatusCode::NOT_FOUND, "not_found", "no such resource")
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

/// A JSON error response: `{"error": {"code": .., "message": ..}}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    with_cors(HttpResponse::build(status))
        .json(json!({ "error": { "code": code, "message": message.into() } }))
}

/// Adds the CORS header media responses carry.
pub fn with_cors(mut builder: HttpResponseBuilder) -> HttpResponseBuilder {
    builder.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"));
    builder
}

/// Parses `{app}/{stream}` from a path, or answers 400.
pub fn stream_key(app: &str, stream: &str) -> Result<StreamKey, HttpResponse> {
    StreamKey::new(app, stream)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_stream_name", e.to_string()))
}
