//! WHEP players: a receive-only peer connection ([`crate::peer`]) that offers H.264 (and
//! Opus with `--audio`) and counts what arrives ([`RtpStats`]); nothing is decoded. At the
//! deadline it DELETEs its session.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS,
};
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use crate::peer::{self, codec, rtc_error, Media, Shared};
use crate::rtp::RtpStats;

/// The payload types this player offers (the answer keeps the offer's numbers).
const H264_PT: u8 = 102;
const OPUS_PT: u8 = 111;

/// H.264 as the node sends it: packetization mode 1, constrained baseline.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// What a player ended with.
pub struct Played {
    /// What it counted.
    pub stats: RtpStats,
    /// Whether its connection failed or closed before the deadline.
    pub ended_early: bool,
}

impl Media for RtpStats {
    fn connected(&mut self, now: Instant) {
        RtpStats::connected(self, now);
    }

    fn rtp(&mut self, now: Instant, packet: &Packet) {
        let header = &packet.header;
        match header.payload_type {
            H264_PT => self.video(now, header.sequence_number, header.timestamp, &packet.payload),
            _ => self.audio(packet.payload.len()),
        }
    }
}

/// Plays `url` until `deadline`, offering Opus too when `audio`. An error means the player
/// never connected.
pub async fn run(
    shared: Arc<Shared>,
    url: String,
    audio: bool,
    deadline: tokio::time::Instant,
) -> Result<Played> {
    let mut engine = MediaEngine::default();
    engine
        .register_codec(codec(MIME_TYPE_H264, 90_000, 0, H264_FMTP, H264_PT), RtpCodecKind::Video)
        .map_err(rtc_error)?;
    let mut kinds = vec![RtpCodecKind::Video];
    if audio {
        let opus = codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", OPUS_PT);
        engine.register_codec(opus, RtpCodecKind::Audio).map_err(rtc_error)?;
        kinds.push(RtpCodecKind::Audio);
    }
    let mut link = peer::open(&shared, &url, engine, |peer| {
        for kind in kinds {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            };
            peer.add_transceiver_from_kind(kind, Some(init)).map_err(rtc_error)?;
        }
        Ok(())
    })
    .await?;
    let mut stats = RtpStats::new(link.started);
    let ended = link.drive(deadline.into_std(), &mut stats).await;
    link.close(&shared).await;
    match ended {
        Err(error) if stats.connected.is_none() => Err(error),
        ended => Ok(Played { stats, ended_early: ended.is_err() }),
    }
}
