//! What the node tells the application ([`StreamEvent`] through an [`EventSink`]) and the
//! node-wide counters ([`NodeCounters`]) that metrics export.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::key::StreamKey;
use crate::Protocol;

/// A stream's life, as the application sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A publisher started a stream.
    Started {
        /// The stream.
        key: StreamKey,
        /// How the publisher connected.
        protocol: Protocol,
        /// The publisher's address.
        peer: Option<SocketAddr>,
        /// When.
        at: SystemTime,
    },
    /// A stream ended (publisher left, was kicked, or timed out).
    Ended {
        /// The stream.
        key: StreamKey,
        /// How long it was live.
        duration: Duration,
        /// Media bytes received from the publisher.
        bytes_in: u64,
        /// Media frames received.
        frames_in: u64,
        /// Why it ended.
        reason: String,
    },
}

impl StreamEvent {
    /// The stream this event is about.
    pub fn key(&self) -> &StreamKey {
        match self {
            Self::Started { key, .. } | Self::Ended { key, .. } => key,
        }
    }
}

/// Receives stream events. Called on actor threads: implementations must return quickly
/// (hand slow work to a task of their own).
pub trait EventSink: Send + Sync + 'static {
    /// One event, in order per stream.
    fn stream_event(&self, event: &StreamEvent);
}

/// A sink that drops every event.
pub struct NoEvents;

impl EventSink for NoEvents {
    fn stream_event(&self, _event: &StreamEvent) {}
}

/// Node-wide counters, updated lock-free from any thread.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Stream actors restarted after a crash.
    pub stream_restarts: AtomicU64,
    /// Viewers disconnected because they stayed behind.
    pub viewers_dropped_slow: AtomicU64,
    /// Frames skipped for viewers that fell behind.
    pub frames_skipped: AtomicU64,
    /// Connections closed for bad input (protocol violations, oversized messages).
    pub bad_input_rejections: AtomicU64,
}

impl NodeCounters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
