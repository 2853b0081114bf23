//! Chat over WebSocket: `GET /chat/{app}/{key}` upgrades to a WebSocket whose session
//! actor is a member of the room `{app}/{key}` ([`zenlive_actors::chat::ChatRoom`]).
//!
//! This is the only module that uses `actix-web-actors` (marked deprecated upstream, still
//! working with actix-web 4). The session parses text frames into commands, relays the
//! room's frames, and keeps the connection honest: a frame whose header declares more than
//! `chat.max_frame` closes it (1009) before its payload is buffered, and at most about two
//! frames of input wait to be decoded (`ws_frames`); anything that is not a JSON
//! command gets an `error` event, a ping goes out every 10 s and a peer silent for 30 s is
//! dropped. Auth comes from the shared module: `?token=` (browsers cannot set headers on a
//! WebSocket) or Bearer.
//!
//! Nothing is started before the request is checked: it must be a WebSocket upgrade with
//! a valid token (when one is needed) on a node that is not draining. A room that is not
//! open yet is opened only for a live stream or as `chat.rooms_without_stream` allows, and
//! counts against its opener's address (`chat.max_rooms_per_address`) until it closes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::task_tracker::TaskTrackerToken;
use zenlive_actors::chat::{next_member_id, ChatRoom, Command, Join, Leave};
use zenlive_actors::chat_core::MemberId;
use zenlive_actors::chat_protocol::{ChatUser, ClientCommand, ServerEvent};
use zenlive_actors::events::{ActorType, Gauge};
use zenlive_actors::StreamKey;
use zenlive_registry::{ActorKey, ActorKind};

use crate::auth::Action;
use crate::config::RoomsWithoutStream;
use crate::context::NodeContext;
use crate::http::common::{authorize, stream_key, ApiError};
use crate::refusals::Limit;
use crate::ws_frames::{FrameGate, GatedPayload};

/// How often the session pings.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// How long a peer may stay silent (no pong, no frame) before it is dropped.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// One member's connection. See the module docs.
struct ChatSession {
    room: Addr<ChatRoom>,
    /// Lets more input through as frames are handled.
    gate: FrameGate,
    peer: Option<IpAddr>,
    node: web::Data<NodeContext>,
    room_name: String,
    member: MemberId,
    user: Option<ChatUser>,
    queue: usize,
    last_heard: Instant,
    /// Set once the room accepted the join (before that, a closed queue means a refusal
    /// whose reason is on its way).
    joined: bool,
    /// Keeps a shutdown waiting until this connection has closed (the node's completion
    /// signal, as for RTMP connections).
    _task: TaskTrackerToken,
    _alive: Gauge,
}

impl ChatSession {
    fn error(ctx: &mut ws::WebsocketContext<Self>, code: &'static str, reason: String) {
        ctx.text(ServerEvent::Error { code, reason, client_id: None }.to_json());
    }

    fn close(ctx: &mut ws::WebsocketContext<Self>, code: ws::CloseCode, reason: &str) {
        ctx.close(Some(ws::CloseReason { code, description: Some(reason.to_owned()) }));
        ctx.stop();
    }
}

impl Actor for ChatSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (tx, rx) = mpsc::channel(self.queue.max(1));
        ctx.add_stream(ReceiverStream::new(rx));
        let join = Join { member: self.member, user: self.user.clone(), outbound: tx };
        ctx.spawn(self.room.send(join).into_actor(self).map(|joined, act, ctx| match joined {
            Ok(Ok(())) => act.joined = true,
            Ok(Err(error)) => {
                tracing::info!(room = %act.room_name, reason = error.code(), "chat join refused");
                Self::error(ctx, error.code(), error.to_string());
                Self::close(ctx, ws::CloseCode::Policy, error.code());
            }
            Err(_) => Self::close(ctx, ws::CloseCode::Again, "room restarting; reconnect"),
        }));
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, ctx| {
            if act.last_heard.elapsed() > PEER_TIMEOUT {
                tracing::debug!(room = %act.room_name, member = act.member, "chat peer timed out");
                Self::close(ctx, ws::CloseCode::Away, "timeout");
                return;
            }
            ctx.ping(b"");
        });
        // A shutdown closes the connection with a reason a client can act on (1012: come
        // back, to this node once it restarted or to another), not with a dropped socket.
        let shutdown = self.node.shutdown.clone();
        ctx.spawn(async move { shutdown.cancelled_owned().await }.into_actor(self).map(
            |(), _act, ctx| {
                Self::close(ctx, ws::CloseCode::Restart, "node shutting down; reconnect")
            },
        ));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.room.do_send(Leave { member: self.member });
    }
}

/// Frames from the room.
impl StreamHandler<Arc<str>> for ChatSession {
    fn handle(&mut self, frame: Arc<str>, ctx: &mut Self::Context) {
        ctx.text(&*frame);
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if !self.joined {
            return; // a refused join: its reply closes the connection with the reason
        }
        // The room closed our queue. It stopped (handed off by a draining node, or moved):
        // 1012, reconnect. Or it let us go (banned, or fell behind): 1008.
        if self.node.is_draining() || !self.room.connected() {
            Self::close(ctx, ws::CloseCode::Restart, "the room moved; reconnect");
        } else {
            Self::close(ctx, ws::CloseCode::Policy, "disconnected by the room");
        }
    }
}

/// Frames from the peer.
impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for ChatSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        self.gate.frame_handled();
        let msg = match msg {
            Ok(msg) => msg,
            Err(error) => {
                if let Some(oversized) = self.gate.oversized() {
                    let reason = format!("{oversized} (chat.max_frame)");
                    let detail = format_args!("chat {}: {reason}", self.room_name);
                    self.node.refusals.refuse(self.peer, Limit::ChatFrame, detail);
                    Self::close(ctx, ws::CloseCode::Size, &reason);
                    return;
                }
                tracing::info!(room = %self.room_name, %error, "chat protocol error; closing");
                let code = match error {
                    ws::ProtocolError::Overflow => ws::CloseCode::Size,
                    _ => ws::CloseCode::Protocol,
                };
                Self::close(ctx, code, &error.to_string());
                return;
            }
        };
        match msg {
            ws::Message::Text(text) => match serde_json::from_str::<ClientCommand>(&text) {
                Ok(command) => {
                    let command = Command { member: self.member, command };
                    if self.room.try_send(command).is_err() {
                        Self::error(ctx, "busy", "the room is busy; try again".into());
                    }
                }
                Err(error) => Self::error(ctx, "invalid", format!("not a chat command: {error}")),
            },
            ws::Message::Binary(_) => {
                Self::error(ctx, "invalid", "text frames with JSON only".into());
            }
            ws::Message::Ping(bytes) => ctx.pong(&bytes),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Continuation(_) => {
                Self::close(ctx, ws::CloseCode::Unsupported, "fragmented frames are not accepted");
            }
            ws::Message::Close(_) => ctx.stop(),
        }
    }
}

/// `GET /chat/{app}/{key}`
pub async fn join(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let live = node.live();
    let config = &live.chat;
    if !config.enabled {
        return Err(ApiError::not_found("chat_disabled", "chat is disabled on this node").into());
    }
    let (app, name) = path.into_inner();
    let key = stream_key(&app, &name)?;
    if let Err(error) = ws::handshake(&req) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "websocket_required",
            format!("chat is a WebSocket: {error}"),
        )
        .into());
    }
    let identity = authorize(&node, &req, Action::Play, Some(&key), "chat")?;
    if identity.is_none() && !config.anonymous_read {
        let error = crate::auth::AuthError::Missing;
        node.metrics.auth_failure("chat", error.code());
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            error.code(),
            "a token is required to join chat",
        )
        .into());
    }
    if node.is_draining() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is draining; connect to another node",
        )
        .into());
    }
    let peer = req.peer_addr().map(|p| p.ip());
    let room_name = key.to_string();
    let room = match node.chat.get(&room_name) {
        Some(room) => room,
        None => open_room(&node, &key, peer, identity.is_some()).await?,
    };
    let user = identity.map(|i| ChatUser {
        id: i.user,
        name: i.name.unwrap_or_default(),
        roles: i.roles.iter().map(|r| r.as_str().to_owned()).collect(),
    });
    let gate = FrameGate::default();
    let gated = GatedPayload::new(payload, config.max_frame, &gate);
    let session = ChatSession {
        room,
        gate,
        peer,
        node: node.clone(),
        room_name,
        member: next_member_id(),
        user,
        queue: config.member_queue,
        last_heard: Instant::now(),
        joined: false,
        _task: node.tasks.token(),
        _alive: node.counters.actor(ActorType::ChatMember),
    };
    ws::WsResponseBuilder::new(session, &req, gated).frame_size(config.max_frame).start()
}

/// Opens the room of `key`, which is not open on this node: for a live stream, or as
/// `chat.rooms_without_stream` allows and within the opener's `chat.max_rooms_per_address`;
/// always within `chat.max_rooms`.
async fn open_room(
    node: &NodeContext,
    key: &StreamKey,
    peer: Option<IpAddr>,
    signed_in: bool,
) -> Result<Addr<ChatRoom>, ApiError> {
    let live = node.live();
    let config = &live.chat;
    let allowed = match config.rooms_without_stream {
        RoomsWithoutStream::Anyone => true,
        RoomsWithoutStream::SignedIn => signed_in,
        RoomsWithoutStream::None => false,
    };
    let live = live_anywhere(node, key).await;
    if !allowed && !live {
        let reason = format!("the chat room of {key} opens when the stream goes live");
        node.refusals.refuse(peer, Limit::ChatRoomNotLive, &reason);
        return Err(ApiError::new(StatusCode::NOT_FOUND, "room_not_open", reason));
    }
    // Rooms of live streams are as many as the streams; the others count against the
    // address that opened them.
    let opener = match peer.filter(|_| !live) {
        Some(ip) => Some(node.chat_openers.take(ip).ok_or_else(|| {
            let reason = format!(
                "this address has opened {} chat rooms that are still open \
                 (chat.max_rooms_per_address)",
                config.max_rooms_per_address
            );
            node.refusals.refuse(peer, Limit::ChatRoomsPerAddress, &reason);
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_rooms_from_address", reason)
        })?),
        None => None,
    };
    let arbiter = node.pool.next();
    node.chat.get_or_start_within(&key.to_string(), &arbiter, config.max_rooms, opener).ok_or_else(
        || {
            let reason = "this node hosts as many chat rooms as it may (chat.max_rooms)";
            node.refusals.refuse(peer, Limit::ChatRooms, reason);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_rooms", reason)
        },
    )
}

/// Whether the stream `key` is live, or its chat room open, on any node of the cluster (on
/// a single node: whether the stream is live here).
async fn live_anywhere(node: &NodeContext, key: &StreamKey) -> bool {
    if node.directory.get(key).is_some() {
        return true;
    }
    if node.cluster.is_none() {
        return false;
    }
    for kind in [ActorKind::Stream, ActorKind::ChatRoom] {
        let actor = ActorKey::new(kind, key.to_string());
        if matches!(node.registry.lookup(&actor).await, Ok(Some(_))) {
            return true;
        }
    }
    false
}
