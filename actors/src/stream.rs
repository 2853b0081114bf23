//! [`StreamActor`]: one live stream. Its messages, its state, and one handler per message.
//!
//! Media arrives from exactly one attached publisher and leaves through a bounded broadcast
//! ring that viewers read at their own pace; the publisher never waits for a viewer.
//!
//! The frame path does not go through the actor's mailbox: the publisher's connection pushes
//! each frame itself through the stream's [`IngestHandle`] (a mutex the actor takes only
//! to subscribe a viewer or report its state, so it is uncontended; a panic under it
//! restarts the stream, see `ARCHITECTURE.md`, "Supervision"). A message per frame
//! cost an envelope allocation, a mailbox push and pop and a wake-up of the actor for
//! every audio and video frame, about a tenth of a publisher's CPU. The actor keeps the
//! stream's life: publisher attach and detach, viewers, kicks, the end of the stream and
//! supervision. The stream's decisions live in [`StreamCore`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc};
use zenlive_media::{CodecConfig, MediaFrame, MediaTime};
use zenlive_registry::ActorKind;

use crate::events::{Gauge, StreamEvent};
use crate::key::StreamKey;
use crate::output_request::{OutputChange, OutputControl};
use crate::protocol::Protocol;
use crate::remote::{NamedActor, RemoteMessage};
use crate::stats::{MediaInfo, RateMeter, StatsSnapshot, StreamStats};
use crate::stream_core::{IngestStats, StreamCore};

/// Frames the broadcast ring holds: about 7 s of 30 fps video with AAC audio. A viewer
/// further behind than this misses frames and resumes at the next keyframe.
pub const BROADCAST_CAPACITY: usize = 512;
/// How long a stream actor without a publisher waits for one (after a restart) before it
/// ends the stream.
pub const PUBLISHER_WAIT: Duration = Duration::from_secs(5);

/// A command from the stream to its publisher's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublisherCommand {
    /// Close the connection: the publisher was kicked.
    Close {
        /// Why, for the publisher and the log.
        reason: String,
    },
    /// A viewer needs a keyframe (a WebRTC viewer lost video): a publisher that can be
    /// asked for one (WHIP, with RTCP PLI) asks, rate-limited; others ignore it.
    KeyframeRequest,
}

/// The stream's handle on its publisher's connection.
#[derive(Debug, Clone)]
pub struct PublisherHandle {
    /// Unique per connection on this node.
    pub id: u64,
    /// How it connected.
    pub protocol: Protocol,
    /// Its address.
    pub peer: Option<SocketAddr>,
    /// Who publishes (a token's `sub`), when auth identified them.
    pub user: Option<String>,
    /// Where to send commands; bounded, and the connection reads it with its socket.
    pub control: mpsc::Sender<PublisherCommand>,
}

/// Why a stream refused a publisher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// Another publisher is attached.
    #[error("stream {key} is already being published")]
    AlreadyPublishing {
        /// The stream.
        key: StreamKey,
    },
}

/// Attaches a publisher (the first one, or the same connection again after a restart).
#[derive(Message)]
#[rtype(result = "Result<(), StreamError>")]
pub struct Attach {
    /// The publisher.
    pub publisher: PublisherHandle,
}

/// A local publisher takes over a stream that was a relayed copy (its origin node died and
/// the publisher reconnected here): the relay's publisher is closed, viewers stay. Answers
/// the last frame's decode time, for the new publisher to continue from.
#[derive(Message)]
#[rtype(result = "Option<MediaTime>")]
pub struct TakeOver {
    /// The new publisher.
    pub publisher: PublisherHandle,
}

/// What a stream does with each frame from its publisher: cache what late joiners need,
/// update the statistics, and put the frame into the broadcast ring.
#[derive(Debug)]
pub struct Ingest {
    core: StreamCore,
    /// The ring's sending side; taken when the actor goes, which tells every viewer.
    live: Option<broadcast::Sender<MediaFrame>>,
    stats: Arc<StreamStats>,
    meter: RateMeter,
    media: MediaInfo,
}

impl Ingest {
    /// Takes one frame from the publisher: caches, statistics, then the broadcast ring.
    /// Gives it back once the stream's actor is gone (see [`IngestHandle::push`]).
    fn push(&mut self, frame: MediaFrame) -> Result<(), Refused> {
        if self.live.is_none() {
            return Err(Refused::Closed(frame));
        }
        // Everything that looks inside the frame (GOP cache, codec parsing, statistics) runs
        // under `catch_unwind`: a panic there restarts the stream, it never reaches the
        // publisher's connection.
        let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.take(&frame)));
        if taken.is_err() {
            self.live = None;
            self.core = StreamCore::new(Instant::now());
            return Err(Refused::Crashed);
        }
        if let Some(live) = &self.live {
            // An error only means nobody is watching right now.
            let _ = live.send(frame);
        }
        Ok(())
    }

    fn take(&mut self, frame: &MediaFrame) {
        #[cfg(feature = "fault-injection")]
        if crate::faults::is_poison(frame) {
            panic!("fault injection: a poison frame");
        }
        let new_config = self.core.on_frame(frame);
        self.stats.on_ingest(frame);
        self.meter.push(frame);
        if let Some(rates) = self.meter.due() {
            self.stats.set_rates(&rates);
        }
        if let Some(config) = frame.config().filter(|_| new_config) {
            self.set_config(config);
        }
    }

    /// A track's codec configuration from now on (the publisher sent a sequence header): stream
    /// state for the statistics and for outputs that need every track up front. The frames
    /// that use it carry it too.
    pub fn set_config(&mut self, config: &CodecConfig) {
        self.core.set_config(config);
        self.stats.set_config(config);
        if self.media.update(config) {
            self.stats.set_media(self.media.clone());
        }
    }

    /// A receiver of the frames pushed from now on; closed at once if the stream ended.
    fn subscribe(&self) -> broadcast::Receiver<MediaFrame> {
        match &self.live {
            Some(live) => live.subscribe(),
            None => broadcast::channel(1).1,
        }
    }
}

/// Why a frame was not taken.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The stream's actor is gone; here is the frame back.
    Closed(MediaFrame),
    /// Taking the frame in panicked (the frame is lost); the ring is closed.
    Crashed,
}

/// The frame path of a stream instance panicked: the actor stops as crashed, so the
/// supervisor restarts the stream under a new epoch (sent by the publisher that saw it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct IngestFailed;

/// A stream instance's [`Ingest`], shared by its actor and its publisher.
#[derive(Debug, Clone)]
pub struct IngestHandle(Arc<Mutex<Ingest>>);

impl IngestHandle {
    /// A fresh stream's ingest, counting into `stats`.
    pub(crate) fn new(stats: Arc<StreamStats>) -> Self {
        let (live, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self(Arc::new(Mutex::new(Ingest {
            core: StreamCore::new(Instant::now()),
            live: Some(live),
            stats,
            meter: RateMeter::default(),
            media: MediaInfo::default(),
        })))
    }

    /// Takes one frame from the publisher (only a [`crate::StreamPublisher`] pushes). Gives
    /// it back when the stream's actor is gone (it ended, or it panicked and a restarted
    /// instance may follow): the ring is closed then. This check rides on the lock the frame
    /// path takes anyway, where asking the actor's address would touch its mailbox on every
    /// frame. A panic while the frame is taken in closes the ring the same way and answers
    /// [`Refused::Crashed`]: the publisher then has the actor restarted.
    pub(crate) fn push(&self, frame: MediaFrame) -> Result<(), Refused> {
        self.lock().push(frame)
    }

    /// Sets a track's codec configuration (see [`Ingest::set_config`]).
    pub fn set_config(&self, config: &CodecConfig) {
        self.lock().set_config(config);
    }

    /// Closes the ring: its viewers see the stream end (or follow a restarted instance).
    /// Viewers and the directory keep handles, so the ring cannot close by itself; the
    /// cached GOP (up to [`crate::stream_core::MAX_GOP_BYTES`]) is let go at once too.
    fn close(&self) {
        let mut ingest = self.lock();
        ingest.live = None;
        ingest.core = StreamCore::new(Instant::now());
    }

    /// The ingest state. A panic while it was held can only have come from the frame path
    /// of this stream, whose publisher is then gone and the stream ending: the state is
    /// still read, never trusted for more.
    fn lock(&self) -> MutexGuard<'_, Ingest> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The publisher left: the stream ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    /// Which publisher (a stale connection cannot end a newer one's stream).
    pub publisher_id: u64,
    /// Why, for the log and the `Ended` event.
    pub reason: String,
}

/// Subscribes a viewer.
#[derive(Message)]
#[rtype(result = "Subscription")]
pub struct Subscribe {
    /// Unique per viewer on this node.
    pub viewer_id: u64,
    /// How the viewer watches.
    pub protocol: Protocol,
}

/// What a new viewer receives: the snapshot to deliver first, then the live ring.
pub struct Subscription {
    /// The tracks' current codec configurations, to deliver first.
    pub configs: Vec<CodecConfig>,
    /// Metadata and the cached GOP (its frames carry their configurations), in order.
    pub snapshot: Vec<MediaFrame>,
    /// Whether the snapshot starts the picture on a keyframe.
    pub starts_on_keyframe: bool,
    /// Whether the stream has video.
    pub has_video: bool,
    /// Live frames after the snapshot, with no gap and no repeat.
    pub live: broadcast::Receiver<MediaFrame>,
    /// The stream's shared statistics, where the viewer counts itself and its bytes.
    pub stats: Arc<StreamStats>,
}

/// Unsubscribes a viewer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    /// The viewer.
    pub viewer_id: u64,
}

/// Disconnects the publisher and ends the stream. Answers whether a publisher was attached.
/// Remote: `stream.kick` ([`crate::remote`]).
#[derive(Debug, Clone, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "bool")]
pub struct Kick {
    /// Why, told to the publisher.
    pub reason: String,
}

impl RemoteMessage for Kick {
    const NAME: &'static str = "stream.kick";
}

/// Passes a viewer's keyframe request on to the publisher's connection
/// ([`PublisherCommand::KeyframeRequest`]); dropped when its command queue is full (it
/// has one pending already) or there is no publisher. Remote: `stream.keyframe` (an edge's
/// relay passes its viewers' requests on to the origin).
#[derive(Debug, Clone, Copy, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "()")]
pub struct RequestKeyframe;

impl RemoteMessage for RequestKeyframe {
    const NAME: &'static str = "stream.keyframe";
}

/// Asks for the stream's statistics (what the admin API shows). Remote: `stream.stats`.
#[derive(Debug, Clone, Copy, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "StatsSnapshot")]
pub struct GetStats;

impl RemoteMessage for GetStats {
    const NAME: &'static str = "stream.stats";
}

/// Starts (`on`) or stops one of the node's outputs by name for this stream, on request
/// (the recorder: `output: "recorder"`; see [`crate::output`]'s "On request"). Answers
/// what it did. Remote: `stream.output`.
#[derive(Debug, Clone, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "OutputChange")]
pub struct SetOutput {
    /// The output's name (`Output::name`).
    pub output: String,
    /// Start it (`true`) or stop it.
    pub on: bool,
}

impl RemoteMessage for SetOutput {
    const NAME: &'static str = "stream.output";
}

/// Asks for the stream's current state.
#[derive(Message)]
#[rtype(result = "StreamInfo")]
pub struct GetInfo;

/// A stream's state, for the SDK and the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// The stream.
    pub key: StreamKey,
    /// When it started.
    pub started_at: SystemTime,
    /// How long it has been live.
    pub uptime: Duration,
    /// Whether a publisher is attached now.
    pub publishing: bool,
    /// This actor instance's input counters (a restarted stream starts them afresh).
    pub ingest: IngestStats,
    /// Subscribers by protocol (viewers, and the HLS packager as `hls`).
    pub viewers: HashMap<Protocol, usize>,
    /// The stream's statistics since it started, restarts included.
    pub stats: StatsSnapshot,
}

/// This stream actor went away: sent by its drop notice to the supervisor that started it
/// (which handles it: a crashed stream is restarted, an ended one forgotten).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamStopped {
    /// The stream.
    pub key: StreamKey,
    /// Which instance.
    pub generation: u64,
    /// The end event, when it stopped cleanly.
    pub ended: Option<StreamEvent>,
    /// True when the actor was dropped without stopping (a panic in a handler).
    pub crashed: bool,
}

/// Makes the actor panic inside a handler: for supervision tests only.
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct InjectPanic;

/// Tells the supervisor when the actor goes away, and whether it stopped cleanly (an `Ended`
/// event is attached only on a deliberate stop). `Drop` runs however the actor goes, panics
/// included.
struct StopNotice {
    supervisor: Recipient<StreamStopped>,
    key: StreamKey,
    generation: u64,
    ended: Option<StreamEvent>,
}

impl Drop for StopNotice {
    fn drop(&mut self) {
        let crashed = self.ended.is_none();
        self.supervisor.do_send(StreamStopped {
            key: self.key.clone(),
            generation: self.generation,
            ended: self.ended.take(),
            crashed,
        });
    }
}

/// One live stream. See the module docs.
pub struct StreamActor {
    key: StreamKey,
    ingest: IngestHandle,
    started_at: SystemTime,
    viewers: HashMap<u64, Protocol>,
    publisher: Option<PublisherHandle>,
    end_reason: Option<String>,
    stats: Arc<StreamStats>,
    notice: StopNotice,
    /// The node's outputs, for [`SetOutput`] (none in a node without outputs).
    outputs: Option<OutputControl>,
    _alive: Gauge,
}

impl StreamActor {
    /// A stream with no publisher yet. The supervisor creates these.
    pub(crate) fn new(
        key: StreamKey,
        generation: u64,
        supervisor: Recipient<StreamStopped>,
        stats: Arc<StreamStats>,
        ingest: IngestHandle,
        alive: Gauge,
    ) -> Self {
        let notice = StopNotice { supervisor, key: key.clone(), generation, ended: None };
        Self {
            key,
            ingest,
            started_at: SystemTime::now(),
            viewers: HashMap::new(),
            publisher: None,
            end_reason: None,
            stats,
            notice,
            outputs: None,
            _alive: alive,
        }
    }

    /// Lets [`SetOutput`] start and stop the node's outputs for this stream.
    pub(crate) fn with_outputs(mut self, outputs: Option<OutputControl>) -> Self {
        self.outputs = outputs;
        self
    }

    fn end(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.end_reason.is_none() {
            self.end_reason = Some(reason);
        }
        ctx.stop();
    }
}

impl Drop for StreamActor {
    /// However the actor goes (ended, or a panic in a handler), its viewers are told.
    fn drop(&mut self) {
        self.ingest.close();
    }
}

impl Actor for StreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
        ctx.run_later(PUBLISHER_WAIT, |act, ctx| {
            if act.publisher.is_none() {
                act.end("no publisher attached".to_owned(), ctx);
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Every deliberate stop goes through `end`, which records a reason. actix also runs
        // `stopped` when it drops an actor whose handler panicked (its context's `Drop`
        // polls the context once more); without a reason this is such a crash, and the
        // notice must report it as one so the supervisor restarts the stream.
        let Some(reason) = self.end_reason.take() else {
            tracing::error!(stream = %self.key, "stream actor stopped without ending: treating as a crash");
            return;
        };
        let stats = self.stats.snapshot();
        tracing::info!(stream = %self.key, %reason, frames = stats.frames_in, bytes = stats.bytes_in, restarts = stats.restarts, "stream ended");
        if let Some(publisher) = self.publisher.take() {
            // The connection may already be gone; a full queue means it is closing anyway.
            let _ = publisher.control.try_send(PublisherCommand::Close { reason: reason.clone() });
        }
        self.notice.ended = Some(StreamEvent::Ended {
            key: self.key.clone(),
            protocol: stats.publisher_protocol,
            peer: stats.publisher_peer,
            user: stats.publisher_user.clone(),
            duration: stats.uptime,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out.iter().map(|(_, n)| n).sum(),
            frames_in: stats.frames_in,
            reason,
        });
    }
}

impl Handler<Attach> for StreamActor {
    type Result = Result<(), StreamError>;

    fn handle(&mut self, msg: Attach, _ctx: &mut Self::Context) -> Self::Result {
        match &self.publisher {
            Some(current) if current.id != msg.publisher.id => {
                Err(StreamError::AlreadyPublishing { key: self.key.clone() })
            }
            _ => {
                self.publisher = Some(msg.publisher);
                Ok(())
            }
        }
    }
}

impl Handler<TakeOver> for StreamActor {
    type Result = Option<MediaTime>;

    fn handle(&mut self, msg: TakeOver, _ctx: &mut Self::Context) -> Option<MediaTime> {
        if let Some(old) = self.publisher.replace(msg.publisher) {
            let reason = "a publisher on this node took the stream over".to_owned();
            // The relay may be between origins; a full queue means it is closing anyway.
            let _ = old.control.try_send(PublisherCommand::Close { reason });
        }
        tracing::info!(stream = %self.key, "a local publisher took over the relayed stream");
        self.ingest.lock().core.last_time()
    }
}

impl Handler<Detach> for StreamActor {
    type Result = ();

    fn handle(&mut self, msg: Detach, ctx: &mut Self::Context) {
        if self.publisher.as_ref().is_some_and(|p| p.id == msg.publisher_id) {
            self.publisher = None;
            self.end(msg.reason, ctx);
        }
    }
}

impl Handler<Subscribe> for StreamActor {
    type Result = MessageResult<Subscribe>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Self::Context) -> Self::Result {
        self.viewers.insert(msg.viewer_id, msg.protocol);
        // Under the ingest lock, so no frame falls between the snapshot and the ring.
        let ingest = self.ingest.lock();
        let snapshot = ingest.core.snapshot();
        let starts_on_keyframe = snapshot.iter().any(|f| f.keyframe());
        MessageResult(Subscription {
            configs: ingest.core.configs(),
            snapshot,
            starts_on_keyframe,
            has_video: ingest.core.has_video(),
            live: ingest.subscribe(),
            stats: Arc::clone(&self.stats),
        })
    }
}

impl Handler<Unsubscribe> for StreamActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Self::Context) {
        self.viewers.remove(&msg.viewer_id);
    }
}

impl Handler<Kick> for StreamActor {
    type Result = bool;

    fn handle(&mut self, msg: Kick, ctx: &mut Self::Context) -> bool {
        let had_publisher = self.publisher.is_some();
        tracing::info!(stream = %self.key, reason = %msg.reason, "publisher kicked");
        self.end(format!("kicked: {}", msg.reason), ctx);
        had_publisher
    }
}

impl Handler<RequestKeyframe> for StreamActor {
    type Result = ();

    fn handle(&mut self, _msg: RequestKeyframe, _ctx: &mut Self::Context) {
        if let Some(publisher) = &self.publisher {
            // A full queue holds a request (or a close) already.
            let _ = publisher.control.try_send(PublisherCommand::KeyframeRequest);
        }
    }
}

impl Handler<GetStats> for StreamActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _msg: GetStats, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats.snapshot())
    }
}

impl Handler<SetOutput> for StreamActor {
    type Result = MessageResult<SetOutput>;

    fn handle(&mut self, msg: SetOutput, _ctx: &mut Self::Context) -> Self::Result {
        let Some(outputs) = &self.outputs else { return MessageResult(OutputChange::NoSuchOutput) };
        // A relayed copy is recorded (and so on) at its origin, not here.
        let replica = self.publisher.as_ref().is_some_and(|p| p.protocol == Protocol::Relay);
        let change = outputs(&self.key, &msg.output, msg.on, replica);
        tracing::info!(stream = %self.key, output = %msg.output, on = msg.on, ?change, "output requested by name");
        MessageResult(change)
    }
}

impl NamedActor for StreamActor {
    const KIND: ActorKind = ActorKind::Stream;
}

impl Handler<GetInfo> for StreamActor {
    type Result = MessageResult<GetInfo>;

    fn handle(&mut self, _msg: GetInfo, _ctx: &mut Self::Context) -> Self::Result {
        let mut viewers = HashMap::new();
        for protocol in self.viewers.values() {
            *viewers.entry(*protocol).or_insert(0) += 1;
        }
        let (uptime, ingest) = {
            let ingest = self.ingest.lock();
            (ingest.core.uptime(Instant::now()), ingest.core.stats())
        };
        MessageResult(StreamInfo {
            key: self.key.clone(),
            started_at: self.started_at,
            uptime,
            publishing: self.publisher.is_some(),
            ingest,
            viewers,
            stats: self.stats.snapshot(),
        })
    }
}

impl Handler<IngestFailed> for StreamActor {
    type Result = ();

    fn handle(&mut self, _msg: IngestFailed, ctx: &mut Self::Context) {
        // No end reason: `stopped` reports a crash, and the supervisor restarts the stream.
        tracing::error!(stream = %self.key, "the frame path panicked; restarting the stream");
        ctx.stop();
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<InjectPanic> for StreamActor {
    type Result = ();

    fn handle(&mut self, _msg: InjectPanic, _ctx: &mut Self::Context) {
        panic!("injected fault in stream {}", self.key);
    }
}
