//! One WHEP viewer's session: [`negotiate`] answers its offer with an ICE-lite `rtc` peer
//! connection that sends the stream's video codec (H.264, VP8, VP9 or AV1; and Opus, when the offer
//! takes audio), and
//! [`WhepSession::run`] drives it until it ends.
//!
//! The session is a viewer of the stream like an RTMP or HTTP-FLV player: once the peer
//! connection is up it starts its [`ViewerSession`](zenlive_actors::ViewerSession) (through
//! the admission's [`Ticket`], which announces the viewer's join and leave), whose frames
//! arrive in a bounded queue ([`WhepSink`]) starting at the stream's cached keyframe. The
//! [`Playback`] core turns them into RTP, which `rtc` encrypts and the task sends from the
//! shared UDP socket. A viewer whose queue is full is skipped ahead to the next keyframe by
//! its viewer session, and disconnected when it stays behind (`play.max_viewer_lag`): the
//! queue never grows.
//!
//! Audio: a stream's Opus (WHIP) passes through. An AAC stream's (RTMP) audio arrives in
//! the same queue as Opus from the stream's one transcoder on this node
//! ([`super::audio_feed`]), which the sink subscribes the queue to when the stream's AAC
//! first shows and which stops when the node's last WHEP viewer that needs it leaves; a
//! full queue loses that Opus packet (counted), the video's rules above are unchanged.
//!
//! RTCP from the viewer (let through `rtc`'s interceptors by [`super::feedback`]): PLI/FIR
//! become rate-limited keyframe requests to the stream's publisher ([`RequestKeyframe`]: a
//! WHIP publisher asks its encoder; RTMP cannot be asked, and the viewer waits for the next
//! keyframe); NACKs are answered by `rtc`'s NACK responder, which keeps the last 512
//! packets each track sent; receiver reports give the stream's round-trip and loss series
//! ([`super::quality`]).
//!
//! A session ends when it is deleted, not connected within `webrtc.connect_timeout`,
//! silent for `webrtc.idle_timeout`, when its viewer session ends (the stream ended, or the
//! viewer stayed behind), when the peer connection fails or closes, or at shutdown.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_OPUS;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol as _;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use zenlive_actors::directory::Directory;
use zenlive_actors::stream::RequestKeyframe;
use zenlive_actors::{CodecConfig, FrameSink, MediaFrame, Offer, Protocol, StreamKey};
use zenlive_media::{Codec, FrameKind};

use super::audio_feed::{FeedSubscription, OpusFeeds};
use super::playback::{Feedback, Playback, Skipped, Track, TrackParams};
use super::quality::{ntp32_now, QualityHandle, Reading, ReportReader};
use super::restart::{RestartRequest, Restarts};
use super::session::{
    answer_with, start_dtls_now, video_codecs, video_mime, NegotiateError, Negotiated,
    DATAGRAM_QUEUE,
};
use super::transport::{Candidates, Links};
use super::udp::{Datagram, SessionId};
use super::WebRtc;
use crate::admission::Ticket;

/// Frames queued between a viewer's session and its WebRTC task: more than a cached GOP
/// of 2 s at 60 fps with audio, which a new viewer receives at once.
pub const FRAME_QUEUE: usize = 512;

/// Frames handled in one go before the session looks at its datagrams and timers again.
const BATCH: usize = 32;

/// How often the session checks its timers when the connection asks for nothing sooner.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// Streams whose B-frames were reported, so the warning comes once per stream name.
/// Bounded: cleared when full (a name may then be reported again).
const MAX_BFRAME_NOTICES: usize = 4096;

/// An answered WHEP offer and the tracks it sends on.
pub struct Playing {
    /// The peer connection and its answer.
    pub negotiated: Negotiated,
    video: Option<(RTCRtpSenderId, u32)>,
    audio: Option<(RTCRtpSenderId, u32)>,
    video_codec: Codec,
}

/// Answers a WHEP `offer` with an ICE-lite peer connection that advertises `candidates`
/// and sends `video_codec` (H.264, VP8, VP9 or AV1) video (and Opus audio when `audio`).
pub fn negotiate(
    offer: String,
    candidates: &Candidates,
    video_codec: Codec,
    audio: bool,
    now: Instant,
) -> Result<Playing, NegotiateError> {
    use rand::Rng;
    let mut rng = rand::rng();
    let (video_ssrc, audio_ssrc): (u32, u32) = (rng.random(), rng.random());
    let mut ids = (None, None);
    let negotiated = answer_with(offer, candidates, video_codec, now, true, |peer| {
        let video = track(RtpCodecKind::Video, video_ssrc, rtp_video_codec(video_codec));
        ids.0 = Some(peer.add_track(video)?);
        if audio {
            let audio = track(RtpCodecKind::Audio, audio_ssrc, audio_codec());
            ids.1 = Some(peer.add_track(audio)?);
        }
        Ok(())
    })?;
    Ok(Playing {
        negotiated,
        video: ids.0.map(|id| (id, video_ssrc)),
        audio: ids.1.map(|id| (id, audio_ssrc)),
        video_codec,
    })
}

/// The video track's codec: the first of `codec`'s negotiated forms.
fn rtp_video_codec(codec: Codec) -> RTCRtpCodec {
    let mut forms = video_codecs(codec, &[]);
    forms.swap_remove(0).rtp_codec
}

fn audio_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn track(kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec) -> MediaStreamTrack {
    let name = match kind {
        RtpCodecKind::Audio => "audio",
        _ => "video",
    };
    MediaStreamTrack::new(
        "zenlive".to_owned(),
        format!("zenlive-{name}"),
        name.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )
}

/// A viewer's frames into its WebRTC task's bounded queue: H.264 video and Opus audio.
///
/// Audio: a stream's Opus (a WHIP publisher's) goes into the queue as it comes. A stream
/// whose audio is AAC only (an RTMP publisher's) reaches the viewer as Opus from the
/// stream's shared transcoder ([`super::audio_feed`]): on the AAC track's first
/// configuration the sink subscribes its queue to the stream's feed (starting it if this
/// is the node's first WHEP viewer that needs it), and the AAC frames themselves are taken
/// and dropped here (or answered `Full` while the queue is, so the slow-viewer rules see
/// it). A stream with Opus of its own never gets a feed: its AAC (the WHIP
/// ingest's transcode, for other outputs) is refused. A viewer that took no audio track,
/// and codecs WebRTC does not carry here, are refused as [`Offer::Unsupported`] (the
/// viewer session skips the track and logs it once).
pub struct WhepSink {
    /// Each frame with when it arrived (for `zenlive_webrtc_frame_send_delay_seconds`).
    tx: mpsc::Sender<(Instant, MediaFrame)>,
    /// Where AAC can be transcoded for this viewer (`None`: it took no audio track).
    aac: Option<AacSource>,
    audio: AudioRoute,
}

/// The stream's shared AAC → Opus feed, for a [`WhepSink`] to subscribe to.
pub struct AacSource {
    /// The node's feeds.
    pub feeds: Arc<OpusFeeds>,
    /// The stream.
    pub key: StreamKey,
    /// The lineage of the stream instance the viewer watches.
    pub lineage: u64,
}

/// How a viewer gets the stream's audio, decided by the first audio configuration it sees.
#[derive(Debug)]
enum AudioRoute {
    /// No audio seen yet.
    Undecided,
    /// The stream has Opus: it passes through; AAC is refused.
    Opus,
    /// AAC only: the feed's Opus comes into the queue while this is held.
    Transcoded { _subscription: FeedSubscription },
    /// AAC, and no feed for it (no audio track, or the feed cannot run).
    Unavailable,
}

impl WhepSink {
    /// A sink into `tx`; AAC is transcoded through `aac` when the viewer takes audio.
    pub fn new(tx: mpsc::Sender<(Instant, MediaFrame)>, aac: Option<AacSource>) -> Self {
        Self { tx, aac, audio: AudioRoute::Undecided }
    }

    /// The stream has Opus of its own: pass it through (and leave a feed, if any).
    fn opus(&mut self) {
        if !matches!(self.audio, AudioRoute::Opus) {
            self.audio = AudioRoute::Opus;
        }
    }

    /// Whether the stream's AAC reaches this viewer (as the feed's Opus); subscribes on
    /// the first call.
    fn aac(&mut self) -> bool {
        if let AudioRoute::Undecided = self.audio {
            let subscription = self
                .aac
                .as_ref()
                .and_then(|s| s.feeds.subscribe(&s.key, s.lineage, self.tx.clone()));
            self.audio = match subscription {
                Some(subscription) => AudioRoute::Transcoded { _subscription: subscription },
                None => AudioRoute::Unavailable,
            };
        }
        matches!(self.audio, AudioRoute::Transcoded { .. })
    }

    fn queue(&mut self, frame: &MediaFrame) -> Offer {
        match self.tx.try_send((Instant::now(), frame.clone())) {
            Ok(()) => Offer::Accepted(frame.payload().len()),
            Err(TrySendError::Full(_)) => Offer::Full,
            Err(TrySendError::Closed(_)) => Offer::Closed,
        }
    }
}

impl FrameSink for WhepSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        if frame.kind() == FrameKind::Data {
            // Script data (metadata, cue points) has no place in WebRTC media.
            return Offer::Accepted(0);
        }
        match frame.codec() {
            Codec::H264 | Codec::Vp8 | Codec::Vp9 | Codec::Av1 => self.queue(frame),
            Codec::Opus => {
                self.opus();
                self.queue(frame)
            }
            // Its Opus comes from the feed, into the same queue: a full queue (the feed's
            // packets are being lost) says the viewer is behind, as it would for video.
            Codec::Aac if self.aac() => {
                if self.tx.is_closed() {
                    Offer::Closed
                } else if self.tx.capacity() == 0 {
                    Offer::Full
                } else {
                    Offer::Accepted(0)
                }
            }
            _ => Offer::Unsupported,
        }
    }

    fn offer_config(&mut self, config: &CodecConfig) -> Offer {
        match config.codec() {
            // In-band: H.264's SPS and PPS and AV1's sequence header travel before every
            // keyframe; VP8 and VP9 have none.
            Codec::H264 | Codec::Vp8 | Codec::Vp9 | Codec::Av1 => Offer::Accepted(0),
            Codec::Opus => {
                self.opus();
                Offer::Accepted(0)
            }
            Codec::Aac if self.aac() => Offer::Accepted(0),
            _ => Offer::Unsupported,
        }
    }

    fn closed(&self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        let tx = self.tx.clone();
        Some(Box::pin(async move { tx.closed().await }))
    }
}

/// Releases a session's registration when it ends, however it ends.
struct Registration {
    webrtc: Arc<WebRtc>,
    id: SessionId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.webrtc.forget_session(&self.id);
        self.webrtc.stats.whep.sessions.dec();
    }
}

/// What woke the session.
enum Wake {
    Cancelled,
    Datagram(Option<Datagram>),
    Frame(Option<(Instant, MediaFrame)>),
    Restart(RestartRequest),
    Timer,
}

/// One viewer's running session. See the module docs.
pub struct WhepSession {
    key: StreamKey,
    peer: RTCPeerConnection,
    datagrams: mpsc::Receiver<Datagram>,
    links: Links,
    cancel: CancellationToken,
    started: Instant,
    connected: bool,
    last_datagram: Instant,
    /// Until connected: the admission's ticket, to start watching with.
    ticket: Option<Ticket>,
    /// Once watching: the viewer session's frames, with when each arrived.
    frames: Option<mpsc::Receiver<(Instant, MediaFrame)>>,
    playback: Playback,
    video: Option<RTCRtpSenderId>,
    audio: Option<RTCRtpSenderId>,
    directory: Directory,
    packets: Vec<(Track, rtc::rtp::packet::Packet)>,
    /// When the frames whose packets wait for the next flush arrived.
    unsent: Vec<Instant>,
    /// The viewer's receiver reports → round trip and loss ([`super::quality`]).
    reports: ReportReader,
    /// Once connected: the stream's round-trip and loss series.
    quality: Option<QualityHandle>,
    bframes_noticed: bool,
    restarts: Restarts,
    registration: Registration,
}

impl WhepSession {
    /// Registers the session `id` (it gets `webrtc`'s datagrams for its ufrag from now
    /// on), or gives the ticket back when `max_sessions` are open.
    pub async fn register(
        webrtc: &Arc<WebRtc>,
        id: SessionId,
        playing: Playing,
        ticket: Ticket,
        directory: Directory,
        now: Instant,
    ) -> Result<Self, Ticket> {
        let cancel = CancellationToken::new();
        let ice = playing.negotiated.ice.clone();
        let (queue, datagrams) = mpsc::channel(DATAGRAM_QUEUE);
        let (restarts, restart_sender) = Restarts::new(playing.negotiated.offer.clone(), &queue);
        if !webrtc.open_session(
            Arc::clone(&id),
            Protocol::Whep,
            cancel.clone(),
            ice,
            restart_sender,
        ) {
            return Err(ticket);
        }
        webrtc.stats.whep.sessions.inc();
        webrtc.stats.whep.sessions_total.inc();
        let registration = Registration { webrtc: Arc::clone(webrtc), id: Arc::clone(&id) };
        let Playing { negotiated, video, audio, video_codec } = playing;
        let mut peer = negotiated.peer;
        let params = |peer: &mut RTCPeerConnection, sender: Option<(RTCRtpSenderId, u32)>, mime| {
            use rand::Rng;
            let (id, ssrc) = sender?;
            let mut sender = peer.rtp_sender(id)?;
            let payload_type = sender
                .get_parameters()
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))?
                .payload_type;
            let mut rng = rand::rng();
            let params =
                TrackParams { ssrc, payload_type, first_seq: rng.random(), origin: rng.random() };
            Some((id, params))
        };
        let video = params(&mut peer, video, video_mime(video_codec));
        let audio = params(&mut peer, audio, MIME_TYPE_OPUS);
        let playback =
            Playback::new(video.map(|v| v.1), audio.map(|a| a.1)).with_video(video_codec);
        let reports = ReportReader::new(video.iter().chain(&audio).map(|(_, p)| p.ssrc));
        let links = Links::new(negotiated.candidates);
        if !webrtc.route(&id, negotiated.ufrag, queue).await {
            // The UDP task is gone (shutdown): the session would never hear its client.
            cancel.cancel();
        }
        Ok(Self {
            key: ticket.key().clone(),
            peer,
            datagrams,
            links,
            cancel,
            started: now,
            connected: false,
            last_datagram: now,
            ticket: Some(ticket),
            frames: None,
            playback,
            video: video.map(|v| v.0),
            audio: audio.map(|a| a.0),
            directory,
            packets: Vec::new(),
            unsent: Vec::new(),
            reports,
            quality: None,
            bframes_noticed: false,
            restarts,
            registration,
        })
    }

    fn webrtc(&self) -> &Arc<WebRtc> {
        &self.registration.webrtc
    }

    /// Drives the session until it ends.
    pub async fn run(mut self) {
        let reason = self.drive().await;
        tracing::info!(stream = %self.key, session = %self.registration.id, reason, "whep session ended");
        let _ = self.peer.close();
        self.flush();
        // Dropping the queue ends the viewer session (its sink sees it closed).
    }

    async fn drive(&mut self) -> &'static str {
        let config = self.webrtc().config().clone();
        loop {
            self.flush();
            if let Some(reason) = self.events() {
                return reason;
            }
            self.reads(Instant::now());
            self.flush();
            let now = Instant::now();
            if !self.connected && now.duration_since(self.started) >= config.connect_timeout {
                return "not connected in time";
            }
            if self.connected && now.duration_since(self.last_datagram) >= config.idle_timeout {
                return "idle";
            }
            let housekeeping = now + HOUSEKEEPING;
            let deadline = self.peer.poll_timeout().map_or(housekeeping, |t| t.min(housekeeping));
            let frames = self.frames.as_mut();
            let watching = frames.is_some();
            let wake = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Wake::Cancelled,
                datagram = self.datagrams.recv() => Wake::Datagram(datagram),
                frame = async { frames?.recv().await }, if watching => Wake::Frame(frame),
                request = self.restarts.next() => Wake::Restart(request),
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            };
            match wake {
                Wake::Cancelled => return "deleted",
                Wake::Restart(request) => {
                    let (webrtc, id) = (&self.registration.webrtc, &self.registration.id);
                    self.restarts.apply(request, &mut self.peer, webrtc, id, Instant::now()).await;
                }
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
                Wake::Frame(None) => return "viewer session ended",
                Wake::Frame(Some((arrived, frame))) => {
                    // Each frame's packets leave before the next frame's are made (the last
                    // one's at the top of the loop): the stack's queues then hold one frame,
                    // not a joining viewer's whole GOP, and keep the capacity they grew to.
                    self.send(&frame, arrived, Instant::now());
                    for _ in 1..BATCH {
                        let Some(frames) = self.frames.as_mut() else { break };
                        match frames.try_recv() {
                            Ok((arrived, frame)) => {
                                self.flush();
                                self.send(&frame, arrived, Instant::now());
                            }
                            Err(_) => break,
                        }
                    }
                }
                Wake::Timer => {}
            }
            let now = Instant::now();
            if self.peer.poll_timeout().is_some_and(|t| t <= now) {
                if let Err(error) = self.peer.handle_timeout(now) {
                    tracing::debug!(stream = %self.key, %error, "whep: timeout handling failed");
                }
            }
        }
    }

    /// Feeds one datagram to the connection.
    fn read(&mut self, datagram: Datagram) {
        self.last_datagram = datagram.at;
        let udp_bound = self.registration.webrtc.local_addr();
        self.links.feed(&mut self.peer, udp_bound, datagram, &self.key, "whep");
    }

    /// Sends what the connection wants to send, and observes how long the frames whose
    /// packets went out waited since they arrived (one clock reading per flush).
    fn flush(&mut self) {
        let sender = &self.registration.webrtc.sender;
        self.links.send_pending(&mut self.peer, sender, &self.key, "whep");
        if !self.unsent.is_empty() {
            let now = Instant::now();
            let delay = &self.registration.webrtc.stats.whep_frame_send_delay;
            for arrived in self.unsent.drain(..) {
                delay.observe(now.saturating_duration_since(arrived).as_secs_f64());
            }
        }
    }

    /// Handles the connection's events; `Some(reason)` when the session is over.
    fn events(&mut self) -> Option<&'static str> {
        while let Some(event) = self.peer.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected => self.on_connected(),
                    RTCPeerConnectionState::Failed => return Some("connection failed"),
                    RTCPeerConnectionState::Closed => return Some("connection closed"),
                    _ => {}
                },
                RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(
                    RTCIceConnectionState::Connected,
                ) => start_dtls_now(&mut self.peer),
                _ => {}
            }
        }
        None
    }

    /// The peer connection is up: start watching the stream.
    fn on_connected(&mut self) {
        self.connected = true;
        if self.quality.is_none() {
            self.quality = Some(self.webrtc().quality.join(&self.key, "whep"));
        }
        let took = self.started.elapsed();
        tracing::info!(stream = %self.key, session = %self.registration.id, ?took, "whep viewer connected");
        if let Some(ticket) = self.ticket.take() {
            let (tx, rx) = mpsc::channel(FRAME_QUEUE);
            let aac = self.audio.is_some().then(|| AacSource {
                feeds: Arc::clone(&self.webrtc().feeds),
                key: self.key.clone(),
                lineage: ticket.lineage(),
            });
            ticket.watch(Box::new(WhepSink::new(tx, aac)));
            self.frames = Some(rx);
        }
    }

    /// Reads the viewer's RTCP: keyframe requests go to the publisher, NACKs are counted
    /// (the stack's NACK responder has retransmitted already), receiver reports give the
    /// round trip and losses.
    fn reads(&mut self, now: Instant) {
        let mut feedback = Feedback::default();
        let mut request = false;
        let mut reading = Reading::default();
        let mut ntp32 = None;
        while let Some(TaggedRTCMessage { message, .. }) = self.peer.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = message {
                request |= self.playback.rtcp(&packets, now, &mut feedback);
                for packet in &packets {
                    if let Some(report) = packet.as_any().downcast_ref::<ReceiverReport>() {
                        let now_ntp32 = *ntp32.get_or_insert_with(ntp32_now);
                        self.reports.read(report, now_ntp32, &mut reading);
                    }
                }
            }
        }
        if let (Some(quality), true) = (&self.quality, ntp32.is_some()) {
            quality.record(&reading);
        }
        let stats = &self.registration.webrtc.stats.whep;
        stats.plis.inc_by(feedback.keyframe_requests);
        stats.nacks.inc_by(feedback.nacked);
        if request {
            if let Some(entry) = self.directory.get(&self.key) {
                // A full mailbox: the stream has requests to pass on already.
                if entry.addr.try_send(RequestKeyframe).is_ok() {
                    stats.keyframe_requests.inc();
                }
            }
        }
    }

    /// Hands one frame's packets to the connection (the next flush sends them); `arrived`
    /// is when the frame reached this session.
    fn send(&mut self, frame: &MediaFrame, arrived: Instant, now: Instant) {
        let mut packets = std::mem::take(&mut self.packets);
        match self.playback.frame(frame, &mut packets) {
            Ok(()) => {}
            Err(Skipped::Malformed) => {
                self.webrtc().stats.frames_dropped("whep", "malformed", 1);
            }
            Err(Skipped::WaitingKeyframe) => {
                self.webrtc().stats.frames_dropped("whep", "waiting_keyframe", 1);
            }
            Err(Skipped::NoTrack) => {}
        }
        if self.playback.bframes_seen() && !self.bframes_noticed {
            self.bframes_noticed = true;
            self.notice_bframes();
        }
        let (mut count, mut bytes) = (0u64, 0u64);
        for (track, packet) in packets.drain(..) {
            let sender = match track {
                Track::Video => self.video,
                Track::Audio => self.audio,
            };
            let Some(mut sender) = sender.and_then(|id| self.peer.rtp_sender(id)) else { continue };
            let size = packet.payload.len() as u64 + 12;
            match sender.write_rtp(now, packet) {
                Ok(()) => {
                    count += 1;
                    bytes += size;
                }
                Err(error) => tracing::trace!(stream = %self.key, %error, "whep: RTP not sent"),
            }
        }
        self.packets = packets;
        if count > 0 {
            self.unsent.push(arrived);
        }
        let stats = &self.registration.webrtc.stats.whep;
        stats.rtp_packets_sent.inc_by(count);
        stats.rtp_bytes_sent.inc_by(bytes);
    }

    /// The stream has B-frames: said once per stream (see docs/webrtc.md).
    fn notice_bframes(&self) {
        let first = {
            let mut noticed = self.webrtc().bframe_streams.lock();
            if noticed.len() >= MAX_BFRAME_NOTICES {
                noticed.clear();
            }
            noticed.insert(self.key.clone())
        };
        if first {
            tracing::warn!(stream = %self.key, "whep: this stream has B-frames: Chromium decodes only its keyframes over WebRTC (about one picture per GOP) and keeps asking for more; publish without B-frames for WebRTC viewers (x264: -bf 0; OBS: no B-frames). See docs/webrtc.md");
        }
    }
}

/// Stream names whose B-frames were reported (see [`WhepSession`]).
pub(super) type BframeNotices = parking_lot::Mutex<HashSet<StreamKey>>;

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use zenlive_media::MediaTime;

    use super::*;
    use crate::webrtc::audio_feed::{FeedSink, Launch, Restart};
    use crate::webrtc::stats::WebRtcStats;
    use crate::webrtc::transcode::TranscodeStats;

    fn h264() -> MediaFrame {
        let t = MediaTime::ZERO;
        MediaFrame::video(Codec::H264, t, t, true, Bytes::from_static(&[0, 0, 0, 1, 0x65]), None)
    }

    #[test]
    fn the_sink_takes_h264_and_opus_until_full_and_refuses_the_rest() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut sink = WhepSink::new(tx, None);
        let opus = MediaFrame::audio(Codec::Opus, MediaTime::ZERO, Bytes::from_static(&[1]), None);
        let aac = MediaFrame::audio(Codec::Aac, MediaTime::ZERO, Bytes::from_static(&[1]), None);
        let data = MediaFrame::data(MediaTime::ZERO, Bytes::from_static(&[2]));
        assert_eq!(sink.offer(&aac), Offer::Unsupported, "no audio track: no transcoder");
        assert_eq!(sink.offer(&data), Offer::Accepted(0), "script data is dropped quietly");
        assert_eq!(sink.offer(&h264()), Offer::Accepted(5));
        assert_eq!(sink.offer(&opus), Offer::Accepted(1));
        // The queue is bounded: a slow viewer's session is told, and skips ahead.
        assert_eq!(sink.offer(&h264()), Offer::Full);
        assert_eq!(sink.offer_config(&aac_config()), Offer::Unsupported);
        rx.close();
        while rx.try_recv().is_ok() {}
        drop(rx);
        assert_eq!(sink.offer(&h264()), Offer::Closed);
    }

    fn aac_config() -> CodecConfig {
        CodecConfig::new(Codec::Aac, Bytes::from_static(&[0x12, 0x10]), MediaTime::ZERO)
    }

    /// Counts the feeds it is asked to start, and keeps their sinks running.
    #[derive(Default)]
    struct Launches(parking_lot::Mutex<Vec<FeedSink>>);

    impl Launch for Arc<Launches> {
        fn launch(
            &self,
            _key: &StreamKey,
            _lineage: u64,
            sink: FeedSink,
            _restart: Restart,
        ) -> bool {
            self.0.lock().push(sink);
            true
        }
    }

    fn source(feeds: &Arc<OpusFeeds>) -> Option<AacSource> {
        let key = StreamKey::new("live", "sound").expect("a valid name");
        Some(AacSource { feeds: Arc::clone(feeds), key, lineage: 1 })
    }

    #[test]
    fn aac_comes_from_one_shared_feed_and_a_streams_own_opus_passes_through() {
        let launches = Arc::new(Launches::default());
        let stats = TranscodeStats::new();
        let feeds = Arc::new(OpusFeeds::new(
            Box::new(Arc::clone(&launches)),
            stats.aac_to_opus.clone(),
            Arc::new(WebRtcStats::new()),
        ));
        // Two viewers of an RTMP stream (H.264 + AAC): one feed; the AAC frames are taken
        // (their Opus comes from the feed), none is queued.
        let (tx1, mut rx1) = mpsc::channel(8);
        let (tx2, _rx2) = mpsc::channel(8);
        let mut first = WhepSink::new(tx1, source(&feeds));
        let mut second = WhepSink::new(tx2, source(&feeds));
        let aac = MediaFrame::audio(
            Codec::Aac,
            MediaTime::ZERO,
            Bytes::from_static(&[1]),
            Some(aac_config()),
        );
        for sink in [&mut first, &mut second] {
            assert_eq!(sink.offer_config(&aac_config()), Offer::Accepted(0));
            assert_eq!(sink.offer(&aac), Offer::Accepted(0));
        }
        assert!(rx1.try_recv().is_err(), "AAC is not queued");
        // A full queue (the feed's Opus filled it) makes the AAC frame count as not taken,
        // so the viewer session's slow-viewer rules see it.
        let opus = MediaFrame::audio(Codec::Opus, MediaTime::ZERO, Bytes::from_static(&[1]), None);
        while second.tx.try_send((Instant::now(), opus.clone())).is_ok() {}
        assert_eq!(second.offer(&aac), Offer::Full);
        assert_eq!(launches.0.lock().len(), 1, "one transcoder for the stream");
        assert_eq!(stats.aac_to_opus.active.get(), 1);
        drop(first);
        assert_eq!(feeds.len(), 1);
        drop(second);
        assert!(feeds.is_empty(), "the last viewer stopped the feed");
        launches.0.lock().clear();
        assert_eq!(stats.aac_to_opus.active.get(), 0);

        // A WHIP stream: its Opus configuration comes first, then the AAC made from it,
        // which is refused: no feed.
        let (tx, mut rx) = mpsc::channel(8);
        let mut sink = WhepSink::new(tx, source(&feeds));
        let head = CodecConfig::new(Codec::Opus, Bytes::from_static(b"OpusHead"), MediaTime::ZERO);
        assert_eq!(sink.offer_config(&head), Offer::Accepted(0));
        assert_eq!(sink.offer_config(&aac_config()), Offer::Unsupported);
        let opus = MediaFrame::audio(Codec::Opus, MediaTime::ZERO, Bytes::from_static(&[1]), None);
        assert_eq!(sink.offer(&opus), Offer::Accepted(1));
        assert!(rx.try_recv().is_ok_and(|(_, f)| f.codec() == Codec::Opus));
        assert!(launches.0.lock().is_empty() && feeds.is_empty());
    }
}
