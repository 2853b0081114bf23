//! What the HLS packagers ([`super::packager`], [`super::ll`]) share about a stream that
//! ended: its playlist stays for `hls.reconnect_grace`, then goes, unless the stream
//! started again meanwhile (its generation moved on).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use zenlive_actors::{ArbiterPool, StreamKey};

/// A stream's state whose starts and ends are counted.
pub(crate) trait Generation {
    /// Bumped on every start and end.
    fn generation(&self) -> &AtomicU64;
}

/// A manager's streams, by name.
pub(crate) type Streams<T> = RwLock<HashMap<StreamKey, Arc<T>>>;

/// Removes `key` from the map `streams` reads out of `owner` after `grace`, unless its
/// generation moved on by then.
pub(crate) fn expire<O, T>(
    owner: &Arc<O>,
    streams: fn(&O) -> &Streams<T>,
    pool: &ArbiterPool,
    key: &StreamKey,
    grace: Duration,
) where
    O: Send + Sync + 'static,
    T: Generation + Send + Sync + 'static,
{
    let Some(stream) = streams(owner).read().get(key).cloned() else { return };
    let generation = stream.generation().fetch_add(1, Ordering::Relaxed) + 1;
    let owner = Arc::clone(owner);
    let key = key.clone();
    pool.next().spawn(async move {
        tokio::time::sleep(grace).await;
        let mut streams = streams(&owner).write();
        let stale =
            streams.get(&key).is_some_and(|s| s.generation().load(Ordering::Relaxed) == generation);
        if stale {
            streams.remove(&key);
            tracing::debug!(stream = %key, "hls playlist expired");
        }
    });
}
