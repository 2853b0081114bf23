//! HLS: the packager of every live stream ([`packager`]), where its finished segments are
//! kept ([`store`]: the heap, or files in a spool directory, [`spool`]), and the HTTP
//! handlers that serve its playlists and segments ([`serve`]); beside them Low-Latency HLS,
//! its packager ([`ll`]) and handlers ([`ll_serve`]).

mod grace;
pub mod ll;
pub mod ll_serve;
pub mod packager;
pub mod serve;
pub mod spool;
pub mod store;
