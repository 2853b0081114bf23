//! The edge relays a node runs now ([`Relays`]): which streams, when each was last asked
//! for, and names recently found live nowhere. The relays themselves (finding a stream,
//! pulling it from its owner) are in [`super::pull`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use zenlive_actors::StreamKey;

/// One relay's shared state.
pub(crate) struct Relay {
    /// When a viewer here last asked for the stream.
    pub(crate) last_demand: Mutex<Instant>,
    /// Becomes true once the replica is live.
    pub(crate) live: watch::Sender<bool>,
}

/// How long "live nowhere" is remembered for a stream name, so a flood of play requests
/// for a stream that does not exist costs Redis one lookup per name per this period.
pub(crate) const NOT_LIVE_FOR: Duration = Duration::from_secs(1);
/// Most names remembered as not live; the memory is cleared when it is full.
pub(crate) const NOT_LIVE_MAX: usize = 10_000;

/// This node's relays, by stream.
#[derive(Default)]
pub struct Relays {
    pub(crate) active: Mutex<HashMap<StreamKey, Arc<Relay>>>,
    /// Names recently found live nowhere, and when.
    pub(crate) not_live: Mutex<HashMap<StreamKey, Instant>>,
}

impl Relays {
    /// Relays running now.
    pub fn count(&self) -> usize {
        self.active.lock().len()
    }

    /// The streams relayed now.
    pub fn streams(&self) -> Vec<StreamKey> {
        self.active.lock().keys().cloned().collect()
    }

    /// Notes that a viewer asked for `key` (keeps an HLS-only relay alive).
    pub fn touch(&self, key: &StreamKey) {
        if let Some(relay) = self.active.lock().get(key) {
            *relay.last_demand.lock() = Instant::now();
        }
    }
}
