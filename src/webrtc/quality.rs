//! Per-stream WebRTC round-trip time and packet loss, for `whep` (what the viewers' RTCP
//! receiver reports say of what the node sent) and `whip` (what the node's own receive
//! statistics say of what a publisher sent).
//!
//! Series, labelled `{stream, protocol}`:
//! - `zenlive_webrtc_stream_rtt_seconds`: a histogram of round-trip times, one observation
//!   per receiver report block that carries a timing (`LSR` ≠ 0).
//! - `zenlive_webrtc_stream_rtt_last_seconds`: the last round-trip time measured by any
//!   session of the stream.
//! - `zenlive_webrtc_stream_packets_lost_total`: RTP packets reported lost: for `whep` the
//!   increases of each viewer's cumulative lost count (RTCP RR; a packet recovered by a NACK
//!   retransmission before the next report is not counted), for `whip` the increases of
//!   the node's own count for the publisher's tracks (`rtc`'s inbound-rtp `packetsLost`,
//!   polled every [`POLL`]).
//! - `zenlive_webrtc_stream_fraction_lost`: the last loss fraction (0–1) a receiver report
//!   gave (`whep` only: the fraction since the viewer's previous report).
//!
//! Why the round trip is computed here: `rtc` 0.21 reads receiver reports into its stats
//! with a round-trip time of 0 ("would require additional tracking"), so a WHEP session
//! reads the reports itself (the [`super::feedback`] tap lets them through) and computes
//! RFC 3550's `A - LSR - DLSR`, `A` being now in the NTP clock of the node's sender reports
//! (wall-clock based, as `rtc`'s sender-report interceptor stamps them). A WHIP publisher's
//! round trip would need its sender reports' DLRR blocks, which `rtc` does not read; no RTT
//! is exported for `whip`.
//!
//! Bounded: a stream's series set exists while at least one WebRTC session of that protocol
//! runs for it (each holds a [`QualityHandle`]) and is removed with the last one; so there
//! are at most as many sets as live streams with WebRTC sessions, themselves capped by
//! `webrtc.max_sessions`. Nothing here runs per RTP packet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
};
use rtc::rtcp::receiver_report::ReceiverReport;
use zenlive_actors::StreamKey;

/// How often a WHIP session reads its loss from `rtc`'s statistics.
pub const POLL: Duration = Duration::from_secs(5);

/// Round trips above this are taken as a bogus report (a client's clock arithmetic gone
/// wrong), not observed.
const MAX_RTT: f64 = 60.0;

const LABELS: &[&str] = &["stream", "protocol"];

/// The per-stream series. See the module docs.
pub struct StreamQuality {
    rtt: HistogramVec,
    rtt_last: GaugeVec,
    lost: IntCounterVec,
    fraction_lost: GaugeVec,
    /// Sessions holding each series set, by (stream, protocol).
    live: Mutex<HashMap<(String, &'static str), usize>>,
}

impl Default for StreamQuality {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamQuality {
    /// Fresh series (none: sets appear with their streams' first sessions).
    pub fn new() -> Self {
        // The names, labels and buckets are literals of this module: valid.
        let rtt = HistogramVec::new(
            HistogramOpts::new(
                "zenlive_webrtc_stream_rtt_seconds",
                "Round-trip times measured from WebRTC receiver reports (RFC 3550 A-LSR-DLSR), by stream and protocol.",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 3.0]),
            LABELS,
        )
        .expect("valid histogram options");
        let rtt_last = GaugeVec::new(
            Opts::new(
                "zenlive_webrtc_stream_rtt_last_seconds",
                "The last round-trip time measured by any WebRTC session of the stream, by protocol.",
            ),
            LABELS,
        )
        .expect("valid metric options");
        let lost = IntCounterVec::new(
            Opts::new(
                "zenlive_webrtc_stream_packets_lost_total",
                "RTP packets reported lost (whep: by the viewers' receiver reports; whip: by the node's receive statistics), by stream and protocol.",
            ),
            LABELS,
        )
        .expect("valid metric options");
        let fraction_lost = GaugeVec::new(
            Opts::new(
                "zenlive_webrtc_stream_fraction_lost",
                "The last loss fraction (0-1) a WebRTC viewer's receiver report gave, by stream and protocol.",
            ),
            LABELS,
        )
        .expect("valid metric options");
        Self { rtt, rtt_last, lost, fraction_lost, live: Mutex::new(HashMap::new()) }
    }

    /// The collectors, to register with the node's metrics.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.rtt.clone()),
            Box::new(self.rtt_last.clone()),
            Box::new(self.lost.clone()),
            Box::new(self.fraction_lost.clone()),
        ]
    }

    /// A session of `protocol` (`whip` or `whep`) for `key` starts: its handle to the
    /// stream's series (created with the first session).
    pub fn join(self: &Arc<Self>, key: &StreamKey, protocol: &'static str) -> QualityHandle {
        let stream = key.to_string();
        let mut live = self.live.lock();
        *live.entry((stream.clone(), protocol)).or_insert(0) += 1;
        let labels = [stream.as_str(), protocol];
        QualityHandle {
            rtt: self.rtt.with_label_values(&labels),
            rtt_last: self.rtt_last.with_label_values(&labels),
            lost: self.lost.with_label_values(&labels),
            fraction_lost: self.fraction_lost.with_label_values(&labels),
            owner: Arc::clone(self),
            stream,
            protocol,
        }
    }

    /// A session ended: the last one of its stream and protocol removes the series.
    fn leave(&self, stream: &str, protocol: &'static str) {
        let mut live = self.live.lock();
        let key = (stream.to_owned(), protocol);
        let Some(count) = live.get_mut(&key) else { return };
        *count -= 1;
        if *count > 0 {
            return;
        }
        live.remove(&key);
        let labels = [stream, protocol];
        // Under the lock: a session joining now creates them afresh after this.
        let _ = self.rtt.remove_label_values(&labels);
        let _ = self.rtt_last.remove_label_values(&labels);
        let _ = self.lost.remove_label_values(&labels);
        let _ = self.fraction_lost.remove_label_values(&labels);
    }

    /// How many series sets exist.
    pub fn len(&self) -> usize {
        self.live.lock().len()
    }

    /// Whether no series set exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One session's share of its stream's series; dropping the last of a stream's removes
/// them.
pub struct QualityHandle {
    rtt: Histogram,
    rtt_last: Gauge,
    lost: IntCounter,
    fraction_lost: Gauge,
    owner: Arc<StreamQuality>,
    stream: String,
    protocol: &'static str,
}

impl QualityHandle {
    /// Records a reading.
    pub fn record(&self, reading: &Reading) {
        for rtt in &reading.rtts {
            self.rtt.observe(*rtt);
            self.rtt_last.set(*rtt);
        }
        self.lost.inc_by(reading.lost);
        if let Some(fraction) = reading.fraction_lost {
            self.fraction_lost.set(fraction);
        }
    }

    /// Counts `n` packets lost.
    pub fn lost(&self, n: u64) {
        self.lost.inc_by(n);
    }
}

impl Drop for QualityHandle {
    fn drop(&mut self) {
        self.owner.leave(&self.stream, self.protocol);
    }
}

/// What one receiver report said about the node's streams.
#[derive(Debug, Default, PartialEq)]
pub struct Reading {
    /// Round-trip times, seconds (one per block with a timing).
    pub rtts: Vec<f64>,
    /// Packets newly reported lost.
    pub lost: u64,
    /// The last block's loss fraction.
    pub fraction_lost: Option<f64>,
}

/// A WHEP session's reader of its viewer's receiver reports (sans-IO): the blocks about
/// the SSRCs it sends, each SSRC's cumulative loss remembered to count increases.
#[derive(Debug, Default)]
pub struct ReportReader {
    /// (SSRC, its last cumulative lost count), for the session's (at most two) tracks.
    ssrcs: Vec<(u32, Option<u32>)>,
}

impl ReportReader {
    /// A reader of reports about `ssrcs`.
    pub fn new(ssrcs: impl IntoIterator<Item = u32>) -> Self {
        Self { ssrcs: ssrcs.into_iter().map(|s| (s, None)).collect() }
    }

    /// Reads `report`, received when the NTP clock's middle 32 bits read `now_ntp32`
    /// (see [`ntp32_now`]).
    pub fn read(&mut self, report: &ReceiverReport, now_ntp32: u32, reading: &mut Reading) {
        for block in &report.reports {
            let Some((_, last)) = self.ssrcs.iter_mut().find(|(ssrc, _)| *ssrc == block.ssrc)
            else {
                continue;
            };
            // 24 bits on the wire (signed: duplicates can make it negative, RFC 3550 6.4.1).
            let total = block.total_lost & 0x00ff_ffff;
            let negative = total & 0x0080_0000 != 0;
            let total = if negative { 0 } else { total };
            let previous = last.unwrap_or(0);
            reading.lost += u64::from(total.saturating_sub(previous));
            *last = Some(total);
            reading.fraction_lost = Some(f64::from(block.fraction_lost) / 256.0);
            if let Some(rtt) = round_trip(now_ntp32, block.last_sender_report, block.delay) {
                reading.rtts.push(rtt);
            }
        }
    }
}

/// RFC 3550's round trip `A - LSR - DLSR` in seconds (all in 1/65536 s), or `None` when the
/// block has no timing (`LSR` 0) or the result is not plausible.
pub fn round_trip(now_ntp32: u32, lsr: u32, dlsr: u32) -> Option<f64> {
    if lsr == 0 {
        return None;
    }
    let units = now_ntp32.wrapping_sub(lsr).wrapping_sub(dlsr);
    // A "negative" result (clock steps, a bogus report) wraps to a huge value.
    let rtt = f64::from(units) / 65536.0;
    (rtt < MAX_RTT).then_some(rtt)
}

/// The middle 32 bits of the NTP time now (16.16 seconds), in the clock `rtc` stamps its
/// sender reports with (the system's wall clock).
pub fn ntp32_now() -> u32 {
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (rtc::shared::time::SystemInstant::unix2ntp(unix) >> 16) as u32
}

/// Packets a WHIP session's publisher lost, newly (sans-IO): the increase of the sum of
/// `rtc`'s inbound-rtp `packetsLost` since the last call.
#[derive(Debug, Default)]
pub struct InboundLoss {
    last: i64,
}

impl InboundLoss {
    /// The increase to `total` (the sum over the tracks now).
    pub fn update(&mut self, total: i64) -> u64 {
        let increase = total.saturating_sub(self.last);
        self.last = self.last.max(total);
        u64::try_from(increase).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rtc::rtcp::reception_report::ReceptionReport;

    use super::*;

    fn block(ssrc: u32, total_lost: u32, fraction: u8, lsr: u32, dlsr: u32) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            fraction_lost: fraction,
            total_lost,
            last_sequence_number: 0,
            jitter: 0,
            last_sender_report: lsr,
            delay: dlsr,
        }
    }

    fn report(blocks: Vec<ReceptionReport>) -> ReceiverReport {
        ReceiverReport { ssrc: 99, reports: blocks, ..Default::default() }
    }

    #[test]
    fn the_round_trip_is_now_minus_lsr_minus_dlsr() {
        // 1.5 s after the SR, the viewer waited 1 s: 0.5 s.
        let lsr = 0x1234_0000;
        assert_eq!(round_trip(lsr + 0x0001_8000, lsr, 0x0001_0000), Some(0.5));
        assert_eq!(round_trip(123, 0, 0), None, "no sender report yet");
        assert_eq!(round_trip(lsr, lsr, 0x10), None, "a negative result is refused");
        // Across the 16-bit seconds wrap.
        assert_eq!(round_trip(0x0000_4000, 0xffff_c000, 0), Some(0.5));
    }

    #[test]
    fn losses_count_increases_of_our_ssrcs_only() {
        let mut reader = ReportReader::new([7, 8]);
        let mut reading = Reading::default();
        reader.read(&report(vec![block(7, 3, 64, 0, 0), block(5, 100, 0, 0, 0)]), 0, &mut reading);
        assert_eq!(reading.lost, 3);
        assert_eq!(reading.fraction_lost, Some(0.25));
        let mut reading = Reading::default();
        reader.read(&report(vec![block(7, 5, 0, 0, 0), block(8, 1, 0, 0, 0)]), 0, &mut reading);
        assert_eq!(reading.lost, 3, "7 went 3 → 5, 8 0 → 1");
        let mut reading = Reading::default();
        reader.read(&report(vec![block(7, 4, 0, 0, 0)]), 0, &mut reading);
        assert_eq!(reading.lost, 0, "a decrease (retransmissions arrived) is not negative loss");
        let mut reading = Reading::default();
        reader.read(&report(vec![block(7, 0x00ff_fff0, 0, 0, 0)]), 0, &mut reading);
        assert_eq!(reading.lost, 0, "a negative 24-bit count is none");
    }

    #[test]
    fn a_reading_with_timing_has_a_round_trip() {
        let mut reader = ReportReader::new([7]);
        let mut reading = Reading::default();
        let lsr = 0x0100_0000;
        reader.read(&report(vec![block(7, 0, 0, lsr, 0x8000)]), lsr + 0x8000 + 655, &mut reading);
        assert_eq!(reading.rtts.len(), 1);
        assert!((reading.rtts[0] - 0.01).abs() < 0.0001);
    }

    #[test]
    fn the_last_session_of_a_stream_removes_its_series() {
        let quality = Arc::new(StreamQuality::new());
        let key = StreamKey::new("live", "a").expect("a valid name");
        let first = quality.join(&key, "whep");
        let second = quality.join(&key, "whep");
        let whip = quality.join(&key, "whip");
        first.record(&Reading { rtts: vec![0.02], lost: 4, fraction_lost: Some(0.1) });
        let names = |q: &StreamQuality| -> usize {
            q.collectors().iter().flat_map(|c| c.collect()).map(|f| f.get_metric().len()).sum()
        };
        assert_eq!(names(&quality), 8, "four series for whep, four for whip");
        drop(first);
        assert_eq!(quality.len(), 2);
        assert_eq!(names(&quality), 8, "the whep viewer left is still counted by the other");
        drop(second);
        drop(whip);
        assert!(quality.is_empty());
        assert_eq!(names(&quality), 0, "gone with the last session");
        // A new session starts from zero.
        let again = quality.join(&key, "whep");
        assert_eq!(again.lost.get(), 0);
    }

    #[test]
    fn inbound_loss_counts_increases() {
        let mut loss = InboundLoss::default();
        assert_eq!(loss.update(0), 0);
        assert_eq!(loss.update(5), 5);
        assert_eq!(loss.update(3), 0, "a decrease (late packets) is none");
        assert_eq!(loss.update(7), 2);
    }

    proptest! {
        #[test]
        fn any_report_never_panics(
            blocks in proptest::collection::vec(
                (any::<u32>(), any::<u32>(), any::<u8>(), any::<u32>(), any::<u32>()), 0..8),
            now in any::<u32>(),
        ) {
            let mut reader = ReportReader::new([blocks.first().map_or(0, |b| b.0)]);
            let blocks = blocks.into_iter().map(|(s, t, f, l, d)| block(s, t, f, l, d)).collect();
            let mut reading = Reading::default();
            reader.read(&report(blocks), now, &mut reading);
            prop_assert!(reading.rtts.iter().all(|r| (0.0..MAX_RTT).contains(r)));
        }
    }
}
