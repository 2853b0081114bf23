//! `GET /api/v1/live`: the live streams as a viewer may see them, for the home page and
//! any other front-end: name, viewers, resolution, codecs, frame rate, bitrate and uptime;
//! never who publishes or from where. The admin listing (`/api/v1/streams`) needs an admin
//! token; this one needs what playing needs (a token only under `auth.require_play`) and
//! shows only the streams the token covers. Served while `ui.enabled` and
//! `ui.list_streams` (both on by default); otherwise 404 `listing_disabled`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use zenlive_actors::StatsSnapshot;

use crate::auth::Action;
use crate::context::NodeContext;
use crate::http::common::{request_token, with_cors, ApiError};

/// What a viewer may know of a live stream.
fn public_view(name: String, stats: &StatsSnapshot) -> serde_json::Value {
    json!({
        "name": name,
        "uptime_seconds": stats.uptime.as_secs(),
        "viewers": stats.viewers_now(),
        "video": stats.media.video.as_ref().map(|v| json!({
            "codec": v.codec, "width": v.width, "height": v.height,
        })),
        "audio": stats.media.audio.as_ref().map(|a| json!({
            "codec": a.codec, "sample_rate": a.sample_rate, "channels": a.channels,
        })),
        "fps": stats.rates.fps,
        "bitrate_bps": stats.rates.bitrate_bps,
    })
}

/// `GET /api/v1/live`
pub async fn list(
    node: web::Data<NodeContext>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let ui = &node.config.ui;
    if !(ui.enabled && ui.list_streams) {
        return Err(ApiError::not_found(
            "listing_disabled",
            "this node does not list its streams (ui.list_streams)",
        ));
    }
    let token = request_token(&req);
    let identity =
        node.auth.load().check_role(token.as_deref(), Action::Play).map_err(|error| {
            node.metrics.auth_failure("api", error.code());
            let status =
                if error.is_forbidden() { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
            ApiError::new(status, error.code(), error.to_string())
        })?;
    let mut streams: Vec<_> = node
        .directory
        .entries()
        .iter()
        .filter(|(key, _)| identity.as_ref().is_none_or(|i| i.covers(key)))
        .map(|(key, entry)| (key.to_string(), entry.stats.snapshot()))
        .collect();
    streams.sort_by(|a, b| a.0.cmp(&b.0));
    let streams: Vec<_> =
        streams.into_iter().map(|(name, stats)| public_view(name, &stats)).collect();
    Ok(with_cors(HttpResponse::Ok())
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(json!({ "streams": streams })))
}
