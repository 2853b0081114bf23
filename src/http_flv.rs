//! HTTP-FLV: `GET /{app}/{stream}.flv` streams the live stream as one endless FLV file.
//! The response starts with the FLV header, metadata, sequence headers and the cached GOP
//! (so playback starts on a keyframe at once), then live tags. Tags are encoded once per
//! frame and shared by every HTTP-FLV viewer.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::StreamExt;
use zenlive_actors::{CodecConfig, EncodingSlot, FrameSink, MediaFrame, Offer, Protocol};
use zenlive_media::flv::flv_file_header;
use zenlive_media::flv_frames::{carries, write_config_tag, write_frame_tag};

use crate::admission::{self, Request};
use crate::http::{request_token, stream_key, with_cors, ApiError};
use crate::node::NodeContext;

/// Frames queued for one HTTP-FLV viewer before it counts as behind.
const QUEUE_FRAMES: usize = 96;

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
pub(crate) struct FlvSink {
    tx: mpsc::Sender<Bytes>,
}

impl FlvSink {
    /// A sink sending tags to `tx`.
    pub(crate) fn new(tx: mpsc::Sender<Bytes>) -> Self {
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

/// `GET /{app}/{stream}.flv`
pub async fn play(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (app, file) = path.into_inner();
    let stream = file
        .strip_suffix(".flv")
        .ok_or_else(|| ApiError::not_found("not_found", "no such resource"))?;
    let key = stream_key(&app, stream)?;
    let token = request_token(&req);
    let context = node.clone().into_inner();
    let request = Request {
        key,
        protocol: Protocol::HttpFlv,
        peer: req.peer_addr(),
        token: token.as_deref(),
    };
    let ticket = admission::admit_play(&context, request).await.map_err(ApiError::from)?;
    let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
    ticket.watch(Box::new(FlvSink { tx }));
    let header_bytes = Bytes::copy_from_slice(&flv_file_header(true, true));
    // Paced like RTMP players (`play.write_delay`): the response is written when its
    // body turns pending, so a batch of tags leaves in one write.
    let tags = crate::grid::paced(rx, node.live().play.write_delay);
    let body = tokio_stream::once(header_bytes).chain(tags).map(Ok::<_, std::io::Error>);
    Ok(with_cors(HttpResponse::Ok())
        .content_type("video/x-flv")
        .insert_header((header::CACHE_CONTROL, "no-cache, no-store"))
        .streaming(body))
}
