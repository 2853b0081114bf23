//! RTMP: ingest from OBS/FFmpeg and play to RTMP players.
//!
//! - [`server`]: the accept loop, spreading connections over the arbiter pool.
//! - `connection`: one connection around rml_rtmp's `ServerSession`.
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
