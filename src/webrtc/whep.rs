//! WHEP's HTTP side (WebRTC-HTTP egress, draft-ietf-wish-whep): `POST /whep/{app}/{key}`
//! with an SDP offer (receive-only audio/video) answers `201 Created`, the SDP answer, and
//! `Location: /whep/sessions/{id}` and an `ETag`; `DELETE` on that location ends the
//! session; `PATCH` takes trickled candidates and ICE restarts ([`super::trickle`],
//! [`super::restart`]); `OPTIONS` answers CORS preflights ([`super::resource`], shared with
//! WHIP).
//!
//! A viewer goes through [`admission::admit_play`] like an RTMP or HTTP-FLV player: the
//! token (`Authorization: Bearer`, viewer role and stream scope), the `on_play` deciders,
//! then the stream must be live (`404` with a reason otherwise); its join and leave are
//! announced with protocol `whep` once it connects and when it ends. The offer is checked
//! first ([`super::offer`]), then, once admitted, it must take the stream's video codec
//! (H.264, VP8, VP9 or AV1, from its current configuration, waited for up to 2 s; H.264
//! for a stream with no video by then): an offer without it is refused with `406` and
//! `codec_not_offered`, naming the codec; an HEVC stream with `codec_not_supported`. The session id is 128 random bits,
//! and a WHIP session's id is no WHEP resource: only the URL's holder can delete it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use zenlive_actors::Protocol;
use zenlive_media::{Codec, FrameKind};

use super::offer::{self, OfferError};
use super::packetize;
use super::resource::{self, service, session_id, too_many_sessions, LocalAddr};
use super::session::NegotiateError;
use super::whep_session::{negotiate, WhepSession};
use crate::admission::{self, Request};
use crate::context::NodeContext;
use crate::http::common::{request_token, stream_key, ApiError};

/// The WHEP routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/whep/{app}/{key}", web::post().to(play));
    resource::session_routes(cfg, Protocol::Whep);
}

/// How long an offer waits for a live stream to declare its video codec: a WebRTC
/// publisher's stream is live from its first sound, and its first video keyframe (which
/// says VP9 or AV1) comes a little later; the answer must name the codec the stream sends.
const VIDEO_DECLARED_WITHIN: Duration = Duration::from_secs(2);

/// The stream's video codec, waiting up to [`VIDEO_DECLARED_WITHIN`] for one to be
/// declared; `None` for a stream without video by then.
async fn declared_video(ticket: &admission::Ticket) -> Option<Codec> {
    let deadline = tokio::time::Instant::now() + VIDEO_DECLARED_WITHIN;
    loop {
        let codec = ticket.stats().config(FrameKind::Video).map(|c| c.codec());
        if codec.is_some() || tokio::time::Instant::now() >= deadline {
            return codec;
        }
        // The stream's statistics have no change notification; a few polls at most.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `POST /whep/{app}/{key}`
pub async fn play(
    node: web::Data<NodeContext>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let webrtc = service(&node)?;
    let refused = |error, code: &str| resource::refused(webrtc, Protocol::Whep, error, code);
    let (app, key) = path.into_inner();
    let key = stream_key(&app, &key).map_err(|e| refused(e, "invalid_stream_name"))?;
    let body = resource::read_offer(webrtc, Protocol::Whep, &req, payload).await?;
    let bad_offer = |error: OfferError| {
        let api = ApiError::new(StatusCode::BAD_REQUEST, error.code(), error.to_string());
        refused(api, error.code())
    };
    let (offer, summary) = offer::check(&body).map_err(&bad_offer)?;
    if !summary.any_video() {
        // WHEP sends video; an offer with no video codec it sends could receive nothing.
        return Err(bad_offer(OfferError::NoSupportedCodec));
    }
    if webrtc.session_count() >= webrtc.config().max_sessions {
        return Err(refused(too_many_sessions(), "too_many_sessions"));
    }
    let token = request_token(&req);
    let context = node.clone().into_inner();
    let request = Request {
        key: key.clone(),
        protocol: Protocol::Whep,
        peer: req.peer_addr(),
        token: token.as_deref(),
    };
    let ticket = admission::admit_play(&context, request).await.map_err(|refusal| {
        let code = refusal.code();
        refused(ApiError::from(refusal), code)
    })?;
    let video = match declared_video(&ticket).await {
        None => Codec::H264,
        Some(codec) if packetize::encoder(codec).is_some() => codec,
        Some(other) => {
            // HEVC from Enhanced RTMP: browsers do not take it over WebRTC.
            let api = ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "codec_not_supported",
                format!(
                    "the stream's video is {}; WHEP sends H.264, VP8, VP9 and AV1",
                    other.as_str()
                ),
            );
            tracing::info!(stream = %key, codec = other.as_str(), "whep refused: the stream's video codec is not sent over WebRTC");
            return Err(refused(api, "codec_not_supported"));
        }
    };
    if !summary.offers_video(video) {
        // The stream's video is sent as it came: an offer without its codec gets none.
        let api = ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "codec_not_offered",
            format!("the stream's video is {}; the offer does not take it", video.as_str()),
        );
        tracing::info!(stream = %key, codec = video.as_str(), "whep offer refused: codec not offered");
        return Err(refused(api, "codec_not_offered"));
    }
    let local = req.conn_data::<LocalAddr>().map(|l| l.0);
    let now = Instant::now();
    let playing = match negotiate(offer, &webrtc.candidates(local), video, summary.opus, now) {
        Ok(playing) => playing,
        Err(error) => {
            let status = match error {
                NegotiateError::Refused(_) => StatusCode::BAD_REQUEST,
                NegotiateError::NoCandidates => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(stream = %key, %error, "whep offer refused");
            let api = ApiError::new(status, "offer_refused", error.to_string());
            return Err(refused(api, "offer_refused"));
        }
    };
    let answer = playing.negotiated.answer.clone();
    let etag = playing.negotiated.ice.etag();
    let id: Arc<str> = Arc::from(session_id());
    let directory = context.directory.clone();
    let session =
        WhepSession::register(webrtc, Arc::clone(&id), playing, ticket, directory, now).await;
    let Ok(session) = session else {
        return Err(refused(too_many_sessions(), "too_many_sessions"));
    };
    tracing::info!(stream = %key, session = %id, peer = ?req.peer_addr(), "whep offer answered");
    actix_rt::spawn(context.until_shutdown(session.run()));
    Ok(resource::created(webrtc, Protocol::Whep, &id, &etag, answer))
}
