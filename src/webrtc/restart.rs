//! ICE restarts (RFC 9725 §4.3.2): a client's `PATCH` with new credentials reaches its
//! session's task ([`RestartRequest`]), which applies the client's offer with the new
//! credentials to its `rtc` peer connection (`rtc` answers a changed `ice-ufrag` with a
//! restart of its agent and new credentials of its own, keeping DTLS and SRTP), routes
//! datagrams naming its new username fragment to itself, and answers the new credentials
//! and candidates ([`super::trickle::answer_fragment`]). Media keeps flowing on the pair
//! in use until the client's checks with the new credentials succeed.

use std::time::Instant;

use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::RTCPeerConnection;
use tokio::sync::{mpsc, oneshot};

use super::trickle::{self, IceIdentity};
use super::udp::{Datagram, SessionId};
use super::WebRtc;

/// How many restarts may wait for one session at once (a client sends one at a time).
const PENDING: usize = 2;

/// How long a `PATCH` waits for its session's task to restart (it takes a millisecond).
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A client's ICE restart, for its session's task.
#[derive(Debug)]
pub struct RestartRequest {
    /// The client's new `ice-ufrag`.
    pub ufrag: String,
    /// The client's new `ice-pwd`.
    pub pwd: String,
    /// Where the session answers.
    pub reply: oneshot::Sender<Result<Restarted, String>>,
}

/// A restarted ICE session.
#[derive(Debug, Clone)]
pub struct Restarted {
    /// The `200 OK` body: the session's new credentials and candidates.
    pub fragment: String,
    /// The new ICE session (its `ETag`).
    pub ice: IceIdentity,
}

/// The restart side of one session: the requests that reach it, the client's offer as it
/// stands, and its datagram queue (weakly: the UDP task's sender is the one that keeps it
/// open).
#[derive(Debug)]
pub struct Restarts {
    requests: mpsc::Receiver<RestartRequest>,
    offer: String,
    queue: mpsc::WeakSender<Datagram>,
    open: bool,
}

impl Restarts {
    /// The restart side of a session that answered `offer` and reads `queue`; the sender
    /// goes to [`WebRtc`]'s record of the session.
    pub fn new(
        offer: String,
        queue: &mpsc::Sender<Datagram>,
    ) -> (Self, mpsc::Sender<RestartRequest>) {
        let (tx, requests) = mpsc::channel(PENDING);
        (Self { requests, offer, queue: queue.downgrade(), open: true }, tx)
    }

    /// The next request; pending forever once the node forgot the session.
    pub async fn next(&mut self) -> RestartRequest {
        if self.open {
            if let Some(request) = self.requests.recv().await {
                return request;
            }
            self.open = false;
        }
        std::future::pending().await
    }

    /// Restarts `peer`'s ICE session as `request` asks, routes the new username fragment
    /// to the session `id`, and answers.
    pub async fn apply(
        &mut self,
        request: RestartRequest,
        peer: &mut RTCPeerConnection,
        webrtc: &WebRtc,
        id: &SessionId,
        now: Instant,
    ) {
        let RestartRequest { ufrag, pwd, reply } = request;
        let answer = self.renegotiate(peer, &ufrag, &pwd, now);
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        let Some(local) = trickle::ice_ufrag(&answer).map(str::to_owned) else {
            let _ = reply.send(Err("the new answer has no ice-ufrag".to_owned()));
            return;
        };
        let routed = match self.queue.upgrade() {
            Some(queue) => webrtc.route(id, local.clone(), queue).await,
            None => false,
        };
        if !routed {
            let _ = reply.send(Err("the node is shutting down".to_owned()));
            return;
        }
        let ice = IceIdentity::restarted(&local, &ufrag);
        let _ = reply.send(Ok(Restarted { fragment: trickle::answer_fragment(&answer), ice }));
    }

    fn renegotiate(
        &mut self,
        peer: &mut RTCPeerConnection,
        ufrag: &str,
        pwd: &str,
        now: Instant,
    ) -> Result<String, String> {
        let failed = |e: rtc::shared::error::Error| e.to_string();
        let offer = trickle::with_credentials(&self.offer, ufrag, pwd);
        let description = RTCSessionDescription::offer(offer.clone()).map_err(failed)?;
        peer.set_remote_description(now, description).map_err(failed)?;
        let answer = peer.create_answer(None).map_err(failed)?;
        peer.set_local_description(now, answer).map_err(failed)?;
        self.offer = offer;
        peer.local_description().map(|d| d.sdp).ok_or_else(|| "no local description".to_owned())
    }
}

/// Why a restart was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartError {
    /// No such session (or it ended meanwhile).
    #[error("no such session")]
    NoSession,
    /// The session could not restart its ICE session (the reason from the stack).
    #[error("the ICE restart failed: {0}")]
    Failed(String),
}

impl WebRtc {
    /// Restarts the ICE session of the `protocol` session `id` with the client's new
    /// credentials; answers the `200 OK` fragment and the new identity, which the session's
    /// record takes from now on.
    pub async fn restart(
        &self,
        protocol: zenlive_actors::Protocol,
        id: &str,
        ufrag: String,
        pwd: String,
    ) -> Result<Restarted, RestartError> {
        let sender = self.restart_sender(protocol, id).ok_or(RestartError::NoSession)?;
        let (reply, answer) = oneshot::channel();
        sender.try_send(RestartRequest { ufrag, pwd, reply }).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                RestartError::Failed("restarts of this session are already waiting".to_owned())
            }
            mpsc::error::TrySendError::Closed(_) => RestartError::NoSession,
        })?;
        let answered = tokio::time::timeout(ANSWER_WITHIN, answer)
            .await
            .map_err(|_| RestartError::Failed("the session did not answer in time".to_owned()))?;
        let restarted =
            answered.map_err(|_| RestartError::NoSession)?.map_err(RestartError::Failed)?;
        self.restarted(id, &restarted.ice);
        self.stats.of(protocol).ice_restarts.inc();
        Ok(restarted)
    }
}
