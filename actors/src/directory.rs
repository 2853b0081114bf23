//! [`Directory`]: this node's map from stream names to live stream actors, and
//! [`StreamEntry`], what it holds for each.
//!
//! The supervisor writes it (a stream starts, restarts or ends); publishers, viewers,
//! outputs and the protocol front-ends read it to find a stream, and wait on its change
//! signal for the instance that follows a crashed one. It sits above [`crate::stream`]
//! (an entry holds the actor's address and its frame path) and below everything that looks
//! streams up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::key::StreamKey;
use crate::stats::StreamStats;
use crate::stream::{IngestHandle, StreamActor};

/// A live stream actor as the directory knows it.
#[derive(Clone)]
pub struct StreamEntry {
    /// The actor.
    pub addr: Addr<StreamActor>,
    /// Unique per actor instance on this node.
    pub generation: u64,
    /// The generation of the first instance of this stream; restarts keep it, so viewers
    /// can tell a restarted stream from a new one with the same name.
    pub lineage: u64,
    /// The stream's statistics, kept across restarts.
    pub stats: Arc<StreamStats>,
    /// This instance's frame path (see [`crate::stream`]).
    pub ingest: IngestHandle,
}

/// This node's live streams by name. Written only by the supervisor; read from any thread.
/// A read lock around a map is right here: lookups are frequent and short, writes happen
/// once per stream start or end.
#[derive(Clone)]
pub struct Directory {
    streams: Arc<RwLock<HashMap<StreamKey, StreamEntry>>>,
    /// Bumped on every change, for those waiting for a restarted instance.
    changes: Arc<watch::Sender<u64>>,
}

impl Default for Directory {
    fn default() -> Self {
        Self { streams: Arc::default(), changes: Arc::new(watch::Sender::new(0)) }
    }
}

impl Directory {
    /// Waits (at most `limit`) until no stream is live; answers whether none is. Woken by
    /// the directory's change signal (a shutdown waits on it for its streams to end).
    pub async fn emptied(&self, limit: Duration) -> bool {
        let mut changes = self.changes.subscribe();
        let wait = async {
            while !self.is_empty() {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.is_empty()
    }

    /// Waits (at most `limit`) until `key` is no longer instance `generation`: a restarted
    /// instance replaced it, or the stream ended. Answers the entry then. How a publisher or
    /// a viewer whose stream crashed finds the instance that follows it, without polling.
    pub async fn next_instance(
        &self,
        key: &StreamKey,
        generation: u64,
        limit: Duration,
    ) -> Option<StreamEntry> {
        let mut changes = self.changes.subscribe();
        let wait = async {
            loop {
                match self.get(key) {
                    Some(entry) if entry.generation == generation => {}
                    other => return other,
                }
                if changes.changed().await.is_err() {
                    return self.get(key);
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(entry) => entry,
            Err(_) => self.get(key),
        }
    }

    /// The live actor for `key`, if any.
    pub fn get(&self, key: &StreamKey) -> Option<StreamEntry> {
        self.streams.read().get(key).cloned()
    }

    /// Every live stream with its entry, sorted by name.
    pub fn entries(&self) -> Vec<(StreamKey, StreamEntry)> {
        let mut entries: Vec<_> =
            self.streams.read().iter().map(|(k, e)| (k.clone(), e.clone())).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
    }

    /// The names of every live stream, sorted.
    pub fn keys(&self) -> Vec<StreamKey> {
        let mut keys: Vec<_> = self.streams.read().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// How many streams are live.
    pub fn len(&self) -> usize {
        self.streams.read().len()
    }

    /// Whether no stream is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes `entry` the live instance of `key` (the supervisor, starting or restarting it).
    pub(crate) fn insert(&self, key: StreamKey, entry: StreamEntry) {
        self.streams.write().insert(key, entry);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Forgets `key` if instance `generation` is still the live one (the supervisor, once it
    /// ended).
    pub(crate) fn remove_generation(&self, key: &StreamKey, generation: u64) {
        let mut streams = self.streams.write();
        if streams.get(key).is_some_and(|e| e.generation == generation) {
            streams.remove(key);
            drop(streams);
            self.changes.send_modify(|n| *n += 1);
        }
    }
}
