//! WebRTC's Prometheus series, registered with the node's metrics. Counters are atomics
//! resolved once (no label lookup per packet); sessions add their packet counts in batches.
//!
//! - `zenlive_webrtc_sessions{protocol}`: sessions open now (connected or not).
//! - `zenlive_webrtc_sessions_total{protocol}`: sessions accepted.
//! - `zenlive_webrtc_refused_total{protocol,reason}`: offers refused before a session.
//! - `zenlive_webrtc_rtp_packets_received_total{protocol}`, `..._rtp_bytes_received_total`:
//!   RTP received (after SRTP); bytes are the payload plus the 12-byte fixed header.
//! - `zenlive_webrtc_rtp_packets_sent_total{protocol}`, `..._rtp_bytes_sent_total`: RTP sent
//!   to WHEP viewers (before SRTP; retransmissions not included); bytes as above.
//! - `zenlive_webrtc_nacks_received_total{protocol}`: packets WHEP viewers asked to have
//!   sent again (RTCP NACK; the stack retransmits what it still holds).
//! - `zenlive_webrtc_plis_received_total{protocol}`: keyframe requests (RTCP PLI or FIR)
//!   from WHEP viewers.
//! - `zenlive_webrtc_keyframe_requests_total{protocol}`: keyframe requests sent: by a
//!   `whip` session to its publisher (PLI), by `whep` sessions to the stream's publisher
//!   (rate-limited, and only a WHIP publisher can act on one).
//! - `zenlive_webrtc_trickled_candidates_total{protocol}`: ICE candidates clients sent
//!   after their offer (`PATCH`; accepted, and needing nothing of an ICE-lite node).
//! - `zenlive_webrtc_ice_restarts_total{protocol}`: ICE restarts made (`PATCH` with new
//!   credentials).
//! - `zenlive_webrtc_frames_dropped_total{protocol,reason}`: access units the depacketizer
//!   dropped (`whip`: gap, malformed, unsupported, too_large, waiting for a keyframe), and
//!   frames not sent to WHEP viewers (`whep`: malformed, waiting for a keyframe, and
//!   `audio_queue_full`: transcoded Opus packets a viewer's full queue lost).
//! - `zenlive_webrtc_udp_dropped_total{reason}`: datagrams no session took (`unroutable`,
//!   `queue_full`).
//! - `zenlive_webrtc_tcp_connections`: ICE-TCP connections open now (`webrtc.tcp_addr`).
//! - `zenlive_webrtc_tcp_connections_total`: ICE-TCP connections accepted (refusals at the
//!   connection caps not included).
//! - `zenlive_webrtc_tcp_refused_total{reason}`: ICE-TCP connections closed early:
//!   `too_many`, `timeout` (no first frame in time), `oversized` (a frame longer than a
//!   packet), `not_stun`, `unknown_session` (the first frame names no session), `idle`.
//! - `zenlive_webrtc_frame_send_delay_seconds{protocol="whep"}`: a histogram of the time
//!   from a frame's arrival at a WHEP viewer's session (its viewer session handing it over)
//!   until the batch holding its first RTP packet was written to the UDP socket. One clock
//!   reading per frame and one per flush, not per packet.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

/// The series. See the module docs.
pub struct WebRtcStats {
    sessions: IntGaugeVec,
    sessions_total: IntCounterVec,
    refused: IntCounterVec,
    rtp_packets: IntCounterVec,
    rtp_bytes: IntCounterVec,
    keyframe_requests: IntCounterVec,
    rtp_packets_sent: IntCounterVec,
    rtp_bytes_sent: IntCounterVec,
    nacks: IntCounterVec,
    plis: IntCounterVec,
    trickled: IntCounterVec,
    ice_restarts: IntCounterVec,
    frames_dropped: IntCounterVec,
    udp_dropped: IntCounterVec,
    tcp_refused: IntCounterVec,
    /// ICE-TCP connections open now.
    pub tcp_connections: IntGauge,
    /// ICE-TCP connections accepted.
    pub tcp_connections_total: IntCounter,
    frame_send_delay: HistogramVec,
    /// WHEP: a frame's arrival at a viewer's session → its first RTP packet sent, seconds.
    pub whep_frame_send_delay: Histogram,
    /// `whip` children, resolved once.
    pub whip: ProtocolStats,
    /// `whep` children, resolved once.
    pub whep: ProtocolStats,
}

/// One protocol's children of the per-protocol series.
#[derive(Clone)]
pub struct ProtocolStats {
    /// Sessions open now.
    pub sessions: IntGauge,
    /// Sessions accepted.
    pub sessions_total: IntCounter,
    /// RTP packets received.
    pub rtp_packets: IntCounter,
    /// RTP bytes received.
    pub rtp_bytes: IntCounter,
    /// Keyframe requests sent.
    pub keyframe_requests: IntCounter,
    /// RTP packets sent.
    pub rtp_packets_sent: IntCounter,
    /// RTP bytes sent.
    pub rtp_bytes_sent: IntCounter,
    /// Packets asked for again (NACK).
    pub nacks: IntCounter,
    /// Keyframe requests received (PLI, FIR).
    pub plis: IntCounter,
    /// Candidates trickled by clients.
    pub trickled_candidates: IntCounter,
    /// ICE restarts made.
    pub ice_restarts: IntCounter,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // The names and labels are literals of this module: valid.
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric options")
}

impl Default for WebRtcStats {
    fn default() -> Self {
        Self::new()
    }
}

impl WebRtcStats {
    /// Fresh series (zero).
    pub fn new() -> Self {
        let sessions = IntGaugeVec::new(
            Opts::new("zenlive_webrtc_sessions", "WebRTC sessions open now, by protocol."),
            &["protocol"],
        )
        .expect("valid metric options");
        let sessions_total = counter_vec(
            "zenlive_webrtc_sessions_total",
            "WebRTC sessions accepted, by protocol.",
            &["protocol"],
        );
        let refused = counter_vec(
            "zenlive_webrtc_refused_total",
            "WHIP/WHEP offers refused before a session started, by protocol and reason.",
            &["protocol", "reason"],
        );
        let rtp_packets = counter_vec(
            "zenlive_webrtc_rtp_packets_received_total",
            "RTP packets received from WebRTC peers, by protocol.",
            &["protocol"],
        );
        let rtp_bytes = counter_vec(
            "zenlive_webrtc_rtp_bytes_received_total",
            "RTP bytes (payload plus the 12-byte fixed header, after SRTP) received from WebRTC peers, by protocol.",
            &["protocol"],
        );
        let keyframe_requests = counter_vec(
            "zenlive_webrtc_keyframe_requests_total",
            "Keyframe requests sent to publishers (PLI from WHIP sessions; requests WHEP viewers passed on), by protocol.",
            &["protocol"],
        );
        let rtp_packets_sent = counter_vec(
            "zenlive_webrtc_rtp_packets_sent_total",
            "RTP packets sent to WebRTC viewers (retransmissions not included), by protocol.",
            &["protocol"],
        );
        let rtp_bytes_sent = counter_vec(
            "zenlive_webrtc_rtp_bytes_sent_total",
            "RTP bytes (payload plus the 12-byte fixed header, before SRTP) sent to WebRTC viewers, by protocol.",
            &["protocol"],
        );
        let nacks = counter_vec(
            "zenlive_webrtc_nacks_received_total",
            "RTP packets WebRTC viewers asked to be sent again (RTCP NACK), by protocol.",
            &["protocol"],
        );
        let plis = counter_vec(
            "zenlive_webrtc_plis_received_total",
            "Keyframe requests (RTCP PLI or FIR) received from WebRTC viewers, by protocol.",
            &["protocol"],
        );
        let trickled = counter_vec(
            "zenlive_webrtc_trickled_candidates_total",
            "ICE candidates WebRTC clients trickled after their offer (PATCH), by protocol.",
            &["protocol"],
        );
        let ice_restarts = counter_vec(
            "zenlive_webrtc_ice_restarts_total",
            "ICE restarts WebRTC clients asked for (PATCH with new credentials) and got, by protocol.",
            &["protocol"],
        );
        let frames_dropped = counter_vec(
            "zenlive_webrtc_frames_dropped_total",
            "Frames dropped, by protocol and reason: H.264 access units at WHIP ingest (lost packets, malformed or oversized input, waiting for a keyframe); frames not sent to WHEP viewers (malformed, waiting for a keyframe, audio_queue_full: transcoded Opus a full viewer queue lost).",
            &["protocol", "reason"],
        );
        let udp_dropped = counter_vec(
            "zenlive_webrtc_udp_dropped_total",
            "UDP datagrams on the WebRTC port that no session took, by reason.",
            &["reason"],
        );
        let frame_send_delay = HistogramVec::new(
            HistogramOpts::new(
                "zenlive_webrtc_frame_send_delay_seconds",
                "Time from a frame's arrival at a WebRTC viewer's session until its first RTP packet was sent, by protocol.",
            )
            .buckets(vec![
                0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5,
            ]),
            &["protocol"],
        )
        .expect("valid histogram options");
        let whep_frame_send_delay = frame_send_delay.with_label_values(&["whep"]);
        for reason in ["unroutable", "queue_full"] {
            udp_dropped.with_label_values(&[reason]);
        }
        let tcp_refused = counter_vec(
            "zenlive_webrtc_tcp_refused_total",
            "ICE-TCP connections closed early (too_many, timeout, oversized, not_stun, unknown_session, idle), by reason.",
            &["reason"],
        );
        for refusal in super::tcp::Refusal::ALL {
            tcp_refused.with_label_values(&[refusal.reason()]);
        }
        let tcp_connections = IntGauge::new(
            "zenlive_webrtc_tcp_connections",
            "ICE-TCP connections open now on the WebRTC TCP port.",
        )
        .expect("valid metric options");
        let tcp_connections_total = IntCounter::new(
            "zenlive_webrtc_tcp_connections_total",
            "ICE-TCP connections accepted on the WebRTC TCP port.",
        )
        .expect("valid metric options");
        let children = |protocol: &str| ProtocolStats {
            sessions: sessions.with_label_values(&[protocol]),
            sessions_total: sessions_total.with_label_values(&[protocol]),
            rtp_packets: rtp_packets.with_label_values(&[protocol]),
            rtp_bytes: rtp_bytes.with_label_values(&[protocol]),
            keyframe_requests: keyframe_requests.with_label_values(&[protocol]),
            rtp_packets_sent: rtp_packets_sent.with_label_values(&[protocol]),
            rtp_bytes_sent: rtp_bytes_sent.with_label_values(&[protocol]),
            nacks: nacks.with_label_values(&[protocol]),
            plis: plis.with_label_values(&[protocol]),
            trickled_candidates: trickled.with_label_values(&[protocol]),
            ice_restarts: ice_restarts.with_label_values(&[protocol]),
        };
        let (whip, whep) = (children("whip"), children("whep"));
        Self {
            sessions,
            sessions_total,
            refused,
            rtp_packets,
            rtp_bytes,
            keyframe_requests,
            rtp_packets_sent,
            rtp_bytes_sent,
            nacks,
            plis,
            trickled,
            ice_restarts,
            frames_dropped,
            udp_dropped,
            tcp_refused,
            tcp_connections,
            tcp_connections_total,
            frame_send_delay,
            whep_frame_send_delay,
            whip,
            whep,
        }
    }

    /// The collectors, to register with the node's metrics.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.sessions.clone()),
            Box::new(self.sessions_total.clone()),
            Box::new(self.refused.clone()),
            Box::new(self.rtp_packets.clone()),
            Box::new(self.rtp_bytes.clone()),
            Box::new(self.keyframe_requests.clone()),
            Box::new(self.rtp_packets_sent.clone()),
            Box::new(self.rtp_bytes_sent.clone()),
            Box::new(self.nacks.clone()),
            Box::new(self.plis.clone()),
            Box::new(self.trickled.clone()),
            Box::new(self.ice_restarts.clone()),
            Box::new(self.frames_dropped.clone()),
            Box::new(self.udp_dropped.clone()),
            Box::new(self.tcp_refused.clone()),
            Box::new(self.tcp_connections.clone()),
            Box::new(self.tcp_connections_total.clone()),
            Box::new(self.frame_send_delay.clone()),
        ]
    }

    /// Counts an offer refused for `reason` (a refusal's code).
    pub fn refused(&self, protocol: &str, reason: &str) {
        self.refused.with_label_values(&[protocol, reason]).inc();
    }

    /// The children of `protocol` (`whip` or `whep`).
    pub fn of(&self, protocol: zenlive_actors::Protocol) -> &ProtocolStats {
        match protocol {
            zenlive_actors::Protocol::Whep => &self.whep,
            _ => &self.whip,
        }
    }

    /// Counts `n` access units dropped for `reason`.
    pub fn frames_dropped(&self, protocol: &str, reason: &str, n: u64) {
        if n > 0 {
            self.frames_dropped.with_label_values(&[protocol, reason]).inc_by(n);
        }
    }

    /// Counts a datagram no session took.
    pub fn udp_dropped(&self, reason: &str) {
        self.udp_dropped.with_label_values(&[reason]).inc();
    }

    /// Counts an ICE-TCP connection closed early for `reason`.
    pub fn tcp_refused(&self, reason: &str) {
        self.tcp_refused.with_label_values(&[reason]).inc();
    }
}
