//! The application's hooks: deciders that may allow or reject a publish or a play (async,
//! bounded by `hooks.timeout`, with `hooks.on_failure` deciding when one fails), and
//! notifications of stream and viewer starts and ends. Webhooks ride along as one more
//! listener ([`crate::webhooks`]). Hooks only tell and ask the application: a stream's
//! outputs (the HLS packager) are started by the stream's life ([`zenlive_actors::output`]).
//!
//! Notifications run on actor threads and must return quickly; a panicking hook is logged
//! and ignored. Deciders run as their own tasks, so a slow or panicking one costs only its
//! own request.

pub(crate) mod types;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use zenlive_actors::events::EventSink;
use zenlive_actors::{Protocol, StreamEvent, StreamKey, ViewerSession};

pub use self::types::{
    decider, Decider, Decision, PlayRequest, PublishRequest, StreamOptions, ViewerEvent,
};
use crate::metrics::Metrics;
use crate::recording::events::{RecordingEvent, RecordingListener};
use crate::webhooks::Webhooks;

/// A stream notification.
pub type StreamHook = Notify<StreamEvent>;
/// A viewer notification.
pub type ViewerHook = Notify<ViewerEvent>;
/// A recording notification.
pub type RecordingHook = Notify<RecordingEvent>;

/// The application's hooks as registered on the [`crate::NodeBuilder`].
#[derive(Default)]
pub struct HookSet {
    pub(crate) on_start: Vec<StreamHook>,
    pub(crate) on_end: Vec<StreamHook>,
    pub(crate) on_viewer_join: Vec<ViewerHook>,
    pub(crate) on_viewer_leave: Vec<ViewerHook>,
    pub(crate) on_recording_segment: Vec<RecordingHook>,
    pub(crate) on_recording_end: Vec<RecordingHook>,
    pub(crate) on_publish: Vec<Decider>,
    pub(crate) on_play: Vec<Decider>,
}

/// Everything that hears about or decides on the node's events. One per node.
pub struct Hooks {
    metrics: Arc<Metrics>,
    set: HookSet,
    /// The webhook senders; swapped by a configuration reload (shared with chat's hook).
    webhooks: Arc<ArcSwapOption<Webhooks>>,
    timeout: Duration,
    allow_on_failure: bool,
}

/// A notification hook for events of type `E`.
type Notify<E> = Box<dyn Fn(&E) + Send + Sync>;

fn notify<E>(hooks: &[Notify<E>], event: &E, stream: &StreamKey) {
    for hook in hooks {
        // A panicking hook must not take an actor down with it.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(event))).is_err() {
            tracing::error!(%stream, "an application hook panicked");
        }
    }
}

impl Hooks {
    /// Hooks for a node; `timeout` bounds each decider; `allow_on_failure` is the decision
    /// when a decider fails, panics or times out.
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        set: HookSet,
        webhooks: Arc<ArcSwapOption<Webhooks>>,
        timeout: Duration,
        allow_on_failure: bool,
    ) -> Self {
        Self { metrics, set, webhooks, timeout, allow_on_failure }
    }

    /// Whether any play decider is registered (so callers can skip building requests).
    pub fn decides_play(&self) -> bool {
        !self.set.on_play.is_empty()
    }

    /// Asks every publish decider, in order; the first refusal wins.
    pub async fn decide_publish(&self, request: PublishRequest) -> Decision {
        self.decide(&self.set.on_publish, request, "publish").await
    }

    /// Asks every play decider, in order; the first refusal wins.
    pub async fn decide_play(&self, request: PlayRequest) -> Decision {
        self.decide(&self.set.on_play, request, "play").await
    }

    async fn decide(
        &self,
        deciders: &[Decider],
        request: PublishRequest,
        what: &'static str,
    ) -> Decision {
        let started = Instant::now();
        let mut answer = Decision::Allow;
        for decider in deciders {
            let stream = request.stream.clone();
            // Its own task: a panic in the decider ends only that task.
            let task = actix_rt::spawn(decider(request.clone()));
            let decision = match tokio::time::timeout(self.timeout, task).await {
                Ok(Ok(Decision::Unavailable(why))) => self.on_failure(&stream, what, &why),
                Ok(Ok(decision)) => decision,
                Ok(Err(_)) => self.on_failure(&stream, what, "the hook panicked"),
                Err(_) => self.on_failure(&stream, what, "the hook timed out"),
            };
            if let Decision::Deny(reason) = &decision {
                tracing::info!(%stream, %reason, "{what} denied by a hook");
                self.metrics.hook(what, started.elapsed());
                return decision;
            }
            answer = answer.then(decision);
        }
        if !deciders.is_empty() {
            self.metrics.hook(what, started.elapsed());
        }
        answer
    }

    fn on_failure(&self, stream: &StreamKey, what: &str, why: &str) -> Decision {
        tracing::warn!(%stream, "{what} hook failed ({why}); applying hooks.on_failure");
        if self.allow_on_failure {
            Decision::Allow
        } else {
            Decision::Deny(format!("{what} hook failed: {why}"))
        }
    }

    /// Announces a viewer now (`Joined`) and when `session` ends (`Left`, with duration
    /// and bytes).
    pub fn track_viewer(
        self: &Arc<Self>,
        session: ViewerSession,
        stream: StreamKey,
        protocol: Protocol,
        peer: Option<SocketAddr>,
        user: Option<String>,
    ) -> ViewerSession {
        let who = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        tracing::info!(peer = %who, %stream, protocol = protocol.as_str(), user = user.as_deref().unwrap_or("-"), "play started");
        self.viewer(ViewerEvent::Joined {
            stream: stream.clone(),
            protocol,
            peer,
            user: user.clone(),
        });
        let hooks = Arc::clone(self);
        session.on_end(move |end| {
            tracing::info!(peer = %who, %stream, protocol = protocol.as_str(), seconds = end.duration.as_secs(), bytes = end.delivered.bytes, reason = end.reason, "play ended");
            hooks.viewer(ViewerEvent::Left {
                stream,
                protocol,
                peer,
                user,
                seconds: end.duration.as_secs_f64(),
                bytes: end.delivered.bytes,
                reason: end.reason.to_owned(),
            });
        })
    }

    /// Tells the application and the webhooks about a viewer.
    pub fn viewer(&self, event: ViewerEvent) {
        let (hooks, name) = match event {
            ViewerEvent::Joined { .. } => (&self.set.on_viewer_join, "viewer_join"),
            ViewerEvent::Left { .. } => (&self.set.on_viewer_leave, "viewer_leave"),
        };
        let started = Instant::now();
        notify(hooks, &event, event.stream());
        if !hooks.is_empty() {
            self.metrics.hook(name, started.elapsed());
        }
        if let Some(webhooks) = &*self.webhooks.load() {
            webhooks.viewer(&event);
        }
    }
}

impl RecordingListener for Hooks {
    fn recording_event(&self, event: &RecordingEvent) {
        let (hooks, name) = match event {
            RecordingEvent::Segment { .. } => (&self.set.on_recording_segment, "recording_segment"),
            RecordingEvent::Ended { .. } => (&self.set.on_recording_end, "recording_end"),
        };
        let started = Instant::now();
        notify(hooks, event, event.stream());
        if !hooks.is_empty() {
            self.metrics.hook(name, started.elapsed());
        }
        if let Some(webhooks) = &*self.webhooks.load() {
            webhooks.recording(event);
        }
    }
}

impl EventSink for Hooks {
    fn stream_event(&self, event: &StreamEvent) {
        if event.protocol() == Protocol::Relay {
            // An edge's copy of a stream published elsewhere: the origin reports the
            // stream's life; its copies are not new streams.
            return;
        }
        let (hooks, name) = match event {
            StreamEvent::Started { .. } => (&self.set.on_start, "stream_start"),
            StreamEvent::Ended { .. } => (&self.set.on_end, "stream_end"),
        };
        let started = Instant::now();
        notify(hooks, event, event.key());
        if !hooks.is_empty() {
            self.metrics.hook(name, started.elapsed());
        }
        if let Some(webhooks) = &*self.webhooks.load() {
            webhooks.stream(event);
        }
    }
}
