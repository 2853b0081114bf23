//! RTMP: ingest from OBS/FFmpeg and play to RTMP players.
//!
//! A connection is two layers: [`session`], its protocol without IO (bytes in, actions
//! out: writes, frames, admission questions, closing), and `connection`, the socket loop
//! that feeds it and carries the actions out.
//!
//! - [`server`]: the accept loop, spreading connections over the arbiter pool.
//! - `connection`: one connection's socket loop: reads, paced writes, timers, admission,
//!   the publisher's and the player's handles.
//! - [`session`]: one connection's protocol (handshake, rml_rtmp's `ServerSession`,
//!   acknowledgements, roles, the `onStatus` of refusals), sans-IO.
//! - [`reader`]: incoming chunks to whole messages, within limits.
//! - [`budget`]: the node-wide bound on partially received messages.
//! - [`chunks`]: media chunk encoding for players, shared across players.
//! - `read_merge`: fewer, larger reads from publishers (`SO_RCVLOWAT`).
//! - [`sink`]: a player's queue.
//! - `transport`: TCP or TLS (RTMPS) under a connection.
//! - [`metadata`]: `onMetaData` as viewers receive it.

pub mod budget;
pub mod chunks;
mod connection;
pub mod metadata;
mod read_merge;
pub mod reader;
pub mod server;
pub mod session;
pub mod sink;
mod transport;
