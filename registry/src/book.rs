//! [`LeaseBook`]: a [`Registry`] that remembers, for every lease this node holds, until when
//! it can still *prove* it on its own monotonic clock. What fencing on receipt asks before a
//! message to a named actor is applied here (ARCHITECTURE.md, "By name, anywhere").
//!
//! # Where it sits
//! Around the node's registry, once, so every claim, renewal and release of this node goes
//! through it whoever makes it (the stream supervisor, a chat room's home, later recorders
//! and application actors): nothing that keeps a lease needs to report to it.
//!
//! # The rule
//! A claim or a renewal that the registry answered `Ok` was applied at some instant after
//! the request left, so the lease lives at least until *sent + TTL*. But a lease also ends
//! when its node's registration does (a claim succeeds over the lease of a node that is no
//! longer registered: ARCHITECTURE.md, "Cluster"), so the node's own registration and
//! heartbeats are proven the same way. A lease is proven until the earlier of the two, less
//! [`SELF_FENCE_MARGIN`]; past it (the node was paused, or could not reach the registry)
//! [`LeaseBook::proven`] answers `None` and the node must not act on the name's behalf for
//! others (self-fencing), even before its keeper hears that the lease is lost. A renewal
//! answered `LeaseLost`, a release and a refused heartbeat forget at once. Time is tokio's
//! clock, so tests pause it.
//!
//! # Two checks, one rule
//! [`LeaseBook::proven`] (what fencing on receipt asks, once per message from another node)
//! reads the exact monotonic clock. [`ProofHandle::proven`] (what a typed reference asks
//! before every *local* send, the hot path) reads the kernel's coarse monotonic clock
//! (`CLOCK_MONOTONIC_COARSE`, a third of the exact read's cost here): the monotonic clock as
//! of the last timer tick, so it lags the exact one by up to one tick (`clock_getres`: 4 ms
//! at `HZ=250`). The handle counts it as [`COARSE_SLACK_TICKS`] ticks late, so its proof
//! ends that much *earlier* than the exact check's (8 ms of the 1 s margin), never later:
//! a node that lost its lease applies no local message either. Like the exact clock it runs
//! on while the process is stopped (a `SIGSTOP`ped node wakes up fenced). What it assumes
//! is that a thread never runs for more than two ticks without the kernel's timekeeping
//! advancing (true unless CPUs are isolated with `nohz_full`); a coarse clock coarser than
//! [`MAX_COARSE_RESOLUTION`], or none (not Linux), and the handle reads the exact clock.
//! Handles read the kernel's clock even when a test pauses tokio's: such tests check expiry
//! with [`LeaseBook::proven`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::id::{ActorKey, ActorKind, NodeId};
use crate::registry::{BoxFuture, ClaimHints, Lease, NodeInfo, Owner, Registry, RegistryError};

/// How long before its TTL runs out, counted from when the claim or renewal was *sent*, a
/// lease stops being proven here: room for the registry's clock and this node's to run at
/// slightly different rates and for a message to be handled after the check.
pub const SELF_FENCE_MARGIN: Duration = Duration::from_secs(1);

/// One name's proof, shared by the book and the [`ProofHandle`]s of the refs that check it:
/// atomics, so a check takes no lock and hashes nothing. Written only under the book's map
/// lock. `until` is in nanoseconds since the book's start plus one; zero means "not held".
#[derive(Debug, Default)]
struct Proof {
    epoch: AtomicU64,
    until: AtomicU64,
}

/// How many ticks of the coarse clock a [`ProofHandle`] counts it late (module docs).
pub const COARSE_SLACK_TICKS: u64 = 2;
/// The coarsest coarse clock a [`ProofHandle`] reads; beyond it, it reads the exact clock.
pub const MAX_COARSE_RESOLUTION: Duration = Duration::from_millis(10);

/// The kernel's coarse monotonic clock, as the book's handles read it (module docs).
#[derive(Debug)]
struct Coarse {
    /// Its reading just before the book's origin was taken, in nanoseconds.
    base: u64,
    /// How late it may be: [`COARSE_SLACK_TICKS`] of its resolution, in nanoseconds.
    slack: u64,
}

impl Coarse {
    /// Reads the coarse clock, if this system has a fine enough one. Called just *before*
    /// the book's origin is taken, so that `base` is no later than the origin: what the
    /// handle computes from it errs on the early side.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn calibrate() -> Option<Self> {
        use rustix::time::{clock_getres, ClockId};
        let resolution = clock_getres(ClockId::MonotonicCoarse);
        let resolution = Duration::new(
            u64::try_from(resolution.tv_sec).ok()?,
            u32::try_from(resolution.tv_nsec).ok()?,
        );
        if resolution.is_zero() || resolution > MAX_COARSE_RESOLUTION {
            return None;
        }
        let slack = u64::try_from(resolution.as_nanos()).ok()? * COARSE_SLACK_TICKS;
        Some(Self { base: Self::now(), slack })
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn calibrate() -> Option<Self> {
        None
    }

    /// The coarse clock now, in nanoseconds (a vDSO read, no system call).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn now() -> u64 {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
        // A monotonic clock is never negative; u64 nanoseconds last 584 years of uptime.
        let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
        seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn now() -> u64 {
        0
    }
}

/// The shared parts of a book a check needs.
#[derive(Debug)]
struct Clock {
    /// The book's time origin.
    base: Instant,
    /// Until when this node's registration is proven (same unit as [`Proof::until`]).
    registered: AtomicU64,
    /// The coarse clock the handles read, if there is one (module docs).
    coarse: Option<Coarse>,
}

impl Clock {
    fn new() -> Self {
        // The coarse clock first: see `Coarse::calibrate`.
        let coarse = Coarse::calibrate();
        Self { base: Instant::now(), registered: AtomicU64::new(0), coarse }
    }

    fn nanos(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX - 1) + 1
    }

    /// Until when `proof` holds (the earlier of the lease and the node's registration).
    fn until(&self, proof: &Proof) -> u64 {
        proof.until.load(Ordering::Acquire).min(self.registered.load(Ordering::Acquire))
    }

    /// The exact check.
    fn proven(&self, proof: &Proof) -> Option<u64> {
        let until = self.until(proof);
        (self.nanos(Instant::now()) < until).then(|| proof.epoch.load(Ordering::Acquire))
    }

    /// The handles' check: on the coarse clock counted late by its slack, so it never
    /// answers `Some` where [`Clock::proven`] would not (module docs).
    fn proven_coarse(&self, proof: &Proof) -> Option<u64> {
        let Some(coarse) = &self.coarse else { return self.proven(proof) };
        let until = self.until(proof);
        let now = Coarse::now().saturating_sub(coarse.base).saturating_add(coarse.slack + 1);
        (now < until).then(|| proof.epoch.load(Ordering::Acquire))
    }
}

type Held = Arc<Mutex<HashMap<ActorKey, Arc<Proof>>>>;

/// The node's registry, remembering the leases the node holds. See the module docs.
#[derive(Clone)]
pub struct LeaseBook {
    inner: Arc<dyn Registry>,
    node: NodeId,
    held: Held,
    clock: Arc<Clock>,
}

/// A name's proof as the book keeps it, held by a typed reference so that its local check
/// is two atomic loads and a read of the coarse clock (module docs, "Two checks, one
/// rule"). Dropping the last handle of a name the node does not hold lets the book forget
/// the name.
pub struct ProofHandle {
    proof: Arc<Proof>,
    clock: Arc<Clock>,
    key: ActorKey,
    held: Held,
}

impl ProofHandle {
    /// The epoch of this node's lease on the name if it is proven now, on the coarse clock:
    /// `None` up to [`COARSE_SLACK_TICKS`] ticks of it earlier than [`LeaseBook::proven`]
    /// would say, never later (module docs).
    pub fn proven(&self) -> Option<u64> {
        self.clock.proven_coarse(&self.proof)
    }
}

impl Drop for ProofHandle {
    fn drop(&mut self) {
        let mut held = self.held.lock();
        // The map's and this handle's: nobody else checks it, and the name is not held.
        if Arc::strong_count(&self.proof) == 2 && self.proof.until.load(Ordering::Acquire) == 0 {
            held.remove(&self.key);
        }
    }
}

impl std::fmt::Debug for ProofHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofHandle")
            .field("key", &self.key)
            .field("proven", &self.proven())
            .finish()
    }
}

impl LeaseBook {
    /// Wraps `inner` for `node`: leases of other nodes (a test claiming for another id) are
    /// not recorded.
    pub fn new(inner: Arc<dyn Registry>, node: NodeId) -> Self {
        Self { inner, node, held: Arc::default(), clock: Arc::new(Clock::new()) }
    }

    /// The epoch of this node's lease on `key` if it is proven now (see the module docs).
    pub fn proven(&self, key: &ActorKey) -> Option<u64> {
        let proof = Arc::clone(self.held.lock().get(key)?);
        self.clock.proven(&proof)
    }

    /// A handle that checks `key`'s proof without the book's lock (see [`ProofHandle`]).
    pub fn handle(&self, key: &ActorKey) -> ProofHandle {
        let proof = Arc::clone(self.held.lock().entry(key.clone()).or_default());
        ProofHandle {
            proof,
            clock: Arc::clone(&self.clock),
            key: key.clone(),
            held: Arc::clone(&self.held),
        }
    }

    /// Notes this node's registration, renewed at `sent` for `ttl` (or lost: `None`).
    fn registered(&self, node: &NodeId, renewed: Option<(Instant, Duration)>) {
        if *node != self.node {
            return;
        }
        let _writers = self.held.lock();
        let until = renewed
            .and_then(|(sent, ttl)| (sent + ttl).checked_sub(SELF_FENCE_MARGIN))
            .map_or(0, |until| self.clock.nanos(until));
        let registered = &self.clock.registered;
        let before = registered.load(Ordering::Acquire);
        let next = if until == 0 { 0 } else { until.max(before) };
        registered.store(next, Ordering::Release);
    }

    fn record(&self, lease: &Lease, sent: Instant) {
        if lease.node != self.node {
            return;
        }
        let Some(until) = (sent + lease.ttl).checked_sub(SELF_FENCE_MARGIN) else { return };
        let until = self.clock.nanos(until);
        let mut held = self.held.lock();
        let proof = held.entry(lease.key.clone()).or_default();
        let (epoch, before) =
            (proof.epoch.load(Ordering::Acquire), proof.until.load(Ordering::Acquire));
        // A newer epoch replaces an older one; a renewal of the same epoch only extends it.
        if before == 0 || lease.epoch > epoch || (lease.epoch == epoch && until > before) {
            proof.until.store(0, Ordering::Release);
            proof.epoch.store(lease.epoch, Ordering::Release);
            proof.until.store(until, Ordering::Release);
        }
    }

    fn forget(&self, lease: &Lease) {
        let mut held = self.held.lock();
        let Some(proof) = held.get(&lease.key) else { return };
        if proof.epoch.load(Ordering::Acquire) == lease.epoch {
            proof.until.store(0, Ordering::Release);
            if Arc::strong_count(proof) == 1 {
                held.remove(&lease.key);
            }
        }
    }
}

impl Registry for LeaseBook {
    fn register_node(
        &self,
        info: NodeInfo,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let (sent, node) = (Instant::now(), info.id.clone());
        let registering = self.inner.register_node(info, ttl);
        Box::pin(async move {
            registering.await?;
            self.registered(&node, Some((sent, ttl)));
            Ok(())
        })
    }

    fn heartbeat(
        &self,
        node: &NodeId,
        incarnation: u64,
        load: u64,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        let (sent, node) = (Instant::now(), node.clone());
        let beat = self.inner.heartbeat(&node, incarnation, load, ttl);
        Box::pin(async move {
            match beat.await {
                Ok(()) => {
                    self.registered(&node, Some((sent, ttl)));
                    Ok(())
                }
                Err(error @ RegistryError::NodeNotRegistered { .. }) => {
                    self.registered(&node, None);
                    Err(error)
                }
                Err(error) => Err(error),
            }
        })
    }

    fn deregister_node(
        &self,
        node: &NodeId,
        incarnation: u64,
    ) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.registered(node, None);
        self.inner.deregister_node(node, incarnation)
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, RegistryError>> {
        self.inner.nodes()
    }

    fn claim(
        &self,
        key: &ActorKey,
        node: &NodeId,
        ttl: Duration,
    ) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        // Taken before the request can leave: the proof errs on the short side.
        let sent = Instant::now();
        let claim = self.inner.claim(key, node, ttl);
        Box::pin(async move {
            let lease = claim.await?;
            self.record(&lease, sent);
            Ok(lease)
        })
    }

    fn renew(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        let sent = Instant::now();
        let renewal = self.inner.renew(lease);
        let lease = lease.clone();
        Box::pin(async move {
            match renewal.await {
                Ok(()) => {
                    self.record(&lease, sent);
                    Ok(())
                }
                Err(error @ RegistryError::LeaseLost { .. }) => {
                    self.forget(&lease);
                    Err(error)
                }
                Err(error) => Err(error),
            }
        })
    }

    fn release(&self, lease: &Lease) -> BoxFuture<'_, Result<(), RegistryError>> {
        // Given up from now on, whatever the registry answers.
        self.forget(lease);
        self.inner.release(lease)
    }

    fn lookup(&self, key: &ActorKey) -> BoxFuture<'_, Result<Option<Owner>, RegistryError>> {
        self.inner.lookup(key)
    }

    fn keep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.inner.keep(key)
    }

    fn unkeep(&self, key: &ActorKey) -> BoxFuture<'_, Result<(), RegistryError>> {
        self.inner.unkeep(key)
    }

    fn kept(&self, kind: &ActorKind) -> BoxFuture<'_, Result<Vec<String>, RegistryError>> {
        self.inner.kept(kind)
    }

    fn claim_hints(&self) -> Option<ClaimHints> {
        self.inner.claim_hints()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::memory::MemoryRegistry;

    const TTL: Duration = Duration::from_secs(10);

    fn info(node: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(node),
            incarnation: 1,
            addresses: BTreeMap::new(),
            load: 0,
            draining: false,
        }
    }

    /// A book for n1 over a memory registry where n1 and n2 are registered for 600 s.
    async fn book() -> LeaseBook {
        let memory: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
        let book = LeaseBook::new(memory, NodeId::new("n1"));
        for node in ["n1", "n2"] {
            book.register_node(info(node), Duration::from_secs(600)).await.expect("register");
        }
        book
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_proven_no_longer_than_the_nodes_registration() {
        let memory: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
        let book = LeaseBook::new(memory, NodeId::new("n1"));
        let node_ttl = Duration::from_secs(6);
        book.register_node(info("n1"), node_ttl).await.expect("register");
        let lease = book.claim(&key(), &NodeId::new("n1"), TTL).await.expect("claim");
        tokio::time::advance(node_ttl - SELF_FENCE_MARGIN - Duration::from_millis(1)).await;
        assert_eq!(book.proven(&key()), Some(lease.epoch));
        book.heartbeat(&NodeId::new("n1"), 1, 0, node_ttl).await.expect("heartbeat");
        tokio::time::advance(node_ttl - SELF_FENCE_MARGIN - Duration::from_millis(1)).await;
        assert_eq!(book.proven(&key()), None, "the lease's own TTL ran out first");
        book.heartbeat(&NodeId::new("n1"), 1, 0, node_ttl).await.expect("heartbeat");
        book.renew(&lease).await.expect("renew");
        assert_eq!(book.proven(&key()), Some(lease.epoch));
        tokio::time::advance(node_ttl - SELF_FENCE_MARGIN).await;
        assert_eq!(book.proven(&key()), None, "no heartbeat: the node may be declared dead");
    }

    fn key() -> ActorKey {
        ActorKey::new(ActorKind::Stream, "live/a")
    }

    #[tokio::test(start_paused = true)]
    async fn a_claimed_lease_is_proven_until_its_ttl_minus_the_margin() {
        let book = book().await;
        assert_eq!(book.proven(&key()), None);
        let lease = book.claim(&key(), &NodeId::new("n1"), TTL).await.expect("claim");
        assert_eq!(book.proven(&key()), Some(lease.epoch));
        tokio::time::advance(TTL - SELF_FENCE_MARGIN - Duration::from_millis(1)).await;
        assert_eq!(book.proven(&key()), Some(lease.epoch));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(book.proven(&key()), None, "not renewed in time: self-fenced");
    }

    #[tokio::test(start_paused = true)]
    async fn a_handle_sees_claims_and_releases_and_an_unused_name_is_forgotten() {
        let book = book().await;
        let handle = book.handle(&key());
        assert_eq!(handle.proven(), None);
        let lease = book.claim(&key(), &NodeId::new("n1"), TTL).await.expect("claim");
        assert_eq!(handle.proven(), Some(lease.epoch));
        book.release(&lease).await.expect("release");
        assert_eq!(handle.proven(), None);
        drop(handle);
        assert!(book.held.lock().is_empty(), "nothing left for a name nobody holds or checks");
    }

    /// On the real clock (not paused): the handle's coarse check never says proven where
    /// the exact check does not, and the proof does end.
    #[tokio::test]
    async fn a_handle_on_the_coarse_clock_is_never_proven_past_the_exact_check() {
        let book = book().await;
        let handle = book.handle(&key());
        let ttl = SELF_FENCE_MARGIN + Duration::from_millis(200);
        let lease = book.claim(&key(), &NodeId::new("n1"), ttl).await.expect("claim");
        assert_eq!(handle.proven(), Some(lease.epoch));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Exact first: once it says no, it says no for good, so the handle must too.
            let exact = book.proven(&key());
            let coarse = handle.proven();
            if exact.is_none() {
                assert_eq!(coarse, None, "the handle outlived the exact proof");
            }
            if coarse.is_none() {
                break;
            }
            assert_eq!(coarse, Some(lease.epoch));
            assert!(Instant::now() < deadline, "the lease never stopped being proven");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_extends_the_proof_and_a_release_ends_it() {
        let book = book().await;
        let lease = book.claim(&key(), &NodeId::new("n1"), TTL).await.expect("claim");
        tokio::time::advance(Duration::from_secs(5)).await;
        book.renew(&lease).await.expect("renew");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(book.proven(&key()), Some(lease.epoch), "proven from the renewal on");
        book.release(&lease).await.expect("release");
        assert_eq!(book.proven(&key()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_is_forgotten_and_other_nodes_leases_are_not_recorded() {
        let book = book().await;
        let lease = book.claim(&key(), &NodeId::new("n1"), TTL).await.expect("claim");
        tokio::time::advance(TTL + Duration::from_secs(1)).await;
        let taken = book.claim(&key(), &NodeId::new("n2"), TTL).await.expect("n2 claims");
        assert_eq!(book.proven(&key()), None, "n2's lease is not this node's");
        assert!(book.renew(&lease).await.is_err());
        assert_eq!(book.proven(&key()), None);
        assert!(taken.epoch > lease.epoch);
    }
}
