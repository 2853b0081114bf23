//! FLV tags out: the sink HTTP-FLV viewers and edge relays share. A frame's tag (and a
//! codec configuration's sequence-header tag) is encoded once, by the first viewer that
//! needs it, and shared by every other (an [`EncodingSlot`] on the frame).

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use zenlive_actors::{CodecConfig, EncodingSlot, FrameSink, MediaFrame, Offer};
use zenlive_media::flv_frames::{carries, write_config_tag, write_frame_tag};

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
