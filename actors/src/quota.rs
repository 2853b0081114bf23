//! [`PerAddress`]: a cap on how many of something one client address may hold at once
//! (RTMP connections not admitted yet, chat rooms a client opened). A [`Slot`] is held by
//! whatever it counts (a connection task, a room actor) and gives its place back when
//! dropped, so the count is exact however the holder ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// A cap on how many of something one client address may hold at once. See the module docs.
#[derive(Debug, Clone)]
pub struct PerAddress {
    cap: Arc<AtomicUsize>,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    /// At most `cap` per address (0: no cap).
    pub fn new(cap: usize) -> Self {
        Self { cap: Arc::new(AtomicUsize::new(cap)), held: Arc::default() }
    }

    /// Changes the cap (a configuration reload); places already held stay.
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// A place for `ip`, or `None` when it holds `cap` already.
    pub fn take(&self, ip: IpAddr) -> Option<Slot> {
        let mut held = self.held.lock();
        let count = held.entry(ip).or_insert(0);
        let cap = self.cap.load(Ordering::Relaxed);
        if cap != 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(Slot { ip, held: Arc::clone(&self.held) })
    }

    /// How many places `ip` holds.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.held.lock().get(&ip).copied().unwrap_or(0)
    }
}

/// One place under a [`PerAddress`] cap, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    ip: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock();
        if let Some(count) = held.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Only addresses holding something are in the map, so it stays bounded by
                // what is open.
                held.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_given_back() {
        let cap = PerAddress::new(2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = cap.take(a).expect("first");
        let _second = cap.take(a).expect("second");
        assert!(cap.take(a).is_none(), "third refused");
        assert!(cap.take(b).is_some(), "another address has its own");
        drop(first);
        assert_eq!(cap.held_by(a), 1);
        assert!(cap.take(a).is_some(), "a place came back");
        assert!(PerAddress::new(0).take(a).is_some(), "0 means no cap");
    }
}
