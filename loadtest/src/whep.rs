//! WHEP players: each is a sans-IO `rtc` peer connection (the crate the node's WebRTC side
//! is built on) driven from its own tokio UDP socket. It offers to receive H.264 (and Opus
//! with `--audio`), POSTs the offer, applies the answer, runs ICE as the controlling full
//! agent against the node's ICE-lite one, then DTLS and SRTP, and counts what arrives
//! ([`RtpStats`]); nothing is decoded. At the deadline it DELETEs its session.
//!
//! Light on the CPU, since the players share the machine with the server: no interceptors
//! (no NACKs, reports or congestion feedback are sent; the server's keyframe and NACK
//! paths stay idle), one certificate for every player (each peer connection would
//! otherwise generate its own key pair), datagrams read in batches into one shared buffer
//! that is split per datagram (an allocation per few dozen datagrams, not per datagram),
//! and one timer per player reset only when the connection's next deadline changes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS,
};
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
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol as _;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;

use crate::rtp::RtpStats;

/// The payload types this client offers (the answer keeps the offer's numbers).
const H264_PT: u8 = 102;
const OPUS_PT: u8 = 111;

/// Datagrams read in one go before the connection's output is handled.
const BATCH: usize = 64;

/// Largest datagram read.
const MAX_DATAGRAM: usize = 2048;

/// The receive buffer that datagrams are split off: one allocation per this many bytes.
const RECEIVE_POOL: usize = 64 * 1024;

/// Each player's socket receive buffer: room for a joining viewer's burst (the cached
/// GOP, sent at once: about 2 s of video) while the process is busy with other players.
const RECEIVE_BUFFER: usize = 1024 * 1024;

/// ICE connectivity checks are paced like a browser's (RFC 8445's Ta, 50 ms; `rtc`'s
/// default of 200 ms would add that much to every join, since the controlling agent
/// nominates the pair on its next check), and given up after [`CHECKS`] of them.
const CHECK_INTERVAL: Duration = Duration::from_millis(50);
const CHECKS: u16 = 200;

/// How long a POST, and the DELETE at the end, may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// What every player of a swarm shares.
pub struct Shared {
    http: reqwest::Client,
    certificate: RTCCertificate,
    token: Option<String>,
    audio: bool,
    /// The local address that reaches the node (each player binds a port on it).
    local_ip: IpAddr,
}

impl Shared {
    /// Players of `url`'s node, with `token` as their bearer token and Opus audio offered
    /// when `audio`.
    pub fn new(url: &str, token: Option<String>, audio: bool) -> Result<Self> {
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
        let http = reqwest::Client::builder().tcp_nodelay(true).timeout(HTTP_TIMEOUT).build()?;
        Ok(Self { http, certificate, token, audio, local_ip: local_ip_towards(url)? })
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

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
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

/// A receive-only peer connection with a host candidate on `local`, and its offer.
fn offer(shared: &Shared, local: SocketAddr) -> Result<(RTCPeerConnection, String)> {
    let rtc = |e: rtc::shared::error::Error| anyhow!("webrtc: {e}");
    let mut engine = MediaEngine::default();
    let h264 = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
    engine
        .register_codec(codec(MIME_TYPE_H264, 90_000, 0, h264, H264_PT), RtpCodecKind::Video)
        .map_err(rtc)?;
    if shared.audio {
        let opus = codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", OPUS_PT);
        engine.register_codec(opus, RtpCodecKind::Audio).map_err(rtc)?;
    }
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
        .map_err(rtc)?;
    let mut kinds = vec![RtpCodecKind::Video];
    if shared.audio {
        kinds.push(RtpCodecKind::Audio);
    }
    for kind in kinds {
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        };
        peer.add_transceiver_from_kind(kind, Some(init)).map_err(rtc)?;
    }
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
    .map_err(rtc)?;
    peer.add_local_candidate(RTCIceCandidate::from(&candidate).to_json().map_err(rtc)?)
        .map_err(rtc)?;
    peer.add_local_candidate(RTCIceCandidateInit::default()).map_err(rtc)?;
    let offer = peer.create_offer(None).map_err(rtc)?;
    peer.set_local_description(Instant::now(), offer).map_err(rtc)?;
    let sdp = peer.local_description().map(|d| d.sdp).ok_or_else(|| anyhow!("no offer"))?;
    Ok((peer, sdp))
}

/// What a player ended with.
pub struct Played {
    /// What it counted.
    pub stats: RtpStats,
    /// Why it stopped before the deadline (the connection failed or closed), if it did.
    pub ended_early: Option<&'static str>,
}

/// Plays `url` until `deadline`. An error means the player never connected.
pub async fn run(
    shared: Arc<Shared>,
    url: String,
    deadline: tokio::time::Instant,
) -> Result<Played> {
    let deadline = deadline.into_std();
    let socket = bind(SocketAddr::new(shared.local_ip, 0))?;
    let local = socket.local_addr()?;
    let (mut peer, sdp) = offer(&shared, local)?;
    let started = Instant::now();
    let mut request =
        shared.http.post(&url).header(reqwest::header::CONTENT_TYPE, "application/sdp").body(sdp);
    if let Some(token) = &shared.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.context("http request")?;
    let status = response.status();
    if status != reqwest::StatusCode::CREATED {
        bail!("HTTP status {status}");
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

    let mut player = Player { peer, socket, local, stats: RtpStats::new(started) };
    let ended = player.drive(deadline).await;
    let _ = player.peer.close();
    player.flush();
    if let Some(location) = location {
        // Ends the session now rather than at the node's idle timeout; best effort.
        let mut delete = shared.http.delete(location);
        if let Some(token) = &shared.token {
            delete = delete.bearer_auth(token);
        }
        let _ = delete.send().await;
    }
    match ended {
        Err(error) if player.stats.connected.is_none() => Err(error),
        Err(_) => Ok(Played { stats: player.stats, ended_early: Some("connection lost") }),
        Ok(()) => Ok(Played { stats: player.stats, ended_early: None }),
    }
}

/// One player's connection and counters.
struct Player {
    peer: RTCPeerConnection,
    socket: UdpSocket,
    local: SocketAddr,
    stats: RtpStats,
}

impl Player {
    /// Runs the connection until `deadline` (`Ok`) or until it fails or closes.
    async fn drive(&mut self, deadline: Instant) -> Result<()> {
        let mut buffer = BytesMut::with_capacity(RECEIVE_POOL);
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::pin!(sleep);
        let mut timer_at = deadline;
        loop {
            self.flush();
            self.events()?;
            self.reads();
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            let next = self.peer.poll_timeout().map_or(deadline, |t| t.min(deadline));
            if next <= now {
                // A timer's error (a retransmission that failed) shows in what the player
                // counts; the swarm logs nothing per player.
                let _ = self.peer.handle_timeout(now);
                // A deadline that stays in the past is retried after a millisecond, not in a
                // busy loop.
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
                    let _ = self.peer.handle_timeout(Instant::now());
                }
            }
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

    /// Sends what the connection wants to send (STUN, DTLS; a full buffer drops it).
    fn flush(&mut self) {
        while let Some(out) = self.peer.poll_write() {
            let _ = self.socket.try_send_to(&out.message, out.transport.peer_addr);
        }
    }

    /// Connection state changes; an error when it failed or closed.
    fn events(&mut self) -> Result<()> {
        while let Some(event) = self.peer.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                match state {
                    RTCPeerConnectionState::Connected => self.stats.connected(Instant::now()),
                    RTCPeerConnectionState::Failed => bail!("connection failed"),
                    RTCPeerConnectionState::Closed => bail!("connection closed"),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Counts the RTP that arrived.
    fn reads(&mut self) {
        while let Some(TaggedRTCMessage { now, message }) = self.peer.poll_read() {
            let RTCMessage::RtpPacket(_, packet) = message else { continue };
            let header = &packet.header;
            match header.payload_type {
                H264_PT => {
                    self.stats.video(now, header.sequence_number, header.timestamp, &packet.payload)
                }
                _ => self.stats.audio(packet.payload.len()),
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
