//! [`RtmpSink`]: an RTMP player's end of its viewer session: encode (shared when possible)
//! and queue without blocking.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use zenlive_actors::{Encoding, FrameSink, MediaFrame, Offer};

use super::chunks::{encode_frame, SERVER_CHUNK_SIZE, SHARED_STREAM_ID};

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

impl FrameSink for RtmpSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        let permit = match self.tx.try_reserve() {
            Ok(permit) => permit,
            Err(TrySendError::Full(())) => return Offer::Full,
            Err(TrySendError::Closed(())) => return Offer::Closed,
        };
        let bytes = if self.stream_id == SHARED_STREAM_ID {
            frame.encoded(Encoding::RtmpChunks, |f| {
                encode_frame(f, SHARED_STREAM_ID, SERVER_CHUNK_SIZE)
            })
        } else {
            encode_frame(frame, self.stream_id, SERVER_CHUNK_SIZE)
        };
        let len = bytes.len();
        permit.send(bytes);
        Offer::Accepted(len)
    }

    fn closed(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let tx = self.tx.clone();
        Some(Box::pin(async move { tx.closed().await }))
    }
}
