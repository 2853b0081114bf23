//! A [`Registry`] wrapper that times every call into a Prometheus histogram
//! (`zenlive_registry_op_duration_seconds{op, outcome}`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{HistogramOpts, HistogramVec};
use zenlive_registry::{
    ActorKey, ActorKind, BoxFuture, Lease, NodeId, NodeInfo, Owner, Registry, RegistryError,
};

/// Times the calls of the registry it wraps.
pub struct Instrumented {
    inner: Arc<dyn Registry>,
    latency: HistogramVec,
}

impl Instrumented {
    /// Wraps `inner`; register [`Instrumented::histogram`] to export the timings.
    pub fn new(inner: Arc<dyn Registry>) -> Self {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "zenlive_registry_op_duration_seconds",
                "Time a registry call took (Redis round trips in cluster mode), by operation \
                 and outcome (ok or the error kind).",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 2.5,
            ]),
            &["op", "outcome"],
        )
        .expect("valid metric");
        Self { inner, latency }
    }

    /// The histogram, to register with the node's metrics.
    pub fn histogram(&self) -> HistogramVec {
        self.latency.clone()
    }

    fn timed<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        call: BoxFuture<'a, Result<T, RegistryError>>,
    ) -> BoxFuture<'a, Result<T, RegistryError>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = call.await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(RegistryError::AlreadyOwned { .. }) => "already_owned",
                Err(RegistryError::LeaseLost { .. }) => "lease_lost",
                Err(RegistryError::NodeNotRegistered { .. }) => "node_not_registered",
                Err(RegistryError::Unavailable { .. }) => "unavailable",
            };
            self.latency.with_label_values(&[op, outcome]).observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

impl Registry for Instrumented {
    fn register_node(
        &self,
        info: NodeInfo,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.timed("register_node", self.inner.register_node(info, ttl))
    }

    fn heartbeat(
        &self,
        node: &NodeId,
        incarnation: u64,
        load: u64,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.timed("heartbeat", self.inner.heartbeat(node, incarnation, load, ttl))
    }

    fn deregister_node(
        &self,
        node: &NodeId,
        incarnation: u64,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.timed("deregister_node", self.inner.deregister_node(node, incarnation))
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, RegistryError>> {
        self.timed("nodes", self.inner.nodes())
    }

    fn claim(
        &self,
        key: &ActorKey,
        node: &NodeId,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        self.timed("claim", self.inner.claim(key, node, ttl))
    }

    fn renew(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.timed("renew", self.inner.renew(lease))
    }

    fn release(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.timed("release", self.inner.release(lease))
    }

    fn keep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.timed("keep", self.inner.keep(key))
    }

    fn unkeep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.timed("unkeep", self.inner.unkeep(key))
    }

    fn kept(&self, kind: &ActorKind) -> BoxFuture<'_, Result<Vec<String>, RegistryError>> {
        self.timed("kept", self.inner.kept(kind))
    }

    fn lookup(&self, key: &ActorKey) -> BoxFuture<'_, Result<Option<Owner>, RegistryError>> {
        self.timed("lookup", self.inner.lookup(key))
    }

    fn claim_hints(&self) -> Option<zenlive_registry::ClaimHints> {
        self.inner.claim_hints()
    }
}
