//! The recorder's Prometheus series. They are counted by the writer threads (off the media
//! path) and the sinks' overflow, and registered with the node's metrics at start.

use prometheus::core::Collector;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts};

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
    /// Segments not started because the spool was full.
    pub segments_skipped: IntCounter,
    /// Segments uploaded (S3).
    pub uploads: IntCounter,
    /// Bytes uploaded (S3).
    pub uploaded_bytes: IntCounter,
    /// Upload attempts that failed (each is retried).
    pub upload_failures: IntCounter,
    /// Segments waiting for upload, the one in flight included.
    pub upload_queue: IntGauge,
    /// Age of the oldest segment waiting for upload.
    pub upload_oldest_age: Gauge,
    /// Bytes of finished segments waiting for upload on local disk.
    pub spool_bytes: IntGauge,
    /// Finished segments deleted by retention, by reason (`age`, `size`).
    pub retention_deleted: IntCounterVec,
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
            segments_skipped: counter(
                "zenlive_recording_segments_skipped_total",
                "Segments not recorded because the upload spool was full (storage.spool_max_bytes).",
            ),
            uploads: counter("zenlive_recording_uploads_total", "Recording segments uploaded to S3 (and deleted locally)."),
            uploaded_bytes: counter("zenlive_recording_uploaded_bytes_total", "Bytes of recording segments uploaded to S3."),
            upload_failures: counter(
                "zenlive_recording_upload_failures_total",
                "Failed upload attempts of recording segments (each is retried with backoff).",
            ),
            upload_queue: IntGauge::new(
                "zenlive_recording_upload_queue",
                "Recording segments waiting for upload, those in flight included.",
            )
            .expect("a valid metric name and help"),
            upload_oldest_age: Gauge::new(
                "zenlive_recording_upload_oldest_age_seconds",
                "Seconds the oldest segment waiting for upload has waited (0: none waits).",
            )
            .expect("a valid metric name and help"),
            spool_bytes: IntGauge::new(
                "zenlive_recording_spool_bytes",
                "Bytes of finished recording segments on local disk waiting for upload.",
            )
            .expect("a valid metric name and help"),
            retention_deleted: IntCounterVec::new(
                Opts::new(
                    "zenlive_recording_retention_deleted_total",
                    "Finished segments deleted by retention (reason: age or size).",
                ),
                &["reason"],
            )
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
            Box::new(self.segments_skipped.clone()),
            Box::new(self.uploads.clone()),
            Box::new(self.uploaded_bytes.clone()),
            Box::new(self.upload_failures.clone()),
            Box::new(self.upload_queue.clone()),
            Box::new(self.upload_oldest_age.clone()),
            Box::new(self.spool_bytes.clone()),
            Box::new(self.retention_deleted.clone()),
        ]
    }
}
