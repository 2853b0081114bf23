//! The HTTP front-end: HLS playlists and segments, HTTP-FLV, health, the admin API
//! ([`crate::api`]); and the metrics port's routes (Prometheus, health, stream statistics). Handlers are thin:
//! they parse the path, look the stream up, and hand over to [`crate::hls`] or
//! [`crate::http_flv`]. Every error is a JSON body with a stable `code`.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::timeout;

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use serde_json::json;
use zenlive_actors::StreamKey;

use crate::admission::Refusal;
use crate::api;
use crate::auth::{token, Action, Identity};
use crate::node::NodeContext;

/// Media, health and admin API routes on the HTTP port.
pub fn routes(cfg: &mut web::ServiceConfig) {
    health_routes(cfg);
    cfg.app_data(web::Data::new(api::Access::Admin)).configure(api::routes);
    cfg.route("/chat/{app}/{stream}", web::get().to(crate::chat_ws::join));
    cfg.route("/{app}/{stream}/index.m3u8", web::get().to(crate::hls::playlist))
        .route("/{app}/{stream}/{segment}.ts", web::get().to(crate::hls::segment))
        .route("/{app}/{file}", web::get().to(crate::http_flv::play))
        .default_service(web::to(|| async {
            ApiError::not_found("not_found", "no such resource").error_response()
        }));
}

/// Health routes (served on both the HTTP and the metrics port).
pub fn health_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz)).route("/readyz", web::get().to(readyz));
}

/// Routes of the metrics port: Prometheus, health, and the stream statistics API without
/// auth and without actions (the port is meant to stay private).
pub fn metrics_routes(cfg: &mut web::ServiceConfig) {
    health_routes(cfg);
    cfg.route("/metrics", web::get().to(metrics))
        .app_data(web::Data::new(api::Access::ReadOnly))
        .configure(api::routes)
        .default_service(web::to(|| async {
            ApiError::not_found("not_found", "no such resource").error_response()
        }));
}

/// How long `/readyz` waits for the registry.
const REGISTRY_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

async fn healthz(node: web::Data<NodeContext>) -> HttpResponse {
    HttpResponse::Ok().json(
        json!({ "status": "ok", "node": node.node_id.as_str(), "streams": node.directory.len() }),
    )
}

/// Ready when every listener is up and the node is not draining; 503 otherwise (and from
/// the moment shutdown begins), so load balancers stop sending new clients. An unreachable
/// registry (Redis) is reported (`"degraded": true`) but does not make the node unready:
/// its local streams keep flowing, and a Redis outage must not take every node of a
/// cluster out of the load balancer at once.
async fn readyz(node: web::Data<NodeContext>) -> HttpResponse {
    let listeners = node.ready.load(Ordering::Acquire);
    let registry = match timeout(REGISTRY_CHECK_TIMEOUT, node.registry.nodes()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {REGISTRY_CHECK_TIMEOUT:?}")),
    };
    let draining = node.is_draining();
    let ready = listeners && !draining;
    let degraded = registry.is_err();
    let check = |ok: bool, error: Option<String>| match (ok, error) {
        (true, _) => json!({ "status": "ok" }),
        (false, error) => json!({ "status": "failing", "error": error }),
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "degraded": degraded,
        "node": node.node_id.as_str(),
        "checks": {
            "listeners": check(listeners, (!listeners).then(|| "starting or shutting down".to_owned())),
            "registry": check(registry.is_ok(), registry.err()),
            "draining": check(!draining, draining.then(|| "the node is draining".to_owned())),
        },
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    HttpResponse::build(status).insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}

async fn metrics(node: web::Data<NodeContext>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(node.metrics.render())
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
