//! [`RtmpSink`]: an RTMP player's end of its viewer session: encode (shared when possible)
//! and queue without blocking.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use zenlive_actors::{CodecConfig, EncodingSlot, FrameSink, MediaFrame, Offer};
use zenlive_media::flv_frames::carries;

use super::chunks::{encode_config, encode_frame, SERVER_CHUNK_SIZE, SHARED_STREAM_ID};

/// Frames and configurations as RTMP chunks for players on [`SHARED_STREAM_ID`].
static RTMP_CHUNKS: LazyLock<EncodingSlot> = LazyLock::new(EncodingSlot::register);

/// Queues a player's frames as RTMP chunks for its connection to write.
pub struct RtmpSink {
    tx: mpsc::Sender<Bytes>,
    stream_id: u32,
}

impl RtmpSink {
    /// A sink writing to `tx` for a player on message stream `stream_id`.
    pub fn new(tx: mpsc::Sender<Bytes>, stream_id: u32) -> Self {
        Self { tx, stream_id }
    }
}

impl RtmpSink {
    fn queue(&mut self, encode: impl FnOnce(u32) -> Bytes) -> Offer {
        let permit = match self.tx.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Full(())) => return Offer::Full,
            Err(TrySendError::Closed(())) => return Offer::Closed,
        };
        let bytes = encode(self.stream_id);
        let len = bytes.len();
        permit.send(bytes);
        Offer::Accepted(len)
    }
}

impl FrameSink for RtmpSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        if !carries(frame.codec()) {
            return Offer::Unsupported;
        }
        // Every codec `carries` admits encodes, so the empty fallback is never sent.
        let encode =
            |f: &MediaFrame, id| encode_frame(f, id, SERVER_CHUNK_SIZE).unwrap_or_default();
        self.queue(|id| match id {
            SHARED_STREAM_ID => frame.encoded(*RTMP_CHUNKS, |f| encode(f, id)),
            _ => encode(frame, id),
        })
    }

    fn offer_config(&mut self, config: &CodecConfig) -> Offer {
        if !carries(config.codec()) {
            return Offer::Unsupported;
        }
        let encode =
            |c: &CodecConfig, id| encode_config(c, id, SERVER_CHUNK_SIZE).unwrap_or_default();
        self.queue(|id| match id {
            SHARED_STREAM_ID => config.encoded(*RTMP_CHUNKS, |c| encode(c, id)),
            _ => encode(config, id),
        })
    }

    fn closed(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let tx = self.tx.clone();
        Some(Box::pin(async move { tx.closed().await }))
    }
}
