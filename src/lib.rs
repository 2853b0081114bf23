//! ZenLive: a live-streaming runtime. RTMP ingest from OBS and FFmpeg; delivery over HLS,
//! RTMP play and HTTP-FLV; every stream and viewer a supervised actix actor.
//!
//! # Layout
//! - [`node`]: the SDK facade and composition root ([`NodeBuilder`], [`Node`]: builds, starts,
//!   reloads and shuts a node down); [`context`]: what every front-end shares
//!   ([`context::NodeContext`]).
//! - [`refs`]: typed references to named actors wherever they run; [`app_actors`]: the
//!   application's own actor kinds, started by name and supervised.
//! - [`config`]: the configuration (TOML, environment, flags).
//! - [`api`]: the admin API (`/api/v1`).
//! - [`chat_ws`]: chat rooms over WebSocket (the one `actix-web-actors` module).
//! - [`cluster`]: cluster mode: the Redis registry, links between nodes, edge relays.
//! - [`admission`]: the one way a publisher or viewer gets in, for every protocol.
//! - [`auth`]: JWT verification and decisions, the same for every protocol.
//! - [`rtmp`]: RTMP ingest and play.
//! - [`webrtc`]: WHIP ingest and WHEP playback (WebRTC): one UDP port for every session.
//! - [`http`], [`hls`], [`http_flv`]: the HTTP front-end; [`tls`]: the same over HTTPS.
//! - [`ui`]: the web pages (home, watch, console) built into the binary.
//! - [`hooks`], [`webhooks`]: the application's deciders and notifications; events as
//!   signed HTTP POSTs.
//! - [`metrics`]: Prometheus metrics, read from the shared statistics at scrape time.
//! - [`refusals`]: clients refused for going over a limit, counted and logged (throttled).
//! - `server`: binds the listeners; `grid`: ticks shared by connections (merged reads and
//!   paced writes); `ws_frames`: WebSocket input held to its frame limit as it arrives.
//!
//! Below this crate: `zenlive-actors` (streams, viewers, supervision), `zenlive-media`
//! (sans-IO parsers and muxers), `zenlive-registry` (the registry). See `ARCHITECTURE.md`.

pub mod admission;
pub mod api;
pub mod app_actors;
pub mod auth;
pub mod chat_ws;
pub mod cluster;
pub mod config;
pub mod context;
pub mod flv_out;
mod grid;
pub mod hls;
pub mod hooks;
pub mod http;
pub mod http_flv;
pub mod metrics;
pub mod node;
pub mod recording;
pub mod refs;
pub mod refusals;
pub mod rtmp;
mod server;
mod start_error;
pub mod tls;
pub mod ui;
pub mod webhooks;
pub mod webrtc;
mod ws_frames;

pub use config::Config;
pub use hooks::{Decision, PlayRequest, PublishRequest, StreamOptions, ViewerEvent};
pub use node::{Node, NodeBuilder, Reloaded, StartError, StreamHandle};
pub use recording::events::{RecordingEvent, SegmentLocation};
pub use zenlive_actors::events::NodeCounters;
pub use zenlive_actors::{
    Codec, CodecConfig, FrameKind, FrameSink, MediaFrame, MediaTime, Offer, Output, OutputChange,
    OutputChoices, OutputStream, RejectReason, StatsSnapshot, StreamActor, StreamEvent, StreamInfo,
    StreamKey,
};
pub use zenlive_registry::{NodeId, Registry};

/// What an application uses of chat: the decider's request and answer, delivered messages,
/// and the room actor with the messages it takes from application code
/// ([`Node::chat_room`]).
pub mod chat {
    pub use zenlive_actors::chat::{
        ChatDecision, ChatMessageRequest, ChatRoom, DeliveredMessage, Moderate, SystemMessage,
    };
}
