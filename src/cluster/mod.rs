//! Cluster mode: nodes that share a Redis registry, links between them, and edge relays.
//!
//! - The registry ([`zenlive_registry::RedisRegistry`]) holds node membership and who owns
//!   which actor name (streams where their publisher connected, chat rooms).
//! - Every node listens on `cluster.addr` for links from the others ([`link`]), which carry
//!   either one relayed stream or calls to named actors ([`Cluster::call`]).
//! - A viewer of a remote stream makes its node pull the stream once ([`relay`]).
//!
//! In single-node mode there is no `Cluster` at all and the node uses the in-memory
//! registry; nothing else changes.

pub mod chat;
pub mod instrumented;
pub mod link;
pub mod listen;
pub mod pull;
pub mod relay;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use zenlive_registry::{
    ActorKey, BoxFuture, NodeId, NodeInfo, RedisRegistry, Registry, RegistryError,
};

use crate::config::ClusterConfig;
use link::Peers;
use relay::Relays;
use wire::{Bincode, Call, Codec, RemoteError};

/// Answers calls to one kind of actor on this node: `(name, epoch the caller saw, body) →
/// reply body`.
pub type CallHandler = Arc<
    dyn Fn(String, Option<u64>, Vec<u8>) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>>
        + Send
        + Sync,
>;

/// Cluster counters and gauges, exported as Prometheus metrics.
pub struct ClusterCounters {
    /// Calls received from other nodes.
    pub remote_in: IntCounter,
    /// Calls sent to other nodes.
    pub remote_out: IntCounter,
    /// Relays started on this node (edge side).
    pub relays_started: IntCounter,
    relays: IntGauge,
    nodes: IntGauge,
    /// Calls and frames refused on this node's links, by reason (`not_owner`,
    /// `unknown_kind`, `unknown_message`, `bad_envelope`, `bad_body`, `bad_frame`).
    refused: IntCounterVec,
}

impl ClusterCounters {
    /// Counts a call (or a frame on a call link) refused for `reason`.
    pub fn refuse(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }
}

/// This node's membership of the cluster. See the module docs.
pub struct Cluster {
    /// This node.
    pub node: NodeId,
    /// The shared registry.
    pub registry: Arc<dyn Registry>,
    pub(crate) codec: Arc<dyn Codec>,
    pub(crate) secret: String,
    /// How long a link may carry nothing (`cluster.link_idle_timeout`).
    pub(crate) link_idle: std::time::Duration,
    /// Streams this node relays from others.
    pub relays: Relays,
    /// Call links to other nodes.
    pub peers: Peers,
    /// Counters for the metrics.
    pub counters: ClusterCounters,
    members: RwLock<Vec<NodeInfo>>,
    handlers: RwLock<HashMap<String, CallHandler>>,
}

/// Connects to the cluster's Redis, retrying until it answers: a node started before its
/// Redis waits for it (and says so) instead of running alone.
pub async fn connect_registry(config: &ClusterConfig) -> RedisRegistry {
    let mut pause = Duration::from_millis(500);
    loop {
        match RedisRegistry::connect(&config.redis_url, &config.key_prefix).await {
            Ok(registry) => return registry,
            Err(error) => {
                tracing::error!(
                    %error,
                    redis = %without_password(&config.redis_url),
                    retry_in = ?pause,
                    "cluster mode: cannot reach Redis (cluster.redis_url); retrying"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// `url` without the password it may carry (`redis://user:secret@host` → `redis://user@host`),
/// for logs.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

impl Cluster {
    /// Joins the cluster through `registry` as `node`.
    pub fn new(node: NodeId, registry: Arc<dyn Registry>, config: &ClusterConfig) -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        let counters = ClusterCounters {
            remote_in: counter(
                "zenlive_registry_calls_received_total",
                "Calls to actors on this node received from other nodes.",
            ),
            remote_out: counter(
                "zenlive_registry_calls_sent_total",
                "Calls to actors on other nodes sent from this node.",
            ),
            relays_started: counter(
                "zenlive_registry_relays_started_total",
                "Streams this node started pulling from another node (edge relays).",
            ),
            relays: gauge(
                "zenlive_registry_relays",
                "Streams this node pulls from other nodes now (edge relays).",
            ),
            nodes: gauge("zenlive_registry_nodes", "Live nodes in the cluster, as last seen."),
            refused: IntCounterVec::new(
                Opts::new(
                    "zenlive_registry_calls_refused_total",
                    "Calls from other nodes refused, by reason (not the owner, unknown kind or \
                     message, undecodable envelope or body, bad frame on a call link).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
        };
        Self {
            node,
            registry,
            codec: Arc::new(Bincode),
            secret: config.secret.clone(),
            link_idle: config.link_idle_timeout,
            relays: Relays::default(),
            peers: Peers::default(),
            counters,
            members: RwLock::default(),
            handlers: RwLock::default(),
        }
    }

    /// The cluster's collectors, to register with the node's metrics.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.counters.remote_in.clone()),
            Box::new(self.counters.remote_out.clone()),
            Box::new(self.counters.relays_started.clone()),
            Box::new(self.counters.relays.clone()),
            Box::new(self.counters.nodes.clone()),
            Box::new(self.counters.refused.clone()),
        ]
    }

    /// Re-reads the live nodes from the registry (called by the heartbeat).
    pub async fn refresh_members(&self) -> Result<Vec<NodeInfo>, RegistryError> {
        let nodes = self.registry.nodes().await?;
        self.counters.nodes.set(i64::try_from(nodes.len()).unwrap_or(i64::MAX));
        self.counters.relays.set(i64::try_from(self.relays.count()).unwrap_or(i64::MAX));
        *self.members.write() = nodes.clone();
        Ok(nodes)
    }

    /// The live nodes as last seen.
    pub fn members(&self) -> Vec<NodeInfo> {
        self.members.read().clone()
    }

    /// `node`'s address for `protocol` (`cluster`, `rtmp`, `http`), from the last view of
    /// the cluster, refreshed once if the node is not in it.
    pub async fn address_of(&self, node: &NodeId, protocol: &str) -> Option<String> {
        let find = |members: &[NodeInfo]| {
            members.iter().find(|n| &n.id == node).and_then(|n| n.addresses.get(protocol).cloned())
        };
        if let Some(addr) = find(&self.members.read()) {
            return Some(addr);
        }
        let members = self.refresh_members().await.ok()?;
        find(&members)
    }

    /// Answers calls to actors of `kind` on this node with `handler`.
    pub fn on_call<F, Fut>(&self, kind: &str, handler: F)
    where
        F: Fn(String, Option<u64>, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, RemoteError>> + Send + 'static,
    {
        let handler: CallHandler =
            Arc::new(move |name, epoch, body| Box::pin(handler(name, epoch, body)));
        self.handlers.write().insert(kind.to_owned(), handler);
    }

    /// Handles a call that reached this node.
    pub(crate) async fn handle_call(&self, call: Call) -> Result<Vec<u8>, RemoteError> {
        let handler = self.handlers.read().get(&call.kind).cloned();
        match handler {
            Some(handler) => handler(call.name, call.epoch, call.body).await,
            None => {
                self.counters.refuse("unknown_kind");
                Err(RemoteError::NoHandler)
            }
        }
    }

    /// Sends `body` to the actor `key` wherever it lives (this node included) and waits for
    /// its answer. At most once: a call that timed out may or may not have been handled.
    /// When the node asked no longer owns the actor, the owner is looked up once more.
    pub async fn call(
        self: &Arc<Self>,
        key: &ActorKey,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, RemoteError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let owner = match self.registry.lookup(key).await {
                Ok(Some(owner)) => owner,
                Ok(None) => return Err(RemoteError::NotOwner),
                Err(error) => return Err(RemoteError::Link(error.to_string())),
            };
            let call = self.new_call(key.kind.as_str(), &key.name, Some(owner.epoch), body.clone());
            let result = self.call_node(&owner.node, call).await;
            match result {
                Err(RemoteError::NotOwner) if attempts < 2 => continue,
                other => return other,
            }
        }
    }
}

impl Cluster {
    /// Sends `call` to `node` (this node included) and waits for the answer.
    /// [`RemoteError::NotSent`] says the call provably never left (`node` is not registered,
    /// or no link to it could be opened); every other failure may follow its delivery.
    pub async fn call_node(
        self: &Arc<Self>,
        node: &NodeId,
        call: Call,
    ) -> Result<Vec<u8>, RemoteError> {
        if *node == self.node {
            return self.handle_call(call).await;
        }
        let Some(addr) = self.address_of(node, "cluster").await else {
            return Err(RemoteError::NotSent(format!("node {node} is not registered")));
        };
        self.peers.call(self, node, &addr, call).await
    }

    /// A call to the actor `kind`/`name` from this node, with `body`.
    pub fn new_call(&self, kind: &str, name: &str, epoch: Option<u64>, body: Vec<u8>) -> Call {
        Call {
            kind: kind.to_owned(),
            name: name.to_owned(),
            from: self.node.as_str().to_owned(),
            epoch,
            seq: 0,
            correlation: 0,
            body,
        }
    }
}

/// This node's addresses as other nodes and clients reach them.
pub fn addresses(
    config: &ClusterConfig,
    cluster_addr: Option<std::net::SocketAddr>,
    rtmp: Option<std::net::SocketAddr>,
    http: std::net::SocketAddr,
) -> BTreeMap<String, String> {
    let host = config.advertised_host();
    let mut out = BTreeMap::new();
    let mut add = |name: &str, addr: Option<std::net::SocketAddr>| {
        if let Some(addr) = addr {
            out.insert(name.to_owned(), format!("{host}:{}", addr.port()));
        }
    };
    add("cluster", cluster_addr);
    add("rtmp", rtmp);
    add("http", Some(http));
    out
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(without_password("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(without_password("redis://:s3cret@host:1/0"), "redis://@host:1/0");
        assert_eq!(without_password("redis://app:s3cret@host"), "redis://app@host");
        assert_eq!(without_password("nonsense"), "nonsense");
    }
}
