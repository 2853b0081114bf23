//! HLS: the packager of every live stream ([`packager`]), where its finished segments are
//! kept ([`store`]: the heap, or files in a spool directory, [`spool`]), and the HTTP
//! handlers that serve its playlists and segments ([`serve`]).

pub mod packager;
pub mod serve;
pub mod spool;
pub mod store;
