//! The WebRTC client side of the WHEP players and WHIP publishers: a sans-IO `rtc` peer
//! connection (the crate the node's WebRTC side is built on) driven from its own tokio UDP
//! socket. [`open`] makes the offer, POSTs it and applies the answer; [`Link::drive`] runs
//! ICE (the controlling full agent against the node's ICE-lite one), DTLS and SRTP, hands
//! received RTP to a [`Media`] and lets it send on its schedule; [`Link::close`] DELETEs
//! the session.
//!
//! Light on the CPU, since the clients share the machine with the server: no interceptors
//! (no NACKs, reports or congestion feedback are sent), one certificate for every client
//! (each peer connection would otherwise generate its own key pair), datagrams read in
//! batches into one buffer that is split per datagram (an allocation per few dozen
//! datagrams, not per datagram), and one timer per client reset only when its next
//! deadline changes.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters};
use rtc::sansio::Protocol as _;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;

/// Datagrams read in one go before the connection's output is handled.
const BATCH: usize = 64;

/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// The receive buffer that datagrams are split off: one allocation per this many bytes.
const RECEIVE_POOL: usize = 64 * 1024;

/// Each client's socket receive buffer: room for a joining viewer's burst (the cached GOP,
/// sent at once: about 2 s of video) while the process is busy with other clients.
const RECEIVE_BUFFER: usize = 1024 * 1024;

/// ICE connectivity checks are paced like a browser's (RFC 8445's Ta, 50 ms; `rtc`'s
/// default of 200 ms would add that much to every join, since the controlling agent
/// nominates the pair on its next check), and given up after [`CHECKS`] of them.
const CHECK_INTERVAL: Duration = Duration::from_millis(50);
const CHECKS: u16 = 200;

/// How long a POST, and the DELETE at the end, may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// What every client of a swarm shares.
pub struct Shared {
    http: reqwest::Client,
    certificate: RTCCertificate,
    token: Option<String>,
    /// The local address that reaches the node (each client binds a port on it).
    local_ip: IpAddr,
}

impl Shared {
    /// Clients of `url`'s node, with `token` as their bearer token.
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        let provider =
            rtc::crypto::default_provider().map_err(|e| anyhow!("no crypto provider: {e}"))?;
        let params = CertificateParams::new(vec!["zenlive-swarm".to_owned()])
            .map_err(|e| anyhow!("certificate parameters: {e}"))?;
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            rtc::crypto::SignatureScheme::EcdsaP256Sha256,
            params,
        )
        .map_err(|e| anyhow!("generating a certificate: {e}"))?;
        // A connection per request, as each browser has its own: the node answers an offer on
        // the HTTP worker its connection landed on, and runs the session there, so one
        // keep-alive connection for the swarm would put every session on one thread.
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(HTTP_TIMEOUT)
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Self { http, certificate, token, local_ip: local_ip_towards(url)? })
    }
}

/// The local IP address the system routes `url`'s host through (no packet is sent).
fn local_ip_towards(url: &str) -> Result<IpAddr> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("bad URL {url}"))?;
    let host = parsed.host_str().ok_or_else(|| anyhow!("no host in {url}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(80);
    let target = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))?;
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
        SocketAddr::V6(_) => "[::]:0".parse()?,
    };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}

/// A codec to register, with `pt` as its payload type.
pub fn codec(
    mime: &str,
    clock_rate: u32,
    channels: u16,
    fmtp: &str,
    pt: u8,
) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

/// The stack's errors as `anyhow`'s.
pub fn rtc_error(error: rtc::shared::error::Error) -> anyhow::Error {
    anyhow!("webrtc: {error}")
}

/// What a client does with its connection: hears RTP, and sends on a schedule.
pub trait Media {
    /// The connection is up (ICE and DTLS) at `now`.
    fn connected(&mut self, now: Instant);

    /// One RTP packet arrived at `now`.
    fn rtp(&mut self, now: Instant, packet: &Packet);

    /// When [`Media::send`] is next due, if ever.
    fn next_send(&self) -> Option<Instant> {
        None
    }

    /// Hands what is due at `now` to `peer` (its writes are sent after this returns).
    fn send(&mut self, _peer: &mut RTCPeerConnection, _now: Instant) {}
}

/// A client's connection, once its offer was answered.
pub struct Link {
    peer: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    /// When the offer was POSTed.
    pub started: Instant,
    /// The session's resource, to DELETE at the end.
    location: Option<reqwest::Url>,
}

/// Offers to `url` a peer connection with the codecs of `engine` and what `prepare` adds
/// (transceivers, tracks), and applies the answer.
pub async fn open(
    shared: &Shared,
    url: &str,
    engine: MediaEngine,
    prepare: impl FnOnce(&mut RTCPeerConnection) -> Result<()>,
) -> Result<Link> {
    let socket = bind(SocketAddr::new(shared.local_ip, 0))?;
    let local = socket.local_addr()?;
    let configuration =
        RTCConfigurationBuilder::new().with_certificates(vec![shared.certificate.clone()]).build();
    let settings = SettingEngineBuilder::new()
        .with_ice_connection_attempts(Some(CHECK_INTERVAL), Some(CHECKS))
        .build();
    let mut peer = RTCPeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_setting_engine(settings)
        .with_media_engine(engine)
        .build(Instant::now())
        .map_err(rtc_error)?;
    prepare(&mut peer)?;
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(rtc_error)?;
    let candidate = RTCIceCandidate::from(&candidate).to_json().map_err(rtc_error)?;
    peer.add_local_candidate(candidate).map_err(rtc_error)?;
    peer.add_local_candidate(RTCIceCandidateInit::default()).map_err(rtc_error)?;
    let offer = peer.create_offer(None).map_err(rtc_error)?;
    peer.set_local_description(Instant::now(), offer).map_err(rtc_error)?;
    let sdp = peer.local_description().map(|d| d.sdp).ok_or_else(|| anyhow!("no offer"))?;

    let started = Instant::now();
    let mut request =
        shared.http.post(url).header(reqwest::header::CONTENT_TYPE, "application/sdp").body(sdp);
    if let Some(token) = &shared.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.context("http request")?;
    let status = response.status();
    if status != reqwest::StatusCode::CREATED {
        // The node's refusals are JSON with a `code` ("stream_not_found", ...).
        let body = response.text().await.unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        bail!("HTTP status {status} {code}");
    }
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| response.url().join(l).ok());
    let answer = response.text().await.context("reading the answer")?;
    let answer = RTCSessionDescription::answer(answer).map_err(|e| anyhow!("bad answer: {e}"))?;
    peer.set_remote_description(Instant::now(), answer)
        .map_err(|e| anyhow!("answer refused: {e}"))?;
    Ok(Link { peer, socket, local, started, location })
}

impl Link {
    /// Runs the connection until `deadline` (`Ok`), or until it fails or closes.
    pub async fn drive(&mut self, deadline: Instant, media: &mut impl Media) -> Result<()> {
        let mut buffer = BytesMut::with_capacity(RECEIVE_POOL);
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::pin!(sleep);
        let mut timer_at = deadline;
        loop {
            self.flush();
            self.events(media)?;
            self.reads(media);
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            if media.next_send().is_some_and(|t| t <= now) {
                media.send(&mut self.peer, now);
                continue;
            }
            let next = [self.peer.poll_timeout(), media.next_send()]
                .into_iter()
                .flatten()
                .fold(deadline, Instant::min);
            if next <= now {
                // A timer's error (a retransmission that failed) shows in what the client
                // counts; the swarm logs nothing per client.
                let _ = self.peer.handle_timeout(now);
                // A deadline that stays in the past is retried after a millisecond, not in
                // a busy loop.
                if self.peer.poll_timeout().is_some_and(|t| t <= now) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            if next != timer_at || sleep.is_elapsed() {
                sleep.as_mut().reset(next.into());
                timer_at = next;
            }
            tokio::select! {
                biased;
                received = self.socket.recv_buf_from(reserve(&mut buffer)) => {
                    let now = Instant::now();
                    let (_, from) = received.context("UDP read")?;
                    self.feed(buffer.split(), from, now);
                    for _ in 1..BATCH {
                        match self.socket.try_recv_buf_from(reserve(&mut buffer)) {
                            Ok((_, from)) => self.feed(buffer.split(), from, now),
                            Err(_) => break,
                        }
                    }
                }
                _ = &mut sleep => {
                    let now = Instant::now();
                    if self.peer.poll_timeout().is_some_and(|t| t <= now) {
                        let _ = self.peer.handle_timeout(now);
                    }
                }
            }
        }
    }

    /// Closes the connection and DELETEs its session (best effort: it ends now rather than
    /// at the node's idle timeout).
    pub async fn close(mut self, shared: &Shared) {
        let _ = self.peer.close();
        self.flush();
        if let Some(location) = self.location.take() {
            let mut delete = shared.http.delete(location);
            if let Some(token) = &shared.token {
                delete = delete.bearer_auth(token);
            }
            let _ = delete.send().await;
        }
    }

    /// Hands one datagram to the connection (one the stack refuses is dropped).
    fn feed(&mut self, data: BytesMut, from: SocketAddr, now: Instant) {
        let input = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        };
        let _ = self.peer.handle_read(input);
    }

    /// Sends what the connection wants to send (a full socket buffer drops it, as the
    /// network would).
    fn flush(&mut self) {
        while let Some(out) = self.peer.poll_write() {
            let _ = self.socket.try_send_to(&out.message, out.transport.peer_addr);
        }
    }

    /// Connection state changes; an error when it failed or closed.
    fn events(&mut self, media: &mut impl Media) -> Result<()> {
        while let Some(event) = self.peer.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected => media.connected(Instant::now()),
                    RTCPeerConnectionState::Failed => bail!("connection failed"),
                    RTCPeerConnectionState::Closed => bail!("connection closed"),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Hands the RTP that arrived to `media` (RTCP is read and dropped).
    fn reads(&mut self, media: &mut impl Media) {
        while let Some(TaggedRTCMessage { now, message }) = self.peer.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = message {
                media.rtp(now, &packet);
            }
        }
    }
}

/// A UDP socket on `addr` with a [`RECEIVE_BUFFER`] (the system caps it at
/// `net.core.rmem_max`).
fn bind(addr: SocketAddr) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    // Best effort: a smaller buffer only risks losses in a burst, which are counted.
    let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into())?)
}

/// `buffer` with room for one more datagram (reusing its space once every datagram split
/// off it was dropped, else allocating [`RECEIVE_POOL`] more).
fn reserve(buffer: &mut BytesMut) -> &mut BytesMut {
    if buffer.capacity() - buffer.len() < MAX_DATAGRAM {
        buffer.reserve(RECEIVE_POOL);
    }
    buffer
}
