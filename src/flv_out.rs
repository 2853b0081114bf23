//! FLV tags out: the sink HTTP-FLV viewers and edge relays share. A frame's tag (and a
//! codec configuration's sequence-header tag) is encoded once, by the first viewer that
//! needs it, and shared by every other (an [`EncodingSlot`] on the frame).

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use zenlive_actors::{CodecConfig, EncodingSlot, FrameSink, MediaFrame, Offer, StreamStats};
use zenlive_media::flv::flv_file_header;
use zenlive_media::flv_frames::{carries, write_config_tag, write_frame_tag};
use zenlive_media::FrameKind;

/// Frames and configurations as FLV tags, shared by every HTTP-FLV viewer and relay.
static FLV_TAGS: LazyLock<EncodingSlot> = LazyLock::new(EncodingSlot::register);

/// Encodes one frame as a complete FLV tag (header, body, previous tag size); empty when
/// FLV cannot carry its codec.
pub fn encode_tag(frame: &MediaFrame) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.payload().len() + 20);
    write_frame_tag(&mut out, frame);
    out.freeze()
}

/// Encodes a codec configuration as an FLV sequence-header tag; empty when FLV cannot carry
/// its codec.
pub fn encode_config_tag(config: &CodecConfig) -> Bytes {
    let mut out = BytesMut::with_capacity(config.record().len() + 20);
    write_config_tag(&mut out, config);
    out.freeze()
}

/// The FLV file header for a viewer joining `stats`'s stream: it announces the tracks the
/// publisher has declared that FLV can carry. A player that is promised audio waits for it
/// (FFmpeg 5.1 waits forever on a video-only stream announced with audio); before the
/// publisher has declared any track, both are announced.
pub fn file_header(stats: &StreamStats) -> [u8; 13] {
    let carried = |kind| stats.config(kind).is_some_and(|config| carries(config.codec()));
    match (carried(FrameKind::Audio), carried(FrameKind::Video)) {
        (false, false) => flv_file_header(true, true),
        (audio, video) => flv_file_header(audio, video),
    }
}

/// A viewer's frames as FLV tags into a channel (HTTP-FLV, and relays to edge nodes).
pub struct FlvSink {
    tx: mpsc::Sender<Bytes>,
}

impl FlvSink {
    /// A sink sending tags to `tx`.
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self { tx }
    }
}

impl FlvSink {
    fn queue(&mut self, encode: impl FnOnce() -> Bytes) -> Offer {
        match self.tx.try_reserve() {
            Ok(permit) => {
                let tag = encode();
                let len = tag.len();
                permit.send(tag);
                Offer::Accepted(len)
            }
            Err(TrySendError::Full(())) => Offer::Full,
            Err(TrySendError::Closed(())) => Offer::Closed,
        }
    }
}

impl FrameSink for FlvSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        if !carries(frame.codec()) {
            return Offer::Unsupported;
        }
        self.queue(|| frame.encoded(*FLV_TAGS, encode_tag))
    }

    fn offer_config(&mut self, config: &CodecConfig) -> Offer {
        if !carries(config.codec()) {
            return Offer::Unsupported;
        }
        self.queue(|| config.encoded(*FLV_TAGS, encode_config_tag))
    }

    fn closed(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let tx = self.tx.clone();
        Some(Box::pin(async move { tx.closed().await }))
    }
}
