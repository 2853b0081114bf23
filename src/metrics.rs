//! Prometheus metrics: what every stream and the node are doing, read at scrape time.
//!
//! Nothing here is updated on the media path. Streams keep their statistics in shared
//! atomics ([`StreamStats`](zenlive_actors::StreamStats)) and the node in
//! [`NodeCounters`]; a scrape reads them all into fresh metric families. A stream's series
//! therefore exist exactly while the stream is live (an ended stream's series vanish with
//! it), and at most `metrics.max_stream_series` streams are exported, the most watched
//! first, so a node that has seen 100,000 streams never exports 100,000 series.
//! Latency histograms ([`Metrics::hls_request`], [`Metrics::hook`]) are ordinary registered
//! collectors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use zenlive_actors::events::NodeCounters;
use zenlive_actors::{Directory, StatsSnapshot, StreamKey};

/// The node's metrics registry. See the module docs.
pub struct Metrics {
    registry: Registry,
    hls_requests: HistogramVec,
    hooks: HistogramVec,
    auth_failures: IntCounterVec,
    webhooks: IntCounterVec,
}

/// What an HLS request fetched, for the latency histogram's label.
#[derive(Debug, Clone, Copy)]
pub enum HlsRequest {
    /// `index.m3u8`.
    Playlist,
    /// A `.ts` segment.
    Segment,
}

impl Metrics {
    /// Adds collectors of another part of the node (the cluster's).
    pub fn register(&self, collector: Box<dyn Collector>) {
        if let Err(error) = self.registry.register(collector) {
            tracing::error!(%error, "metric not registered");
        }
    }

    /// Metrics over `directory` and `counters`, exporting at most `max_stream_series`
    /// streams' series. `node` labels `zenlive_build_info`.
    pub fn new(
        directory: Directory,
        counters: Arc<NodeCounters>,
        max_stream_series: usize,
        node: &str,
    ) -> Self {
        let registry = Registry::new();
        let hls_requests = HistogramVec::new(
            HistogramOpts::new(
                "zenlive_hls_request_duration_seconds",
                "Time to answer an HLS playlist or segment request, from routing to the body.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5]),
            &["kind"],
        )
        .expect("valid histogram options");
        let hooks = HistogramVec::new(
            HistogramOpts::new(
                "zenlive_hook_duration_seconds",
                "Time the application's hooks took, by event.",
            )
            .buckets(vec![0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0]),
            &["event"],
        )
        .expect("valid histogram options");
        let auth_failures = counter_vec(
            "zenlive_auth_failures_total",
            "Requests refused by auth, by protocol and reason (the error code).",
            &["protocol", "reason"],
        );
        let webhooks = counter_vec(
            "zenlive_webhook_deliveries_total",
            "Webhook deliveries by result: delivered, retried (an attempt failed), failed (given up), dropped (queue full).",
            &["result"],
        );
        for result in ["delivered", "retried", "failed", "dropped"] {
            webhooks.with_label_values(&[result]);
        }
        // Children exist from the start, so dashboards see zeros rather than no series.
        for kind in ["playlist", "segment"] {
            hls_requests.with_label_values(&[kind]);
        }
        for event in
            ["stream_start", "stream_end", "viewer_join", "viewer_leave", "publish", "play"]
        {
            hooks.with_label_values(&[event]);
        }
        for protocol in ["rtmp", "http-flv", "hls", "api", "chat", "whip", "whep"] {
            for code in crate::auth::AuthError::CODES {
                auth_failures.with_label_values(&[protocol, code]);
            }
        }
        let live = LiveCollector::new(directory, counters, max_stream_series, node);
        let registered = [
            registry.register(Box::new(hls_requests.clone())),
            registry.register(Box::new(hooks.clone())),
            registry.register(Box::new(auth_failures.clone())),
            registry.register(Box::new(webhooks.clone())),
            registry.register(Box::new(live)),
            registry
                .register(Box::new(prometheus::process_collector::ProcessCollector::for_self())),
        ];
        for result in registered {
            // Only a duplicate name fails, and the names above are distinct.
            if let Err(error) = result {
                tracing::error!(%error, "metric not registered");
            }
        }
        Self { registry, hls_requests, hooks, auth_failures, webhooks }
    }

    /// Records how long an HLS request took.
    pub fn hls_request(&self, kind: HlsRequest, took: Duration) {
        let label = match kind {
            HlsRequest::Playlist => "playlist",
            HlsRequest::Segment => "segment",
        };
        self.hls_requests.with_label_values(&[label]).observe(took.as_secs_f64());
    }

    /// Counts a webhook delivery outcome.
    pub fn webhook(&self, result: &str) {
        self.webhooks.with_label_values(&[result]).inc();
    }

    /// Counts a request refused by auth.
    pub fn auth_failure(&self, protocol: &str, code: &str) {
        self.auth_failures.with_label_values(&[protocol, code]).inc();
    }

    /// Records how long the application's hooks took for one event.
    pub fn hook(&self, event: &'static str, took: Duration) {
        self.hooks.with_label_values(&[event]).observe(took.as_secs_f64());
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "metrics could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Per-stream and node-wide series, rebuilt from the shared statistics at every scrape.
struct LiveCollector {
    directory: Directory,
    counters: Arc<NodeCounters>,
    max_stream_series: usize,
    families: Mutex<Families>,
    descs: Vec<Desc>,
    started: Instant,
}

/// The metric vectors one scrape fills. They are reset at the start of each scrape, so a
/// stream that ended has no series left.
struct Families {
    viewers: IntGaugeVec,
    viewers_joined: IntCounterVec,
    bitrate: IntGaugeVec,
    fps: GaugeVec,
    keyframe_interval: GaugeVec,
    info: IntGaugeVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    frames_in: IntCounterVec,
    frames_dropped: IntCounterVec,
    viewers_dropped: IntCounterVec,
    hls_segments: IntCounterVec,
    uptime: GaugeVec,
    stream_restarts: IntCounterVec,
    streams: IntGauge,
    omitted: IntGauge,
    connections: IntGaugeVec,
    actors: IntGaugeVec,
    actor_restarts: IntCounterVec,
    rejections: IntCounterVec,
    node_viewers_dropped: IntCounterVec,
    node_frames_skipped: IntCounterVec,
    chat_messages: IntCounterVec,
    chat_deliveries: IntCounterVec,
    chat_dropped: IntCounterVec,
    lease_losses: IntCounterVec,
    build: IntGaugeVec,
    node_uptime: Gauge,
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn int_gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

const STREAM: &[&str] = &["stream"];
const STREAM_PROTOCOL: &[&str] = &["stream", "protocol"];
const INFO_LABELS: &[&str] = &[
    "stream",
    "publisher_protocol",
    "video_codec",
    "width",
    "height",
    "profile",
    "level",
    "audio_codec",
    "sample_rate",
    "channels",
];

impl Families {
    fn new() -> Self {
        Self {
            viewers: int_gauge_vec("zenlive_stream_viewers", "Viewers watching now.", STREAM_PROTOCOL),
            viewers_joined: counter_vec(
                "zenlive_stream_viewers_joined_total",
                "Viewers that joined since the stream started.",
                STREAM_PROTOCOL,
            ),
            bitrate: int_gauge_vec(
                "zenlive_stream_ingest_bytes_per_second",
                "Media bytes per second received (the bitrate / 8, Prometheus counts bytes), over the last 5 s of media time.",
                STREAM,
            ),
            fps: gauge_vec(
                "zenlive_stream_frames_per_second",
                "Video frames per second, from frame timestamps over the last 5 s.",
                STREAM,
            ),
            keyframe_interval: gauge_vec(
                "zenlive_stream_keyframe_interval_seconds",
                "Media time between the last two video keyframes.",
                STREAM,
            ),
            info: int_gauge_vec(
                "zenlive_stream_info",
                "Always 1; the labels describe the stream's tracks (from its sequence headers).",
                INFO_LABELS,
            ),
            bytes_in: counter_vec(
                "zenlive_stream_received_bytes_total",
                "Media payload bytes received from the publisher.",
                STREAM_PROTOCOL,
            ),
            bytes_out: counter_vec(
                "zenlive_stream_sent_bytes_total",
                "Bytes delivered to viewers.",
                STREAM_PROTOCOL,
            ),
            frames_in: counter_vec(
                "zenlive_stream_received_frames_total",
                "Media frames received from the publisher.",
                STREAM,
            ),
            frames_dropped: counter_vec(
                "zenlive_stream_frames_dropped_total",
                "Frames not delivered to viewers (or the HLS packager) that fell behind.",
                STREAM,
            ),
            viewers_dropped: counter_vec(
                "zenlive_stream_viewers_dropped_slow_total",
                "Viewers disconnected for staying behind.",
                STREAM,
            ),
            hls_segments: counter_vec(
                "zenlive_stream_hls_segments_total",
                "HLS segments produced.",
                STREAM,
            ),
            uptime: gauge_vec(
                "zenlive_stream_uptime_seconds",
                "Seconds since the stream started.",
                STREAM,
            ),
            stream_restarts: counter_vec(
                "zenlive_stream_restarts_total",
                "Times the stream's actor crashed and was restarted.",
                STREAM,
            ),
            streams: IntGauge::new("zenlive_streams", "Live streams on this node.")
                .expect("valid metric"),
            omitted: IntGauge::new(
                "zenlive_metrics_streams_omitted",
                "Live streams without per-stream series (over metrics.max_stream_series).",
            )
            .expect("valid metric"),
            connections: int_gauge_vec(
                "zenlive_connections",
                "Open connections, by protocol.",
                &["protocol"],
            ),
            actors: int_gauge_vec("zenlive_actors", "Live actors, by kind.", &["kind"]),
            actor_restarts: counter_vec(
                "zenlive_actor_restarts_total",
                "Actors restarted after a crash, by kind: stream, an output's name (hls, ...), or viewer (a crashed viewer session closes its connection instead).",
                &["kind"],
            ),
            rejections: counter_vec(
                "zenlive_bad_input_rejections_total",
                "Connections closed for bad input, by reason.",
                &["reason"],
            ),
            node_viewers_dropped: counter_vec(
                "zenlive_viewers_dropped_slow_total",
                "Viewers disconnected for staying behind, node-wide.",
                &[],
            ),
            node_frames_skipped: counter_vec(
                "zenlive_frames_skipped_total",
                "Frames skipped for subscribers that fell behind, node-wide.",
                &[],
            ),
            chat_messages: counter_vec(
                "zenlive_chat_messages_total",
                "Chat messages broadcast (members' and the application's system messages).",
                &[],
            ),
            chat_deliveries: counter_vec(
                "zenlive_chat_deliveries_total",
                "Chat events queued to members (each event once per member).",
                &[],
            ),
            chat_dropped: counter_vec(
                "zenlive_chat_members_dropped_slow_total",
                "Chat members disconnected because they did not read.",
                &[],
            ),
            lease_losses: counter_vec(
                "zenlive_lease_losses_total",
                "Stream leases found lapsed or taken over at renewal (cluster self-fencing).",
                &[],
            ),
            build: int_gauge_vec(
                "zenlive_build_info",
                "Always 1; labels name the version and the node.",
                &["version", "node"],
            ),
            node_uptime: Gauge::new("zenlive_uptime_seconds", "Seconds since the node started.")
                .expect("valid metric"),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 28] {
        [
            &self.viewers,
            &self.viewers_joined,
            &self.bitrate,
            &self.fps,
            &self.keyframe_interval,
            &self.info,
            &self.bytes_in,
            &self.bytes_out,
            &self.frames_in,
            &self.frames_dropped,
            &self.viewers_dropped,
            &self.hls_segments,
            &self.uptime,
            &self.stream_restarts,
            &self.streams,
            &self.omitted,
            &self.connections,
            &self.actors,
            &self.actor_restarts,
            &self.rejections,
            &self.node_viewers_dropped,
            &self.node_frames_skipped,
            &self.chat_messages,
            &self.chat_deliveries,
            &self.chat_dropped,
            &self.lease_losses,
            &self.build,
            &self.node_uptime,
        ]
    }

    fn reset_streams(&self) {
        for vec in [&self.viewers, &self.info, &self.bitrate] {
            vec.reset();
        }
        for vec in [&self.fps, &self.keyframe_interval, &self.uptime] {
            vec.reset();
        }
        for vec in [
            &self.viewers_joined,
            &self.bytes_in,
            &self.bytes_out,
            &self.frames_in,
            &self.frames_dropped,
            &self.viewers_dropped,
            &self.hls_segments,
            &self.stream_restarts,
        ] {
            vec.reset();
        }
    }

    fn stream(&self, key: &StreamKey, s: &StatsSnapshot) {
        let owned = key.to_string();
        let name = owned.as_str();
        let stream = [name];
        for (protocol, n) in &s.viewers {
            self.viewers.with_label_values(&[name, protocol.as_str()]).set(*n as i64);
        }
        for (protocol, n) in &s.viewers_total {
            self.viewers_joined.with_label_values(&[name, protocol.as_str()]).inc_by(*n);
        }
        for (protocol, n) in &s.bytes_out {
            self.bytes_out.with_label_values(&[name, protocol.as_str()]).inc_by(*n);
        }
        self.bytes_in.with_label_values(&[name, s.publisher_protocol.as_str()]).inc_by(s.bytes_in);
        self.bitrate.with_label_values(&stream).set((s.rates.bitrate_bps / 8) as i64);
        self.fps.with_label_values(&stream).set(s.rates.fps);
        if let Some(ms) = s.rates.keyframe_interval_ms {
            self.keyframe_interval.with_label_values(&stream).set(ms as f64 / 1000.0);
        }
        let video = s.media.video.as_ref();
        let audio = s.media.audio.as_ref();
        let text = |v: Option<String>| v.unwrap_or_default();
        let info = [
            owned.clone(),
            s.publisher_protocol.as_str().to_owned(),
            text(video.map(|v| v.codec.to_owned())),
            text(video.map(|v| v.width.to_string())),
            text(video.map(|v| v.height.to_string())),
            text(video.map(|v| v.profile.to_string())),
            text(video.map(|v| v.level.to_string())),
            text(audio.map(|a| a.codec.to_owned())),
            text(audio.map(|a| a.sample_rate.to_string())),
            text(audio.map(|a| a.channels.to_string())),
        ];
        let info: Vec<&str> = info.iter().map(String::as_str).collect();
        self.info.with_label_values(&info).set(1);
        self.frames_in.with_label_values(&stream).inc_by(s.frames_in);
        self.frames_dropped.with_label_values(&stream).inc_by(s.frames_dropped);
        self.viewers_dropped.with_label_values(&stream).inc_by(s.viewers_dropped_slow);
        self.hls_segments.with_label_values(&stream).inc_by(s.hls_segments);
        self.uptime.with_label_values(&stream).set(s.uptime.as_secs_f64());
        self.stream_restarts.with_label_values(&stream).inc_by(s.restarts);
    }
}

impl LiveCollector {
    fn new(
        directory: Directory,
        counters: Arc<NodeCounters>,
        max_stream_series: usize,
        node: &str,
    ) -> Self {
        let families = Families::new();
        families.build.with_label_values(&[env!("CARGO_PKG_VERSION"), node]).set(1);
        let descs =
            families.collectors().iter().flat_map(|c| c.desc()).map(|d| (*d).clone()).collect();
        Self {
            directory,
            counters,
            max_stream_series,
            families: Mutex::new(families),
            descs,
            started: Instant::now(),
        }
    }
}

impl Collector for LiveCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // One scrape at a time: each rebuilds the shared vectors from scratch.
        let f = self.families.lock();
        f.reset_streams();
        let mut streams: Vec<(StreamKey, StatsSnapshot)> = self
            .directory
            .entries()
            .into_iter()
            .map(|(key, entry)| (key, entry.stats.snapshot()))
            .collect();
        f.streams.set(streams.len() as i64);
        if streams.len() > self.max_stream_series {
            // Keep the most watched; ties by name, so the choice is stable between scrapes.
            streams.sort_by(|a, b| b.1.viewers_now().cmp(&a.1.viewers_now()).then(a.0.cmp(&b.0)));
        }
        let omitted = streams.len().saturating_sub(self.max_stream_series);
        f.omitted.set(omitted as i64);
        for (key, stats) in streams.iter().take(self.max_stream_series) {
            f.stream(key, stats);
        }

        let c = &self.counters;
        for (kind, n) in c.connections() {
            f.connections.with_label_values(&[kind.as_str()]).set(n as i64);
        }
        for (kind, n) in c.actors() {
            f.actors.with_label_values(&[kind.as_str()]).set(n as i64);
        }
        for (kind, n) in c.restarts() {
            set_counter(&f.actor_restarts, &[kind], n);
        }
        for (reason, n) in c.rejections() {
            set_counter(&f.rejections, &[reason.as_str()], n);
        }
        set_counter(&f.node_viewers_dropped, &[], NodeCounters::get(&c.viewers_dropped_slow));
        set_counter(&f.node_frames_skipped, &[], NodeCounters::get(&c.frames_skipped));
        set_counter(&f.chat_messages, &[], NodeCounters::get(&c.chat_messages));
        set_counter(&f.chat_deliveries, &[], NodeCounters::get(&c.chat_deliveries));
        set_counter(&f.chat_dropped, &[], NodeCounters::get(&c.chat_members_dropped_slow));
        set_counter(&f.lease_losses, &[], NodeCounters::get(&c.lease_losses));
        f.node_uptime.set(self.started.elapsed().as_secs_f64());
        f.collectors().iter().flat_map(|c| c.collect()).collect()
    }
}

/// Sets a counter child to an absolute value read from an atomic (counters only grow, so
/// the difference is never negative).
fn set_counter(vec: &IntCounterVec, labels: &[&str], value: u64) {
    let counter = vec.with_label_values(labels);
    counter.inc_by(value.saturating_sub(counter.get()));
}
