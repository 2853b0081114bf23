//! [`StreamCore`]: the decisions of one live stream, without actix.
//!
//! It remembers what a viewer joining mid-stream needs to start playing at once: the
//! metadata, the codec sequence headers, and the frames since the last video keyframe (the
//! GOP cache), bounded in bytes and frames. It also keeps the stream's statistics.

use std::time::{Duration, Instant};

use zenlive_media::{FrameKind, MediaFrame};

/// Most bytes the GOP cache holds; a longer GOP is not cached (viewers then wait for the
/// next keyframe instead of starting at once).
pub const MAX_GOP_BYTES: usize = 16 * 1024 * 1024;
/// Most frames the GOP cache holds.
pub const MAX_GOP_FRAMES: usize = 4096;

/// Counters about one stream's input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Media frames received (audio, video and data).
    pub frames: u64,
    /// Video frames received.
    pub video_frames: u64,
    /// Audio frames received.
    pub audio_frames: u64,
    /// Video keyframes received.
    pub keyframes: u64,
    /// Payload bytes received.
    pub bytes: u64,
}

/// The cached start of a stream plus its statistics. See the module docs.
#[derive(Debug)]
pub struct StreamCore {
    metadata: Option<MediaFrame>,
    video_header: Option<MediaFrame>,
    audio_header: Option<MediaFrame>,
    gop: Vec<MediaFrame>,
    gop_bytes: usize,
    /// True while the cache holds a GOP that starts on a keyframe.
    gop_valid: bool,
    stats: IngestStats,
    started: Instant,
    /// The timestamp of the last audio or video frame, for a publisher that takes over to
    /// continue from.
    last_timestamp: Option<u32>,
}

impl StreamCore {
    /// An empty stream that started at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            metadata: None,
            video_header: None,
            audio_header: None,
            gop: Vec::new(),
            gop_bytes: 0,
            gop_valid: false,
            stats: IngestStats::default(),
            started: now,
            last_timestamp: None,
        }
    }

    /// Takes one frame from the publisher into the caches and statistics.
    pub fn on_frame(&mut self, frame: &MediaFrame) {
        self.stats.frames += 1;
        self.stats.bytes += frame.payload().len() as u64;
        if frame.kind != FrameKind::Data && !frame.sequence_header {
            self.last_timestamp = Some(frame.timestamp);
        }
        match frame.kind {
            FrameKind::Data => {
                self.metadata = Some(frame.clone());
                return;
            }
            FrameKind::Video if frame.sequence_header => {
                self.video_header = Some(frame.clone());
                return;
            }
            FrameKind::Audio if frame.sequence_header => {
                self.audio_header = Some(frame.clone());
                return;
            }
            FrameKind::Video => {
                self.stats.video_frames += 1;
            }
            FrameKind::Audio => {
                self.stats.audio_frames += 1;
            }
        }
        if frame.keyframe {
            self.stats.keyframes += 1;
            self.clear_gop();
            self.gop_valid = true;
        }
        if !self.gop_valid {
            return;
        }
        if self.gop.len() >= MAX_GOP_FRAMES
            || self.gop_bytes + frame.payload().len() > MAX_GOP_BYTES
        {
            // The GOP is too long to cache: late joiners wait for the next keyframe.
            self.clear_gop();
            return;
        }
        self.gop_bytes += frame.payload().len();
        self.gop.push(frame.clone());
    }

    fn clear_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
        self.gop_valid = false;
    }

    /// The timestamp of the last audio or video frame, if any came.
    pub fn last_timestamp(&self) -> Option<u32> {
        self.last_timestamp
    }

    /// What a new viewer receives before live frames, in order: metadata, sequence
    /// headers, then the cached GOP (which starts on a keyframe).
    pub fn snapshot(&self) -> Vec<MediaFrame> {
        let headers = [&self.metadata, &self.video_header, &self.audio_header];
        let mut frames = Vec::with_capacity(3 + self.gop.len());
        frames.extend(headers.into_iter().flatten().cloned());
        frames.extend(self.gop.iter().cloned());
        frames
    }

    /// Whether the stream has shown video (a video sequence header or a video frame).
    pub fn has_video(&self) -> bool {
        self.video_header.is_some() || self.stats.video_frames > 0
    }

    /// The current video sequence header, if any.
    pub fn video_header(&self) -> Option<&MediaFrame> {
        self.video_header.as_ref()
    }

    /// The current audio sequence header, if any.
    pub fn audio_header(&self) -> Option<&MediaFrame> {
        self.audio_header.as_ref()
    }

    /// Bytes held by the GOP cache.
    pub fn gop_bytes(&self) -> usize {
        self.gop_bytes
    }

    /// The input counters.
    pub fn stats(&self) -> IngestStats {
        self.stats
    }

    /// How long the stream has been live at `now`.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn video(ts: u32, key: bool, len: usize) -> MediaFrame {
        let mut body = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        body.resize(5 + len, 0);
        MediaFrame::new(FrameKind::Video, ts, Bytes::from(body))
    }

    fn audio(ts: u32) -> MediaFrame {
        MediaFrame::new(FrameKind::Audio, ts, Bytes::from_static(&[0xaf, 1, 0]))
    }

    #[test]
    fn snapshot_is_headers_then_gop_from_last_keyframe() {
        let mut core = StreamCore::new(Instant::now());
        let meta = MediaFrame::new(FrameKind::Data, 0, Bytes::from_static(b"meta"));
        let vh = MediaFrame::new(FrameKind::Video, 0, Bytes::from_static(&[0x17, 0, 0, 0, 0]));
        let ah = MediaFrame::new(FrameKind::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10]));
        for f in [&meta, &vh, &ah] {
            core.on_frame(f);
        }
        core.on_frame(&video(0, false, 10)); // before any keyframe: not cached
        core.on_frame(&video(40, true, 10));
        core.on_frame(&audio(50));
        core.on_frame(&video(80, false, 10));
        core.on_frame(&video(120, true, 10)); // new GOP starts here
        core.on_frame(&audio(130));

        let snap = core.snapshot();
        let stamps: Vec<_> = snap.iter().map(|f| (f.kind, f.timestamp)).collect();
        assert_eq!(
            stamps,
            vec![
                (FrameKind::Data, 0),
                (FrameKind::Video, 0),
                (FrameKind::Audio, 0),
                (FrameKind::Video, 120),
                (FrameKind::Audio, 130)
            ]
        );
        assert!(snap[3].keyframe);
        assert!(core.has_video());
        assert_eq!(core.stats().keyframes, 2);
    }

    #[test]
    fn oversized_gop_is_dropped_until_next_keyframe() {
        let mut core = StreamCore::new(Instant::now());
        core.on_frame(&video(0, true, 1024));
        let big = MAX_GOP_BYTES / 4;
        for i in 0..5 {
            core.on_frame(&video(40 * (i + 1), false, big));
        }
        assert!(core.gop_bytes() <= MAX_GOP_BYTES);
        assert!(core.snapshot().is_empty(), "no GOP cached after overflow");
        core.on_frame(&video(1000, true, 10));
        assert_eq!(core.snapshot().len(), 1);
    }

    #[test]
    fn frame_count_bound_holds() {
        let mut core = StreamCore::new(Instant::now());
        core.on_frame(&video(0, true, 1));
        for i in 0..(MAX_GOP_FRAMES as u32 * 2) {
            core.on_frame(&audio(i));
        }
        assert!(core.snapshot().len() <= MAX_GOP_FRAMES);
    }
}
