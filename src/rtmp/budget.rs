//! [`PartialBudget`]: the node-wide bound on bytes of partially received RTMP messages
//! (`rtmp.max_partial_bytes`). Each connection's [`ChunkReader`](super::reader::ChunkReader)
//! bounds its own; this bounds their sum, so many admitted publishers that each start large
//! messages and stall cannot together exhaust the node. A connection reports what its reader
//! holds after each read (one atomic add per read, not per message) through its [`Share`],
//! which gives the bytes back when the connection ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The node's budget. See the module docs.
#[derive(Debug, Clone)]
pub struct PartialBudget {
    used: Arc<AtomicU64>,
    max: Arc<AtomicU64>,
}

impl PartialBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self { used: Arc::default(), max: Arc::new(AtomicU64::new(max)) }
    }

    /// Changes the limit (a configuration reload).
    pub fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Bytes held now across the node.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// One connection's share, empty.
    pub fn share(&self) -> Share {
        Share { budget: self.clone(), held: 0 }
    }
}

/// What one connection holds of the [`PartialBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: PartialBudget,
    held: u64,
}

impl Share {
    /// The connection now holds `held` bytes of partial messages. Answers `false` when it
    /// grew and the node's total went over the budget (the connection should close; its
    /// bytes stay counted until it drops its share).
    pub fn set(&mut self, held: u64) -> bool {
        let before = self.held;
        self.held = held;
        let used = &self.budget.used;
        if held > before {
            let total = used.fetch_add(held - before, Ordering::Relaxed) + (held - before);
            return total <= self.budget.max();
        }
        if held < before {
            used.fetch_sub(before - held, Ordering::Relaxed);
        }
        true
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_are_given_back() {
        let budget = PartialBudget::new(100);
        let mut a = budget.share();
        let mut b = budget.share();
        assert!(a.set(60));
        assert!(!b.set(50), "the second share goes over the node's budget");
        assert_eq!(budget.used(), 110);
        assert!(a.set(10), "shrinking is always fine");
        assert!(b.set(50));
        drop(b);
        assert_eq!(budget.used(), 10);
        drop(a);
        assert_eq!(budget.used(), 0);
    }
}
