//! [`NodeContext`]: what every front-end and service of a node shares (configuration,
//! the stream directory and supervisor, auth, hooks, metrics, the cluster, limits). The
//! composition root ([`crate::node`]) builds one and starts the front-ends with it; nothing
//! here starts anything.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::Addr;
use arc_swap::{ArcSwap, ArcSwapOption};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zenlive_actors::chat::{ChatRoom, ChatRooms};
use zenlive_actors::events::NodeCounters;
use zenlive_actors::quota::PerAddress;
use zenlive_actors::{ArbiterPool, Directory, StreamActor, StreamSupervisor};
use zenlive_registry::{NodeId, Registry};

use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::hls::packager::HlsManager;
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::refs::Routes;
use crate::refusals::Refusals;
use crate::rtmp::budget::PartialBudget;
use crate::tls::Tls;
use crate::webhooks::{PublishCallback, Webhooks};

/// Everything the protocol front-ends share. One per node.
pub struct NodeContext {
    /// The configuration the node started with (listeners, cluster, what needs a restart).
    pub config: Config,
    /// The configuration in force for what a reload can change (limits, timeouts; see
    /// [`Node::reload`](crate::Node::reload)): read it with [`NodeContext::live`].
    pub live: ArcSwap<Config>,
    /// This node's id.
    pub node_id: NodeId,
    /// Typed references to streams by name, wherever they are owned ([`crate::refs`]).
    pub stream_routes: Arc<Routes<StreamActor>>,
    /// Typed references to chat rooms by name (their home node).
    pub room_routes: Arc<Routes<ChatRoom>>,
    /// Typed references to recordings by stream name (the node recording each).
    pub recorder_routes: Arc<Routes<crate::recording::actor::RecorderActor>>,
    /// Starts and restarts streams.
    pub supervisor: Addr<StreamSupervisor>,
    /// Live streams by name.
    pub directory: Directory,
    /// Node-wide counters.
    pub counters: Arc<NodeCounters>,
    /// Event loops for connections and actors.
    pub pool: ArbiterPool,
    /// HLS playlists and segments.
    pub hls: Arc<HlsManager>,
    /// LL-HLS playlists, parts and segments.
    pub llhls: Arc<crate::hls::ll::LlManager>,
    /// Recordings for playback (those under `storage.base_path`, recorded now or before).
    pub playback: Arc<crate::recording::playback::Playback>,
    /// Who owns which actor name (in memory on a single node).
    pub registry: Arc<dyn Registry>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Token verification and decisions; swapped whole when a reload changes `[auth]`.
    pub auth: ArcSwap<Auth>,
    /// True once every listener is up, false again when shutdown begins (`/readyz`).
    pub ready: AtomicBool,
    /// The application's hooks and the webhooks.
    pub hooks: Arc<Hooks>,
    /// The webhook senders, when URLs are configured; swapped by a reload.
    pub webhooks: Arc<ArcSwapOption<Webhooks>>,
    /// Where the HTTP `on_publish` callback goes (when one was configured at start).
    pub publish_callback: Arc<ArcSwap<PublishCallback>>,
    /// This node's chat rooms.
    pub chat: ChatRooms,
    /// Cluster membership, links and relays; `None` on a single node.
    pub cluster: Option<Arc<Cluster>>,
    /// True while the node drains: no new publishers or chat connections, `/readyz` 503,
    /// chat rooms handed off; live streams continue until they end.
    pub draining: Arc<AtomicBool>,
    /// Clients refused for going over a limit: counted, and logged once a minute per client.
    pub refusals: Refusals,
    /// RTMP connections not admitted yet, per client address (`rtmp.max_pending_per_address`).
    pub rtmp_pending: PerAddress,
    /// Bytes of partially received RTMP messages on the node (`rtmp.max_partial_bytes`).
    pub rtmp_partial: PartialBudget,
    /// Chat rooms opened, per client address (`chat.max_rooms_per_address`).
    pub chat_openers: PerAddress,
    /// The HTTPS certificate, when `[tls]` is configured.
    pub tls: Option<Tls>,
    /// WebRTC (WHIP), when `[webrtc]` is enabled: its UDP socket and sessions.
    pub webrtc: Option<Arc<crate::webrtc::WebRtc>>,
    /// Cancelled when the node shuts down: connections, relays and links end on it (see
    /// [`NodeContext::until_shutdown`]).
    pub shutdown: CancellationToken,
    /// The work [`NodeContext::until_shutdown`] runs, for a shutdown to wait for.
    pub tasks: TaskTracker,
}

impl NodeContext {
    /// The configuration in force for what a reload can change.
    pub fn live(&self) -> Arc<Config> {
        self.live.load_full()
    }

    /// Starts (or stops) draining. See [`NodeContext::draining`].
    pub fn set_draining(&self, draining: bool) {
        let was = self.draining.swap(draining, Ordering::AcqRel);
        if draining && !was {
            tracing::warn!(node = %self.node_id, streams = self.directory.len(), "draining: refusing new publishers and chat members, handing off chat rooms");
            self.chat.hand_off();
        } else if !draining && was {
            tracing::info!(node = %self.node_id, "no longer draining");
        }
    }

    /// Runs `work` until it ends or the node shuts down, whichever comes first (then `work`
    /// is dropped, which closes its sockets); a shutdown waits for it (the completion
    /// signal). Every connection, relay and link between nodes runs through this.
    ///
    /// `work` is boxed: a future moved into another one and awaited there is stored twice
    /// (rustc does not overlap the two), and for an RTMP connection that doubled what a
    /// player costs for hours.
    pub fn until_shutdown<F: Future>(&self, work: F) -> impl Future<Output = Option<F::Output>> {
        let shutdown = self.shutdown.clone();
        let work = Box::pin(work);
        self.tasks.track_future(async move {
            tokio::select! {
                _ = shutdown.cancelled() => None,
                out = work => Some(out),
            }
        })
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
