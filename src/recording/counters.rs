//! The recorder's Prometheus series. They are counted by the writer threads (off the media
//! path) and the sinks' overflow, and registered with the node's metrics at start.

use prometheus::core::Collector;
use prometheus::{IntCounter, IntGauge};

/// Node-wide recording counters. Cloning shares them.
#[derive(Clone)]
pub struct RecordingCounters {
    /// Segments finished (fsync'd and renamed).
    pub segments: IntCounter,
    /// Bytes written to segment files.
    pub bytes: IntCounter,
    /// Disk errors that stopped a stream's recording.
    pub write_errors: IntCounter,
    /// Times a recorder's queue was full, so frames were dropped and a new segment begun.
    pub queue_overflows: IntCounter,
    /// Streams being recorded now.
    pub active: IntGauge,
}

impl Default for RecordingCounters {
    fn default() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).expect("a valid metric name and help")
        };
        Self {
            segments: counter("zenlive_recording_segments_total", "Recording segments finished (fsync'd and renamed from .part)."),
            bytes: counter("zenlive_recording_bytes_total", "Bytes written to recording segments."),
            write_errors: counter(
                "zenlive_recording_write_errors_total",
                "Disk errors that stopped a stream's recording (the stream goes on).",
            ),
            queue_overflows: counter(
                "zenlive_recording_queue_overflows_total",
                "Times a recorder's write queue was full: frames were dropped up to the next keyframe, which began a new segment.",
            ),
            active: IntGauge::new("zenlive_recorders_active", "Streams being recorded now.")
                .expect("a valid metric name and help"),
        }
    }
}

impl RecordingCounters {
    /// The series, for the node's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.segments.clone()),
            Box::new(self.bytes.clone()),
            Box::new(self.write_errors.clone()),
            Box::new(self.queue_overflows.clone()),
            Box::new(self.active.clone()),
        ]
    }
}
