//! One WHIP publisher's session: [`negotiate`] answers its offer with an ICE-lite
//! `rtc` peer connection, and [`Session::run`] drives that connection until it ends.
//!
//! The task owns the peer connection (`rtc` is sans-IO: no sockets, no clock of its own).
//! It feeds it the datagrams the UDP task routed here and the time, sends what it wants to
//! send from the shared socket, turns each received RTP packet into frames
//! ([`TrackIngest`]) and pushes them into the stream through the admission's
//! [`StreamPublisher`](zenlive_actors::StreamPublisher).
//!
//! Keyframes: the session asks the publisher for one (RTCP PLI) when video was lost and
//! whenever [`KEYFRAME_INTERVAL`] passed without one, so HLS can cut segments and a new
//! viewer starts from a recent keyframe (WebRTC encoders otherwise send keyframes only on
//! request).
//!
//! A session ends when it is deleted (`DELETE` on its resource), kicked, not connected
//! within `webrtc.connect_timeout`, silent for `webrtc.idle_timeout`, when the peer
//! connection fails or closes, or at shutdown; the stream ends with it. A panic in the
//! task ends this session only (its registration and stream are released on drop).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrackId;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol as _;
use rtc::statistics::StatsSelector;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zenlive_actors::stream::PublisherCommand;
use zenlive_actors::StreamKey;
use zenlive_media::{Codec, MediaTime};

use super::ingest::{Ingested, TrackCodec, TrackIngest};
use super::quality::{self, InboundLoss, QualityHandle};
use super::restart::{RestartRequest, Restarts};
use super::transport::{Candidates, Links};
use super::trickle::{self, IceIdentity};
use super::udp::{Datagram, SessionId};
use super::WebRtc;
use crate::admission::Publishing;

/// A video track without a keyframe for this long is asked for one.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);

/// Least time between two keyframe requests on one track.
const PLI_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Datagrams queued for one session before the UDP task drops them (~1.5 s of 5 Mbit/s).
pub const DATAGRAM_QUEUE: usize = 1024;

/// Datagrams handled in one go before the connection's output is flushed.
const BATCH: usize = 64;

/// How often the session checks its timers when the connection asks for nothing sooner.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// Why an offer could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum NegotiateError {
    /// The WebRTC stack refused the offer (it does not parse, or offers nothing usable).
    #[error("the offer could not be answered: {0}")]
    Refused(String),
    /// No address to advertise (set `webrtc.public_addrs`).
    #[error(
        "no address to advertise: set webrtc.public_addrs or a specific webrtc.udp_addr \
         (or webrtc.tcp_addr)"
    )]
    NoCandidates,
}

/// An answered offer: the peer connection, the answer, and the ICE username fragment that
/// routes the client's datagrams to it.
pub struct Negotiated {
    /// The peer connection, its remote and local descriptions set.
    pub peer: RTCPeerConnection,
    /// The SDP answer.
    pub answer: String,
    /// The answer's `ice-ufrag`.
    pub ufrag: String,
    /// The ICE session, for trickle ICE ([`super::trickle`]).
    pub ice: IceIdentity,
    /// The client's offer (an ICE restart is this offer with new credentials).
    pub offer: String,
    /// The host candidates advertised.
    pub candidates: Candidates,
}

/// The MIME type of a video codec sent and received over WebRTC (`video/H264`); H.264's
/// for any other.
pub(super) fn video_mime(video: Codec) -> &'static str {
    match video {
        Codec::Vp8 => MIME_TYPE_VP8,
        Codec::Vp9 => MIME_TYPE_VP9,
        Codec::Av1 => MIME_TYPE_AV1,
        _ => MIME_TYPE_H264,
    }
}

/// The payload types and parameters `video` is negotiated with: H.264 in packetization
/// mode 1 with the profiles publishers offer (constrained baseline, baseline, main,
/// high), VP9 profile 0 (8-bit 4:2:0, what browsers encode), VP8 and AV1 as offered.
/// Each has `feedback` as its RTCP feedback.
pub(super) fn video_codecs(video: Codec, feedback: &[RTCPFeedback]) -> Vec<RTCRtpCodecParameters> {
    let codec = |payload_type: u8, fmtp: String| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: video_mime(video).to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp,
            rtcp_feedback: feedback.to_vec(),
        },
        payload_type,
    };
    match video {
        Codec::Vp8 => vec![codec(96, String::new())],
        Codec::Vp9 => vec![codec(98, "profile-id=0".to_owned())],
        Codec::Av1 => vec![codec(45, String::new())],
        _ => [(102, "42e01f"), (104, "42001f"), (106, "4d001f"), (108, "64001f")]
            .into_iter()
            .map(|(payload_type, profile)| {
                let fmtp = format!(
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                );
                codec(payload_type, fmtp)
            })
            .collect(),
    }
}

/// The media engine: Opus, and `video` ([`video_codecs`]) as the one video codec, so the
/// answer names exactly the codec the node means to receive or send (an offer lists its
/// codecs in its own order of preference, and the answer follows it).
pub(super) fn codecs(video: Codec) -> Result<MediaEngine, rtc::shared::error::Error> {
    let mut engine = MediaEngine::default();
    let feedback = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    let video_feedback = [
        feedback("goog-remb", ""),
        feedback("ccm", "fir"),
        feedback("nack", ""),
        feedback("nack", "pli"),
    ];
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    for codec in video_codecs(video, &video_feedback) {
        engine.register_codec(codec, RtpCodecKind::Video)?;
    }
    Ok(engine)
}

/// Answers `offer` with an ICE-lite peer connection that advertises `candidates` (host
/// candidates on the shared UDP port, and ICE-TCP's) and only receives, `video` (H.264,
/// VP8, VP9 or AV1) as its video codec.
pub fn negotiate(
    offer: String,
    candidates: &Candidates,
    video: Codec,
    now: Instant,
) -> Result<Negotiated, NegotiateError> {
    answer_with(offer, candidates, video, now, false, |peer| {
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            };
            peer.add_transceiver_from_kind(kind, Some(init))?;
        }
        Ok(())
    })
}

/// Answers `offer` with a fresh ICE-lite peer connection that advertises `candidates`,
/// with Opus and `video` as its codecs ([`codecs`]); `prepare` adds its transceivers or
/// tracks before the offer is applied. A `sender` (a WHEP viewer's session) gets only the
/// interceptors that act on what it sends ([`sender_interceptors`]), and the peer's
/// PLI/FIR/NACK reach `poll_read` ([`super::feedback`]); a receiver (WHIP) gets `rtc`'s
/// defaults.
pub(super) fn answer_with(
    offer: String,
    candidates: &Candidates,
    video: Codec,
    now: Instant,
    sender: bool,
    prepare: impl FnOnce(&mut RTCPeerConnection) -> Result<(), rtc::shared::error::Error>,
) -> Result<Negotiated, NegotiateError> {
    if candidates.is_empty() {
        return Err(NegotiateError::NoCandidates);
    }
    let refused = |e: rtc::shared::error::Error| NegotiateError::Refused(e.to_string());
    // No credentials of ours: `rtc` draws them (16 and 32 letters), and draws new ones when
    // the client restarts ICE (credentials set here would be kept across a restart).
    let mut settings = SettingEngineBuilder::new().with_lite(true);
    if let Some(provider) = super::dtls_crypto::Provider::shared() {
        settings = settings.with_crypto_provider(provider);
    }
    let settings = settings.build();
    let mut engine = codecs(video).map_err(refused)?;
    let interceptors = if sender {
        sender_interceptors()
    } else {
        register_default_interceptors(Registry::new(), &mut engine).map_err(refused)?
    };
    let mut peer = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(engine)
        .with_interceptor_registry(interceptors)
        .build(now)
        .map_err(refused)?;
    prepare(&mut peer).map_err(refused)?;
    let remote = RTCSessionDescription::offer(offer.clone()).map_err(refused)?;
    peer.set_remote_description(now, remote).map_err(refused)?;
    // UDP first; passive TCP (RFC 6544) ones get a lower priority from the stack.
    let udp = candidates.udp.iter().map(|addr| ("udp", TcpType::Unspecified, addr));
    let tcp = candidates.tcp.iter().map(|addr| ("tcp", TcpType::Passive, addr));
    for (network, tcp_type, addr) in udp.chain(tcp) {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: network.to_owned(),
                address: addr.ip().to_string(),
                port: addr.port(),
                component: 1,
                ..Default::default()
            },
            tcp_type,
        }
        .new_candidate_host()
        .map_err(refused)?;
        let init = RTCIceCandidate::from(&candidate).to_json().map_err(refused)?;
        peer.add_local_candidate(init).map_err(refused)?;
    }
    // The end of our candidates: an ICE-lite server has no others to trickle.
    peer.add_local_candidate(RTCIceCandidateInit::default()).map_err(refused)?;
    let answer = peer.create_answer(None).map_err(refused)?;
    peer.set_local_description(now, answer).map_err(refused)?;
    let answer = peer
        .local_description()
        .map(|d| d.sdp)
        .ok_or_else(|| NegotiateError::Refused("no local description".to_owned()))?;
    let ufrag = trickle::ice_ufrag(&answer)
        .ok_or_else(|| NegotiateError::Refused("the answer has no ice-ufrag".to_owned()))?
        .to_owned();
    let ice = IceIdentity::new(&ufrag, &offer);
    Ok(Negotiated { peer, answer, ufrag, ice, offer, candidates: candidates.clone() })
}

/// Packets a WHEP track keeps for retransmission on a NACK: 5 s at 1 Mbit/s, 2 s at
/// 2.6 Mbit/s (a NACK comes within a round trip; `rtc`'s default keeps 1024, ~115 KB a
/// track).
const NACK_HISTORY: u16 = 512;

/// The interceptors of a session that only sends (a WHEP viewer's): the NACK responder
/// (retransmissions), sender reports (the player's lip sync and round-trip time) and the
/// [`super::feedback`] tap. `rtc`'s defaults add a NACK generator, receiver reports and
/// transport-wide congestion control feedback, which act on received RTP only, yet every
/// outgoing packet passes through each of them (together 3-4 % of the node's CPU at 500
/// WHEP viewers, by `perf`).
fn sender_interceptors() -> Registry {
    use rtc::interceptor::{NackResponderBuilder, SenderReportBuilder, Slot};
    Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().with_size(NACK_HISTORY).build())
        .with(Slot::SenderReport, SenderReportBuilder::new().build())
        .with(super::feedback::slot(), super::feedback::FeedbackTap::default())
}

/// A received track.
struct Track {
    /// `None`: a codec this node does not ingest (its packets are counted and dropped).
    ingest: Option<TrackIngest>,
    receiver: RTCRtpReceiverId,
    ssrc: u32,
    last_keyframe: Option<Instant>,
    last_request: Option<Instant>,
    reported: zenlive_media::rtp_h264::DropCounts,
    /// Opus → AAC: counted as running while the track lives, and what was last reported.
    transcode: Option<(super::transcode::Active, zenlive_transcode::Counters)>,
}

/// Releases a session's registration when it ends, however it ends.
struct Registration {
    webrtc: Arc<WebRtc>,
    id: SessionId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.webrtc.forget_session(&self.id);
        self.webrtc.stats.whip.sessions.dec();
    }
}

/// What woke the session.
enum Wake {
    Cancelled,
    Command(Option<PublisherCommand>),
    Datagram(Option<Datagram>),
    Restart(RestartRequest),
    Timer,
}

/// One publisher's running session. See the module docs.
pub struct Session {
    key: StreamKey,
    peer: RTCPeerConnection,
    publishing: Publishing,
    datagrams: mpsc::Receiver<Datagram>,
    cancel: CancellationToken,
    started: Instant,
    connected: bool,
    last_datagram: Instant,
    tracks: HashMap<MediaStreamTrackId, Track>,
    receivers: HashMap<MediaStreamTrackId, RTCRtpReceiverId>,
    ingested: Vec<Ingested>,
    commands_open: bool,
    links: Links,
    /// Once connected: the stream's loss series, and when `rtc`'s statistics are read next.
    quality: Option<(QualityHandle, InboundLoss, Instant)>,
    restarts: Restarts,
    registration: Registration,
}

impl Session {
    /// Registers the session `id` (it gets `webrtc`'s datagrams for `ufrag` from now on), or
    /// gives everything back when `max_sessions` are open.
    pub async fn register(
        webrtc: &Arc<WebRtc>,
        id: SessionId,
        key: StreamKey,
        negotiated: Negotiated,
        publishing: Publishing,
        now: Instant,
    ) -> Result<Self, Publishing> {
        let cancel = CancellationToken::new();
        let ice = negotiated.ice.clone();
        let (queue, datagrams) = mpsc::channel(DATAGRAM_QUEUE);
        let (restarts, restart_sender) = Restarts::new(negotiated.offer.clone(), &queue);
        if !webrtc.open_session(
            Arc::clone(&id),
            zenlive_actors::Protocol::Whip,
            cancel.clone(),
            ice,
            restart_sender,
        ) {
            return Err(publishing);
        }
        webrtc.stats.whip.sessions.inc();
        webrtc.stats.whip.sessions_total.inc();
        let registration = Registration { webrtc: Arc::clone(webrtc), id: Arc::clone(&id) };
        let links = Links::new(negotiated.candidates);
        if !webrtc.route(&id, negotiated.ufrag, queue).await {
            // The UDP task is gone (shutdown): the session would never hear its client.
            cancel.cancel();
        }
        Ok(Self {
            key,
            peer: negotiated.peer,
            publishing,
            datagrams,
            cancel,
            started: now,
            connected: false,
            last_datagram: now,
            tracks: HashMap::new(),
            receivers: HashMap::new(),
            ingested: Vec::new(),
            commands_open: true,
            links,
            quality: None,
            restarts,
            registration,
        })
    }

    fn webrtc(&self) -> &Arc<WebRtc> {
        &self.registration.webrtc
    }

    /// Drives the session until it ends, then ends its stream.
    pub async fn run(mut self) {
        let reason = self.drive().await;
        tracing::info!(stream = %self.key, session = %self.registration.id, reason, "whip session ended");
        let _ = self.peer.close();
        self.flush();
        self.publishing.publisher.finish(reason);
    }

    async fn drive(&mut self) -> &'static str {
        let config = self.webrtc().config().clone();
        loop {
            self.flush();
            if let Some(reason) = self.events() {
                return reason;
            }
            if let Some(reason) = self.reads().await {
                return reason;
            }
            self.flush();
            let now = Instant::now();
            if !self.connected && now.duration_since(self.started) >= config.connect_timeout {
                return "not connected in time";
            }
            if self.connected && now.duration_since(self.last_datagram) >= config.idle_timeout {
                return "idle";
            }
            self.request_keyframes(now);
            self.poll_quality(now);
            let housekeeping = now + HOUSEKEEPING;
            let deadline = self.peer.poll_timeout().map_or(housekeeping, |t| t.min(housekeeping));
            let wake = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Wake::Cancelled,
                command = self.publishing.commands.recv(), if self.commands_open => {
                    Wake::Command(command)
                }
                datagram = self.datagrams.recv() => Wake::Datagram(datagram),
                request = self.restarts.next() => Wake::Restart(request),
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            };
            match wake {
                Wake::Cancelled => return "deleted",
                Wake::Restart(request) => {
                    let (webrtc, id) = (&self.registration.webrtc, &self.registration.id);
                    self.restarts.apply(request, &mut self.peer, webrtc, id, Instant::now()).await;
                }
                Wake::Command(Some(PublisherCommand::Close { reason })) => {
                    tracing::info!(stream = %self.key, %reason, "whip publisher kicked");
                    return "kicked";
                }
                Wake::Command(Some(PublisherCommand::KeyframeRequest)) => {
                    // A WHEP viewer lost video: ask the encoder (PLI_MIN_INTERVAL applies).
                    self.request_video_keyframes(Instant::now());
                }
                Wake::Command(None) => self.commands_open = false,
                Wake::Datagram(None) => return "closed",
                Wake::Datagram(Some(datagram)) => {
                    self.read(datagram);
                    for _ in 1..BATCH {
                        match self.datagrams.try_recv() {
                            Ok(datagram) => self.read(datagram),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Timer => {}
            }
            let now = Instant::now();
            if self.peer.poll_timeout().is_some_and(|t| t <= now) {
                if let Err(error) = self.peer.handle_timeout(now) {
                    tracing::debug!(stream = %self.key, %error, "whip: timeout handling failed");
                }
            }
        }
    }

    /// Feeds one datagram to the connection.
    fn read(&mut self, datagram: Datagram) {
        self.last_datagram = datagram.at;
        let udp_bound = self.registration.webrtc.local_addr();
        self.links.feed(&mut self.peer, udp_bound, datagram, &self.key, "whip");
    }

    /// Every [`quality::POLL`]: the publisher's packets lost, from `rtc`'s inbound-rtp
    /// statistics (what the node's receiver reports said), into the stream's series.
    fn poll_quality(&mut self, now: Instant) {
        let Some((handle, loss, next)) = self.quality.as_mut() else { return };
        if now < *next {
            return;
        }
        *next = now + quality::POLL;
        let report = self.peer.get_stats(now, StatsSelector::None);
        let total: i64 =
            report.inbound_rtp_streams().map(|s| s.received_rtp_stream_stats.packets_lost).sum();
        handle.lost(loss.update(total));
    }

    /// Sends what the connection wants to send.
    fn flush(&mut self) {
        let sender = &self.registration.webrtc.sender;
        self.links.send_pending(&mut self.peer, sender, &self.key, "whip");
    }

    /// Handles the connection's events; `Some(reason)` when the session is over.
    fn events(&mut self) -> Option<&'static str> {
        while let Some(event) = self.peer.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected => {
                        self.connected = true;
                        if self.quality.is_none() {
                            let handle = self.webrtc().quality.join(&self.key, "whip");
                            let next = Instant::now() + quality::POLL;
                            self.quality = Some((handle, InboundLoss::default(), next));
                        }
                        let took = self.started.elapsed();
                        tracing::info!(stream = %self.key, ?took, "whip publisher connected");
                    }
                    RTCPeerConnectionState::Failed => return Some("connection failed"),
                    RTCPeerConnectionState::Closed => return Some("connection closed"),
                    _ => {}
                },
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    self.receivers.insert(init.track_id, init.receiver_id);
                }
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                    RTCIceConnectionState::Connected,
                ) => start_dtls_now(&mut self.peer),
                _ => {}
            }
        }
        None
    }

    /// Handles received RTP: frames into the stream. `Some(reason)` when the stream is gone.
    async fn reads(&mut self) -> Option<&'static str> {
        let mut messages = Vec::new();
        while let Some(message) = self.peer.poll_read() {
            messages.push(message);
        }
        for TaggedRTCMessage { now, message } in messages {
            let RTCMessage::RtpPacket(track_id, packet) = message else { continue };
            let stats = &self.registration.webrtc.stats.whip;
            stats.rtp_packets.inc();
            stats.rtp_bytes.inc_by((packet.payload.len() + 12) as u64);
            let arrival = MediaTime::from_duration(now.saturating_duration_since(self.started));
            let mut ingested = std::mem::take(&mut self.ingested);
            if let Some(ingest) =
                self.track(&track_id, packet.header.ssrc).and_then(|t| t.ingest.as_mut())
            {
                let header = &packet.header;
                ingest.packet(
                    header.sequence_number,
                    header.timestamp,
                    header.marker,
                    &packet.payload,
                    arrival,
                    &mut ingested,
                );
            }
            let mut keyframe_needed = false;
            for output in ingested.drain(..) {
                match output {
                    Ingested::Config(config) => self.publishing.publisher.set_config(&config),
                    Ingested::KeyframeNeeded => keyframe_needed = true,
                    Ingested::Frame(frame) => {
                        if frame.keyframe() {
                            if let Some(track) = self.tracks.get_mut(&track_id) {
                                track.last_keyframe = Some(now);
                            }
                        }
                        if self.publishing.publisher.push(frame).await.is_err() {
                            return Some("stream ended");
                        }
                    }
                }
            }
            self.ingested = ingested;
            if keyframe_needed {
                self.request_keyframe(&track_id, Instant::now());
            }
            self.report_drops(&track_id);
            self.report_transcode(&track_id);
        }
        None
    }

    /// The track `id` (learning its codec from its first packet).
    fn track(&mut self, id: &MediaStreamTrackId, ssrc: u32) -> Option<&mut Track> {
        if !self.tracks.contains_key(id) {
            let receiver = *self.receivers.get(id)?;
            let mime = self
                .peer
                .rtp_receiver(receiver)
                .and_then(|r| r.track().codec(ssrc).map(|c| c.mime_type.clone()));
            let ingest = mime.as_deref().and_then(TrackCodec::from_mime).map(TrackIngest::new);
            let mut transcode = None;
            match &ingest {
                Some(ingest) => match ingest.transcoding() {
                    Ok(transcoding) => {
                        tracing::info!(stream = %self.key, codec = ?ingest.codec(), transcoding, "whip track");
                        if transcoding {
                            let stats = &self.registration.webrtc.transcode.opus_to_aac;
                            transcode = Some((stats.start(), Default::default()));
                        }
                    }
                    Err(error) => {
                        tracing::error!(stream = %self.key, codec = ?ingest.codec(), error, "whip track: no AAC transcoder; RTMP, FLV, HLS and recording get no audio");
                    }
                },
                None => tracing::warn!(stream = %self.key, ?mime, "whip track not ingested"),
            }
            let track = Track {
                ingest,
                receiver,
                ssrc,
                last_keyframe: None,
                last_request: None,
                reported: Default::default(),
                transcode,
            };
            self.tracks.insert(id.clone(), track);
        }
        self.tracks.get_mut(id)
    }

    /// Asks for keyframes on video tracks that have gone [`KEYFRAME_INTERVAL`] without one.
    fn request_keyframes(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        let due: Vec<MediaStreamTrackId> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.ingest.as_ref().is_some_and(|i| i.codec().is_video()))
            .filter(|(_, t)| {
                let since = t.last_keyframe.unwrap_or(self.started);
                now.saturating_duration_since(since) >= KEYFRAME_INTERVAL
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.request_keyframe(&id, now);
        }
    }

    /// Asks for a keyframe on every video track (a viewer's request).
    fn request_video_keyframes(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        let video: Vec<MediaStreamTrackId> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.ingest.as_ref().is_some_and(|i| i.codec().is_video()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in video {
            self.request_keyframe(&id, now);
        }
    }

    /// Sends a PLI for track `id`, at most once per [`PLI_MIN_INTERVAL`].
    fn request_keyframe(&mut self, id: &MediaStreamTrackId, now: Instant) {
        let Some(track) = self.tracks.get_mut(id) else { return };
        if track.last_request.is_some_and(|t| now.saturating_duration_since(t) < PLI_MIN_INTERVAL) {
            return;
        }
        track.last_request = Some(now);
        let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: track.ssrc };
        if let Some(mut receiver) = self.peer.rtp_receiver(track.receiver) {
            match receiver.write_rtcp(now, vec![Box::new(pli)]) {
                Ok(()) => self.registration.webrtc.stats.whip.keyframe_requests.inc(),
                Err(error) => tracing::debug!(stream = %self.key, %error, "whip: PLI not sent"),
            }
        }
    }

    /// Adds what the track's transcoder did since the last report to the metrics.
    fn report_transcode(&mut self, id: &MediaStreamTrackId) {
        let Some(track) = self.tracks.get_mut(id) else { return };
        let (Some(ingest), Some((_, reported))) = (&track.ingest, &mut track.transcode) else {
            return;
        };
        let Some(now) = ingest.transcode_counters() else { return };
        let before = std::mem::replace(reported, now);
        self.registration.webrtc.transcode.opus_to_aac.report(
            &before,
            &now,
            zenlive_transcode::OPUS_RATE,
        );
    }

    /// Adds what the track's depacketizer dropped since the last report to the metrics.
    fn report_drops(&mut self, id: &MediaStreamTrackId) {
        let Some(track) = self.tracks.get_mut(id) else { return };
        let Some(ingest) = &track.ingest else { return };
        let now = ingest.dropped();
        let before = std::mem::replace(&mut track.reported, now);
        let stats = &self.registration.webrtc.stats;
        for (reason, n, was) in [
            ("gap", now.gaps, before.gaps),
            ("malformed", now.malformed, before.malformed),
            ("unsupported", now.unsupported, before.unsupported),
            ("too_large", now.too_large, before.too_large),
            ("waiting_keyframe", now.waiting, before.waiting),
        ] {
            stats.frames_dropped("whip", reason, n.saturating_sub(was));
        }
    }
}

/// Sends the DTLS handshake's first flight now; call it when ICE has just connected.
///
/// This node answers as the DTLS client, and `rtc` 0.21 starts the handshake when ICE
/// selects the pair, but queues the ClientHello where only the connection's next timeout
/// hands it out: the ICE agent's next tick, up to 200 ms later, which every WHIP and WHEP
/// session would wait before its media flows. A timeout handled now flushes it (the timers
/// that are not due yet do nothing).
pub(super) fn start_dtls_now(peer: &mut RTCPeerConnection) {
    if let Err(error) = peer.handle_timeout(Instant::now()) {
        tracing::debug!(%error, "webrtc: timeout handling failed");
    }
}
