//! [`ViewerSession`]: one viewer of one stream (an RTMP player, an HTTP-FLV client, the HLS
//! packager). It reads the stream's broadcast ring, lets its [`ViewerCore`] decide, and
//! offers frames to a protocol-supplied [`FrameSink`] that never blocks.
//!
//! If the stream actor crashes and is restarted, the session subscribes to the new
//! instance (same lineage in the [`Directory`]); if the stream ended, the session ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use zenlive_media::{Codec, CodecConfig, FrameKind, MediaFrame};

use crate::directory::{Directory, StreamEntry};
use crate::events::{ActorType, Gauge, NodeCounters};
use crate::key::StreamKey;
use crate::protocol::Protocol;
use crate::stats::StreamStats;
use crate::stream::{Subscribe, Subscription, Unsubscribe};
use crate::viewer_core::{Admission, DeliveryStats, Verdict, ViewerCore};

static NEXT_VIEWER_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a viewer or publisher connection on this node.
pub fn next_connection_id() -> u64 {
    NEXT_VIEWER_ID.fetch_add(1, Ordering::Relaxed)
}

/// What a sink did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Taken; this many bytes will go out.
    Accepted(usize),
    /// The connection's queue is full: the frame was not taken.
    Full,
    /// The viewer is gone.
    Closed,
    /// This output cannot carry the frame's codec (Opus to an FLV player): the track is
    /// skipped, which the session logs once.
    Unsupported,
}

/// Where a viewer's frames go: a protocol's encoder plus its connection's bounded queue.
/// `offer` must not block and must take a frame whole or not at all.
pub trait FrameSink: Send + 'static {
    /// Offers one frame.
    fn offer(&mut self, frame: &MediaFrame) -> Offer;

    /// Offers a codec configuration, which the viewer's next frames use and which it has
    /// not accepted before (outputs that carry configuration in-band, such as FLV's
    /// sequence headers, send it; others read [`MediaFrame::config`] and take it as is).
    fn offer_config(&mut self, _config: &CodecConfig) -> Offer {
        Offer::Accepted(0)
    }

    /// A future that completes when the viewer disconnects, so an idle stream does not
    /// keep a departed viewer's session alive. `None` when the sink cannot tell.
    fn closed(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        None
    }

    /// The stream ended or the session gave up; the sink may flush or finalize.
    fn finish(&mut self, _reason: &str) {}
}

/// Whether the sink took an offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// Taken (or not needed).
    Yes,
    /// Not taken (the queue is full, or the protocol cannot carry the codec); the session
    /// goes on.
    No,
    /// Not taken, and the session is ending.
    Ending,
}

/// [`ViewerEnd::reason`] of a session that stayed behind longer than its `max_behind` and
/// was disconnected.
pub const TOO_SLOW: &str = "viewer too slow";

/// How a viewer's session ended, for the `on_end` callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerEnd {
    /// How long the session lasted.
    pub duration: Duration,
    /// Delivery counters (frames and bytes handed to the connection).
    pub delivered: DeliveryStats,
    /// Why it ended.
    pub reason: &'static str,
}

type OnEnd = Box<dyn FnOnce(ViewerEnd) + Send>;

/// One viewer. See the module docs.
pub struct ViewerSession {
    id: u64,
    key: StreamKey,
    protocol: Protocol,
    directory: Directory,
    stream: StreamEntry,
    core: Option<ViewerCore>,
    sink: Box<dyn FrameSink>,
    counters: Arc<NodeCounters>,
    max_behind: Duration,
    end_reason: &'static str,
    live: Option<SpawnHandle>,
    /// False for internal subscribers (the HLS packager), which are not viewers.
    counted: bool,
    stats: Option<Arc<StreamStats>>,
    started: Instant,
    on_end: Option<OnEnd>,
    /// Tracks (video, audio) skipped because the protocol cannot carry their codec.
    skipping: [bool; 2],
    crash: CrashGuard,
    _alive: Gauge,
}

/// Runs its hook if the session is dropped while a panic unwinds (actix drops an actor whose
/// handler panicked): the session's supervision.
struct CrashGuard(Option<Box<dyn FnOnce() + Send>>);

impl Drop for CrashGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(hook) = self.0.take() {
                hook();
            }
        }
    }
}

impl ViewerSession {
    /// A session for `stream`; start it with `ViewerSession::start` (current arbiter).
    pub fn new(
        key: StreamKey,
        protocol: Protocol,
        stream: StreamEntry,
        directory: Directory,
        sink: Box<dyn FrameSink>,
        counters: Arc<NodeCounters>,
        max_behind: Duration,
    ) -> Self {
        let alive = counters.actor(ActorType::Viewer);
        Self {
            id: next_connection_id(),
            key,
            protocol,
            directory,
            stream,
            core: None,
            sink,
            counters,
            max_behind,
            end_reason: "stream ended",
            live: None,
            counted: true,
            stats: None,
            started: Instant::now(),
            on_end: None,
            skipping: [false; 2],
            crash: CrashGuard(None),
            _alive: alive,
        }
    }

    /// Calls `f` once when the session ends, with its duration and byte counts (for the
    /// application's `on_viewer_leave`).
    pub fn on_end(mut self, f: impl FnOnce(ViewerEnd) + Send + 'static) -> Self {
        self.on_end = Some(Box::new(f));
        self
    }

    /// Calls `f` if the session crashes (a panic in its handlers or its sink): its
    /// supervision. The sink is dropped with the session, which closes a viewer's
    /// connection; `stopped` still runs, so its `on_end` does too.
    pub fn on_crash(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.crash = CrashGuard(Some(Box::new(f)));
        self
    }

    /// Marks the session as an internal subscriber (the HLS packager): not counted as a
    /// viewer of the stream, and its deliveries not counted as bytes out.
    pub fn internal(mut self) -> Self {
        self.counted = false;
        self
    }

    fn dropped(&self, frames: u64) {
        NodeCounters::add(&self.counters.frames_skipped, frames);
        if let Some(stats) = &self.stats {
            stats.frames_dropped(frames);
        }
    }

    fn subscribe(&mut self, ctx: &mut Context<Self>) {
        let request =
            self.stream.addr.send(Subscribe { viewer_id: self.id, protocol: self.protocol });
        ctx.spawn(request.into_actor(self).map(|result, act, ctx| match result {
            Ok(subscription) => act.on_subscribed(subscription, ctx),
            Err(_) => act.stream_gone(ctx),
        }));
    }

    fn on_subscribed(&mut self, sub: Subscription, ctx: &mut Context<Self>) {
        // A restarted stream keeps its statistics: count the viewer once per lineage.
        if self.stats.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &sub.stats)) {
            if let Some(old) = self.stats.replace(Arc::clone(&sub.stats)) {
                if self.counted {
                    old.viewer_left(self.protocol);
                }
            }
            if self.counted {
                sub.stats.viewer_joined(self.protocol);
            }
        }
        self.core = Some(ViewerCore::new(sub.has_video, sub.starts_on_keyframe, self.max_behind));
        // The tracks' configurations first (a new viewer, or one whose stream restarted
        // and may have been reconfigured meanwhile): players learn every track up front.
        for config in &sub.configs {
            if self.offer_config(config, ctx) == Taken::Ending {
                return;
            }
        }
        for frame in &sub.snapshot {
            if !self.deliver(frame, ctx) {
                return;
            }
        }
        if let Some(old) = self.live.take() {
            ctx.cancel_future(old);
        }
        self.live = Some(ctx.add_stream(BroadcastStream::new(sub.live)));
    }

    /// Offers one frame (after its configuration, when the viewer lacks it); false when
    /// the session is ending.
    fn deliver(&mut self, frame: &MediaFrame, ctx: &mut Context<Self>) -> bool {
        let Some(core) = self.core.as_mut() else { return true };
        match core.admit(frame) {
            Admission::Skip => {
                self.dropped(1);
                return true;
            }
            Admission::Deliver => {}
            Admission::DeliverAfter(config) => match self.offer_config(&config, ctx) {
                Taken::Yes => {}
                // A frame never goes out without its configuration: it is lost with it.
                Taken::No => return true,
                Taken::Ending => return false,
            },
        }
        let Some(core) = self.core.as_mut() else { return true };
        match self.sink.offer(frame) {
            Offer::Accepted(bytes) => {
                core.delivered(bytes);
                self.count_out(bytes);
                true
            }
            other => self.refused(other, frame.codec(), ctx) != Taken::Ending,
        }
    }

    /// Offers a configuration the viewer lacks.
    fn offer_config(&mut self, config: &CodecConfig, ctx: &mut Context<Self>) -> Taken {
        let Some(core) = self.core.as_mut() else { return Taken::Yes };
        if !core.lacks(config) {
            return Taken::Yes;
        }
        match self.sink.offer_config(config) {
            Offer::Accepted(bytes) => {
                core.config_delivered(config, bytes);
                self.count_out(bytes);
                Taken::Yes
            }
            other => self.refused(other, config.codec(), ctx),
        }
    }

    fn count_out(&self, bytes: usize) {
        if let Some(stats) = self.stats.as_ref().filter(|_| self.counted) {
            stats.bytes_out(self.protocol, bytes as u64);
        }
    }

    /// The sink did not take an offer: the viewer is behind, or gone, or its protocol
    /// cannot carry the codec.
    fn refused(&mut self, offer: Offer, codec: Codec, ctx: &mut Context<Self>) -> Taken {
        match offer {
            Offer::Closed => {
                self.end_reason = "viewer disconnected";
                ctx.stop();
                return Taken::Ending;
            }
            Offer::Unsupported => {
                if !std::mem::replace(
                    &mut self.skipping[usize::from(codec.kind() != FrameKind::Video)],
                    true,
                ) {
                    tracing::info!(stream = %self.key, viewer = self.id, protocol = self.protocol.as_str(), codec = codec.as_str(), "this protocol cannot carry the codec; skipping the track");
                }
                return Taken::No;
            }
            Offer::Full | Offer::Accepted(_) => {}
        }
        let verdict = self.core.as_mut().map(|core| core.queue_full(Instant::now()));
        self.dropped(1);
        if verdict == Some(Verdict::Disconnect) {
            self.too_slow(ctx);
            return Taken::Ending;
        }
        Taken::No
    }

    fn too_slow(&mut self, ctx: &mut Context<Self>) {
        NodeCounters::add(&self.counters.viewers_dropped_slow, 1);
        if let Some(stats) = &self.stats {
            stats.viewer_dropped_slow();
        }
        tracing::info!(stream = %self.key, viewer = self.id, protocol = self.protocol.as_str(), "viewer stayed behind; disconnecting");
        self.end_reason = TOO_SLOW;
        ctx.stop();
    }

    /// The stream's ring closed: follow a restarted instance, or end. A crashed instance
    /// closes its ring before the supervisor has put the next one in the directory, so this
    /// waits (briefly, on the directory's change signal) for that.
    fn stream_gone(&mut self, ctx: &mut Context<Self>) {
        let directory = self.directory.clone();
        let key = self.key.clone();
        let generation = self.stream.generation;
        let next = async move { directory.next_instance(&key, generation, RESTART_WAIT).await };
        ctx.spawn(next.into_actor(self).map(|entry, act, ctx| match entry {
            Some(entry)
                if entry.lineage == act.stream.lineage
                    && entry.generation != act.stream.generation =>
            {
                tracing::info!(stream = %act.key, viewer = act.id, "stream restarted; resubscribing");
                act.stream = entry;
                act.subscribe(ctx);
            }
            _ => {
                act.end_reason = "stream ended";
                ctx.stop();
            }
        }));
    }
}

/// How long a viewer or publisher waits for a crashed stream's restarted instance.
pub(crate) const RESTART_WAIT: Duration = Duration::from_secs(2);

impl Actor for ViewerSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(closed) = self.sink.closed() {
            ctx.spawn(closed.into_actor(self).map(|(), act, ctx| {
                act.end_reason = "viewer disconnected";
                ctx.stop();
            }));
        }
        self.subscribe(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.stream.addr.do_send(Unsubscribe { viewer_id: self.id });
        self.sink.finish(self.end_reason);
        if let Some(stats) = self.stats.as_ref().filter(|_| self.counted) {
            stats.viewer_left(self.protocol);
        }
        if let Some(on_end) = self.on_end.take() {
            on_end(ViewerEnd {
                duration: self.started.elapsed(),
                delivered: self.core.as_ref().map(ViewerCore::stats).unwrap_or_default(),
                reason: self.end_reason,
            });
        }
        if let Some(core) = &self.core {
            let stats = core.stats();
            tracing::debug!(stream = %self.key, viewer = self.id, reason = self.end_reason, frames = stats.frames, bytes = stats.bytes, skipped = stats.skipped, "viewer left");
        }
    }
}

impl StreamHandler<Result<MediaFrame, BroadcastStreamRecvError>> for ViewerSession {
    fn handle(
        &mut self,
        item: Result<MediaFrame, BroadcastStreamRecvError>,
        ctx: &mut Self::Context,
    ) {
        match item {
            Ok(frame) => {
                self.deliver(&frame, ctx);
            }
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                self.dropped(missed);
                let verdict = self.core.as_mut().map(|core| core.lagged(missed, Instant::now()));
                if verdict == Some(Verdict::Disconnect) {
                    self.too_slow(ctx);
                }
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.stream_gone(ctx);
    }
}
