//! Refusals of clients that went over a limit: counted by limit in
//! `zenlive_refusals_total{limit}` and logged at most once per client address and limit
//! every [`LOG_INTERVAL`], so a client hammering a limit cannot flood the log.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{IntCounterVec, Opts};

/// How often one client's refusals under one limit are logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Most (address, limit) pairs remembered for log throttling; beyond it the oldest go.
const MAX_REMEMBERED: usize = 4096;

/// A limit a client can run into. Its [`Limit::as_str`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// A chat WebSocket frame over `chat.max_frame`.
    ChatFrame,
    /// `chat.max_rooms`: the node hosts as many rooms as it may.
    ChatRooms,
    /// `chat.max_rooms_per_address`: one address opened as many rooms as it may.
    ChatRoomsPerAddress,
    /// A room for a stream that is not live, asked for without a token.
    ChatRoomNotLive,
    /// `rtmp.max_connections`.
    RtmpConnections,
    /// `rtmp.max_pending_per_address`: connections of one address not admitted yet.
    RtmpPendingPerAddress,
    /// `rtmp.max_partial_bytes`: the node's budget for partially received RTMP messages.
    RtmpPartialBytes,
    /// Links from other nodes beyond the cluster's cap.
    ClusterLinks,
    /// A cluster handshake that failed (wrong secret, malformed, too slow).
    ClusterHandshake,
}

impl Limit {
    /// Every limit, in label order.
    pub const ALL: [Self; 9] = [
        Self::ChatFrame,
        Self::ChatRooms,
        Self::ChatRoomsPerAddress,
        Self::ChatRoomNotLive,
        Self::RtmpConnections,
        Self::RtmpPendingPerAddress,
        Self::RtmpPartialBytes,
        Self::ClusterLinks,
        Self::ClusterHandshake,
    ];

    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatFrame => "chat_frame",
            Self::ChatRooms => "chat_rooms",
            Self::ChatRoomsPerAddress => "chat_rooms_per_address",
            Self::ChatRoomNotLive => "chat_room_not_live",
            Self::RtmpConnections => "rtmp_connections",
            Self::RtmpPendingPerAddress => "rtmp_pending_per_address",
            Self::RtmpPartialBytes => "rtmp_partial_bytes",
            Self::ClusterLinks => "cluster_links",
            Self::ClusterHandshake => "cluster_handshake",
        }
    }
}

/// Counts and logs refusals. See the module docs.
pub struct Refusals {
    counter: IntCounterVec,
    logged: Mutex<HashMap<(IpAddr, &'static str), Instant>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self::new()
    }
}

impl Refusals {
    /// Counters at zero for every limit.
    pub fn new() -> Self {
        let counter = IntCounterVec::new(
            Opts::new(
                "zenlive_refusals_total",
                "Clients refused for going over a limit, by limit (see docs/security.md).",
            ),
            &["limit"],
        )
        .expect("valid metric options");
        for limit in Limit::ALL {
            counter.with_label_values(&[limit.as_str()]);
        }
        Self { counter, logged: Mutex::default() }
    }

    /// The counter, to register with the node's metrics.
    pub fn collector(&self) -> Box<dyn prometheus::core::Collector> {
        Box::new(self.counter.clone())
    }

    /// How many refusals `limit` has counted.
    pub fn count(&self, limit: Limit) -> u64 {
        self.counter.with_label_values(&[limit.as_str()]).get()
    }

    /// Counts a refusal of `peer` under `limit`, and logs it with `detail` unless this
    /// peer's refusals under this limit were logged less than [`LOG_INTERVAL`] ago.
    pub fn refuse(&self, peer: Option<IpAddr>, limit: Limit, detail: impl fmt::Display) {
        self.counter.with_label_values(&[limit.as_str()]).inc();
        if !self.should_log(peer, limit.as_str()) {
            return;
        }
        let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        tracing::warn!(%peer, limit = limit.as_str(), "refused: {detail} (further refusals of this client under this limit are counted, and logged at most once a minute)");
    }

    /// Whether a refusal of `peer` for `reason` is to be logged now: not if one was logged
    /// less than [`LOG_INTERVAL`] ago. For refusals counted elsewhere (RTMP bad input).
    pub fn should_log(&self, peer: Option<IpAddr>, reason: &'static str) -> bool {
        self.due(peer.unwrap_or(IpAddr::from([0, 0, 0, 0])), reason, Instant::now())
    }

    /// Whether a refusal of `ip` for `reason` at `now` is to be logged (and notes it).
    fn due(&self, ip: IpAddr, reason: &'static str, now: Instant) -> bool {
        let mut logged = self.logged.lock();
        if let Some(last) = logged.get(&(ip, reason)) {
            if now.saturating_duration_since(*last) < LOG_INTERVAL {
                return false;
            }
        }
        if logged.len() >= MAX_REMEMBERED {
            logged.retain(|_, last| now.saturating_duration_since(*last) < LOG_INTERVAL);
            if logged.len() >= MAX_REMEMBERED {
                // Thousands of addresses refused within a minute: forget them all rather
                // than grow; at worst each is logged once more.
                logged.clear();
            }
        }
        logged.insert((ip, reason), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_logged_once_a_minute_per_limit() {
        let refusals = Refusals::new();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let t = Instant::now();
        let frame = Limit::ChatFrame.as_str();
        assert!(refusals.due(a, frame, t));
        assert!(!refusals.due(a, frame, t + Duration::from_secs(1)));
        assert!(refusals.due(a, Limit::ChatRooms.as_str(), t), "another limit");
        assert!(refusals.due(b, frame, t), "another client");
        assert!(refusals.due(a, frame, t + LOG_INTERVAL));
        refusals.refuse(Some(a), Limit::ChatFrame, "x");
        refusals.refuse(Some(a), Limit::ChatFrame, "x");
        assert_eq!(refusals.count(Limit::ChatFrame), 2, "every refusal is counted");
    }

    #[test]
    fn the_log_memory_stays_bounded() {
        let refusals = Refusals::new();
        let t = Instant::now();
        for i in 0..(MAX_REMEMBERED as u32 * 2) {
            refusals.due(IpAddr::from(i.to_be_bytes()), "x", t);
        }
        assert!(refusals.logged.lock().len() <= MAX_REMEMBERED);
    }
}
