//! HTTP-FLV: `GET /{app}/{stream}.flv` streams the live stream as one endless FLV file.
//! The response starts with the FLV header, metadata, sequence headers and the cached GOP
//! (so playback starts on a keyframe at once), then live tags. Tags are encoded once per
//! frame and shared by every HTTP-FLV viewer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::Actor;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_stream::StreamExt;
use zenlive_actors::{Encoding, FrameSink, MediaFrame, Offer, Protocol, ViewerSession};
use zenlive_media::flv::{flv_file_header, write_tag, TagType};

use crate::auth::Action;
use crate::hooks::{Decision, PlayRequest};
use crate::http::{authorize, stream_key, with_cors, ApiError};
use crate::node::NodeContext;

/// Frames queued for one HTTP-FLV viewer before it counts as behind.
const QUEUE_FRAMES: usize = 96;

/// Encodes one frame as a complete FLV tag (header, body, previous tag size).
pub fn encode_tag(frame: &MediaFrame) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.payload().len() + 15);
    write_tag(&mut out, TagType::from(frame.kind), frame.timestamp, frame.payload());
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

impl FrameSink for FlvSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        match self.tx.try_reserve() {
            Ok(permit) => {
                let tag = frame.encoded(Encoding::FlvTag, encode_tag);
                let len = tag.len();
                permit.send(tag);
                Offer::Accepted(len)
            }
            Err(TrySendError::Full(())) => Offer::Full,
            Err(TrySendError::Closed(())) => Offer::Closed,
        }
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
    let identity = authorize(&node, &req, Action::Play, Some(&key), "http-flv")?;
    let peer = req.peer_addr();
    let request = PlayRequest {
        stream: key.clone(),
        protocol: Protocol::HttpFlv,
        peer,
        user: identity.clone(),
    };
    if let Decision::Deny(reason) = node.hooks.decide_play(request).await {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "denied", reason));
    }
    let context = node.clone().into_inner();
    let entry = crate::cluster::relay::live_stream(&context, &key).await.ok_or_else(|| {
        ApiError::not_found("stream_not_found", format!("stream {key} is not live"))
    })?;
    let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
    let session = ViewerSession::new(
        key.clone(),
        Protocol::HttpFlv,
        entry,
        node.directory.clone(),
        Box::new(FlvSink { tx }),
        Arc::clone(&node.counters),
        node.live().play.max_viewer_lag,
    );
    let user = identity.map(|i| i.user);
    node.hooks.track_viewer(session, key, Protocol::HttpFlv, peer, user).start();
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
