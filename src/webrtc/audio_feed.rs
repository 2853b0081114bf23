//! AAC → Opus for WHEP viewers of a stream whose audio is AAC (an RTMP publisher's): one
//! transcoder per stream per node, running only while this node has a WHEP viewer of that
//! stream that needs it, its Opus frames shared by all of them.
//!
//! - [`OpusFeeds`] (one per node, [`super::WebRtc::feeds`]): the running feeds by stream
//!   name. A WHEP viewer's sink ([`super::whep_session::WhepSink`]) subscribes its frame
//!   queue when the stream's audio turns out to be AAC and the stream has no Opus of its
//!   own (a WHIP publisher's Opus passes through, untouched). The first subscriber starts
//!   the stream's feed; each holds a [`FeedSubscription`], dropped with its viewer's
//!   session, and the last one to go stops the feed.
//! - A feed is an internal subscriber of the stream, like an output ([`Launch`],
//!   [`FeedHost`]): a [`ViewerSession`] on the node's arbiter pool, so it starts at the
//!   cached GOP, follows a restarted stream instance, and skips ahead like any viewer when
//!   it falls behind. Its sink ([`FeedSink`]) pushes each AAC frame through one
//!   [`AacToOpus`] and offers every Opus frame to each subscriber's own bounded queue,
//!   the one its viewer session fills with video (a viewer holds no second buffer): a full
//!   queue loses that 20 ms packet, counted in
//!   `zenlive_webrtc_frames_dropped_total{protocol="whep",reason="audio_queue_full"}`. The
//!   feed never waits for a viewer, and a slow viewer's video follows the usual rules
//!   (skip to the next keyframe, then disconnect).
//! - Time: an Opus frame carries the media time of the AAC samples it holds (less the
//!   codecs' delays; see [`zenlive_transcode::aac_to_opus`]), which [`super::playback`]
//!   turns into a 48 kHz RTP timestamp as it turns video times into 90 kHz ones.
//! - Faults: the transcoder catches its codecs' panics itself; a panic anywhere else in a
//!   push is caught here, counted in `zenlive_transcode_errors_total{direction="aac_to_opus"}`,
//!   and the transcoder is rebuilt. A crash of the feed's session is counted
//!   (`zenlive_actor_restarts_total{kind="aac_to_opus"}`), and the feed starts again with
//!   fresh state for its viewers (so does a feed that stayed behind too long), at most
//!   [`MAX_RESTARTS`] times in [`RESTART_WINDOW`]. The stream, its other outputs and every
//!   viewer's video never notice.
//! - Metrics: `zenlive_transcode_*{direction="aac_to_opus"}` ([`super::transcode`]);
//!   `zenlive_transcode_active` counts the running feeds.
//!
//! Shared state: the registry is a mutex over a small map, held for a subscribe (which may
//! start a feed: a message to an arbiter, no await), an unsubscribe or a restart. Each
//! feed's subscriber list is a mutex shared by the feed's session, which locks it once per
//! Opus packet (50 a second) to offer the packet to each queue, and the viewers' sinks,
//! which lock it to join or leave (see ARCHITECTURE.md, "Time, threads and shared state").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::Actor;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use zenlive_actors::directory::Directory;
use zenlive_actors::faults::{self, Fault};
use zenlive_actors::output::{MAX_RESTARTS, RESTART_WINDOW};
use zenlive_actors::viewer::TOO_SLOW;
use zenlive_actors::{
    ArbiterPool, Codec, FrameSink, MediaFrame, NodeCounters, Offer, Protocol, StreamKey,
    ViewerSession,
};
use zenlive_transcode::{AacToOpus, AacToOpusSettings, Counters, TranscodeError, OPUS_RATE};

use super::stats::WebRtcStats;
use super::transcode::{Active, DirectionStats};

/// The kind a feed's crashes count under in `zenlive_actor_restarts_total`.
pub const FEED_KIND: &str = "aac_to_opus";

/// What a feed's session calls to have the feed started again (see [`Launch::launch`]).
pub type Restart = Arc<dyn Fn() + Send + Sync>;

/// Starts a feed's session: [`FeedHost`] in a node.
pub trait Launch: Send + Sync + 'static {
    /// Runs `sink` as an internal subscriber of the stream `key`, if its live instance on
    /// this node is of lineage `lineage`; false if it is not. `restart` is for the session
    /// to call if it crashes or is dropped for staying behind (not when the stream ends or
    /// the feed is stopped).
    fn launch(&self, key: &StreamKey, lineage: u64, sink: FeedSink, restart: Restart) -> bool;
}

/// What a node starts feeds with: a [`ViewerSession`] on the next arbiter of `pool`.
pub struct FeedHost {
    /// The node's live streams.
    pub directory: Directory,
    /// The node's counters (crashes count in them).
    pub counters: Arc<NodeCounters>,
    /// Where feeds run.
    pub pool: ArbiterPool,
    /// How long a feed may stay behind its stream before its session is dropped (and the
    /// feed restarted): the node's outputs' bound.
    pub max_behind: Duration,
}

impl Launch for FeedHost {
    fn launch(&self, key: &StreamKey, lineage: u64, sink: FeedSink, restart: Restart) -> bool {
        let Some(entry) = self.directory.get(key).filter(|e| e.lineage == lineage) else {
            return false;
        };
        let counters = Arc::clone(&self.counters);
        let after_crash = Arc::clone(&restart);
        let session = ViewerSession::new(
            key.clone(),
            Protocol::Internal,
            entry,
            self.directory.clone(),
            Box::new(sink),
            Arc::clone(&self.counters),
            self.max_behind,
        )
        .internal()
        .on_crash(move || {
            counters.restarted(FEED_KIND);
            after_crash();
        })
        .on_end(move |end| {
            if end.reason == TOO_SLOW {
                restart();
            }
        });
        ViewerSession::start_in_arbiter(&self.pool.next(), move |_| session);
        true
    }
}

/// One subscriber: its viewer's frame queue.
struct Subscriber {
    id: u64,
    queue: mpsc::Sender<(Instant, MediaFrame)>,
}

/// A feed's subscribers, shared by its registry entry and its sink.
type Subscribers = Arc<Mutex<Vec<Subscriber>>>;

/// One stream's feed, as the registry keeps it.
struct Feed {
    id: u64,
    /// The stream instance lineage it transcodes (a new publisher of the name is another).
    lineage: u64,
    subscribers: Subscribers,
    /// Cancelled when the last subscriber leaves: the feed's session ends.
    stop: CancellationToken,
    restarts: Restarts,
}

/// The node's AAC → Opus feeds, by stream. See the module docs.
pub struct OpusFeeds {
    feeds: Mutex<HashMap<StreamKey, Feed>>,
    launcher: Box<dyn Launch>,
    stats: DirectionStats,
    webrtc: Arc<WebRtcStats>,
    next_id: AtomicU64,
}

impl OpusFeeds {
    /// No feeds yet; they will be started with `launcher` and counted in `stats` (the
    /// `aac_to_opus` direction) and `webrtc` (Opus packets a full queue lost).
    pub fn new(launcher: Box<dyn Launch>, stats: DirectionStats, webrtc: Arc<WebRtcStats>) -> Self {
        Self { feeds: Mutex::default(), launcher, stats, webrtc, next_id: AtomicU64::new(1) }
    }

    /// How many feeds have subscribers (running, or given up after too many crashes).
    pub fn len(&self) -> usize {
        self.feeds.lock().len()
    }

    /// Whether no feed has subscribers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds `queue` (a WHEP viewer's frame queue) to the Opus feed of the stream `key`
    /// (whose instance lineage the viewer watches is `lineage`), starting the feed if it
    /// is the first subscriber. `None` when no feed can run: the stream is not live here
    /// (any more), or the transcoder cannot start (logged).
    pub fn subscribe(
        self: &Arc<Self>,
        key: &StreamKey,
        lineage: u64,
        queue: mpsc::Sender<(Instant, MediaFrame)>,
    ) -> Option<FeedSubscription> {
        let viewer = self.next_id();
        let subscriber = Subscriber { id: viewer, queue };
        let mut feeds = self.feeds.lock();
        let running = feeds.get(key).filter(|f| f.lineage == lineage && !f.stop.is_cancelled());
        let feed = match running {
            Some(feed) => {
                feed.subscribers.lock().push(subscriber);
                feed.id
            }
            None => {
                let feed = Feed {
                    id: self.next_id(),
                    lineage,
                    subscribers: Arc::new(Mutex::new(vec![subscriber])),
                    stop: CancellationToken::new(),
                    restarts: Restarts::default(),
                };
                if !self.start(key, &feed) {
                    return None;
                }
                tracing::info!(stream = %key, "whep: AAC → Opus transcoder started for this stream's WHEP viewers");
                let id = feed.id;
                if let Some(old) = feeds.insert(key.clone(), feed) {
                    // An ended stream's feed (another lineage), whose viewers are leaving.
                    old.stop.cancel();
                }
                id
            }
        };
        Some(FeedSubscription { feeds: Arc::clone(self), key: key.clone(), feed, viewer })
    }

    /// Starts `feed`'s session with a fresh sink; false if it cannot run.
    fn start(self: &Arc<Self>, key: &StreamKey, feed: &Feed) -> bool {
        let sink = match FeedSink::new(key, feed, self.stats.clone(), Arc::clone(&self.webrtc)) {
            Ok(sink) => sink,
            Err(error) => {
                tracing::error!(stream = %key, %error, "whep: no AAC → Opus transcoder; WHEP viewers of this stream get no sound");
                return false;
            }
        };
        let feeds: Weak<Self> = Arc::downgrade(self);
        let (name, id) = (key.clone(), feed.id);
        let restart = Arc::new(move || {
            if let Some(feeds) = feeds.upgrade() {
                feeds.restart(&name, id);
            }
        });
        self.launcher.launch(key, feed.lineage, sink, restart)
    }

    /// The session of the feed `id` of `key` crashed or stayed behind: start it again
    /// with fresh state, unless it was stopped or crashes too often.
    fn restart(self: &Arc<Self>, key: &StreamKey, id: u64) {
        let mut feeds = self.feeds.lock();
        let Some(feed) = feeds.get_mut(key).filter(|f| f.id == id && !f.stop.is_cancelled()) else {
            return;
        };
        if !feed.restarts.count(Instant::now()) {
            tracing::error!(stream = %key, restarts = feed.restarts.count, "whep: the AAC → Opus feed keeps failing; its WHEP viewers get no sound until all of them have left");
            return;
        }
        tracing::error!(stream = %key, restarts = feed.restarts.count, "whep: the AAC → Opus feed failed; restarting it with fresh state");
        if !self.start(key, feed) {
            // The stream is gone: its viewers are leaving.
            if let Some(feed) = feeds.remove(key) {
                feed.stop.cancel();
            }
        }
    }

    /// A subscriber leaves its feed; the last one stops it.
    fn unsubscribe(&self, key: &StreamKey, feed: u64, viewer: u64) {
        let mut feeds = self.feeds.lock();
        let Some(entry) = feeds.get(key).filter(|f| f.id == feed) else { return };
        let empty = {
            let mut subscribers = entry.subscribers.lock();
            subscribers.retain(|s| s.id != viewer);
            subscribers.is_empty()
        };
        if empty {
            if let Some(entry) = feeds.remove(key) {
                entry.stop.cancel();
                tracing::info!(stream = %key, "whep: AAC → Opus transcoder stopped (no WHEP viewer needs it)");
            }
        }
    }
}

/// A viewer's share of a feed: its queue gets the feed's Opus frames until this is
/// dropped.
pub struct FeedSubscription {
    feeds: Arc<OpusFeeds>,
    key: StreamKey,
    feed: u64,
    viewer: u64,
}

impl Drop for FeedSubscription {
    fn drop(&mut self) {
        self.feeds.unsubscribe(&self.key, self.feed, self.viewer);
    }
}

impl std::fmt::Debug for FeedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSubscription")
            .field("key", &self.key)
            .field("feed", &self.feed)
            .finish()
    }
}

/// A feed's sink: the stream's AAC frames in, Opus frames out to every subscriber's queue.
/// Counted in `zenlive_transcode_active{direction="aac_to_opus"}` while it lives.
pub struct FeedSink {
    key: StreamKey,
    transcoder: AacToOpus,
    /// The transcoder's counters when they were last added to the metrics.
    reported: Counters,
    subscribers: Subscribers,
    stop: CancellationToken,
    stats: DirectionStats,
    webrtc: Arc<WebRtcStats>,
    _active: Active,
}

impl FeedSink {
    fn new(
        key: &StreamKey,
        feed: &Feed,
        stats: DirectionStats,
        webrtc: Arc<WebRtcStats>,
    ) -> Result<Self, TranscodeError> {
        let transcoder = AacToOpus::new(AacToOpusSettings::default())?;
        Ok(Self {
            key: key.clone(),
            transcoder,
            reported: Counters::default(),
            subscribers: Arc::clone(&feed.subscribers),
            stop: feed.stop.clone(),
            _active: stats.start(),
            stats,
            webrtc,
        })
    }

    /// The Opus frames `frame` completed. A panic is caught, counted, and the transcoder
    /// rebuilt (the frame is lost).
    fn transcode(&mut self, frame: &MediaFrame) -> Vec<MediaFrame> {
        let transcoder = &mut self.transcoder;
        let pushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if faults::fire(Fault::TranscoderPanic) {
                panic!("fault injection: the AAC → Opus transcoder panics");
            }
            transcoder.push(frame)
        }));
        self.report();
        match pushed {
            Ok(opus) => opus,
            Err(_) => {
                self.stats.failed();
                tracing::error!(stream = %self.key, "whep: the AAC → Opus transcoder panicked; continuing with a fresh one");
                // The same settings started one before, so this cannot fail; if it did,
                // the old transcoder would go on.
                if let Ok(fresh) = AacToOpus::new(AacToOpusSettings::default()) {
                    self.transcoder = fresh;
                    self.reported = Counters::default();
                }
                Vec::new()
            }
        }
    }

    /// Adds what the transcoder did since the last report to the metrics.
    fn report(&mut self) {
        let now = self.transcoder.counters();
        let rate = self.transcoder.source_rate().unwrap_or(OPUS_RATE);
        self.stats.report(&self.reported, &now, rate);
        self.reported = now;
    }

    /// Offers `opus` to every subscriber's queue; a closed one leaves the list.
    fn fan_out(&self, opus: &[MediaFrame]) {
        let mut full = 0;
        self.subscribers.lock().retain(|subscriber| {
            for frame in opus {
                match subscriber.queue.try_send((Instant::now(), frame.clone())) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => full += 1,
                    Err(TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        self.webrtc.frames_dropped("whep", "audio_queue_full", full);
    }
}

impl FrameSink for FeedSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        if self.stop.is_cancelled() {
            return Offer::Closed;
        }
        // Video, script data and other audio are not this feed's: taken and forgotten.
        if frame.codec() == Codec::Aac {
            let opus = self.transcode(frame);
            if !opus.is_empty() {
                self.fan_out(&opus);
            }
        }
        Offer::Accepted(0)
    }

    fn closed(&self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        let stop = self.stop.clone();
        Some(Box::pin(async move { stop.cancelled_owned().await }))
    }
}

/// Restarts of one feed, for the restart bound.
#[derive(Debug, Clone, Copy, Default)]
struct Restarts {
    since: Option<Instant>,
    count: u32,
}

impl Restarts {
    /// Counts a restart at `now`; false when there were more than [`MAX_RESTARTS`] in
    /// [`RESTART_WINDOW`].
    fn count(&mut self, now: Instant) -> bool {
        match self.since {
            Some(since) if now.saturating_duration_since(since) < RESTART_WINDOW => self.count += 1,
            _ => {
                self.since = Some(now);
                self.count = 1;
            }
        }
        self.count <= MAX_RESTARTS
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use zenlive_media::MediaTime;
    use zenlive_transcode::{OpusToAac, OpusToAacSettings, Transcoded};

    use super::*;
    use crate::webrtc::transcode::TranscodeStats;

    /// Keeps the sinks it is asked to run, for the test to drive; `live` says whether the
    /// stream is.
    #[derive(Default)]
    struct Kept {
        sinks: Mutex<Vec<(u64, FeedSink, Restart)>>,
        dead: std::sync::atomic::AtomicBool,
    }

    impl Launch for Arc<Kept> {
        fn launch(&self, _key: &StreamKey, lineage: u64, sink: FeedSink, restart: Restart) -> bool {
            if self.dead.load(Ordering::Relaxed) {
                return false;
            }
            self.sinks.lock().push((lineage, sink, restart));
            true
        }
    }

    fn key() -> StreamKey {
        StreamKey::new("live", "tone").expect("a valid name")
    }

    fn feeds() -> (Arc<OpusFeeds>, Arc<Kept>, Arc<TranscodeStats>, Arc<WebRtcStats>) {
        let kept = Arc::new(Kept::default());
        let stats = Arc::new(TranscodeStats::new());
        let webrtc = Arc::new(WebRtcStats::new());
        let feeds = Arc::new(OpusFeeds::new(
            Box::new(Arc::clone(&kept)),
            stats.aac_to_opus.clone(),
            Arc::clone(&webrtc),
        ));
        (feeds, kept, stats, webrtc)
    }

    /// `seconds` of AAC (the transcoded Opus "silence" frame) stamped from `start_ms`: what
    /// an AAC stream carries.
    fn aac(start_ms: i64, seconds: i64) -> Vec<MediaFrame> {
        let mut to_aac = OpusToAac::new(OpusToAacSettings::default()).expect("an AAC encoder");
        let mut out = Vec::new();
        for i in 0..seconds * 50 {
            let at = MediaTime::from_millis(start_ms + 20 * i);
            let opus =
                MediaFrame::audio(Codec::Opus, at, Bytes::from_static(&[0xfc, 0xff, 0xfe]), None);
            to_aac.push(&opus, &mut out);
        }
        out.into_iter()
            .filter_map(|t| match t {
                Transcoded::Frame(frame) => Some(frame),
                Transcoded::Config(_) => None,
            })
            .collect()
    }

    /// The value of `series` (name and labels, as the text format writes them).
    fn value(collectors: Vec<Box<dyn prometheus::core::Collector>>, series: &str) -> f64 {
        let families: Vec<_> = collectors
            .iter()
            .flat_map(|c| c.collect())
            .filter(|f| !f.get_metric().is_empty())
            .collect();
        let text = prometheus::TextEncoder::new().encode_to_string(&families).expect("text");
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
    }

    fn transcoded(stats: &TranscodeStats, name: &str) -> f64 {
        value(stats.collectors(), &format!("zenlive_transcode_{name}{{direction=\"aac_to_opus\"}}"))
    }

    fn drain(rx: &mut mpsc::Receiver<(Instant, MediaFrame)>) -> Vec<MediaFrame> {
        std::iter::from_fn(|| rx.try_recv().ok().map(|(_, frame)| frame)).collect()
    }

    #[test]
    fn viewers_of_a_stream_share_one_transcoder_that_stops_with_the_last() {
        let (feeds, kept, stats, webrtc) = feeds();
        let (tx1, mut rx1) = mpsc::channel(512);
        let (tx2, mut rx2) = mpsc::channel(4);
        let first = feeds.subscribe(&key(), 7, tx1).expect("a feed starts");
        let second = feeds.subscribe(&key(), 7, tx2).expect("joins the feed");
        assert_eq!(kept.sinks.lock().len(), 1, "one transcoder for both viewers");
        assert_eq!(stats.aac_to_opus.active.get(), 1);

        let frames = aac(1_000, 2);
        {
            let mut sinks = kept.sinks.lock();
            let sink = &mut sinks[0].1;
            for frame in &frames {
                assert_eq!(sink.offer(frame), Offer::Accepted(0));
            }
            let video = MediaFrame::video(
                Codec::H264,
                MediaTime::ZERO,
                MediaTime::ZERO,
                true,
                Bytes::from_static(&[0, 0, 0, 1, 0x65]),
                None,
            );
            assert_eq!(sink.offer(&video), Offer::Accepted(0), "video is not the feed's");
        }
        let got1 = drain(&mut rx1);
        let got2 = drain(&mut rx2);
        assert!(got1.len() >= 80, "{} Opus packets", got1.len());
        assert!(got1.iter().all(|f| f.codec() == Codec::Opus));
        // The Opus packets are 20 ms apart on the AAC's clock.
        let step = got1[1].pts() - got1[0].pts();
        assert_eq!(step, MediaTime::from_millis(20));
        let first_aac = frames[0].pts();
        let offset = (got1[0].pts() - first_aac).as_nanos().abs();
        assert!(offset < 50_000_000, "first Opus at {} for AAC from {first_aac}", got1[0].pts());
        // The small queue kept the first four; the rest were lost and counted, and the
        // other viewer missed nothing.
        assert_eq!(got2.len(), 4);
        assert!(got2.iter().zip(&got1).all(|(a, b)| a.pts() == b.pts()));
        let lost = value(
            webrtc.collectors(),
            "zenlive_webrtc_frames_dropped_total{protocol=\"whep\",reason=\"audio_queue_full\"}",
        );
        assert_eq!(lost, (got1.len() - 4) as f64);
        assert_eq!(transcoded(&stats, "frames_in_total"), frames.len() as f64);
        assert_eq!(transcoded(&stats, "frames_out_total"), got1.len() as f64);
        assert_eq!(transcoded(&stats, "errors_total"), 0.0);
        assert!(transcoded(&stats, "cpu_seconds_total") > 0.0);

        drop(first);
        assert!(!kept.sinks.lock()[0].1.stop.is_cancelled(), "one viewer still needs it");
        drop(second);
        assert!(feeds.is_empty());
        let (_, mut sink, _) = kept.sinks.lock().pop().expect("the sink");
        assert_eq!(sink.offer(&frames[0]), Offer::Closed, "stopped with the last viewer");
        drop(sink);
        assert_eq!(stats.aac_to_opus.active.get(), 0);
    }

    #[test]
    fn a_panic_is_counted_and_a_fresh_transcoder_goes_on() {
        let (feeds, kept, stats, _) = feeds();
        let (tx, mut rx) = mpsc::channel(512);
        let _viewer = feeds.subscribe(&key(), 1, tx).expect("a feed");
        let frames = aac(0, 2);
        let mut sinks = kept.sinks.lock();
        let sink = &mut sinks[0].1;
        for frame in &frames[..40] {
            sink.offer(frame);
        }
        faults::arm(Fault::TranscoderPanic);
        assert_eq!(sink.offer(&frames[40]), Offer::Accepted(0), "the feed goes on");
        let before = drain(&mut rx).len();
        for frame in &frames[41..] {
            sink.offer(frame);
        }
        let after = drain(&mut rx);
        assert!(before > 0 && after.len() > 20, "{before} then {}", after.len());
        assert_eq!(transcoded(&stats, "errors_total"), 1.0);
        assert_eq!(stats.aac_to_opus.active.get(), 1, "still one transcoder");
    }

    #[test]
    fn a_crashed_feed_restarts_for_its_viewers_a_bounded_number_of_times() {
        let (feeds, kept, stats, _) = feeds();
        let (tx, _rx) = mpsc::channel(8);
        let _viewer = feeds.subscribe(&key(), 1, tx).expect("a feed");
        for restarts in 1..=MAX_RESTARTS as usize {
            let (_, sink, restart) = kept.sinks.lock().pop().expect("a running feed");
            drop(sink);
            restart();
            assert_eq!(kept.sinks.lock().len(), 1, "restart {restarts}");
        }
        let (_, sink, restart) = kept.sinks.lock().pop().expect("a running feed");
        drop(sink);
        restart();
        assert!(kept.sinks.lock().is_empty(), "given up");
        assert_eq!(stats.aac_to_opus.active.get(), 0);
    }

    #[test]
    fn a_new_publisher_of_the_name_gets_a_new_feed_and_a_dead_stream_none() {
        let (feeds, kept, _, _) = feeds();
        let (tx, _rx) = mpsc::channel(8);
        let old = feeds.subscribe(&key(), 1, tx.clone()).expect("a feed");
        let new = feeds.subscribe(&key(), 2, tx.clone()).expect("a feed for the new stream");
        {
            let sinks = kept.sinks.lock();
            assert_eq!(sinks.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2]);
            assert!(sinks[0].1.stop.is_cancelled() && !sinks[1].1.stop.is_cancelled());
        }
        drop(old);
        assert!(!kept.sinks.lock()[1].1.stop.is_cancelled(), "the old viewer leaving the old feed");
        drop(new);
        assert!(kept.sinks.lock()[1].1.stop.is_cancelled());
        kept.dead.store(true, Ordering::Relaxed);
        assert!(feeds.subscribe(&key(), 3, tx).is_none(), "the stream is not live");
        assert!(feeds.is_empty());
    }
}
