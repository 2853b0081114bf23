//! HTTP-FLV: `GET /{app}/{stream}.flv` streams the live stream as one endless FLV file.
//! The response starts with the FLV header, metadata, sequence headers and the cached GOP
//! (so playback starts on a keyframe at once), then live tags. Tags are encoded once per
//! frame and shared by every HTTP-FLV viewer.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use zenlive_actors::Protocol;

use crate::admission::{self, Request};
use crate::context::NodeContext;
use crate::flv_out::{file_header, FlvSink};
use crate::http::common::{request_token, stream_key, with_cors, ApiError};

/// Frames queued for one HTTP-FLV viewer before it counts as behind.
const QUEUE_FRAMES: usize = 96;

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
    let header_bytes = Bytes::copy_from_slice(&file_header(ticket.stats()));
    let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
    ticket.watch(Box::new(FlvSink::new(tx)));
    // Paced like RTMP players (`play.write_delay`): the response is written when its
    // body turns pending, so a batch of tags leaves in one write.
    let tags = crate::grid::paced(rx, node.live().play.write_delay);
    let body = tokio_stream::once(header_bytes).chain(tags).map(Ok::<_, std::io::Error>);
    Ok(with_cors(HttpResponse::Ok())
        .content_type("video/x-flv")
        .insert_header((header::CACHE_CONTROL, "no-cache, no-store"))
        .streaming(body))
}
