//! The audio transcoders' Prometheus series, by direction (`opus_to_aac`: WHIP publishers'
//! Opus for RTMP, HTTP-FLV, HLS, recording and relays; `aac_to_opus`: RTMP publishers' AAC
//! for WHEP viewers). Transcoders keep plain counters ([`Counters`]); their owner adds the
//! growth since its last report ([`DirectionStats::report`]) after each push.
//!
//! - `zenlive_transcode_cpu_seconds_total{direction}`: time spent decoding, resampling and
//!   encoding (on the session's task: the work never waits for anything).
//! - `zenlive_transcode_frames_in_total{direction}`, `..._frames_out_total`: frames taken
//!   and produced.
//! - `zenlive_transcode_errors_total{direction}`: input frames that did not decode (their
//!   time is filled), caught codec panics, encoder failures.
//! - `zenlive_transcode_late_frames_total{direction}`: duplicates and late frames dropped.
//! - `zenlive_transcode_concealed_seconds_total{direction}`: gaps in the input (lost
//!   packets, pauses) filled by concealment or silence.
//! - `zenlive_transcode_resyncs_total{direction}`: timeline re-anchors after a jump.
//! - `zenlive_transcode_active{direction}`: transcoders running now.

use prometheus::core::Collector;
use prometheus::{Counter, CounterVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use zenlive_transcode::Counters;

/// The series. See the module docs.
pub struct TranscodeStats {
    floats: [CounterVec; 2],
    ints: [IntCounterVec; 5],
    active: IntGaugeVec,
    /// Opus → AAC (WHIP ingest).
    pub opus_to_aac: DirectionStats,
    /// AAC → Opus (WHEP playback of RTMP streams).
    pub aac_to_opus: DirectionStats,
}

/// One direction's children.
#[derive(Clone)]
pub struct DirectionStats {
    cpu: Counter,
    frames_in: IntCounter,
    frames_out: IntCounter,
    errors: IntCounter,
    late: IntCounter,
    concealed: Counter,
    resyncs: IntCounter,
    /// Transcoders running now.
    pub active: IntGauge,
}

/// Counts one running transcoder in `zenlive_transcode_active` until dropped.
pub struct Active(IntGauge);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl DirectionStats {
    /// Counts a transcoder as running until the guard is dropped.
    pub fn start(&self) -> Active {
        self.active.inc();
        Active(self.active.clone())
    }

    /// Counts a failure the transcoder's own counters do not hold (a panic caught around
    /// it).
    pub fn failed(&self) {
        self.errors.inc();
    }

    /// Adds what a transcoder did between the counters `before` and `now`; `rate` is its
    /// input's sample rate (for the concealed seconds).
    pub fn report(&self, before: &Counters, now: &Counters, rate: u32) {
        let secs = now.busy.saturating_sub(before.busy).as_secs_f64();
        if secs > 0.0 {
            self.cpu.inc_by(secs);
        }
        let grew = |a: u64, b: u64| b.saturating_sub(a);
        self.frames_in.inc_by(grew(before.frames_in, now.frames_in));
        self.frames_out.inc_by(grew(before.frames_out, now.frames_out));
        self.errors.inc_by(grew(before.errors, now.errors));
        self.late.inc_by(grew(before.late, now.late));
        self.resyncs.inc_by(grew(before.resyncs, now.resyncs));
        let concealed = grew(before.concealed_samples, now.concealed_samples);
        if concealed > 0 {
            self.concealed.inc_by(concealed as f64 / f64::from(rate.max(1)));
        }
    }
}

impl Default for TranscodeStats {
    fn default() -> Self {
        Self::new()
    }
}

impl TranscodeStats {
    /// Fresh series (zero), with both directions' children present.
    pub fn new() -> Self {
        // The names and labels are literals of this module: valid.
        let int = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["direction"]).expect("valid metric")
        };
        let float = |name: &str, help: &str| {
            CounterVec::new(Opts::new(name, help), &["direction"]).expect("valid metric")
        };
        let cpu = float(
            "zenlive_transcode_cpu_seconds_total",
            "Time spent transcoding audio (decode, resample, encode), by direction.",
        );
        let frames_in = int(
            "zenlive_transcode_frames_in_total",
            "Audio frames taken by transcoders, by direction.",
        );
        let frames_out = int(
            "zenlive_transcode_frames_out_total",
            "Audio frames produced by transcoders, by direction.",
        );
        let errors = int(
            "zenlive_transcode_errors_total",
            "Audio frames that did not decode (their time is filled), codec panics caught and encoder failures, by direction.",
        );
        let late = int(
            "zenlive_transcode_late_frames_total",
            "Duplicate or late audio frames dropped by transcoders, by direction.",
        );
        let concealed = float(
            "zenlive_transcode_concealed_seconds_total",
            "Gaps in transcoders' input (lost packets, pauses) filled by concealment or silence, by direction.",
        );
        let resyncs = int(
            "zenlive_transcode_resyncs_total",
            "Transcoder timelines re-anchored after a jump of the input's clock, by direction.",
        );
        let active = IntGaugeVec::new(
            Opts::new("zenlive_transcode_active", "Audio transcoders running now, by direction."),
            &["direction"],
        )
        .expect("valid metric");
        let direction = |name: &str| DirectionStats {
            cpu: cpu.with_label_values(&[name]),
            frames_in: frames_in.with_label_values(&[name]),
            frames_out: frames_out.with_label_values(&[name]),
            errors: errors.with_label_values(&[name]),
            late: late.with_label_values(&[name]),
            concealed: concealed.with_label_values(&[name]),
            resyncs: resyncs.with_label_values(&[name]),
            active: active.with_label_values(&[name]),
        };
        let opus_to_aac = direction("opus_to_aac");
        let aac_to_opus = direction("aac_to_opus");
        Self {
            floats: [cpu, concealed],
            ints: [frames_in, frames_out, errors, late, resyncs],
            active,
            opus_to_aac,
            aac_to_opus,
        }
    }

    /// The collectors, to register with the node's metrics.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        let mut out: Vec<Box<dyn Collector>> = Vec::new();
        out.extend(self.floats.iter().map(|c| Box::new(c.clone()) as Box<dyn Collector>));
        out.extend(self.ints.iter().map(|c| Box::new(c.clone()) as Box<dyn Collector>));
        out.push(Box::new(self.active.clone()));
        out
    }
}
