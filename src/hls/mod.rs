//! HLS: the packager of every live stream ([`packager`]) and the HTTP handlers that serve
//! its playlists and segments ([`serve`]).

pub mod packager;
pub mod serve;
