//! One WHEP viewer's media → RTP, sans-IO: frames (and the time) go in, RTP packets for the
//! video and audio tracks come out; RTCP feedback goes in, keyframe requests come out. The
//! counterpart of [`super::ingest`], which turns a WHIP publisher's RTP into frames.
//!
//! - **Video** (H.264, VP8, VP9 or AV1, the one the session negotiated:
//!   [`Playback::with_video`]): each frame is packetized once per node
//!   ([`super::packetize`]), cached on the frame in an [`EncodingSlot`] (one slot for all:
//!   a frame has one codec); every viewer stamps the payloads with its own sequence
//!   numbers, SSRC and timestamps. The first video frame a
//!   viewer is sent is a keyframe (the viewer session starts it at the stream's cached
//!   GOP; this core refuses anything else until then).
//! - **Audio**: Opus frames, one packet each: a WHIP publisher's as they came, or an RTMP
//!   publisher's AAC transcoded once per stream on this node ([`super::audio_feed`]; the
//!   viewer's sink takes the AAC frames themselves and drops them,
//!   [`super::whep_session::WhepSink`]). Other audio has no track here.
//! - **Clocks**: a packet's RTP timestamp is a random origin plus the frame's presentation
//!   time in ticks of the track's clock (90 kHz, 48 kHz), computed from the frame's time each
//!   time (never accumulated), so it cannot drift; it wraps at 2^32 as RTP's does. Video and
//!   audio frames are on the stream's one media clock (transcoded Opus carries the media time
//!   of the AAC samples it holds), so both tracks' timestamps describe the same instants;
//!   a player lines them up through the RTCP sender reports, which `rtc` derives from when
//!   each track's packets were sent (transcoded audio leaves a few tens of milliseconds
//!   after the video of the same instant: the transcoder waits for 20 ms of samples).
//! - **Feedback**: a PLI or FIR for the video track becomes a keyframe request for the
//!   stream's publisher, at most one per [`KEYFRAME_REQUEST_INTERVAL`]; NACKs are counted
//!   here and answered by the stack's NACK responder (its buffer of the packets last sent).
//! - **B-frames**: a video frame whose presentation time differs from its decode time is
//!   reported once ([`Playback::bframes_seen`]), for the session to log.

use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use std::sync::LazyLock;

use super::packetize;
use zenlive_media::rtp_h264_pack::PayloadList;
use zenlive_media::{Codec, EncodingSlot, FrameKind, MediaFrame, MediaTime};

/// Least time between two keyframe requests from one viewer.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// Frames as RTP payloads ([`super::packetize`]), shared by every WHEP viewer.
static RTP_PAYLOADS: LazyLock<EncodingSlot> = LazyLock::new(EncodingSlot::register);

/// Which track a packet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// The video track.
    Video,
    /// The audio track.
    Audio,
}

/// One outgoing track: its RTP identity and counters.
#[derive(Debug, Clone)]
struct TrackOut {
    ssrc: u32,
    payload_type: u8,
    clock_rate: u32,
    next_seq: u16,
    /// The random origin of its RTP timestamps.
    origin: u32,
}

impl TrackOut {
    fn header(&mut self, at: MediaTime, marker: bool) -> Header {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        // Ticks since media time zero, truncated to the 32-bit circle (RTP's wrap).
        let ticks = at.as_ticks(self.clock_rate) as u32;
        Header {
            version: 2,
            marker,
            payload_type: self.payload_type,
            sequence_number: seq,
            timestamp: self.origin.wrapping_add(ticks),
            ssrc: self.ssrc,
            ..Default::default()
        }
    }
}

/// A track's negotiated identity, for [`Playback::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackParams {
    /// Its SSRC.
    pub ssrc: u32,
    /// The negotiated payload type.
    pub payload_type: u8,
    /// The first sequence number (random).
    pub first_seq: u16,
    /// The RTP timestamp of media time zero (random).
    pub origin: u32,
}

/// What the viewer said in RTCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Feedback {
    /// PLIs and FIRs about the video track.
    pub keyframe_requests: u64,
    /// Packets asked for again (NACK), either track.
    pub nacked: u64,
}

/// Why a frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// The viewer has no track for it (the offer had none, or the codec is not sent).
    NoTrack,
    /// Video before the first keyframe.
    WaitingKeyframe,
    /// The frame could not be packetized (broken AVCC, over the size limit).
    Malformed,
}

/// One viewer's playback state. See the module docs.
#[derive(Debug)]
pub struct Playback {
    video: Option<TrackOut>,
    video_codec: Codec,
    audio: Option<TrackOut>,
    keyframe_sent: bool,
    last_request: Option<Instant>,
    bframes: bool,
}

impl Playback {
    /// Playback on the negotiated tracks (a track the offer did not take is `None`).
    pub fn new(video: Option<TrackParams>, audio: Option<TrackParams>) -> Self {
        let track = |p: TrackParams, clock_rate| TrackOut {
            ssrc: p.ssrc,
            payload_type: p.payload_type,
            clock_rate,
            next_seq: p.first_seq,
            origin: p.origin,
        };
        Self {
            video: video.map(|p| track(p, 90_000)),
            video_codec: Codec::H264,
            audio: audio.map(|p| track(p, 48_000)),
            keyframe_sent: false,
            last_request: None,
            bframes: false,
        }
    }

    /// The video track carries `codec` (H.264, the default, or VP8); other video frames
    /// have no track.
    pub fn with_video(mut self, codec: Codec) -> Self {
        self.video_codec = codec;
        self
    }

    /// Whether a video frame with B-frame reordering (presentation ≠ decode time) has
    /// been seen; true from then on.
    pub fn bframes_seen(&self) -> bool {
        self.bframes
    }

    /// The RTP packets of `frame`, appended to `out` (with the track each is for).
    pub fn frame(
        &mut self,
        frame: &MediaFrame,
        out: &mut Vec<(Track, Packet)>,
    ) -> Result<(), Skipped> {
        match (frame.kind(), frame.codec()) {
            (FrameKind::Video, codec) if codec == self.video_codec => self.video_frame(frame, out),
            (FrameKind::Audio, Codec::Opus) => {
                let track = self.audio.as_mut().ok_or(Skipped::NoTrack)?;
                let header = track.header(frame.pts(), false);
                out.push((Track::Audio, Packet { header, payload: frame.payload().clone() }));
                Ok(())
            }
            _ => Err(Skipped::NoTrack),
        }
    }

    fn video_frame(
        &mut self,
        frame: &MediaFrame,
        out: &mut Vec<(Track, Packet)>,
    ) -> Result<(), Skipped> {
        let track = self.video.as_mut().ok_or(Skipped::NoTrack)?;
        if !self.keyframe_sent && !frame.keyframe() {
            return Err(Skipped::WaitingKeyframe);
        }
        if frame.pts() != frame.dts() {
            self.bframes = true;
        }
        let encode = packetize::encoder(frame.codec()).ok_or(Skipped::NoTrack)?;
        let list = PayloadList::new(frame.encoded(*RTP_PAYLOADS, encode));
        if list.is_empty() {
            return Err(Skipped::Malformed);
        }
        self.keyframe_sent = true;
        let mut payloads = list.iter().peekable();
        while let Some(payload) = payloads.next() {
            let header = track.header(frame.pts(), payloads.peek().is_none());
            out.push((Track::Video, Packet { header, payload }));
        }
        Ok(())
    }

    /// Reads the viewer's RTCP; `true` when a keyframe request should go to the publisher
    /// now (a PLI or FIR for the video track, not within [`KEYFRAME_REQUEST_INTERVAL`] of
    /// the last one).
    pub fn rtcp(
        &mut self,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
        feedback: &mut Feedback,
    ) -> bool {
        let video = self.video.as_ref().map(|t| t.ssrc);
        let mut wanted = false;
        for packet in packets {
            let any = packet.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                wanted |= Some(pli.media_ssrc) == video;
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                wanted |= fir.fir.iter().any(|entry| Some(entry.ssrc) == video)
                    || Some(fir.media_ssrc) == video;
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                let lost: u64 = nack
                    .nacks
                    .iter()
                    .map(|pair| 1 + u64::from(pair.lost_packets.count_ones()))
                    .sum();
                feedback.nacked += lost;
            }
        }
        if !wanted {
            return false;
        }
        feedback.keyframe_requests += 1;
        if self
            .last_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return false;
        }
        self.last_request = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;
    use zenlive_media::avc::AvcDecoderConfig;
    use zenlive_media::CodecConfig;

    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84, 0x00];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const VIDEO_SSRC: u32 = 1111;

    fn params(ssrc: u32, payload_type: u8, origin: u32) -> TrackParams {
        TrackParams { ssrc, payload_type, first_seq: 65_535, origin }
    }

    fn playback() -> Playback {
        Playback::new(Some(params(VIDEO_SSRC, 102, u32::MAX - 1000)), Some(params(2222, 111, 7)))
    }

    fn config() -> CodecConfig {
        let record = AvcDecoderConfig::from_parameter_sets(
            vec![Bytes::from_static(SPS)],
            vec![Bytes::from_static(PPS)],
        )
        .expect("valid")
        .to_record();
        CodecConfig::new(Codec::H264, record, MediaTime::ZERO)
    }

    fn video(ms: i64, pts_ms: i64, key: bool, nal_len: usize) -> MediaFrame {
        let mut avcc = (nal_len as u32).to_be_bytes().to_vec();
        avcc.push(if key { 0x65 } else { 0x41 });
        avcc.extend(std::iter::repeat_n(7u8, nal_len - 1));
        let (dts, pts) = (MediaTime::from_millis(ms), MediaTime::from_millis(pts_ms));
        MediaFrame::video(Codec::H264, dts, pts, key, Bytes::from(avcc), Some(config()))
    }

    #[test]
    fn video_starts_at_a_keyframe_with_its_parameter_sets_and_marks_the_last_packet() {
        let mut playback = playback();
        let mut out = Vec::new();
        assert_eq!(
            playback.frame(&video(0, 0, false, 10), &mut out),
            Err(Skipped::WaitingKeyframe)
        );
        playback.frame(&video(40, 40, true, 3000), &mut out).expect("sent");
        // STAP-A (SPS, PPS) and 3 FU-A fragments, one timestamp, consecutive numbers.
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].1.payload[0] & 0x1f, 24);
        let seqs: Vec<u16> = out.iter().map(|(_, p)| p.header.sequence_number).collect();
        assert_eq!(seqs, [65_535, 0, 1, 2]);
        let markers: Vec<bool> = out.iter().map(|(_, p)| p.header.marker).collect();
        assert_eq!(markers, [false, false, false, true]);
        assert!(out.iter().all(|(t, p)| *t == Track::Video
            && p.header.timestamp == (u32::MAX - 1000).wrapping_add(3600)
            && p.header.ssrc == VIDEO_SSRC
            && p.header.payload_type == 102));
        out.clear();
        playback.frame(&video(80, 80, false, 10), &mut out).expect("a delta frame");
        assert_eq!(out.len(), 1, "no parameter sets before a delta frame");
        assert!(!playback.bframes_seen());
    }

    #[test]
    fn vp8_frames_are_packetized_on_a_vp8_track_and_h264_has_none_there() {
        let mut playback = playback().with_video(Codec::Vp8);
        let mut out = Vec::new();
        assert_eq!(playback.frame(&video(0, 0, true, 10), &mut out), Err(Skipped::NoTrack));
        let at = MediaTime::from_millis(40);
        let vp8 = |key: bool, len: usize| {
            let data = Bytes::from(vec![if key { 0x50 } else { 0x51 }; len]);
            MediaFrame::video(Codec::Vp8, at, at, key, data, None)
        };
        assert_eq!(playback.frame(&vp8(false, 10), &mut out), Err(Skipped::WaitingKeyframe));
        playback.frame(&vp8(true, 3000), &mut out).expect("sent");
        assert_eq!(out.len(), 3, "3000 bytes in three packets");
        // The payload descriptor: S=1 on the first packet only, then the frame's bytes.
        let starts: Vec<u8> = out.iter().map(|(_, p)| p.payload[0]).collect();
        assert_eq!(starts, [0x10, 0, 0]);
        assert_eq!(out[0].1.payload[1], 0x50);
        let total: usize = out.iter().map(|(_, p)| p.payload.len() - 1).sum();
        assert_eq!(total, 3000);
        let markers: Vec<bool> = out.iter().map(|(_, p)| p.header.marker).collect();
        assert_eq!(markers, [false, false, true]);
    }

    #[test]
    fn timestamps_follow_presentation_time_without_drift() {
        let mut playback = playback();
        let mut out = Vec::new();
        playback.frame(&video(0, 0, true, 10), &mut out).expect("sent");
        // 30 hours at 29.97 fps (1001/30000 s a frame: not a whole number of milliseconds).
        let frames: i64 = 30 * 3600 * 30;
        let last = MediaTime::from_ticks(frames * 3003, 90_000);
        let frame = MediaFrame::video(
            Codec::H264,
            last,
            last,
            false,
            video(0, 0, false, 5).payload().clone(),
            None,
        );
        out.clear();
        playback.frame(&frame, &mut out).expect("sent");
        let expected = (u32::MAX - 1000).wrapping_add((frames * 3003) as u32);
        assert_eq!(out[0].1.header.timestamp, expected);
    }

    #[test]
    fn opus_passes_through_and_other_audio_has_no_track() {
        let mut playback = playback();
        let mut out = Vec::new();
        let opus = MediaFrame::audio(
            Codec::Opus,
            MediaTime::from_millis(20),
            Bytes::from_static(&[0xfc, 1]),
            None,
        );
        playback.frame(&opus, &mut out).expect("sent");
        let (track, packet) = &out[0];
        assert_eq!(
            (*track, packet.header.timestamp, packet.header.payload_type),
            (Track::Audio, 7 + 960, 111)
        );
        let aac = MediaFrame::audio(Codec::Aac, MediaTime::ZERO, Bytes::from_static(&[1]), None);
        assert_eq!(playback.frame(&aac, &mut out), Err(Skipped::NoTrack));
        let mut video_only = Playback::new(Some(params(1, 102, 0)), None);
        assert_eq!(video_only.frame(&opus, &mut out), Err(Skipped::NoTrack));
    }

    #[test]
    fn b_frames_are_noticed_and_broken_frames_skipped() {
        let mut playback = playback();
        let mut out = Vec::new();
        playback.frame(&video(0, 80, true, 10), &mut out).expect("sent");
        assert!(playback.bframes_seen());
        let broken = MediaFrame::video(
            Codec::H264,
            MediaTime::ZERO,
            MediaTime::ZERO,
            false,
            Bytes::from_static(&[0, 0, 0, 99, 0x41]),
            None,
        );
        assert_eq!(playback.frame(&broken, &mut out), Err(Skipped::Malformed));
    }

    #[test]
    fn keyframe_requests_are_rate_limited_and_nacks_counted() {
        let mut playback = playback();
        let t0 = Instant::now();
        let mut feedback = Feedback::default();
        let pli: Box<dyn rtc::rtcp::Packet> =
            Box::new(PictureLossIndication { sender_ssrc: 9, media_ssrc: VIDEO_SSRC });
        let other: Box<dyn rtc::rtcp::Packet> =
            Box::new(PictureLossIndication { sender_ssrc: 9, media_ssrc: 2222 });
        let nack: Box<dyn rtc::rtcp::Packet> = Box::new(TransportLayerNack {
            sender_ssrc: 9,
            media_ssrc: VIDEO_SSRC,
            nacks: vec![NackPair { packet_id: 10, lost_packets: 0b101 }],
        });
        assert!(!playback.rtcp(&[other], t0, &mut feedback), "not the video track");
        assert!(playback.rtcp(std::slice::from_ref(&pli), t0, &mut feedback));
        assert!(!playback.rtcp(
            std::slice::from_ref(&pli),
            t0 + Duration::from_millis(500),
            &mut feedback
        ));
        assert!(playback.rtcp(&[pli, nack], t0 + KEYFRAME_REQUEST_INTERVAL, &mut feedback));
        assert_eq!(feedback, Feedback { keyframe_requests: 3, nacked: 3 });
    }
}
