//! The admin API, `/api/v1/...`: the cluster's nodes, draining this node, live streams with
//! their statistics, one stream's details, kicking a publisher, starting and stopping its
//! recording, and the OpenAPI document. A stream's details, its kick and its recording go
//! to the stream's owner (the recording's status to the node recording it), whichever node
//! that is ([`crate::refs`]); the listing shows what this node serves (relayed copies included).
//! On the HTTP port every call needs a token with the `admin` role (and auth configured),
//! and the token's stream scope holds on every route: a scoped token sees and acts on the
//! streams it covers only (refused with 403 before the stream is looked up), and node-wide
//! calls (nodes, drain, resume) need an unscoped one. The metrics port serves the same
//! reads without auth, without personal data (publisher address and user id), and refuses
//! actions, since it is meant to stay private. Every failure is a JSON body with a stable
//! `code` ([`ApiError`]).

use actix::Handler;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use zenlive_actors::directory::StreamEntry;
use zenlive_actors::stream::{GetStats, Kick};
use zenlive_actors::{OutputChange, RemoteMessage, StatsSnapshot, StreamActor, StreamKey};

use crate::auth::{Action, Identity};
use crate::context::NodeContext;
use crate::http::common::{authorize, request_token, stream_key, ApiError};
use crate::recording::actor::GetRecording;
use crate::recording::RecorderOutput;
use crate::refs::RefError;

pub mod live;

/// The OpenAPI 3 description of this API, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("api/openapi.json");

/// Who may call the API on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The HTTP port: an admin token for everything.
    Admin,
    /// The metrics port: reads without a token, no actions.
    ReadOnly,
}

/// The API's routes; the listener's [`Access`] must be in the app data.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/openapi.json", web::get().to(openapi))
        .route("/api/v1/nodes", web::get().to(nodes))
        .route("/api/v1/node/drain", web::post().to(drain))
        .route("/api/v1/node/resume", web::post().to(resume))
        .route("/api/v1/streams", web::get().to(list))
        .route("/api/v1/streams/{app}/{stream}", web::get().to(details))
        .service(
            // The body is read before the handler checks the token: keep it small.
            web::resource("/api/v1/streams/{app}/{stream}/kick")
                .app_data(json_body())
                .route(web::post().to(kick)),
        )
        .service(
            web::resource("/api/v1/streams/{app}/{stream}/recording")
                .app_data(json_body())
                .route(web::get().to(recording))
                .route(web::post().to(set_recording)),
        );
}

/// How a JSON body is read: small, and refused as a JSON error (`invalid_body`) like every
/// other failure of the API.
fn json_body() -> web::JsonConfig {
    web::JsonConfig::default().limit(MAX_KICK_BODY).error_handler(|error, _req| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", error.to_string()).into()
    })
}

/// What a call touches, for the token's scope.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The node (or the cluster): an unscoped token.
    Node,
    /// One stream: a token covering it.
    Stream(&'a StreamKey),
    /// A listing: any admin token; the caller shows what the answer's identity covers.
    Listing,
}

/// Checks the caller on `access` for `target`; `acting` calls change something. Answers
/// the token's identity on the HTTP port (`None` on the read-only port).
pub(crate) fn admit(
    node: &NodeContext,
    req: &HttpRequest,
    access: Access,
    acting: bool,
    target: Target<'_>,
) -> Result<Option<Identity>, ApiError> {
    match (access, target) {
        (Access::Admin, Target::Node) => authorize(node, req, Action::Admin, None, "api"),
        (Access::Admin, Target::Stream(key)) => {
            authorize(node, req, Action::Admin, Some(key), "api")
        }
        (Access::Admin, Target::Listing) => {
            let token = request_token(req);
            node.auth.load().check_role(token.as_deref(), Action::Admin).map_err(|error| {
                node.metrics.auth_failure("api", error.code());
                let status = if error.is_forbidden() {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::UNAUTHORIZED
                };
                ApiError::new(status, error.code(), error.to_string())
            })
        }
        (Access::ReadOnly, _) if !acting => Ok(None),
        (Access::ReadOnly, _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "this listener serves reads only; use the admin API on the HTTP port",
        )),
    }
}

/// The answer for a by-name call to `key`'s owner that failed.
/// Sends `msg` to the stream `key`'s owner, whichever node it is; its failure as an API
/// error.
async fn at_owner<M>(node: &NodeContext, key: &StreamKey, msg: M) -> Result<M::Result, ApiError>
where
    M: RemoteMessage,
    StreamActor: Handler<M>,
{
    node.stream_routes
        .get(&key.to_string())
        .send(msg)
        .await
        .map_err(|error| owner_error(key, error))
}

fn owner_error(key: &StreamKey, error: RefError) -> ApiError {
    let message = format!("stream {key}: {error}");
    match error {
        RefError::NotFound | RefError::Stopped => ApiError::not_found("stream_not_found", message),
        RefError::NotOwner => ApiError::new(StatusCode::CONFLICT, "owner_changed", message),
        RefError::Unreachable { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "owner_unreachable", message)
        }
        RefError::Timeout { .. } => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message),
        RefError::Refused(_) => ApiError::new(StatusCode::BAD_GATEWAY, "owner_refused", message),
    }
}

/// A stream and its statistics; without the publisher's address and user id on the
/// read-only port.
fn describe(key: &StreamKey, entry: &StreamEntry, access: Access) -> serde_json::Value {
    describe_stats(key, entry.stats.snapshot(), access)
}

fn describe_stats(key: &StreamKey, mut stats: StatsSnapshot, access: Access) -> serde_json::Value {
    if access == Access::ReadOnly {
        stats.publisher_peer = None;
        stats.publisher_user = None;
    }
    json!({ "name": key.to_string(), "stats": stats })
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(OPENAPI)
}

/// `GET /api/v1/streams`
async fn list(
    node: web::Data<NodeContext>,
    access: web::Data<Access>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let identity = admit(&node, &req, **access, false, Target::Listing)?;
    let streams: Vec<_> = node
        .directory
        .entries()
        .iter()
        .filter(|(key, _)| identity.as_ref().is_none_or(|i| i.covers(key)))
        .map(|(key, entry)| describe(key, entry, **access))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "streams": streams })))
}

/// `GET /api/v1/nodes`: the live nodes as the registry knows them (this node alone
/// outside cluster mode).
async fn nodes(
    node: web::Data<NodeContext>,
    access: web::Data<Access>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admit(&node, &req, **access, false, Target::Node)?;
    let nodes = node.registry.nodes().await.map_err(|error| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable", error.to_string())
    })?;
    let nodes: Vec<_> = nodes
        .into_iter()
        .map(|info| {
            json!({
                "id": info.id.as_str(),
                "incarnation": info.incarnation,
                "addresses": info.addresses,
                "load": info.load,
                "draining": info.draining,
                "self": info.id == node.node_id,
            })
        })
        .collect();
    let relays: Vec<String> = node
        .cluster
        .as_ref()
        .map(|c| c.relays.streams().iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({
        "cluster": node.cluster.is_some(),
        "node": node.node_id.as_str(),
        "draining": node.is_draining(),
        "relays": relays,
        "nodes": nodes,
    })))
}

/// What a drain or resume answers: the node's state after it.
fn drain_state(node: &NodeContext) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "node": node.node_id.as_str(),
        "draining": node.is_draining(),
        "streams": node.directory.len(),
        "chat_rooms": node.chat.len(),
    }))
}

/// `POST /api/v1/node/drain`: stop taking publishers and chat members, hand off chat rooms,
/// answer `/readyz` with 503; live streams continue until they end.
async fn drain(
    node: web::Data<NodeContext>,
    access: web::Data<Access>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admit(&node, &req, **access, true, Target::Node)?;
    node.set_draining(true);
    Ok(drain_state(&node))
}

/// `POST /api/v1/node/resume`: take new publishers and chat members again.
async fn resume(
    node: web::Data<NodeContext>,
    access: web::Data<Access>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    admit(&node, &req, **access, true, Target::Node)?;
    node.set_draining(false);
    Ok(drain_state(&node))
}

/// `GET /api/v1/streams/{app}/{stream}`: the stream's statistics from its owner, whichever
/// node that is (on an edge, the origin's, not the relayed copy's).
async fn details(
    node: web::Data<NodeContext>,
    access: web::Data<Access>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (app, stream) = path.into_inner();
    let key = stream_key(&app, &stream)?;
    admit(&node, &req, **access, false, Target::Stream(&key))?;
    let stats = at_owner(&node, &key, GetStats).await?;
    Ok(HttpResponse::Ok().json(describe_stats(&key, stats, **access)))
}

/// The optional body of a kick.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KickBody {
    /// Told to the publisher and logged.
    reason: Option<String>,
}

/// Longest kick reason kept.
const MAX_REASON: usize = 200;
/// Largest kick body read.
const MAX_KICK_BODY: usize = 4096;

/// `POST /api/v1/streams/{app}/{stream}/kick`: ends the stream at its owner, whichever node
/// that is (on an edge: the origin's publisher, and every relay follows).
async fn kick(
    node: web::Data<NodeContext>,
    access: web::Data<Access>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Option<web::Json<KickBody>>,
) -> Result<HttpResponse, ApiError> {
    let (app, stream) = path.into_inner();
    let key = stream_key(&app, &stream)?;
    admit(&node, &req, **access, true, Target::Stream(&key))?;
    let mut reason =
        body.and_then(|b| b.into_inner().reason).unwrap_or_else(|| "kicked by an admin".into());
    if let Some((cut, _)) = reason.char_indices().nth(MAX_REASON) {
        reason.truncate(cut);
    }
    tracing::info!(stream = %key, %reason, "admin API: kick");
    let kicked = at_owner(&node, &key, Kick { reason }).await?;
    Ok(HttpResponse::Ok().json(json!({ "name": key.to_string(), "kicked": kicked })))
}

/// The body of a request to start or stop a recording.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordingBody {
    /// Start (`true`) or stop recording.
    record: bool,
}

/// `GET /api/v1/streams/{app}/{stream}/recording`: the stream's recording, from the node
/// recording it; 404 `not_recording` when none is.
async fn recording(
    node: web::Data<NodeContext>,
    access: web::Data<Access>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (app, stream) = path.into_inner();
    let key = stream_key(&app, &stream)?;
    admit(&node, &req, **access, false, Target::Stream(&key))?;
    let status = match node.recorder_routes.get(&key.to_string()).send(GetRecording).await {
        Ok(status) => status,
        Err(RefError::NotFound | RefError::Stopped) => {
            return Err(ApiError::not_found(
                "not_recording",
                format!("stream {key} is not being recorded"),
            ))
        }
        Err(error) => return Err(owner_error(&key, error)),
    };
    Ok(HttpResponse::Ok().json(json!({
        "name": key.to_string(),
        "recording": !status.stopping,
        "node": status.node,
        "format": status.format,
        "since": status.since,
        "segments": status.segments,
        "bytes": status.bytes,
        "stopping": status.stopping,
    })))
}

/// `POST /api/v1/streams/{app}/{stream}/recording` with `{"record": true|false}`: starts
/// or stops recording the live stream at its owner, whichever node that is.
async fn set_recording(
    node: web::Data<NodeContext>,
    access: web::Data<Access>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<RecordingBody>,
) -> Result<HttpResponse, ApiError> {
    let (app, stream) = path.into_inner();
    let key = stream_key(&app, &stream)?;
    admit(&node, &req, **access, true, Target::Stream(&key))?;
    let on = body.into_inner().record;
    tracing::info!(stream = %key, record = on, "admin API: recording");
    let change = at_owner(&node, &key, RecorderOutput::request(on)).await?;
    let (recording, code) = match change {
        OutputChange::Started | OutputChange::AlreadyRunning => (true, None),
        OutputChange::Stopped | OutputChange::NotRunning => (false, None),
        OutputChange::Declined => (false, Some("recording_declined")),
        OutputChange::NoSuchOutput => (false, Some("recording_disabled")),
    };
    if let Some(code) = code {
        let message = if change == OutputChange::NoSuchOutput {
            format!("recording is not enabled on the node that owns {key} (recording.enabled)")
        } else {
            format!("{key} cannot be recorded now (a recording is stopping, or the recorder could not start; see the owner's log)")
        };
        return Err(ApiError::new(StatusCode::CONFLICT, code, message));
    }
    let change = match change {
        OutputChange::Started => "started",
        OutputChange::AlreadyRunning => "already_recording",
        OutputChange::Stopped => "stopped",
        _ => "not_recording",
    };
    Ok(HttpResponse::Ok().json(json!({
        "name": key.to_string(),
        "recording": recording,
        "change": change,
    })))
}
