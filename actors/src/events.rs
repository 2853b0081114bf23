//! What the node tells the application ([`StreamEvent`] through an [`EventSink`]) and the
//! node-wide counters ([`NodeCounters`]) that metrics export.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::key::StreamKey;
use crate::protocol::Protocol;

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
        /// Who publishes (a token's `sub`), when auth identified them.
        user: Option<String>,
        /// When.
        at: SystemTime,
    },
    /// A stream ended (publisher left, was kicked, or timed out).
    Ended {
        /// The stream.
        key: StreamKey,
        /// How the publisher connected.
        protocol: Protocol,
        /// The publisher's address.
        peer: Option<SocketAddr>,
        /// Who published (a token's `sub`), when auth identified them.
        user: Option<String>,
        /// How long it was live.
        duration: Duration,
        /// Media bytes received from the publisher.
        bytes_in: u64,
        /// Bytes delivered to viewers, all protocols.
        bytes_out: u64,
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

    /// How the stream's publisher connected.
    pub fn protocol(&self) -> Protocol {
        match self {
            Self::Started { protocol, .. } | Self::Ended { protocol, .. } => *protocol,
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

/// Why a connection was closed for bad input: the label of the rejection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The handshake was malformed.
    Handshake,
    /// The handshake did not complete in time (slowloris).
    HandshakeTimeout,
    /// No data arrived for the idle timeout.
    IdleTimeout,
    /// A chunk size of 0 or above the limit.
    ChunkSize,
    /// A message longer than its type allows.
    MessageTooLarge,
    /// A message type the protocol does not define.
    UnknownMessageType,
    /// Too many chunk streams or bytes of half-received messages.
    TooMuchBuffered,
    /// Anything else the protocol forbids (a malformed message, a command out of order).
    Malformed,
    /// A codec the node does not accept.
    UnsupportedCodec,
}

impl RejectReason {
    /// Every reason, in label order.
    pub const ALL: [Self; 9] = [
        Self::Handshake,
        Self::HandshakeTimeout,
        Self::IdleTimeout,
        Self::ChunkSize,
        Self::MessageTooLarge,
        Self::UnknownMessageType,
        Self::TooMuchBuffered,
        Self::Malformed,
        Self::UnsupportedCodec,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::ChunkSize => "chunk_size",
            Self::MessageTooLarge => "message_too_large",
            Self::UnknownMessageType => "unknown_message_type",
            Self::TooMuchBuffered => "too_much_buffered",
            Self::Malformed => "malformed",
            Self::UnsupportedCodec => "unsupported_codec",
        }
    }
}

/// The kinds of connection the node counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionKind {
    /// RTMP (publishers, players, and connections still handshaking).
    Rtmp,
    /// HTTP on the media port (HLS, HTTP-FLV, API).
    Http,
    /// Links from other cluster nodes (messages and relays).
    Cluster,
}

impl ConnectionKind {
    /// Every kind, in label order.
    pub const ALL: [Self; 3] = [Self::Rtmp, Self::Http, Self::Cluster];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rtmp => "rtmp",
            Self::Http => "http",
            Self::Cluster => "cluster",
        }
    }
}

/// The kinds of actor the node counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorType {
    /// [`crate::StreamActor`].
    Stream,
    /// [`crate::ViewerSession`] (players and the HLS packagers).
    Viewer,
    /// [`crate::chat::ChatRoom`].
    ChatRoom,
    /// A chat member's WebSocket session.
    ChatMember,
}

impl ActorType {
    /// Every kind, in label order.
    pub const ALL: [Self; 4] = [Self::Stream, Self::Viewer, Self::ChatRoom, Self::ChatMember];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Viewer => "viewer",
            Self::ChatRoom => "chat_room",
            Self::ChatMember => "chat_member",
        }
    }
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
    /// Connections closed for bad input (protocol violations, oversized messages), all
    /// reasons together.
    pub bad_input_rejections: AtomicU64,
    /// Chat members disconnected because they did not read.
    pub chat_members_dropped_slow: AtomicU64,
    /// Chat messages accepted and broadcast (members' and the application's).
    pub chat_messages: AtomicU64,
    /// Chat frames queued to members (every event to every member).
    pub chat_deliveries: AtomicU64,
    /// Actor leases found lapsed or taken over at renewal (cluster self-fencing).
    pub lease_losses: AtomicU64,
    rejections: [AtomicU64; RejectReason::ALL.len()],
    connections: [AtomicU64; ConnectionKind::ALL.len()],
    actors: [AtomicU64; ActorType::ALL.len()],
    /// Crashes of outputs and viewer sessions, by kind (an output's name, or `viewer`);
    /// stream actors count in `stream_restarts`. Written only when something crashed.
    crashes: parking_lot::Mutex<std::collections::BTreeMap<&'static str, u64>>,
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

    /// Counts a crash of an actor of `kind` other than a stream (an output, restarted; a
    /// viewer session, whose connection closes).
    pub fn restarted(&self, kind: &'static str) {
        *self.crashes.lock().entry(kind).or_default() += 1;
    }

    /// Restarts after a crash, by kind, streams included.
    pub fn restarts(&self) -> Vec<(&'static str, u64)> {
        let mut all = vec![("stream", Self::get(&self.stream_restarts))];
        all.extend(self.crashes.lock().iter().map(|(kind, n)| (*kind, *n)));
        all
    }

    /// Counts a connection closed for bad input.
    pub fn reject(&self, reason: RejectReason) {
        Self::add(&self.bad_input_rejections, 1);
        Self::add(&self.rejections[reason as usize], 1);
    }

    /// Connections closed for bad input, by reason.
    pub fn rejections(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL.into_iter().map(|r| (r, Self::get(&self.rejections[r as usize])))
    }

    /// Counts an open connection until the guard drops.
    pub fn connection(self: &Arc<Self>, kind: ConnectionKind) -> Gauge {
        Gauge::new(Arc::clone(self), Slot::Connection(kind))
    }

    /// Open connections, by kind.
    pub fn connections(&self) -> impl Iterator<Item = (ConnectionKind, u64)> + '_ {
        ConnectionKind::ALL.into_iter().map(|k| (k, Self::get(&self.connections[k as usize])))
    }

    /// Counts a live actor until the guard drops (an actor holds it as a field, so a panic
    /// that drops the actor also ends the count).
    pub fn actor(self: &Arc<Self>, kind: ActorType) -> Gauge {
        Gauge::new(Arc::clone(self), Slot::Actor(kind))
    }

    /// Live actors, by kind.
    pub fn actors(&self) -> impl Iterator<Item = (ActorType, u64)> + '_ {
        ActorType::ALL.into_iter().map(|k| (k, Self::get(&self.actors[k as usize])))
    }

    fn slot(&self, slot: Slot) -> &AtomicU64 {
        match slot {
            Slot::Connection(kind) => &self.connections[kind as usize],
            Slot::Actor(kind) => &self.actors[kind as usize],
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Connection(ConnectionKind),
    Actor(ActorType),
}

/// Holds one unit of a [`NodeCounters`] gauge; dropping it gives the unit back.
#[derive(Debug)]
pub struct Gauge {
    counters: Arc<NodeCounters>,
    slot: Slot,
}

impl Gauge {
    fn new(counters: Arc<NodeCounters>, slot: Slot) -> Self {
        NodeCounters::add(counters.slot(slot), 1);
        Self { counters, slot }
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.counters.slot(self.slot).fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_count_while_held() {
        let counters = Arc::new(NodeCounters::default());
        let a = counters.connection(ConnectionKind::Rtmp);
        let b = counters.connection(ConnectionKind::Rtmp);
        let c = counters.actor(ActorType::Viewer);
        let count = |k| counters.connections().find(|(kind, _)| *kind == k).map(|(_, n)| n);
        assert_eq!(count(ConnectionKind::Rtmp), Some(2));
        drop(a);
        assert_eq!(count(ConnectionKind::Rtmp), Some(1));
        drop((b, c));
        assert!(counters.actors().all(|(_, n)| n == 0));
    }

    #[test]
    fn rejections_count_by_reason_and_in_total() {
        let counters = NodeCounters::default();
        counters.reject(RejectReason::ChunkSize);
        counters.reject(RejectReason::ChunkSize);
        counters.reject(RejectReason::HandshakeTimeout);
        let by: Vec<_> = counters.rejections().filter(|(_, n)| *n > 0).collect();
        assert_eq!(by, [(RejectReason::HandshakeTimeout, 1), (RejectReason::ChunkSize, 2)]);
        assert_eq!(NodeCounters::get(&counters.bad_input_rejections), 3);
    }
}
