//! [`ArbiterPool`]: one actix arbiter (a single-threaded event loop) per core.
//!
//! Connections are spread over the pool round-robin; a stream actor lives on its
//! publisher's arbiter and a viewer session on its viewer's, so one busy stream's fan-out is
//! spread over every core its viewers landed on instead of being pinned to one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_rt::{Arbiter, ArbiterHandle};

/// A fixed set of arbiters handed out round-robin. Cloning shares the pool.
#[derive(Clone)]
pub struct ArbiterPool {
    inner: Arc<Inner>,
}

struct Inner {
    handles: Vec<ArbiterHandle>,
    next: AtomicUsize,
}

impl ArbiterPool {
    /// Starts `size` arbiters (at least one). Must be called inside an actix system.
    pub fn start(size: usize) -> Self {
        let handles = (0..size.max(1)).map(|_| Arbiter::new().handle()).collect();
        Self { inner: Arc::new(Inner { handles, next: AtomicUsize::new(0) }) }
    }

    /// One arbiter per available core.
    pub fn per_core() -> Self {
        Self::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The next arbiter, round-robin.
    pub fn next(&self) -> ArbiterHandle {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.handles.len();
        self.inner.handles[i].clone()
    }

    /// How many arbiters the pool has.
    pub fn len(&self) -> usize {
        self.inner.handles.len()
    }

    /// Always false: a pool has at least one arbiter.
    pub fn is_empty(&self) -> bool {
        self.inner.handles.is_empty()
    }

    /// Asks every arbiter to stop once its current tasks yield.
    pub fn stop(&self) {
        for handle in &self.inner.handles {
            handle.stop();
        }
    }
}
