//! [`ViewerCore`]: one viewer's delivery policy, without actix or sockets.
//!
//! A viewer gets every frame while it keeps up. When it falls behind (its connection's
//! queue is full, or the stream's broadcast ring overran it) the frames it missed are gone;
//! it then skips everything until the next video keyframe, so it resumes on a picture a
//! decoder can start from, with the codec headers re-sent if one was lost. A viewer that
//! stays behind longer than [`ViewerCore::max_behind`] is disconnected. The publisher and
//! the other viewers never wait for it.

use std::time::{Duration, Instant};

use zenlive_media::{FrameKind, MediaFrame};

/// How long a viewer may stay behind before it is disconnected, by default.
pub const DEFAULT_MAX_BEHIND: Duration = Duration::from_secs(10);

/// What to do with a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Deliver it.
    Deliver,
    /// Deliver these codec headers first (they were lost earlier), then the frame.
    DeliverAfter(Vec<MediaFrame>),
    /// Skip it: the viewer is waiting for a keyframe.
    Skip,
}

/// What to do after the viewer fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the viewer; it resumes at the next keyframe.
    Resync,
    /// It has been behind too long: disconnect it.
    Disconnect,
}

/// Counters about one viewer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Frames handed to the connection.
    pub frames: u64,
    /// Bytes handed to the connection.
    pub bytes: u64,
    /// Frames this viewer missed or skipped.
    pub skipped: u64,
    /// Times it fell behind.
    pub lag_events: u64,
}

/// One viewer's delivery state. See the module docs.
#[derive(Debug)]
pub struct ViewerCore {
    max_behind: Duration,
    has_video: bool,
    waiting_for_keyframe: bool,
    behind_since: Option<Instant>,
    headers_lost: bool,
    video_header: Option<MediaFrame>,
    audio_header: Option<MediaFrame>,
    stats: DeliveryStats,
}

impl ViewerCore {
    /// A viewer that starts from a stream snapshot. `starts_on_keyframe` says whether the
    /// snapshot held a GOP; if the stream has video and it did not, the viewer waits for
    /// the first keyframe.
    pub fn new(has_video: bool, starts_on_keyframe: bool, max_behind: Duration) -> Self {
        Self {
            max_behind,
            has_video,
            waiting_for_keyframe: has_video && !starts_on_keyframe,
            behind_since: None,
            headers_lost: false,
            video_header: None,
            audio_header: None,
            stats: DeliveryStats::default(),
        }
    }

    /// How long this viewer may stay behind before it is disconnected.
    pub fn max_behind(&self) -> Duration {
        self.max_behind
    }

    /// Decides whether to try delivering `frame`.
    pub fn admit(&mut self, frame: &MediaFrame) -> Admission {
        if frame.sequence_header {
            match frame.kind {
                FrameKind::Video => self.video_header = Some(frame.clone()),
                FrameKind::Audio => self.audio_header = Some(frame.clone()),
                FrameKind::Data => {}
            }
            return Admission::Deliver;
        }
        if frame.kind == FrameKind::Data {
            return Admission::Deliver;
        }
        if frame.kind == FrameKind::Video && !self.has_video {
            // The stream gained video after this viewer joined: start on a keyframe.
            self.has_video = true;
            self.waiting_for_keyframe = !frame.keyframe;
        }
        if self.waiting_for_keyframe {
            if !frame.keyframe {
                self.stats.skipped += 1;
                return Admission::Skip;
            }
            self.waiting_for_keyframe = false;
        }
        if self.headers_lost {
            self.headers_lost = false;
            let headers: Vec<_> =
                [&self.video_header, &self.audio_header].into_iter().flatten().cloned().collect();
            if !headers.is_empty() {
                return Admission::DeliverAfter(headers);
            }
        }
        Admission::Deliver
    }

    /// The connection accepted a frame of `bytes` bytes.
    pub fn delivered(&mut self, bytes: usize) {
        self.stats.frames += 1;
        self.stats.bytes += bytes as u64;
        self.behind_since = None;
    }

    /// The connection's queue was full, so `frame` was lost.
    pub fn queue_full(&mut self, frame: &MediaFrame, now: Instant) -> Verdict {
        if frame.sequence_header {
            self.headers_lost = true;
        }
        self.fell_behind(1, now)
    }

    /// The stream's broadcast ring overran this viewer: it missed `missed` frames (which
    /// may have included codec headers).
    pub fn lagged(&mut self, missed: u64, now: Instant) -> Verdict {
        self.headers_lost = true;
        self.fell_behind(missed, now)
    }

    fn fell_behind(&mut self, missed: u64, now: Instant) -> Verdict {
        self.stats.skipped += missed;
        self.stats.lag_events += 1;
        if self.has_video {
            self.waiting_for_keyframe = true;
        }
        let since = *self.behind_since.get_or_insert(now);
        if now.saturating_duration_since(since) > self.max_behind {
            Verdict::Disconnect
        } else {
            Verdict::Resync
        }
    }

    /// The viewer's counters.
    pub fn stats(&self) -> DeliveryStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn video(key: bool) -> MediaFrame {
        MediaFrame::new(
            FrameKind::Video,
            0,
            Bytes::from_static(if key { &[0x17, 1, 0, 0, 0] } else { &[0x27, 1, 0, 0, 0] }),
        )
    }

    fn header() -> MediaFrame {
        MediaFrame::new(FrameKind::Video, 0, Bytes::from_static(&[0x17, 0, 0, 0, 0]))
    }

    fn audio() -> MediaFrame {
        MediaFrame::new(FrameKind::Audio, 0, Bytes::from_static(&[0xaf, 1, 0]))
    }

    #[test]
    fn without_gop_waits_for_first_keyframe() {
        let mut core = ViewerCore::new(true, false, DEFAULT_MAX_BEHIND);
        assert_eq!(core.admit(&header()), Admission::Deliver);
        assert_eq!(core.admit(&video(false)), Admission::Skip);
        assert_eq!(core.admit(&audio()), Admission::Skip);
        assert_eq!(core.admit(&video(true)), Admission::Deliver);
        assert_eq!(core.admit(&video(false)), Admission::Deliver);
    }

    #[test]
    fn after_falling_behind_resumes_on_keyframe_with_lost_headers() {
        let t0 = Instant::now();
        let mut core = ViewerCore::new(true, true, DEFAULT_MAX_BEHIND);
        let h = header();
        assert_eq!(core.admit(&h), Admission::Deliver);
        assert_eq!(core.queue_full(&h, t0), Verdict::Resync);
        assert_eq!(core.admit(&video(false)), Admission::Skip);
        match core.admit(&video(true)) {
            Admission::DeliverAfter(headers) => assert_eq!(headers, vec![h]),
            other => panic!("expected headers first, got {other:?}"),
        }
        core.delivered(10);
        assert_eq!(core.admit(&video(false)), Admission::Deliver);
        assert_eq!(core.stats().skipped, 2);
    }

    #[test]
    fn staying_behind_disconnects() {
        let t0 = Instant::now();
        let mut core = ViewerCore::new(true, true, Duration::from_secs(5));
        assert_eq!(core.lagged(100, t0), Verdict::Resync);
        assert_eq!(core.queue_full(&video(true), t0 + Duration::from_secs(3)), Verdict::Resync);
        assert_eq!(core.queue_full(&video(true), t0 + Duration::from_secs(6)), Verdict::Disconnect);
    }

    #[test]
    fn catching_up_resets_the_clock() {
        let t0 = Instant::now();
        let mut core = ViewerCore::new(true, true, Duration::from_secs(5));
        core.lagged(1, t0);
        core.delivered(1);
        assert_eq!(core.lagged(1, t0 + Duration::from_secs(60)), Verdict::Resync);
    }

    #[test]
    fn audio_only_never_waits() {
        let t0 = Instant::now();
        let mut core = ViewerCore::new(false, false, DEFAULT_MAX_BEHIND);
        assert_eq!(core.admit(&audio()), Admission::Deliver);
        core.queue_full(&audio(), t0);
        assert_eq!(core.admit(&audio()), Admission::Deliver);
    }
}
