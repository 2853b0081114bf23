//! The HTTP front-end: HLS playlists and segments, HTTP-FLV, health, the admin API
//! ([`crate::api`]); and the metrics port's routes (Prometheus, health, stream statistics). Handlers are thin:
//! they parse the path, go through [`crate::admission`], and hand over to [`crate::hls`] or
//! [`crate::http_flv`]. Every error is a JSON body with a stable `code` ([`common`]).

pub mod common;
pub mod recordings;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::timeout;

use actix_web::guard::{self, GuardContext};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use serde_json::json;

use self::common::ApiError;
use crate::api;
use crate::context::NodeContext;

/// The first path segments of the HTTP port's routes other than the live media's.
///
/// The live media routes (HLS, LL-HLS) come first for every other path: actix-web matches
/// routes in order, each dynamic pattern by a regular expression, and a playlist request
/// that ran every earlier route's pattern spent a fifth of its CPU there (BENCHMARKS.md,
/// "LL-HLS blocking reloads"). A path that begins with one of these goes through the routes
/// in their order, as before; a route with a new first segment must be added here.
const OTHER_ROUTES: &[&str] = &[
    "api",
    "chat",
    "console",
    "healthz",
    "publish",
    "readyz",
    "recordings",
    "ui",
    "watch",
    "whep",
    "whip",
];

/// Whether the request's path may be live media (see [`OTHER_ROUTES`]).
fn live_media(ctx: &GuardContext<'_>) -> bool {
    let first = ctx.head().uri.path().trim_start_matches('/').split('/').next().unwrap_or("");
    !OTHER_ROUTES.contains(&first)
}

/// The HLS and LL-HLS routes.
fn hls_routes(cfg: &mut web::ServiceConfig, first: bool) {
    let routes = [
        ("/{app}/{stream}/index.m3u8", web::get().to(crate::hls::serve::playlist)),
        ("/{app}/{stream}/ll.m3u8", web::get().to(crate::hls::ll_serve::playlist)),
        ("/{app}/{stream}/ll/{name}", web::get().to(crate::hls::ll_serve::media)),
        ("/{app}/{stream}/{segment}.ts", web::get().to(crate::hls::serve::segment)),
    ];
    for (path, route) in routes {
        let resource = web::resource(path).route(route);
        cfg.service(if first { resource.guard(guard::fn_guard(live_media)) } else { resource });
    }
}

/// Media, health and admin API routes on the HTTP port.
pub fn routes(cfg: &mut web::ServiceConfig) {
    hls_routes(cfg, true);
    health_routes(cfg);
    cfg.app_data(web::Data::new(api::Access::Admin)).configure(api::routes);
    // Before the live routes, whose patterns would take `/recordings/...` for a stream.
    cfg.configure(recordings::routes);
    cfg.route("/chat/{app}/{stream}", web::get().to(crate::chat_ws::join));
    cfg.route("/api/v1/live", web::get().to(api::live::list));
    // Before the live routes, whose patterns would take `/watch/...` and `/ui/...`.
    cfg.configure(crate::ui::routes);
    cfg.configure(crate::webrtc::whip::routes);
    cfg.configure(crate::webrtc::whep::routes);
    // The same again for the paths `OTHER_ROUTES` kept from them, after the other routes.
    hls_routes(cfg, false);
    cfg.route("/{app}/{file}", web::get().to(crate::http_flv::play)).default_service(web::to(
        || async { ApiError::not_found("not_found", "no such resource").error_response() },
    ));
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
