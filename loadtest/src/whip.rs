//! WHIP publishers: a send-only peer connection ([`crate::peer`]) that publishes an FLV
//! file's H.264 video in realtime, looped, until the deadline. The file is packetized once
//! for every publisher ([`Video`]: RFC 6184 payloads, each keyframe led by its SPS and PPS);
//! each publisher only stamps them with its own sequence numbers, timestamps and SSRC.
//! Audio is not sent: the fixtures carry AAC, which WebRTC does not (Opus would have to be
//! encoded).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use bytes::BytesMut;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264};
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::RTCRtpSenderId;
use zenlive_media::avc::AvcDecoderConfig;
use zenlive_media::flv_frames::{FlvToFrames, Ingested};
use zenlive_media::rtp_h264_pack::{packetize, PayloadList, DEFAULT_MAX_PAYLOAD};
use zenlive_media::FrameKind;

use crate::peer::{self, codec, rtc_error, Media, Shared};
use crate::publisher::Source;
use crate::stats::PublisherStats;
use crate::whep::H264_FMTP;

/// The payload type offered for H.264.
const H264_PT: u8 = 102;

/// One video frame, packetized.
struct VideoFrame {
    /// Media time since the file's first frame, ms.
    at_ms: u64,
    payloads: PayloadList,
}

/// A file's video, packetized once for every publisher.
pub struct Video {
    frames: Vec<VideoFrame>,
    /// Media time of one pass through the file, ms (a loop starts this much later).
    span_ms: u64,
}

impl Video {
    /// The H.264 video of `source` (an error when it has none).
    pub fn new(source: &Source) -> Result<Self> {
        let mut convert = FlvToFrames::new();
        let mut frames = Vec::new();
        let mut first = None;
        for tag in &source.tags {
            let ingested = convert
                .push(tag.tag_type, tag.timestamp_ms, tag.body.clone())
                .map_err(|e| anyhow!("{e}"))?;
            let Ingested::Frame(frame) = ingested else { continue };
            if frame.kind() != FrameKind::Video {
                continue;
            }
            let config = frame.config().and_then(|c| AvcDecoderConfig::parse(c.record()).ok());
            let length_size = config.as_ref().map_or(4, |c| c.length_size);
            let sets = config.as_ref().filter(|_| frame.keyframe());
            let mut out = BytesMut::new();
            if packetize(frame.payload(), length_size, sets, DEFAULT_MAX_PAYLOAD, &mut out).is_err()
            {
                continue;
            }
            let ms = frame.dts().as_millis();
            let first = *first.get_or_insert(ms);
            let at_ms = u64::try_from(ms - first).unwrap_or(0);
            frames.push(VideoFrame { at_ms, payloads: PayloadList::new(out.freeze()) });
        }
        if frames.is_empty() {
            return Err(anyhow!("the file has no H.264 video to publish"));
        }
        Ok(Self { frames, span_ms: source.span_ms })
    }
}

/// One publisher's schedule and RTP state.
struct Publisher {
    video: Arc<Video>,
    sender: RTCRtpSenderId,
    ssrc: u32,
    seq: u16,
    origin: u32,
    /// When media time zero is due (once connected).
    start: Option<Instant>,
    round: u64,
    next: usize,
    stats: PublisherStats,
}

impl Publisher {
    fn due(&self, start: Instant) -> Instant {
        let frame = &self.video.frames[self.next];
        start + Duration::from_millis(self.round * self.video.span_ms + frame.at_ms)
    }
}

impl Media for Publisher {
    fn connected(&mut self, now: Instant) {
        self.start.get_or_insert(now);
    }

    fn rtp(&mut self, _now: Instant, _packet: &Packet) {}

    fn next_send(&self) -> Option<Instant> {
        self.start.map(|start| self.due(start))
    }

    fn send(&mut self, peer: &mut RTCPeerConnection, now: Instant) {
        let Some(start) = self.start else { return };
        while self.due(start) <= now {
            self.stats.max_lag = self.stats.max_lag.max(now - self.due(start));
            let frame = &self.video.frames[self.next];
            let media_ms = self.round * self.video.span_ms + frame.at_ms;
            let timestamp = self.origin.wrapping_add((media_ms * 90) as u32);
            let Some(mut sender) = peer.rtp_sender(self.sender) else { return };
            let mut payloads = frame.payloads.iter().peekable();
            while let Some(payload) = payloads.next() {
                let header = Header {
                    version: 2,
                    marker: payloads.peek().is_none(),
                    payload_type: H264_PT,
                    sequence_number: self.seq,
                    timestamp,
                    ssrc: self.ssrc,
                    ..Default::default()
                };
                self.seq = self.seq.wrapping_add(1);
                self.stats.bytes += payload.len() as u64 + 12;
                // A packet the stack refuses (the connection closing) is dropped.
                let _ = sender.write_rtp(now, Packet { header, payload });
            }
            self.stats.messages += 1;
            self.next += 1;
            if self.next == self.video.frames.len() {
                self.next = 0;
                self.round += 1;
            }
        }
    }
}

/// Publishes `video` to `url` until `deadline`. An error means it never connected.
pub async fn run(
    shared: Arc<Shared>,
    url: String,
    video: Arc<Video>,
    deadline: tokio::time::Instant,
) -> Result<PublisherStats> {
    let mut engine = MediaEngine::default();
    engine
        .register_codec(codec(MIME_TYPE_H264, 90_000, 0, H264_FMTP, H264_PT), RtpCodecKind::Video)
        .map_err(rtc_error)?;
    let (ssrc, seq, origin) = (rand::random(), rand::random(), rand::random());
    let mut sender = None;
    let mut link = peer::open(&shared, &url, engine, |peer| {
        let track = MediaStreamTrack::new(
            "zenlive-swarm".to_owned(),
            "video".to_owned(),
            "video".to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec(MIME_TYPE_H264, 90_000, 0, H264_FMTP, H264_PT).rtp_codec,
                ..Default::default()
            }],
        );
        sender = Some(peer.add_track(track).map_err(rtc_error)?);
        Ok(())
    })
    .await?;
    let sender = sender.ok_or_else(|| anyhow!("no video sender"))?;
    let mut publisher = Publisher {
        video,
        sender,
        ssrc,
        seq,
        origin,
        start: None,
        round: 0,
        next: 0,
        stats: PublisherStats::default(),
    };
    let ended = link.drive(deadline.into_std(), &mut publisher).await;
    link.close(&shared).await;
    match ended {
        Err(error) if publisher.start.is_none() => Err(error),
        Err(error) => Err(error.context("the connection ended early")),
        Ok(()) => Ok(publisher.stats),
    }
}
