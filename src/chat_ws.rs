//! Chat over WebSocket: `GET /chat/{app}/{key}` upgrades to a WebSocket whose session
//! actor is a member of the room `{app}/{key}` ([`zenlive_actors::chat::ChatRoom`]).
//!
//! This is the only module that uses `actix-web-actors` (marked deprecated upstream, still
//! working with actix-web 4). The session parses text frames into commands, relays the
//! room's frames, and keeps the connection honest: frames over `chat.max_frame` close it
//! before they are buffered, anything that is not a JSON command gets an `error` event, a
//! ping goes out every 10 s and a peer silent for 30 s is dropped. Auth comes from the
//! shared module: `?token=` (browsers cannot set headers on a WebSocket) or Bearer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use zenlive_actors::chat::{next_member_id, ChatRoom, Command, Join, Leave};
use zenlive_actors::chat_core::MemberId;
use zenlive_actors::chat_protocol::{ChatUser, ClientCommand, ServerEvent};
use zenlive_actors::events::{ActorType, Gauge};

use crate::auth::Action;
use crate::http::{authorize, stream_key, ApiError};
use crate::node::NodeContext;

/// How often the session pings.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// How long a peer may stay silent (no pong, no frame) before it is dropped.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// One member's connection. See the module docs.
struct ChatSession {
    room: Addr<ChatRoom>,
    room_name: String,
    member: MemberId,
    user: Option<ChatUser>,
    queue: usize,
    last_heard: Instant,
    /// Set once the room accepted the join (before that, a closed queue means a refusal
    /// whose reason is on its way).
    joined: bool,
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
        // The room closed our queue: we fell behind, were banned, or the room stopped.
        Self::close(ctx, ws::CloseCode::Policy, "disconnected by the room");
    }
}

/// Frames from the peer.
impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for ChatSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let msg = match msg {
            Ok(msg) => msg,
            Err(error) => {
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
    let config = &node.config.chat;
    if !config.enabled {
        return Err(ApiError::not_found("chat_disabled", "chat is disabled on this node").into());
    }
    let (app, name) = path.into_inner();
    let key = stream_key(&app, &name)?;
    let identity = authorize(&node, &req, Action::Play, Some(&key), "chat")?;
    if identity.is_none() && !config.anonymous_read {
        let error = crate::auth::AuthError::Missing;
        node.metrics.auth_failure("chat", error.code());
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNAUTHORIZED,
            error.code(),
            "a token is required to join chat",
        )
        .into());
    }
    let user = identity.map(|i| ChatUser {
        id: i.user,
        name: i.name.unwrap_or_default(),
        roles: i.roles.iter().map(|r| r.as_str().to_owned()).collect(),
    });
    if node.is_draining() {
        return Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this node is draining; connect to another node",
        )
        .into());
    }
    let room_name = key.to_string();
    let Some(room) = node.chat.get_or_start_within(&room_name, &node.pool.next(), config.max_rooms)
    else {
        return Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_rooms",
            "this node hosts as many chat rooms as it may (chat.max_rooms)",
        )
        .into());
    };
    let session = ChatSession {
        room,
        room_name,
        member: next_member_id(),
        user,
        queue: config.member_queue,
        last_heard: Instant::now(),
        joined: false,
        _alive: node.counters.actor(ActorType::ChatMember),
    };
    ws::WsResponseBuilder::new(session, &req, payload).frame_size(config.max_frame).start()
}
