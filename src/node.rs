//! The node: what every front-end shares ([`NodeContext`]), and the SDK facade that starts
//! one inside an application ([`NodeBuilder`] → [`Node`]).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use zenlive::{Config, NodeBuilder};
//! let node = NodeBuilder::new(Config::default())
//!     .on_stream_start(|event| println!("started: {}", event.key()))
//!     .on_stream_end(|event| println!("ended: {}", event.key()))
//!     .start()
//!     .await?;
//! // ... later: kick a publisher by name, from anywhere in the application (in a cluster,
//! // whichever node it publishes to).
//! let key = zenlive::StreamKey::parse("live/test")?;
//! let kick = zenlive_actors::stream::Kick { reason: "terms of service".into() };
//! match node.stream_ref(&key).send(kick).await {
//!     Ok(kicked) => println!("kicked: {kicked}"),
//!     Err(error) => println!("not kicked: {error}"),
//! }
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use zenlive_actors::directory::StreamEntry;
use zenlive_actors::events::{EventSink, NodeCounters, StreamEvent};
use zenlive_actors::stream::{GetInfo, GetStats, Kick, RequestKeyframe, SetOutput, StreamInfo};
use zenlive_actors::supervisor::Shutdown;
use zenlive_actors::{
    ArbiterPool, Directory, NamedActor, Output, OutputChange, Outputs, StatsSnapshot, StreamActor,
    StreamKey, StreamSupervisor,
};
use zenlive_registry::{
    new_incarnation, LeaseBook, MemoryRegistry, NodeId, NodeInfo, Registry, RegistryError, NODE_TTL,
};

use crate::app_actors::{AppActorKind, AppActors, Parts, Registration, SpawnError};
use crate::auth::Auth;
use crate::cluster::instrumented::Instrumented;
use crate::cluster::Cluster;
use crate::config::{Config, HlsStorage, OnFailure, StorageKind};
use crate::context::NodeContext;
use crate::hls::ll::{LlManager, LlOutput};
use crate::hls::packager::{HlsManager, HlsOutput};
use crate::hls::spool::{Spool, SpoolCounters};
use crate::hls::store::{MemoryStore, SegmentStore};
use crate::hooks::{decider, Decision, HookSet, Hooks, PlayRequest, PublishRequest, ViewerEvent};
use crate::metrics::Metrics;
use crate::recording::actor::{GetRecording, RecorderActor, Recordings, StopRecording};
use crate::recording::catalog::{Catalog, SegmentIndexer};
use crate::recording::counters::RecordingCounters;
use crate::recording::events::{RecordingEvent, RecordingListener};
use crate::recording::playback::Playback;
use crate::recording::retention::{Retention, RetentionRules};
use crate::recording::s3::S3Storage;
use crate::recording::s3_playback::S3Store;
use crate::recording::storage::{LocalStorage, Storage};
use crate::recording::{Claims, Recorder, RecorderOutput};
use crate::refs::{ActorRef, RefError, Routes};
use crate::refusals::Refusals;
use crate::rtmp::budget::PartialBudget;
use crate::server::Listeners;
pub use crate::start_error::StartError;
use crate::tls::{Tls, TlsError};
use crate::webhooks::{on_publish_callback, PublishCallback, Webhooks};
use arc_swap::{ArcSwap, ArcSwapOption};
use zenlive_actors::chat::{
    ChatDecision, ChatHooks, ChatMessageRequest, ChatRoom, ChatRooms, DeliveredMessage, Moderate,
    Placement, SystemMessage,
};
use zenlive_actors::chat_core::ChatLimits;
use zenlive_actors::quota::PerAddress;

/// Refuses to start as `node` while another process holds that id in the registry. A
/// registration that stops being renewed (its node just crashed, or is being restarted)
/// expires within [`NODE_TTL`]: the start waits that long for it before refusing.
async fn ensure_unique(registry: &dyn Registry, node: &NodeId) -> Result<(), StartError> {
    let deadline = tokio::time::Instant::now() + NODE_TTL + Duration::from_secs(1);
    let mut warned = false;
    loop {
        let nodes = registry.nodes().await?;
        let Some(other) = nodes.iter().find(|n| &n.id == node) else { return Ok(()) };
        if tokio::time::Instant::now() >= deadline {
            let addresses =
                other.addresses.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>();
            return Err(StartError::NodeIdInUse {
                id: node.to_string(),
                addresses: addresses.join(", "),
            });
        }
        if !warned {
            tracing::warn!(node = %node, "this node id is registered by another process; waiting up to {NODE_TTL:?} for its registration to expire");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What to change when listener `what` cannot bind.
/// Builds a node: configuration plus application hooks. See the module docs.
pub struct NodeBuilder {
    config: Config,
    hooks: HookSet,
    chat: ChatHooks,
    outputs: Vec<Arc<dyn Output>>,
    kinds: Vec<Box<dyn Registration>>,
}

/// How long an output may stay behind its stream before its session is dropped (and the
/// output reopened); outputs such as the HLS packager are slower to drain than players.
const OUTPUT_MAX_BEHIND: Duration = Duration::from_secs(30);

impl NodeBuilder {
    /// A node with `config`.
    pub fn new(config: Config) -> Self {
        let (hooks, chat, outputs) = (HookSet::default(), ChatHooks::default(), Vec::new());
        Self { config, hooks, chat, outputs, kinds: Vec::new() }
    }

    /// Registers an application actor kind `A` on this node: instances are started by name
    /// with [`Node::spawn_named`] (one in the whole cluster), supervised (restarted on a
    /// panic), and reached from every node with [`Node::actor_ref`]. `A::KIND` must be an
    /// application kind (`zenlive_registry::app_kind!("poll")`), registered once; else
    /// [`NodeBuilder::start`] fails with [`StartError::ActorKind`]. Register it on every
    /// node that may run it, with the same messages. See [`crate::app_actors`].
    pub fn actor_kind<A: NamedActor>(mut self, kind: AppActorKind<A>) -> Self {
        self.kinds.push(Box::new(kind));
        self
    }

    /// Adds an output: every live stream's frames (and codec configurations) go to the sink
    /// `output` opens for it, with the back-pressure of a viewer (a sink that falls behind
    /// skips to the next keyframe). A panic in the sink restarts that output for that stream
    /// with fresh state, counted in `zenlive_actor_restarts_total{kind=<its name>}`, and
    /// touches nothing else. See [`Output`].
    pub fn output(mut self, output: impl Output) -> Self {
        self.outputs.push(Arc::new(output));
        self
    }

    /// Asks `decide` before each member's chat message is broadcast: allow, reject (the
    /// author gets an `error` with code `rejected`) or rewrite its text. Bounded by
    /// `hooks.timeout`; on failure `hooks.on_failure` decides. One decider per node.
    pub fn on_chat_message<F, Fut>(mut self, decide: F) -> Self
    where
        F: Fn(ChatMessageRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ChatDecision> + Send + 'static,
    {
        self.chat.decide = Some(Arc::new(move |request| Box::pin(decide(request))));
        self
    }

    /// Calls `hook` with every member message the room broadcast (to save it in your own
    /// database). Runs on the room's thread: keep it quick.
    pub fn on_chat_delivered(
        mut self,
        hook: impl Fn(&DeliveredMessage) + Send + Sync + 'static,
    ) -> Self {
        self.chat.delivered.push(Arc::new(hook));
        self
    }

    /// Calls `hook` when a stream starts (stream, protocol, peer, user). Notifications run
    /// on actor threads: keep them quick (hand slow work to a task of your own).
    pub fn on_stream_start(mut self, hook: impl Fn(&StreamEvent) + Send + Sync + 'static) -> Self {
        self.hooks.on_start.push(Box::new(hook));
        self
    }

    /// Calls `hook` when a stream ends (with its duration and byte counts).
    pub fn on_stream_end(mut self, hook: impl Fn(&StreamEvent) + Send + Sync + 'static) -> Self {
        self.hooks.on_end.push(Box::new(hook));
        self
    }

    /// Calls `hook` when an RTMP or HTTP-FLV viewer starts watching.
    pub fn on_viewer_join(mut self, hook: impl Fn(&ViewerEvent) + Send + Sync + 'static) -> Self {
        self.hooks.on_viewer_join.push(Box::new(hook));
        self
    }

    /// Calls `hook` when an RTMP or HTTP-FLV viewer stops (with duration and bytes).
    pub fn on_viewer_leave(mut self, hook: impl Fn(&ViewerEvent) + Send + Sync + 'static) -> Self {
        self.hooks.on_viewer_leave.push(Box::new(hook));
        self
    }

    /// Calls `hook` with every recorded segment once it is in its storage: on local disk
    /// when finished, in the bucket once uploaded (S3 storage), with its stream, path or
    /// object key, start, duration and bytes ([`RecordingEvent::Segment`]). Runs on a
    /// recorder's or the uploader's thread: keep it quick.
    pub fn on_recording_segment(
        mut self,
        hook: impl Fn(&RecordingEvent) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_recording_segment.push(Box::new(hook));
        self
    }

    /// Calls `hook` when a stream's recording ends, after every segment event of it, with
    /// the count, bytes and duration of its segments ([`RecordingEvent::Ended`]).
    pub fn on_recording_end(
        mut self,
        hook: impl Fn(&RecordingEvent) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_recording_end.push(Box::new(hook));
        self
    }

    /// Asks `decide` before every publish (after auth). It runs as its own task, bounded by
    /// `hooks.timeout`; when it fails, panics or times out, `hooks.on_failure` decides.
    pub fn on_publish<F, Fut>(mut self, decide: F) -> Self
    where
        F: Fn(PublishRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Decision> + Send + 'static,
    {
        self.hooks.on_publish.push(decider(decide));
        self
    }

    /// Asks `decide` before every play (after auth): RTMP and HTTP-FLV per connection, HLS
    /// per playlist request. Same rules as [`NodeBuilder::on_publish`].
    pub fn on_play<F, Fut>(mut self, decide: F) -> Self
    where
        F: Fn(PlayRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Decision> + Send + 'static,
    {
        self.hooks.on_play.push(decider(decide));
        self
    }

    /// Binds the listeners and starts the node. Must run inside an actix system (for
    /// example under `#[actix_web::main]`).
    pub async fn start(self) -> Result<Node, StartError> {
        let config = self.config;
        config.validate()?;
        let tls = Tls::load(&config.tls)?;
        let config_chat = config.chat.clone();
        let config_rtmp = config.rtmp.clone();
        let mut auth = Auth::new(&config.auth)?;
        if config.cluster.enabled {
            auth.share_sessions(config.auth.session_ttl.as_secs(), &config.cluster.secret);
        }
        let auth = ArcSwap::from_pointee(auth);
        let node_id = if config.node.id.is_empty() {
            NodeId::random()
        } else {
            NodeId::new(config.node.id.clone())
        };
        let (registry, timings): (Arc<dyn Registry>, _) = if config.cluster.enabled {
            tracing::info!(node = %node_id, "joining the cluster through Redis");
            let redis = crate::cluster::connect_registry(&config.cluster).await;
            let instrumented = Instrumented::new(Arc::new(redis));
            let timings = instrumented.histogram();
            (Arc::new(instrumented), Some(timings))
        } else {
            (Arc::new(MemoryRegistry::new()), None)
        };
        // Every lease this node claims goes through the book, which proves them on receipt
        // of a typed message (crate::refs).
        let book = LeaseBook::new(registry, node_id.clone());
        let registry: Arc<dyn Registry> = Arc::new(book.clone());
        let incarnation = new_incarnation();
        let info = NodeInfo {
            id: node_id.clone(),
            incarnation,
            addresses: Default::default(),
            load: 0,
            draining: false,
        };
        if config.cluster.enabled && !config.node.id.is_empty() {
            ensure_unique(registry.as_ref(), &node_id).await?;
        }
        registry.register_node(info, NODE_TTL).await?;
        let cluster = config.cluster.enabled.then(|| {
            Arc::new(Cluster::new(node_id.clone(), Arc::clone(&registry), &config.cluster))
        });

        let pool = if config.node.workers == 0 {
            ArbiterPool::per_core()
        } else {
            ArbiterPool::start(config.node.workers)
        };
        let directory = Directory::default();
        let counters = Arc::new(NodeCounters::default());
        let spool_counters = SpoolCounters::default();
        let segment_store: Arc<dyn SegmentStore> = match config.hls.storage {
            HlsStorage::Files if config.hls.enabled => Arc::new(Spool::open(
                &config.hls.spool_path(),
                node_id.as_str(),
                spool_counters.clone(),
            )),
            HlsStorage::Files | HlsStorage::Memory => Arc::new(MemoryStore),
        };
        let hls = Arc::new(HlsManager::new(&config.hls, pool.clone(), Arc::clone(&segment_store)));
        let llhls = Arc::new(LlManager::new(&config.hls, pool.clone(), segment_store));
        let mut outputs: Vec<Arc<dyn Output>> =
            vec![Arc::new(HlsOutput(Arc::clone(&hls))), Arc::new(LlOutput(Arc::clone(&llhls)))];
        let recording = RecordingCounters::default();
        let recordings = Recordings::default();
        let catalog = Arc::new(Catalog::new(&config.storage.base_path));
        let (max_download, max_download_bytes) =
            (config.recording.max_download, config.recording.max_download_bytes);
        // With S3, the bucket is the source of truth: any node sharing it plays what any
        // node recorded.
        let playback = Arc::new(match config.storage.kind {
            StorageKind::Local => {
                Playback::local(Arc::clone(&catalog), max_download, max_download_bytes)
            }
            StorageKind::S3 => {
                let store = S3Store::start(&config.storage.s3, Arc::clone(catalog.live()))
                    .map_err(|problem| {
                        crate::config::ConfigError::Invalid(format!("recording: {problem}"))
                    })?;
                Playback::new(Arc::new(store), max_download, max_download_bytes)
            }
        });
        let metrics = Arc::new(Metrics::new(
            directory.clone(),
            Arc::clone(&counters),
            config.metrics.max_stream_series,
            node_id.as_str(),
        ));
        if let Some(timings) = timings {
            metrics.register(Box::new(timings));
        }
        for collector in spool_counters.collectors() {
            metrics.register(collector);
        }
        let refusals = Refusals::new();
        metrics.register(refusals.collector());
        for collector in recording.collectors() {
            metrics.register(collector);
        }
        for collector in cluster.iter().flat_map(|c| c.collectors()) {
            metrics.register(collector);
        }
        let webhooks = Arc::new(ArcSwapOption::new(Webhooks::start(
            &config.webhooks,
            node_id.as_str(),
            Arc::clone(&metrics),
        )));
        let publish_callback = Arc::new(ArcSwap::from_pointee(PublishCallback {
            url: config.webhooks.on_publish_url.clone(),
            secret: config.webhooks.secret.clone(),
        }));
        let mut set = self.hooks;
        if let Some(cluster) = &cluster {
            // A stream kicked here ends its edges' copies too (cluster::pull).
            let cluster = Arc::clone(cluster);
            set.on_end.push(Box::new(move |event| {
                if let StreamEvent::Ended { key, reason, .. } = event {
                    if crate::cluster::pull::kicked_by_name(reason) {
                        crate::cluster::pull::announce_kicked(&cluster, key);
                    }
                }
            }));
        }
        if !config.webhooks.on_publish_url.is_empty() {
            let callback = Arc::clone(&publish_callback);
            set.on_publish.push(on_publish_callback(callback, config.hooks.timeout));
        }
        let hooks = Arc::new(Hooks::new(
            Arc::clone(&metrics),
            set,
            Arc::clone(&webhooks),
            config.hooks.timeout,
            config.hooks.on_failure == OnFailure::Allow,
        ));
        if config.recording.enabled {
            let events = Arc::clone(&hooks) as Arc<dyn RecordingListener>;
            let (storage, indexer) =
                recording_storage(&config, &catalog, recording.clone(), events)?;
            let claims = Claims {
                recordings: recordings.clone(),
                registry: Arc::clone(&registry),
                node: node_id.clone(),
            };
            let recorder = Recorder::new(&config.recording, storage, recording.clone(), claims)
                .map_err(|problem| {
                    crate::config::ConfigError::Invalid(format!("recording: {problem}"))
                })?;
            // Local storage indexes in sidecars beside the recordings; S3 storage in the
            // bucket, once each upload is confirmed (nothing is left in the spool).
            let catalog = match indexer {
                Some(indexer) => Arc::new(catalog.indexed_by(indexer)),
                None => catalog,
            };
            let recorder = recorder.with_catalog(catalog);
            outputs.push(Arc::new(RecorderOutput(Arc::new(recorder))));
        }
        outputs.extend(self.outputs);
        let supervisor = StreamSupervisor::new(
            node_id.clone(),
            Arc::clone(&registry),
            directory.clone(),
            Arc::clone(&hooks) as Arc<dyn EventSink>,
            Arc::clone(&counters),
        )
        .with_outputs(Outputs::new(
            outputs,
            pool.clone(),
            directory.clone(),
            Arc::clone(&counters),
            OUTPUT_MAX_BEHIND,
        ))
        .start();
        let mut chat_hooks = self.chat;
        chat_hooks.timeout = config.hooks.timeout;
        chat_hooks.allow_on_failure = config.hooks.on_failure == OnFailure::Allow;
        // Always listening, so webhooks a reload adds hear chat messages too.
        let chat_webhooks = Arc::clone(&webhooks);
        chat_hooks.delivered.push(Arc::new(move |delivered| {
            if let Some(webhooks) = &*chat_webhooks.load() {
                webhooks.chat(delivered);
            }
        }));
        let transport = cluster.as_ref().map(|cluster| {
            Arc::new(crate::cluster::chat::ClusterRooms::new(Arc::clone(cluster)))
                as Arc<dyn zenlive_actors::chat_remote::RoomTransport>
        });
        let placement =
            Placement { registry: Arc::clone(&registry), node: node_id.clone(), transport };
        let chat =
            ChatRooms::new(chat_limits(&config_chat), Arc::clone(&counters), chat_hooks, placement);
        let draining = Arc::new(AtomicBool::new(false));
        if let Some(cluster) = &cluster {
            let max_rooms = config_chat.max_rooms;
            crate::cluster::chat::serve(
                cluster,
                chat.clone(),
                pool.clone(),
                Arc::clone(&draining),
                max_rooms,
            );
        }
        let NodeRoutes { streams: stream_routes, rooms: room_routes, recorders: recorder_routes } =
            routes(&node_id, &book, cluster.as_ref(), &directory, &chat, &recordings);
        let parts = Parts {
            node: node_id.clone(),
            book: book.clone(),
            cluster: cluster.clone(),
            pool: pool.clone(),
            counters: Arc::clone(&counters),
        };
        let apps = AppActors::start(parts, self.kinds)?;
        let webrtc = match config.webrtc.enabled {
            true => {
                let feeds = crate::webrtc::audio_feed::FeedHost {
                    directory: directory.clone(),
                    counters: Arc::clone(&counters),
                    pool: pool.clone(),
                    max_behind: OUTPUT_MAX_BEHIND,
                };
                Some(Arc::new(crate::webrtc::WebRtc::bind(&config.webrtc, feeds)?))
            }
            false => None,
        };
        for collector in webrtc.iter().flat_map(|w| w.stats.collectors()) {
            metrics.register(collector);
        }
        for collector in webrtc.iter().flat_map(|w| w.transcode.collectors()) {
            metrics.register(collector);
        }
        for collector in webrtc.iter().flat_map(|w| w.quality.collectors()) {
            metrics.register(collector);
        }
        let context = Arc::new(NodeContext {
            live: ArcSwap::from_pointee(config.clone()),
            config,
            node_id,
            stream_routes,
            room_routes,
            recorder_routes,
            supervisor,
            directory,
            counters,
            pool,
            hls,
            llhls,
            playback,
            registry,
            metrics,
            auth,
            ready: AtomicBool::new(false),
            hooks,
            webhooks,
            publish_callback,
            chat,
            cluster,
            draining,
            refusals,
            rtmp_pending: PerAddress::new(config_rtmp.max_pending_per_address),
            rtmp_partial: PartialBudget::new(config_rtmp.max_partial_bytes),
            chat_openers: PerAddress::new(config_chat.max_rooms_per_address),
            tls,
            webrtc,
            shutdown: tokio_util::sync::CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
        });
        let listeners = crate::server::start(&context).await?;
        let mut node = Node {
            loaded: parking_lot::Mutex::new(context.config.clone()),
            context,
            listeners,
            incarnation: Arc::default(),
            apps,
        };
        // Now that the listeners are bound, the node can say where it is.
        let addresses = match &node.context.cluster {
            Some(_) => crate::cluster::addresses(
                &node.context.config.cluster,
                node.listeners.cluster_addr,
                node.listeners.rtmp_addr,
                node.listeners.http_addr,
            ),
            None => Default::default(),
        };
        let info = NodeInfo {
            id: node.context.node_id.clone(),
            incarnation,
            addresses,
            load: 0,
            draining: false,
        };
        node.context.registry.register_node(info.clone(), NODE_TTL).await?;
        if let Some(cluster) = &node.context.cluster {
            let _ = cluster.refresh_members().await;
        }
        node.incarnation = Arc::new(std::sync::atomic::AtomicU64::new(incarnation));
        let beat = actix_rt::spawn(heartbeat(
            Arc::clone(&node.context),
            info,
            Arc::clone(&node.incarnation),
        ));
        node.context.ready.store(true, Ordering::Release);
        node.listeners.tasks.push(beat);
        Ok(node)
    }
}

/// A recorder's storage, and the indexer of playback's catalog when the storage indexes
/// segments itself (S3).
type RecordingStorage = (Arc<dyn Storage>, Option<Arc<dyn SegmentIndexer>>);

/// The recordings' storage `[storage]` names, telling `events` of segments and ends.
fn recording_storage(
    config: &Config,
    catalog: &Catalog,
    counters: RecordingCounters,
    events: Arc<dyn RecordingListener>,
) -> Result<RecordingStorage, StartError> {
    let invalid =
        |problem: String| crate::config::ConfigError::Invalid(format!("recording: {problem}"));
    let base = &config.storage.base_path;
    match config.storage.kind {
        StorageKind::Local => {
            // Before retention's scan, which then counts them.
            let recovered = crate::recording::files::recover_parts(std::path::Path::new(base));
            // Then the segments a crash kept from the catalog, cut short or not.
            let mut indexed = catalog.index_interrupted();
            let mut storage = LocalStorage::new(base).with_events(events);
            let rules = RetentionRules {
                delete_after: config.recording.delete_after,
                max_bytes: config.recording.max_local_bytes,
            };
            if rules.any() {
                let ext = config.recording.format.extension();
                let retention = Retention::start(base.into(), ext, rules, counters)
                    .map_err(|e| invalid(format!("cannot start the retention thread: {e}")))?;
                storage = storage.with_retention(retention);
            }
            tracing::info!(base_path = %base, format = %config.recording.format, "recording streams to local disk");
            for (path, bytes) in recovered {
                let known = indexed.iter().position(|s| s.path == path).map(|i| indexed.remove(i));
                storage.recovered(&path, bytes, known.as_ref());
            }
            // Finished, but not announced before the crash.
            for segment in indexed {
                storage.recovered(&segment.path, segment.bytes, Some(&segment));
            }
            Ok((Arc::new(storage), None))
        }
        StorageKind::S3 => {
            let storage =
                Arc::new(S3Storage::start(&config.storage, counters, events).map_err(invalid)?);
            let s3 = &config.storage.s3;
            tracing::info!(spool = %base, bucket = %s3.bucket, endpoint = %s3.endpoint, format = %config.recording.format, "recording streams to S3 through a local spool");
            Ok((Arc::clone(&storage) as Arc<dyn Storage>, Some(storage)))
        }
    }
}

/// A room's limits from `[chat]`.
/// The routes of typed references to streams and chat rooms on this node, and in cluster
/// mode the handlers of those that other nodes send here ([`crate::refs`]). The messages
/// registered are the remote-callable ones (`zenlive_actors::remote` has the table).
fn routes(
    node: &NodeId,
    book: &LeaseBook,
    cluster: Option<&Arc<Cluster>>,
    directory: &Directory,
    chat: &ChatRooms,
    recordings: &Recordings,
) -> NodeRoutes {
    let streams = directory.clone();
    let locate_stream = Arc::new(move |name: &str| {
        let key = StreamKey::parse(name).ok()?;
        streams.get(&key).map(|entry| entry.addr)
    });
    let stream_routes = Arc::new(
        Routes::new(node.clone(), book.clone(), cluster.cloned(), locate_stream)
            .message::<Kick>()
            .message::<GetStats>()
            .message::<SetOutput>()
            .message::<RequestKeyframe>(),
    );
    let rooms = chat.clone();
    let locate_room = Arc::new(move |name: &str| rooms.get(name));
    let room_routes = Arc::new(
        Routes::new(node.clone(), book.clone(), cluster.cloned(), locate_room)
            .message::<SystemMessage>()
            .message::<Moderate>(),
    );
    let recordings = recordings.clone();
    let locate_recorder = Arc::new(move |name: &str| {
        let key = StreamKey::parse(name).ok()?;
        recordings.actor(&key)
    });
    let recorder_routes = Arc::new(
        Routes::new(node.clone(), book.clone(), cluster.cloned(), locate_recorder)
            .message::<GetRecording>()
            .message::<StopRecording>(),
    );
    if let Some(cluster) = cluster {
        crate::cluster::pull::serve_relay_ends(cluster, directory.clone(), book.clone());
        crate::refs::serve(cluster, Arc::clone(&stream_routes));
        crate::refs::serve(cluster, Arc::clone(&room_routes));
        crate::refs::serve(cluster, Arc::clone(&recorder_routes));
    }
    NodeRoutes { streams: stream_routes, rooms: room_routes, recorders: recorder_routes }
}

/// The routes of typed references on one node, by actor kind.
struct NodeRoutes {
    streams: Arc<Routes<StreamActor>>,
    rooms: Arc<Routes<ChatRoom>>,
    recorders: Arc<Routes<RecorderActor>>,
}

fn chat_limits(config: &crate::config::ChatConfig) -> ChatLimits {
    ChatLimits {
        history: config.history,
        max_len: config.max_length,
        blocked_words: config.blocked_words.clone(),
        max_members: config.max_members,
        burst: config.burst,
        per_second: config.per_second,
        presence_limit: config.presence_limit,
    }
}

/// Renews this node's registration every third of its TTL, the same way on one node as in
/// a cluster, and refreshes the view of the cluster. A refused heartbeat means the registry
/// declared the node dead (it was paused, or Redis lost its data): the node registers again
/// as a new incarnation, and its streams prove or lose their leases at their next renewal.
async fn heartbeat(node: Arc<NodeContext>, mut info: NodeInfo, incarnation: Arc<AtomicU64>) {
    let mut failing = false;
    loop {
        actix_rt::time::sleep(NODE_TTL / 3).await;
        // Streams (own and relayed) and chat rooms: what placement compares.
        let load = (node.directory.len() + node.chat.len()) as u64;
        let registry = &node.registry;
        if node.is_draining() != info.draining {
            info.draining = node.is_draining();
            info.load = load;
            if let Err(error) = registry.register_node(info.clone(), NODE_TTL).await {
                tracing::warn!(node = %info.id, %error, "cannot publish the draining state");
            }
        }
        match registry.heartbeat(&info.id, info.incarnation, load, NODE_TTL).await {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    tracing::info!(node = %info.id, "registry reachable again");
                }
            }
            Err(RegistryError::NodeNotRegistered { .. }) => {
                info.incarnation = new_incarnation();
                info.load = load;
                tracing::warn!(node = %info.id, incarnation = info.incarnation, "the registry declared this node dead; registering again");
                match registry.register_node(info.clone(), NODE_TTL).await {
                    Ok(()) => incarnation.store(info.incarnation, Ordering::Release),
                    Err(error) => tracing::error!(node = %info.id, %error, "cannot register again"),
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::error!(node = %info.id, %error, "node heartbeat failed; local streams keep flowing");
                }
            }
        }
        if let Some(cluster) = &node.cluster {
            let _ = cluster.refresh_members().await;
        }
    }
}

/// A running node. Dropping it does not stop it; call [`Node::shutdown`].
pub struct Node {
    context: Arc<NodeContext>,
    listeners: Listeners,
    incarnation: Arc<AtomicU64>,
    /// The application actor kinds registered on this node.
    apps: AppActors,
    /// The configuration as last loaded (start, then each reload), to tell what changed.
    pub(crate) loaded: parking_lot::Mutex<Config>,
}

/// What [`Node::reload`] did with a configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys (`section.key`) whose new values are in force now.
    pub applied: Vec<String>,
    /// Keys that changed but take effect only on restart.
    pub need_restart: Vec<String>,
    /// The new `log.level`, when it changed: the caller owns the log subscriber.
    pub log_level: Option<String>,
}

/// Keys a reload applies to the running node (besides `[auth]`, `log.level` and the TLS
/// files): limits and timeouts read when a connection, request or relay starts.
const RELOADABLE: [&str; 16] = [
    "rtmp.handshake_timeout",
    "rtmp.idle_timeout",
    "rtmp.max_connections",
    "rtmp.max_pending_per_address",
    "rtmp.max_partial_bytes",
    "rtmp.publish_read_delay",
    "play.max_viewer_lag",
    "play.write_delay",
    "chat.anonymous_read",
    "chat.max_frame",
    "chat.member_queue",
    "chat.max_rooms",
    "chat.max_rooms_per_address",
    "chat.rooms_without_stream",
    "cluster.relay_idle",
    "cluster.relay_grace",
];

/// Chat room rules a reload applies to every room, live and new (`ChatRooms::set_limits`).
const CHAT_ROOM_KEYS: [&str; 7] = [
    "chat.history",
    "chat.max_length",
    "chat.blocked_words",
    "chat.max_members",
    "chat.burst",
    "chat.per_second",
    "chat.presence_limit",
];

/// `into` with the values `from` has for `keys` (`section.key`): one list of names is the
/// whole definition of what a reload copies.
fn with_keys(into: &Config, from: &Config, keys: &[&str]) -> Config {
    let table = |c: &Config| toml::Table::try_from(c).unwrap_or_default();
    let (mut target, source) = (table(into), table(from));
    for key in keys {
        let Some((section, name)) = key.split_once('.') else { continue };
        let value = source.get(section).and_then(|s| s.get(name)).cloned();
        if let (Some(value), Some(toml::Value::Table(section))) = (value, target.get_mut(section)) {
            section.insert(name.to_owned(), value);
        }
    }
    // Both sides are valid configurations, so the mix is one too.
    toml::Value::Table(target).try_into().unwrap_or_else(|_| into.clone())
}

/// The keys (`section.key`) whose values differ between `old` and `new`.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let table = |c: &Config| toml::Table::try_from(c).unwrap_or_default();
    let (old, new) = (table(old), table(new));
    let mut changed = Vec::new();
    for (section, values) in &new {
        let (Some(values), before) =
            (values.as_table(), old.get(section).and_then(|v| v.as_table()))
        else {
            continue;
        };
        for (key, value) in values {
            if before.and_then(|b| b.get(key)) != Some(value) {
                changed.push(format!("{section}.{key}"));
            }
        }
    }
    changed
}

/// A handle on a stream live on this node, by name: its own stream, or on an edge the
/// relayed copy of a stream published elsewhere. [`StreamHandle::kick`] goes to the
/// stream's owner wherever it is; the other methods describe the copy on this node.
#[derive(Clone)]
pub struct StreamHandle {
    entry: StreamEntry,
    owner: ActorRef<StreamActor>,
}

impl StreamHandle {
    /// Disconnects the publisher and ends the stream at its owner (on an edge: the origin's
    /// publisher, and every relay follows); false if no owner answered that a publisher was
    /// attached. [`Node::stream_ref`] says why when it fails.
    pub async fn kick(&self, reason: &str) -> bool {
        self.owner.send(Kick { reason: reason.to_owned() }).await.unwrap_or(false)
    }

    /// A typed reference to the stream's owner (see [`crate::refs`]).
    pub fn owner(&self) -> &ActorRef<StreamActor> {
        &self.owner
    }

    /// The address of the stream actor on this node (a relayed copy on an edge), to send it
    /// any of its messages (`zenlive_actors::stream`).
    pub fn actor(&self) -> Addr<StreamActor> {
        self.entry.addr.clone()
    }

    /// The state and counters of the stream actor on this node; `None` if it ended
    /// meanwhile.
    pub async fn info(&self) -> Option<StreamInfo> {
        self.entry.addr.send(GetInfo).await.ok()
    }

    /// The live statistics of the stream on this node (fps, bitrate, resolution, viewers,
    /// bytes), read without asking the actor. The owner's: `stream_ref(key).send(GetStats)`.
    pub fn stats(&self) -> StatsSnapshot {
        self.entry.stats.snapshot()
    }
}

impl Node {
    /// Where RTMP listens (the real port when configured with port 0).
    pub fn rtmp_addr(&self) -> Option<SocketAddr> {
        self.listeners.rtmp_addr
    }

    /// Where HTTP (HLS, HTTP-FLV) listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.listeners.http_addr
    }

    /// Where metrics are served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listeners.metrics_addr
    }

    /// The UDP port of WebRTC media (when `[webrtc]` is enabled).
    pub fn webrtc_addr(&self) -> Option<SocketAddr> {
        self.context.webrtc.as_ref().map(|w| w.local_addr())
    }

    /// The ICE-TCP port of WebRTC media (when `webrtc.tcp_addr` is set).
    pub fn webrtc_tcp_addr(&self) -> Option<SocketAddr> {
        self.context.webrtc.as_ref().and_then(|w| w.tcp_addr())
    }

    /// Where other cluster nodes connect to this one (cluster mode only).
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.listeners.cluster_addr
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.context.config
    }

    /// Where HTTPS listens (when `[tls]` is configured).
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.listeners.https_addr
    }

    /// Where RTMPS listens (when `[tls]` is configured and RTMP is on).
    pub fn rtmps_addr(&self) -> Option<SocketAddr> {
        self.listeners.rtmps_addr
    }

    /// Applies what can change while the node runs from `new` (already validated): every
    /// `[auth]` key (secrets, keys, requirements; HLS sessions already issued stay good),
    /// every `[webhooks]` key (new senders; the `on_publish` callback re-pointed, when one
    /// was configured at start),
    /// the limits and timeouts connections, requests and relays read when they start (see
    /// `RELOADABLE`: RTMP timeouts and caps, chat admission, relay timing),
    /// the TLS files (read again whether or not their paths changed: a renewal keeps them),
    /// and `log.level` (handed back for the caller's subscriber). Reports the other changed
    /// keys as needing a restart. Nothing is applied when the new auth is unusable.
    pub fn reload(&self, new: &Config) -> Result<Reloaded, StartError> {
        let mut loaded = self.loaded.lock();
        let changed = changed_keys(&loaded, new);
        let mut report = Reloaded::default();
        // The TLS files first: when they are broken, nothing else is applied either.
        if new.tls.cert == loaded.tls.cert && new.tls.key == loaded.tls.key {
            self.reload_tls()?;
        }
        if changed.iter().any(|k| k.starts_with("auth.")) {
            let mut auth = Auth::new(&new.auth)?;
            if new.cluster.enabled {
                auth.share_sessions(new.auth.session_ttl.as_secs(), &new.cluster.secret);
            } else {
                auth.keep_sessions_of(&self.context.auth.load());
            }
            self.context.auth.store(Arc::new(auth));
            loaded.auth = new.auth.clone();
        }
        if changed.iter().any(|k| RELOADABLE.contains(&k.as_str())) {
            let live = with_keys(&self.context.live(), new, &RELOADABLE);
            self.context.rtmp_pending.set_cap(live.rtmp.max_pending_per_address);
            self.context.rtmp_partial.set_max(live.rtmp.max_partial_bytes);
            self.context.chat_openers.set_cap(live.chat.max_rooms_per_address);
            self.context.live.store(Arc::new(live));
            *loaded = with_keys(&loaded, new, &RELOADABLE);
        }
        if changed.iter().any(|k| CHAT_ROOM_KEYS.contains(&k.as_str())) {
            self.context.chat.set_limits(chat_limits(&new.chat));
            *loaded = with_keys(&loaded, new, &CHAT_ROOM_KEYS);
        }
        if changed.iter().any(|k| k.starts_with("webhooks.")) {
            self.reload_webhooks(&new.webhooks);
            loaded.webhooks = new.webhooks.clone();
        }
        if new.log.level != loaded.log.level {
            report.log_level = Some(new.log.level.clone());
            loaded.log.level = new.log.level.clone();
        }
        for key in changed {
            // The on_publish callback is registered at start: one can be re-pointed, not
            // added.
            let callback_added = key == "webhooks.on_publish_url"
                && self.context.config.webhooks.on_publish_url.is_empty();
            let applied = key.starts_with("auth.")
                || (key.starts_with("webhooks.") && !callback_added)
                || CHAT_ROOM_KEYS.contains(&key.as_str())
                || key == "log.level"
                || RELOADABLE.contains(&key.as_str());
            if applied {
                report.applied.push(key);
            } else {
                report.need_restart.push(key);
            }
        }
        Ok(report)
    }

    /// Starts senders for `config`'s webhook URLs and points the `on_publish` callback at
    /// its URL; the old senders deliver what they hold (within `webhooks.retry_for`), then
    /// end.
    fn reload_webhooks(&self, config: &crate::config::WebhooksConfig) {
        let context = &self.context;
        let fresh = Webhooks::start(config, context.node_id.as_str(), Arc::clone(&context.metrics));
        if let Some(old) = context.webhooks.swap(fresh) {
            let limit = config.retry_for.max(Duration::from_secs(1));
            actix_rt::spawn(async move { old.drain(limit).await });
        }
        let url = config.on_publish_url.clone();
        let secret = config.secret.clone();
        context.publish_callback.store(Arc::new(PublishCallback { url, secret }));
    }

    /// Reads the TLS certificate and key files again (after a renewal): new connections
    /// get what they hold; on an error the certificate in use stays. `Ok(false)` when TLS
    /// is off.
    pub fn reload_tls(&self) -> Result<bool, TlsError> {
        match &self.context.tls {
            Some(tls) => tls.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// This node's cluster membership (cluster mode only): the live nodes, calls to actors
    /// on any node, relays.
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.context.cluster.clone()
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.context.node_id
    }

    /// The live streams' names.
    pub fn streams(&self) -> Vec<StreamKey> {
        self.context.directory.keys()
    }

    /// A handle on the stream `key` if it is live on this node (its own, or relayed).
    pub fn stream(&self, key: &StreamKey) -> Option<StreamHandle> {
        let entry = self.context.directory.get(key)?;
        Some(StreamHandle { entry, owner: self.stream_ref(key) })
    }

    /// A typed reference to the stream `key` wherever it is published: `send` reaches its
    /// owner (the node holding its registry lease; never an edge's relayed copy) with the
    /// messages of `zenlive_actors::stream` that are remote (`Kick`, `GetStats`, `SetOutput`,
    /// `RequestKeyframe`). Nothing is looked up or started until a message is sent. See
    /// [`crate::refs`].
    pub fn stream_ref(&self, key: &StreamKey) -> ActorRef<StreamActor> {
        self.context.stream_routes.get(&key.to_string())
    }

    /// A typed reference to the chat room `name` (`app/key` for a stream's room) wherever
    /// its home is: `send` reaches the home with `SystemMessage` or `Moderate`. A room
    /// that is not open anywhere answers [`crate::refs::RefError::NotFound`]: a ref never starts a room
    /// ([`Node::chat_room`] does).
    pub fn room_ref(&self, name: &str) -> ActorRef<ChatRoom> {
        self.context.room_routes.get(name)
    }

    /// A typed reference to the recording of the stream `key` wherever it is recorded (the
    /// node holding `recorder/{app}/{key}`): `send` takes `GetRecording` and
    /// `StopRecording` (`crate::recording::actor`). A stream not being recorded answers
    /// [`crate::refs::RefError::NotFound`]; start one with [`Node::set_recording`].
    pub fn recorder_ref(&self, key: &StreamKey) -> ActorRef<RecorderActor> {
        self.context.recorder_routes.get(&key.to_string())
    }

    /// A typed reference to the application actor of kind `A` named `name`, wherever it
    /// runs in the cluster: `send` reaches its one live instance (a plain actix message
    /// here, an envelope to another node) with the messages its kind registered
    /// ([`AppActorKind::message`]). Nothing is looked up or started until a message is
    /// sent; an actor that runs nowhere answers [`RefError::NotFound`]. Works on a node
    /// that did not register `A` too (it then only sends to other nodes). The ref survives
    /// its actor moving to another node: keep it. See [`crate::app_actors`].
    pub fn actor_ref<A: NamedActor>(&self, name: &str) -> ActorRef<A> {
        self.apps.actor_ref(name)
    }

    /// Starts the application actor of kind `A` named `name` on this node, once in the whole
    /// cluster: the name is claimed in the registry, so a second spawn anywhere answers
    /// [`SpawnError::AlreadyRunning`] with its owner. Answers its ref. The instance is
    /// supervised (restarted with fresh state on a panic) and, for a keep-alive kind, started
    /// again on another node when this one dies. See [`crate::app_actors`].
    pub async fn spawn_named<A: NamedActor>(&self, name: &str) -> Result<ActorRef<A>, SpawnError> {
        self.apps.spawn(name).await
    }

    /// The ref of the application actor of kind `A` named `name`, **started here if it runs
    /// nowhere** (as [`Node::spawn_named`]); when it runs already, here or elsewhere, its
    /// ref. The one call that may start an actor as a side effect: use [`Node::actor_ref`]
    /// to reach one without starting it.
    pub async fn get_or_spawn<A: NamedActor>(&self, name: &str) -> Result<ActorRef<A>, SpawnError> {
        match self.apps.spawn(name).await {
            Err(SpawnError::AlreadyRunning { .. }) => Ok(self.apps.actor_ref(name)),
            other => other,
        }
    }

    /// Starts (`on`) or stops recording the live stream `key`, at its owner wherever it is
    /// (recording must be enabled there: `recording.enabled`); answers what that did.
    /// Stopping finishes the open segment first.
    pub async fn set_recording(&self, key: &StreamKey, on: bool) -> Result<OutputChange, RefError> {
        self.stream_ref(key).send(RecorderOutput::request(on)).await
    }

    /// The registry of actor names (leases and fencing epochs).
    pub fn registry(&self) -> Arc<dyn Registry> {
        Arc::clone(&self.context.registry)
    }

    /// Node-wide counters.
    pub fn counters(&self) -> &NodeCounters {
        &self.context.counters
    }

    /// The statistics of the stream `key` as live on this node (on an edge: its relayed
    /// copy's), read without asking an actor. The owner's, wherever it is:
    /// `stream_ref(key).send(GetStats)`.
    pub fn stream_stats(&self, key: &StreamKey) -> Option<StatsSnapshot> {
        self.context.directory.get(key).map(|entry| entry.stats.snapshot())
    }

    /// The chat room `name` (`app/key` for a stream's room) on this node, started if it is
    /// not live, to post a system message ([`zenlive_actors::chat::SystemMessage`]) or
    /// moderate ([`zenlive_actors::chat::Moderate`]) from application code: a satellite
    /// forwards both to the room's home. To reach a room without starting one here, use
    /// [`Node::room_ref`].
    pub fn chat_room(&self, name: &str) -> Addr<ChatRoom> {
        self.context.chat.get_or_start(name, &self.context.pool.next())
    }

    /// The node's metrics in the Prometheus text format (what `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        self.context.metrics.render()
    }

    /// Stops accepting, ends every stream cleanly, and stops the listeners, within
    /// `node.shutdown_timeout`.
    pub async fn shutdown(self) {
        self.context.ready.store(false, Ordering::Release);
        let limit = self.context.config.node.shutdown_timeout;
        for task in &self.listeners.tasks {
            task.abort();
        }
        let _ = self.context.supervisor.send(Shutdown).await;
        // Application actors stop and release their names: kept ones start elsewhere.
        self.apps.shutdown().await;
        if !self.context.directory.emptied(limit).await {
            let left = self.context.directory.len();
            tracing::warn!(
                streams = left,
                "streams still live at the end of node.shutdown_timeout"
            );
        }
        if let Some(webhooks) = self.context.webhooks.load_full() {
            // Stream-end events of the streams just ended get a moment to leave.
            webhooks.drain(Duration::from_secs(2)).await;
        }
        // Then every connection, relay and link still open ends, and the shutdown waits for
        // them to (their tasks tracked), rather than for a fixed time.
        self.context.shutdown.cancel();
        self.context.tasks.close();
        if tokio::time::timeout(limit, self.context.tasks.wait()).await.is_err() {
            tracing::warn!(
                tasks = self.context.tasks.len(),
                "connections still ending at the end of node.shutdown_timeout"
            );
        }
        // Leave the cluster at once rather than when the registration expires.
        let incarnation = self.incarnation.load(Ordering::Acquire);
        let registry = &self.context.registry;
        if let Err(error) = registry.deregister_node(&self.context.node_id, incarnation).await {
            tracing::warn!(%error, "could not deregister; the registration will expire");
        }
        self.listeners.http.stop(true).await;
        if let Some(https) = &self.listeners.https {
            https.stop(true).await;
        }
        if let Some(metrics) = &self.listeners.metrics {
            metrics.stop(true).await;
        }
        self.context.pool.stop();
    }
}
