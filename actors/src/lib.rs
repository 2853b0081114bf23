//! ZenLive's actors: one live stream, one viewer, and the supervisor that keeps them alive.
//!
//! # Where it sits
//! `src/` (protocol shells) → this crate → `zenlive-registry` (registry) and `zenlive-media`
//! (frames). Protocol code lives above; an actor here sees [`MediaFrame`]s and bytes that a
//! protocol-supplied encoder produced, never sockets.
//!
//! # The path of a frame
//! A publisher's connection pushes each frame through its stream's [`stream::Ingest`]
//! (shared with the [`StreamActor`], which keeps the stream's life but no longer sees every
//! frame): [`StreamCore`] caches what a late joiner needs (metadata, sequence headers, the
//! current GOP) and the frame goes into a bounded broadcast ring, which never blocks the
//! publisher. Every [`ViewerSession`] reads the ring, asks its [`ViewerCore`] whether to
//! deliver, skip ahead to the next keyframe (after falling behind) or give up, and hands the
//! frame's shared encoding to its connection through a bounded queue.
//!
//! # Layout
//! In dependency order, bottom to top: a module imports only modules listed before it
//! (the crate root only declares and re-exports them).
//! - [`key`]: [`StreamKey`], a stream's name whatever protocol brought it.
//! - [`protocol`]: [`Protocol`], which protocol a publisher or viewer uses (a label).
//! - [`remote`]: [`remote::RemoteMessage`], a message that may cross nodes (and the table of
//!   those that do), and [`remote::NamedActor`], an actor found by name.
//! - [`output_request`]: outputs asked for by name per stream (choices, changes).
//! - [`faults`]: panics a test can arm (feature `fault-injection`).
//! - [`events`]: what the node tells the application (stream start/end) and node counters.
//! - [`stats`]: per-stream statistics computed from the media, shared for metrics and the API.
//! - [`stream_core`] / [`stream`]: the stream's decisions, and the actor around them (with
//!   its frame path, [`stream::Ingest`]).
//! - [`directory`]: [`Directory`], the node's live streams by name, which the supervisor
//!   writes and everyone else reads.
//! - [`viewer_core`] / [`viewer`]: a viewer's delivery policy, and the actor around it.
//! - [`pool`]: one arbiter per core, so streams and viewers use every core.
//! - [`output`]: what every stream feeds (the HLS packager, an application's own), each in
//!   a supervised viewer session.
//! - [`lease`]: keeps a claimed name's registry lease renewed (streams, chat rooms), and
//!   the one rule for what a failed renewal means.
//! - [`supervisor`]: starts streams, claims their names, restarts crashed ones.
//! - [`publisher`]: a publisher connection's side of its stream.
//! - [`quota`]: per-address caps (connections not admitted yet, chat rooms opened).
//! - [`chat_protocol`] / [`chat_core`] / [`chat`]: the chat wire types, a room's
//!   decisions, and the rooms: [`chat::ChatRoom`] (its role as the room's home or a
//!   satellite in a cluster, decided once), [`chat::ChatRooms`] (by name), the hooks, and
//!   [`chat_remote`] (what a home and its satellites say; also `chat::remote`).

pub mod chat;
pub mod chat_core;
pub mod chat_protocol;
pub mod directory;
pub mod events;
pub mod faults;
pub mod key;
pub mod lease;
pub mod output;
pub mod output_request;
pub mod pool;
pub mod protocol;
pub mod publisher;
pub mod quota;
pub mod remote;
pub mod stats;
pub mod stream;
pub mod stream_core;
pub mod supervisor;
pub mod viewer;
pub mod viewer_core;

pub use chat::remote as chat_remote;
pub use directory::{Directory, StreamEntry};
pub use events::{EventSink, NodeCounters, RejectReason, StreamEvent};
pub use key::{InvalidStreamKey, StreamKey};
pub use output::{Output, OutputStream, Outputs};
pub use output_request::{OutputChange, OutputChoices};
pub use pool::ArbiterPool;
pub use protocol::Protocol;
pub use publisher::{PublishError, StreamPublisher};
pub use remote::{NamedActor, RemoteMessage};
pub use stats::{StatsSnapshot, StreamStats};
pub use stream::{StreamActor, StreamInfo};
pub use stream_core::StreamCore;
pub use supervisor::StreamSupervisor;
pub use viewer::{FrameSink, Offer, ViewerEnd, ViewerSession};
pub use viewer_core::ViewerCore;
pub use zenlive_media::{Codec, CodecConfig, EncodingSlot, FrameKind, MediaFrame, MediaTime};
