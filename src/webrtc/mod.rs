//! WebRTC ingest (WHIP, RFC 9725) and playback (WHEP): a browser, OBS or GStreamer
//! publishes H.264, VP8, VP9 or AV1 (and Opus) with `POST /whip/{app}/{key}` on the HTTP
//! port, and the stream reaches every output that carries its codec like an RTMP publish;
//! a browser or any WHEP player watches any live stream (RTMP or WHIP) with
//! `POST /whep/{app}/{key}`: its video as it came, and its audio as Opus
//! (a WHIP publisher's passed through, an RTMP publisher's AAC transcoded once per stream
//! on each node that has WHEP viewers of it).
//!
//! The node is ICE-lite and every session's media shares one UDP port
//! (`webrtc.udp_addr`), or, for clients on networks without UDP, one TCP port
//! (`webrtc.tcp_addr`, ICE-TCP, off by default). The WebRTC protocols (ICE, DTLS-SRTP, RTP/RTCP) are webrtc-rs's
//! sans-IO core (`rtc`): its async wrapper (`webrtc`) binds a socket per peer connection,
//! so this module owns the socket and drives each `rtc` peer connection itself.
//!
//! # Layout
//! - [`offer`]: the first look at an offer (size, SDP, a codec we ingest), before anything
//!   is claimed.
//! - [`udp`]: the shared UDP socket: a task routes each datagram to its session (by STUN
//!   username, then by source address).
//! - [`udp_send`]: sessions' sends on that socket, batched: one GSO `sendmsg` (or one
//!   `sendmmsg`) per run of packets to one peer.
//! - [`tcp`]: the optional ICE-TCP port: RFC 4571 frames, each connection routed to its
//!   session by its first STUN request's username.
//! - [`transport`]: a session's ways back to its client (UDP or its TCP connections), so
//!   sessions do not care which a packet came by.
//! - [`ingest`]: one received track (H.264, VP8, VP9, AV1 or Opus RTP) → neutral frames
//!   (sans-IO); Opus is also transcoded to AAC there (`zenlive-transcode`), for every
//!   non-WebRTC output.
//! - [`rtp_frames`]: VP8, VP9 and AV1 RTP → whole frames (one assembler; [`av1_rtp`] reads
//!   AV1's aggregation headers).
//! - [`session`]: one publisher's peer connection: negotiation, then the task that feeds
//!   it datagrams and time and pushes its frames into the stream.
//! - [`whip`]: the HTTP handlers (`POST`, `DELETE`, `PATCH`, `OPTIONS`), through
//!   [`crate::admission`] like every publisher.
//! - [`resource`]: what WHIP's and WHEP's HTTP sides share (the offer's type and size,
//!   the session's resource: `201`, `DELETE`, `PATCH`, CORS).
//! - [`trickle`]: trickle ICE fragments (`PATCH`) and the session's `ETag` (sans-IO).
//! - [`restart`]: ICE restarts (`PATCH` with new credentials), applied by the session's
//!   task.
//! - [`playback`]: one viewer's frames → RTP packets, RTCP feedback → keyframe requests
//!   (sans-IO; the payloads come from [`packetize`]).
//! - [`packetize`]: a frame → its RTP payloads, once per node for every viewer (H.264,
//!   VP8, VP9, AV1).
//! - [`whep_session`]: one viewer's peer connection: negotiation, then the task that
//!   watches the stream (a viewer session like any player's) and sends its RTP.
//! - [`audio_feed`]: AAC → Opus for WHEP viewers: one transcoder per stream per node,
//!   running while a WHEP viewer of the stream needs it, its Opus shared by all of them.
//! - [`dtls_crypto`]: the peer connections' cryptography: ring, and ECDSA P-224
//!   verification (FFmpeg 8's WHIP certificates).
//! - [`feedback`]: the `rtc` interceptor that lets viewers' PLI/FIR/NACK reach the session.
//! - [`whep`]: the WHEP HTTP handlers, through [`crate::admission`] like every viewer.
//! - [`stats`]: the Prometheus series.
//! - [`quality`]: per-stream round-trip time and packet loss (RTCP receiver reports, `rtc`'s
//!   receive statistics).
//! - [`transcode`]: the audio transcoders' Prometheus series.
//!
//! The path of a WHIP frame: UDP socket → [`udp::run`] → the session's queue →
//! `rtc` (SRTP) → [`ingest::TrackIngest`] → [`StreamPublisher`](zenlive_actors::StreamPublisher)
//! → the stream's outputs and viewers. The path of a frame to a WHEP viewer: the stream's
//! broadcast ring → the viewer's [`ViewerSession`](zenlive_actors::ViewerSession) →
//! [`whep_session::WhepSink`] (bounded) → [`playback::Playback`] → `rtc` (SRTP) → the
//! shared UDP socket ([`udp_send`]); an RTMP stream's AAC: the ring → the stream's
//! [`audio_feed::FeedSink`] (one per stream on the node) → Opus into each WHEP viewer's
//! same bounded queue → [`playback::Playback`].

pub mod audio_feed;
pub mod av1_rtp;
pub mod dtls_crypto;
pub mod feedback;
pub mod ingest;
pub mod offer;
pub mod packetize;
pub mod playback;
pub mod quality;
pub mod resource;
pub mod restart;
pub mod rtp_frames;
pub mod session;
pub mod stats;
pub mod tcp;
pub mod transcode;
pub mod transport;
pub mod trickle;
pub mod udp;
pub mod udp_send;
pub mod whep;
pub mod whep_session;
pub mod whip;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zenlive_actors::Protocol;

use crate::config::WebRtcConfig;
use crate::start_error::BindError;
use stats::WebRtcStats;
use transport::Candidates;
use trickle::IceIdentity;
use udp::{Control, Datagram, SessionId};

/// Registrations queued for the UDP task (it drains them before every read).
const CONTROL_QUEUE: usize = 1024;

/// What the node keeps of an open session outside its task.
struct OpenSession {
    protocol: Protocol,
    /// Ends the session.
    cancel: CancellationToken,
    ice: IceIdentity,
    /// Reaches the session's task with ICE restarts.
    restarts: mpsc::Sender<restart::RestartRequest>,
}

/// The node's WebRTC service: the UDP socket, the sessions, the settings. One per node,
/// in [`NodeContext::webrtc`](crate::context::NodeContext::webrtc) when `[webrtc]` is on.
pub struct WebRtc {
    config: WebRtcConfig,
    /// Sessions send from this socket, in batches (non-blocking: a full send buffer drops
    /// the packet, as the network would); the UDP task reads from a clone of it.
    sender: udp_send::UdpSender,
    local_addr: SocketAddr,
    public: Vec<SocketAddr>,
    control: mpsc::Sender<Control>,
    reader: Mutex<Option<mpsc::Receiver<Control>>>,
    /// The ICE-TCP listener until [`WebRtc::start`] takes it, and its address.
    tcp_listener: Mutex<Option<std::net::TcpListener>>,
    tcp_addr: Option<SocketAddr>,
    /// Which session an ICE-TCP connection's first frame names.
    tcp_routes: Arc<tcp::Routes>,
    /// Open sessions, for `DELETE` and the session cap. A plain mutex: held for a map
    /// operation on `POST`, `DELETE` and a session's end, never on the media path and
    /// never across an await.
    sessions: Mutex<HashMap<SessionId, OpenSession>>,
    /// Streams whose B-frames WHEP reported (once per stream name).
    bframe_streams: whep_session::BframeNotices,
    /// The Prometheus series.
    pub stats: Arc<WebRtcStats>,
    /// The audio transcoders' series (`zenlive_transcode_*`).
    pub transcode: Arc<transcode::TranscodeStats>,
    /// Per-stream round-trip time and packet loss.
    pub quality: Arc<quality::StreamQuality>,
    /// AAC → Opus for WHEP viewers, one feed per stream.
    pub feeds: Arc<audio_feed::OpusFeeds>,
}

impl WebRtc {
    /// Binds the UDP port of `config`; WHEP viewers' audio feeds will run on `feeds`.
    /// Nothing runs until [`WebRtc::start`].
    pub fn bind(
        config: &WebRtcConfig,
        feeds: audio_feed::FeedHost,
    ) -> Result<Self, crate::start_error::StartError> {
        let addr = config.udp_addr;
        let error = |cause| BindError { what: "webrtc", addr, cause };
        let socket = std::net::UdpSocket::bind(addr).map_err(error)?;
        socket.set_nonblocking(true).map_err(error)?;
        let local_addr = socket.local_addr().map_err(error)?;
        let public = config.public_socket_addrs()?;
        let (tcp_listener, tcp_addr) = match config.tcp_socket_addr()? {
            Some(addr) => {
                let error = |cause| BindError { what: "webrtc tcp", addr, cause };
                let listener = std::net::TcpListener::bind(addr).map_err(error)?;
                listener.set_nonblocking(true).map_err(error)?;
                let bound = listener.local_addr().map_err(error)?;
                (Some(listener), Some(bound))
            }
            None => (None, None),
        };
        let (control, reader) = mpsc::channel(CONTROL_QUEUE);
        let stats = Arc::new(WebRtcStats::new());
        let transcode = Arc::new(transcode::TranscodeStats::new());
        let feeds = Arc::new(audio_feed::OpusFeeds::new(
            Box::new(feeds),
            transcode.aac_to_opus.clone(),
            Arc::clone(&stats),
        ));
        Ok(Self {
            config: config.clone(),
            sender: udp_send::UdpSender::new(Arc::new(socket), config.udp_send),
            local_addr,
            public,
            control,
            reader: Mutex::new(Some(reader)),
            tcp_listener: Mutex::new(tcp_listener),
            tcp_addr,
            tcp_routes: Default::default(),
            sessions: Mutex::new(HashMap::new()),
            bframe_streams: Default::default(),
            stats,
            transcode,
            quality: Arc::new(quality::StreamQuality::new()),
            feeds,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound ICE-TCP address, when `webrtc.tcp_addr` is set.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The settings.
    pub fn config(&self) -> &WebRtcConfig {
        &self.config
    }

    /// Starts the UDP task (and the ICE-TCP listener) on the current arbiter; it ends when
    /// `shutdown` is cancelled. A second call does nothing.
    pub fn start(&self, shutdown: CancellationToken) -> Option<actix_rt::task::JoinHandle<()>> {
        let reader = self.reader.lock().take()?;
        let tcp = self.tcp_listener.lock().take().and_then(|listener| {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => Some(listener),
                Err(error) => {
                    tracing::error!(%error, "webrtc: the TCP listener cannot be used; ICE-TCP is off");
                    None
                }
            }
        });
        if let Some(listener) = tcp {
            actix_rt::spawn(tcp::run(
                listener,
                Arc::clone(&self.tcp_routes),
                Arc::clone(&self.stats),
                self.config.max_sessions,
                self.config.idle_timeout,
                shutdown.clone(),
            ));
        }
        let socket =
            match self.sender.socket().try_clone().and_then(tokio::net::UdpSocket::from_std) {
                Ok(socket) => socket,
                Err(error) => {
                    tracing::error!(%error, "webrtc: the UDP socket cannot be read; WHIP is off");
                    return None;
                }
            };
        let stats = Arc::clone(&self.stats);
        Some(actix_rt::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = udp::run(socket, reader, stats) => {}
            }
        }))
    }

    /// The addresses to advertise as host candidates: `public_addrs`, else the UDP
    /// address when it is not a wildcard, else `request_local` (the address the client's
    /// HTTP request reached) with the UDP port; none for UDP when `webrtc.udp_candidates`
    /// is off. With ICE-TCP, the same addresses' IPs with the TCP port, as passive TCP
    /// candidates.
    pub fn candidates(&self, request_local: Option<IpAddr>) -> Candidates {
        let udp = match self.config.udp_candidates {
            true => candidates(&self.public, self.local_addr, request_local),
            false => Vec::new(),
        };
        let tcp = self
            .tcp_addr
            .map(|bound| {
                let public: Vec<SocketAddr> =
                    self.public.iter().map(|p| SocketAddr::new(p.ip(), bound.port())).collect();
                candidates(&public, bound, request_local)
            })
            .unwrap_or_default();
        Candidates { udp, tcp }
    }

    /// Routes the datagrams (UDP) and connections (ICE-TCP) that name `ufrag` to session
    /// `id`'s `queue`; false when the UDP task is gone (shutdown).
    async fn route(&self, id: &SessionId, ufrag: String, queue: mpsc::Sender<Datagram>) -> bool {
        if self.tcp_addr.is_some() {
            self.tcp_routes.register(Arc::clone(id), ufrag.clone(), queue.clone());
        }
        let control = Control::Register { session: Arc::clone(id), ufrag, queue };
        self.control.send(control).await.is_ok()
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Adds a session of `protocol` unless `max_sessions` are open; its token ends it.
    fn open_session(
        &self,
        id: SessionId,
        protocol: Protocol,
        cancel: CancellationToken,
        ice: IceIdentity,
        restarts: mpsc::Sender<restart::RestartRequest>,
    ) -> bool {
        let mut sessions = self.sessions.lock();
        if sessions.len() >= self.config.max_sessions {
            return false;
        }
        sessions.insert(id, OpenSession { protocol, cancel, ice, restarts });
        true
    }

    /// The ICE session of the `protocol` session `id`, if it is open.
    pub fn ice_identity(&self, protocol: Protocol, id: &str) -> Option<IceIdentity> {
        let sessions = self.sessions.lock();
        sessions.get(id).filter(|open| open.protocol == protocol).map(|open| open.ice.clone())
    }

    /// Where the `protocol` session `id` takes ICE restarts.
    fn restart_sender(
        &self,
        protocol: Protocol,
        id: &str,
    ) -> Option<mpsc::Sender<restart::RestartRequest>> {
        let sessions = self.sessions.lock();
        sessions.get(id).filter(|open| open.protocol == protocol).map(|open| open.restarts.clone())
    }

    /// The session `id` restarted its ICE session as `ice`.
    fn restarted(&self, id: &str, ice: &IceIdentity) {
        if let Some(open) = self.sessions.lock().get_mut(id) {
            open.ice = ice.clone();
        }
    }

    /// Ends the `protocol` session `id` (a `DELETE` on its resource); false if there is
    /// none (a WHIP session's id on the WHEP path is none).
    pub fn close_session(&self, protocol: Protocol, id: &str) -> bool {
        match self.sessions.lock().get(id) {
            Some(open) if open.protocol == protocol => {
                open.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Forgets a session that ended.
    fn forget_session(&self, id: &SessionId) {
        self.sessions.lock().remove(id);
        self.tcp_routes.unregister(id);
        // The UDP task may be gone at shutdown; then there is nothing to unregister from.
        let _ = self.control.try_send(Control::Unregister { session: Arc::clone(id) });
    }
}

fn candidates(
    public: &[SocketAddr],
    bound: SocketAddr,
    request_local: Option<IpAddr>,
) -> Vec<SocketAddr> {
    if !public.is_empty() {
        return public.to_vec();
    }
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    request_local.map(|ip| vec![SocketAddr::new(ip, bound.port())]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_prefer_configured_then_bound_then_the_requests_address() {
        let public: SocketAddr = "203.0.113.5:8189".parse().expect("literal");
        let bound: SocketAddr = "127.0.0.1:4000".parse().expect("literal");
        let wildcard: SocketAddr = "0.0.0.0:4000".parse().expect("literal");
        let local: IpAddr = "192.0.2.9".parse().expect("literal");
        assert_eq!(candidates(&[public], bound, Some(local)), [public]);
        assert_eq!(candidates(&[], bound, Some(local)), [bound]);
        assert_eq!(candidates(&[], wildcard, Some(local)), [SocketAddr::new(local, 4000)]);
        assert!(candidates(&[], wildcard, None).is_empty());
    }
}
