//! Admission: the one path by which a publisher or a viewer gets in, whatever protocol it
//! speaks.
//!
//! A front-end (RTMP, HTTP-FLV, HLS, the origin side of a relay, and the WHIP/WHEP handlers
//! to come) names the stream, its protocol, the client's address and the token it found,
//! and gets a decision: [`admit_publish`] answers a [`Publishing`] (the stream started, the
//! frames go through its [`StreamPublisher`]) and [`admit_play`] a [`Ticket`] (the stream
//! is live here, locally or relayed from its owner) or a [`Refusal`]. Each protocol renders
//! a refusal its own way (an RTMP `onStatus` code, an HTTP status and JSON body, ...); the
//! order of the checks, the metrics, the logs and the hooks are the same for all.
//!
//! Play: auth → the application's `on_play` deciders → find the stream (here, or a relay
//! from its owner) → [`Ticket::watch`] starts the viewer session with the front-end's sink
//! and announces the viewer's join and leave. Publish: draining → auth → `on_publish`
//! deciders → the supervisor claims the name and starts the stream.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::{Actor, Addr};
use tokio::sync::mpsc;
use zenlive_actors::directory::StreamEntry;
use zenlive_actors::stream::PublisherCommand;
use zenlive_actors::{
    FrameSink, OutputChoices, Protocol, PublishError, StreamKey, StreamPublisher, StreamStats,
    ViewerSession,
};

use crate::auth::{Action, AuthError, Identity};
use crate::context::NodeContext;
use crate::hooks::{Decision, PublishRequest};
use crate::recording::RecorderOutput;

/// Who asks to publish or play.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The stream.
    pub key: StreamKey,
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// Its address.
    pub peer: Option<SocketAddr>,
    /// The token it presented, if any.
    pub token: Option<&'a str>,
}

/// Why a client was not let in. Front-ends render it in their protocol.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The node drains: publish to another node.
    #[error("this node is draining; publish to another node")]
    Draining,
    /// The token is missing, invalid, or does not allow this.
    #[error("{code}: {0}", code = .0.code())]
    Auth(AuthError),
    /// An application decider said no.
    #[error("{0}")]
    Denied(String),
    /// Nothing is published under this name (anywhere in the cluster).
    #[error("stream {0} is not live")]
    NotLive(StreamKey),
    /// The stream could not be started (the name is taken, the registry refused, ...).
    #[error(transparent)]
    Start(#[from] PublishError),
}

impl Refusal {
    /// A short machine-readable code for JSON bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Draining => "draining",
            Self::Auth(error) => error.code(),
            Self::Denied(_) => "denied",
            Self::NotLive(_) => "stream_not_found",
            Self::Start(_) => "publish_refused",
        }
    }
}

/// A publisher let in: its handle on the stream, and the commands (kicks) for its
/// connection.
pub struct Publishing {
    /// Where its frames go.
    pub publisher: StreamPublisher,
    /// Commands for the connection (a kick from the API or the application).
    pub commands: mpsc::Receiver<PublisherCommand>,
    /// Who it is, when a token said so.
    pub identity: Option<Identity>,
}

/// A viewer let in. Start it with [`Ticket::watch`]; dropping it starts nothing (HLS,
/// whose viewers read the stream's packager rather than a session of their own).
pub struct Ticket {
    node: Arc<NodeContext>,
    key: StreamKey,
    protocol: Protocol,
    peer: Option<SocketAddr>,
    entry: StreamEntry,
    /// Who it is, when a token said so.
    pub identity: Option<Identity>,
}

impl Ticket {
    /// The stream.
    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    /// The lineage of the stream instance the viewer will watch (a restarted instance
    /// keeps it; a new publisher of the same name starts another).
    pub fn lineage(&self) -> u64 {
        self.entry.lineage
    }

    /// The stream's live statistics, including its tracks' current configurations.
    pub fn stats(&self) -> &Arc<StreamStats> {
        &self.entry.stats
    }

    /// Starts the viewer's session on the current arbiter, its frames offered to `sink`,
    /// with the node's play settings; its join is announced now and its leave when it
    /// ends (a relay's origin side is not a viewer: edges report their own).
    pub fn watch(self, sink: Box<dyn FrameSink>) -> Addr<ViewerSession> {
        let node = &self.node;
        let session = ViewerSession::new(
            self.key.clone(),
            self.protocol,
            self.entry,
            node.directory.clone(),
            sink,
            Arc::clone(&node.counters),
            node.live().play.max_viewer_lag,
        );
        // A panic in the session closes its connection (the sink goes with it), is counted,
        // and touches nothing else.
        let counters = Arc::clone(&node.counters);
        let session = session.on_crash(move || counters.restarted("viewer"));
        if self.protocol == Protocol::Relay {
            return session.start();
        }
        let user = self.identity.map(|i| i.user);
        node.hooks.track_viewer(session, self.key, self.protocol, self.peer, user).start()
    }
}

/// Checks the token for `action`; a refusal is counted and logged (without the token).
fn authorize(
    node: &NodeContext,
    request: &Request<'_>,
    action: Action,
) -> Result<Option<Identity>, Refusal> {
    node.auth.load().check(request.token, action, Some(&request.key)).map_err(|error| {
        let protocol = request.protocol.as_str();
        node.metrics.auth_failure(protocol, error.code());
        let peer = request.peer.map(|p| p.to_string()).unwrap_or_default();
        let stream = &request.key;
        tracing::warn!(%peer, %stream, protocol, reason = error.code(), %error, "auth refused");
        Refusal::Auth(error)
    })
}

fn hook_request(request: &Request<'_>, identity: &Option<Identity>) -> PublishRequest {
    PublishRequest {
        stream: request.key.clone(),
        protocol: request.protocol,
        peer: request.peer,
        user: identity.clone(),
    }
}

/// Lets a publisher in, or says why not. The stream is started on the current arbiter.
pub async fn admit_publish(
    node: &Arc<NodeContext>,
    request: Request<'_>,
) -> Result<Publishing, Refusal> {
    if node.is_draining() {
        return Err(Refusal::Draining);
    }
    let identity = authorize(node, &request, Action::Publish)?;
    let decision = node.hooks.decide_publish(hook_request(&request, &identity)).await;
    if let Decision::Deny(reason) = decision {
        return Err(Refusal::Denied(reason));
    }
    let mut outputs = OutputChoices::default();
    if let Some(record) = decision.options().record {
        outputs.set(RecorderOutput::NAME, record);
    }
    let (publisher, commands) = StreamPublisher::start(
        &node.supervisor,
        node.directory.clone(),
        request.key.clone(),
        request.protocol,
        request.peer,
        identity.as_ref().map(|i| i.user.clone()),
        outputs,
    )
    .await
    .map_err(|error| {
        tracing::warn!(peer = ?request.peer, stream = %request.key, %error, "publish refused");
        Refusal::Start(error)
    })?;
    tracing::info!(peer = ?request.peer, stream = %request.key, protocol = request.protocol.as_str(), "publish started");
    Ok(Publishing { publisher, commands, identity })
}

/// A viewer whose token and the application's deciders let it in; [`Viewer::find`] looks
/// for the stream.
pub struct Viewer {
    node: Arc<NodeContext>,
    key: StreamKey,
    protocol: Protocol,
    peer: Option<SocketAddr>,
    /// Who it is, when a token said so.
    pub identity: Option<Identity>,
}

impl Viewer {
    /// The stream, here or relayed from the node that owns it (a relay starts on demand).
    pub async fn find(&self) -> Result<Ticket, Refusal> {
        let entry = crate::cluster::pull::live_stream(&self.node, &self.key)
            .await
            .ok_or_else(|| Refusal::NotLive(self.key.clone()))?;
        Ok(Ticket {
            node: Arc::clone(&self.node),
            key: self.key.clone(),
            protocol: self.protocol,
            peer: self.peer,
            entry,
            identity: self.identity.clone(),
        })
    }
}

/// Lets a viewer in, or says why not: auth, then the play deciders (skipped when none is
/// registered). Most front-ends want [`admit_play`], which also finds the stream.
pub async fn admit_viewer(
    node: &Arc<NodeContext>,
    request: Request<'_>,
) -> Result<Viewer, Refusal> {
    let identity = authorize(node, &request, Action::Play)?;
    if node.hooks.decides_play() {
        let decision = node.hooks.decide_play(hook_request(&request, &identity)).await;
        if let Decision::Deny(reason) = decision {
            return Err(Refusal::Denied(reason));
        }
    }
    Ok(Viewer {
        node: Arc::clone(node),
        key: request.key,
        protocol: request.protocol,
        peer: request.peer,
        identity,
    })
}

/// Lets a viewer in and finds its stream ([`admit_viewer`], then [`Viewer::find`]).
pub async fn admit_play(node: &Arc<NodeContext>, request: Request<'_>) -> Result<Ticket, Refusal> {
    admit_viewer(node, request).await?.find().await
}

/// Lets an edge node in to relay a stream this node holds (the cluster link authenticated
/// it already): no token, no deciders, no viewer events; the stream must be live here.
pub fn admit_edge(node: &Arc<NodeContext>, key: StreamKey) -> Result<Ticket, Refusal> {
    let entry = node.directory.get(&key).ok_or_else(|| Refusal::NotLive(key.clone()))?;
    Ok(Ticket {
        node: Arc::clone(node),
        key,
        protocol: Protocol::Relay,
        peer: None,
        entry,
        identity: None,
    })
}
