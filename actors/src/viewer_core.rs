//! [`ViewerCore`]: one viewer's delivery policy, without actix or sockets.
//!
//! A viewer gets every frame while it keeps up. When it falls behind (its connection's
//! queue is full, or the stream's broadcast ring overran it) the frames it missed are gone;
//! it then skips everything until the next video keyframe, so it resumes on a picture a
//! decoder can start from. A viewer that stays behind longer than
//! [`ViewerCore::max_behind`] is disconnected. The publisher and the other viewers never
//! wait for it.
//!
//! A frame's codec configuration is sent ahead of the first frame that uses it (and again
//! whenever the publisher changes it): the core remembers, per track, the last
//! configuration the connection accepted, so one lost in a full queue is simply sent again
//! before the next frame that needs it.

use std::time::{Duration, Instant};

use zenlive_media::{CodecConfig, FrameKind, MediaFrame};

/// How long a viewer may stay behind before it is disconnected, by default.
pub const DEFAULT_MAX_BEHIND: Duration = Duration::from_secs(10);

/// What to do with a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Deliver it.
    Deliver,
    /// Deliver this codec configuration first (the viewer does not have it), then the
    /// frame.
    DeliverAfter(CodecConfig),
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
    /// The configuration the connection last accepted, per track (video, audio).
    sent: [Option<CodecConfig>; 2],
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
            sent: [None, None],
            stats: DeliveryStats::default(),
        }
    }

    /// How long this viewer may stay behind before it is disconnected.
    pub fn max_behind(&self) -> Duration {
        self.max_behind
    }

    /// Decides whether to try delivering `frame`.
    pub fn admit(&mut self, frame: &MediaFrame) -> Admission {
        let track = match frame.kind() {
            FrameKind::Data => return Admission::Deliver,
            FrameKind::Video => 0,
            FrameKind::Audio => 1,
        };
        if track == 0 && !self.has_video {
            // The stream gained video after this viewer joined: start on a keyframe.
            self.has_video = true;
            self.waiting_for_keyframe = !frame.keyframe();
        }
        if self.waiting_for_keyframe {
            if !frame.keyframe() {
                self.stats.skipped += 1;
                return Admission::Skip;
            }
            self.waiting_for_keyframe = false;
        }
        match (frame.config(), &self.sent[track]) {
            (Some(config), Some(sent)) if config.same(sent) => Admission::Deliver,
            (Some(config), _) => Admission::DeliverAfter(config.clone()),
            (None, _) => Admission::Deliver,
        }
    }

    /// The connection accepted a frame of `bytes` bytes.
    pub fn delivered(&mut self, bytes: usize) {
        self.stats.frames += 1;
        self.stats.bytes += bytes as u64;
        self.behind_since = None;
    }

    /// Whether the connection has not accepted `config` yet.
    pub fn lacks(&self, config: &CodecConfig) -> bool {
        let track = usize::from(config.codec().kind() != FrameKind::Video);
        !self.sent[track].as_ref().is_some_and(|sent| sent.same(config))
    }

    /// The connection accepted `config` (`bytes` bytes); later frames using it go as they
    /// are.
    pub fn config_delivered(&mut self, config: &CodecConfig, bytes: usize) {
        let track = usize::from(config.codec().kind() != FrameKind::Video);
        self.sent[track] = Some(config.clone());
        self.stats.bytes += bytes as u64;
    }

    /// The connection's queue was full, so what was offered was lost.
    pub fn queue_full(&mut self, now: Instant) -> Verdict {
        self.fell_behind(1, now)
    }

    /// The stream's broadcast ring overran this viewer: it missed `missed` frames.
    pub fn lagged(&mut self, missed: u64, now: Instant) -> Verdict {
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
    use zenlive_media::{Codec, MediaTime};

    use super::*;

    fn config() -> CodecConfig {
        CodecConfig::new(Codec::H264, Bytes::from_static(&[1, 0x64]), MediaTime::ZERO)
    }

    fn video_with(key: bool, config: Option<&CodecConfig>) -> MediaFrame {
        let t = MediaTime::ZERO;
        MediaFrame::video(Codec::H264, t, t, key, Bytes::from_static(&[0, 0]), config.cloned())
    }

    fn video(key: bool) -> MediaFrame {
        video_with(key, None)
    }

    fn audio() -> MediaFrame {
        MediaFrame::audio(Codec::Aac, MediaTime::ZERO, Bytes::from_static(&[0]), None)
    }

    #[test]
    fn without_gop_waits_for_first_keyframe() {
        let mut core = ViewerCore::new(true, false, DEFAULT_MAX_BEHIND);
        assert_eq!(core.admit(&video(false)), Admission::Skip);
        assert_eq!(core.admit(&audio()), Admission::Skip);
        assert_eq!(core.admit(&video(true)), Admission::Deliver);
        assert_eq!(core.admit(&video(false)), Admission::Deliver);
    }

    #[test]
    fn a_configuration_goes_once_ahead_of_its_first_frame_and_again_if_lost() {
        let t0 = Instant::now();
        let c = config();
        let mut core = ViewerCore::new(true, true, DEFAULT_MAX_BEHIND);
        assert_eq!(core.admit(&video_with(true, Some(&c))), Admission::DeliverAfter(c.clone()));
        // The queue was full: the configuration never reached the connection.
        assert_eq!(core.queue_full(t0), Verdict::Resync);
        assert_eq!(core.admit(&video_with(false, Some(&c))), Admission::Skip);
        assert_eq!(core.admit(&video_with(true, Some(&c))), Admission::DeliverAfter(c.clone()));
        core.config_delivered(&c, 10);
        core.delivered(10);
        assert_eq!(core.admit(&video_with(false, Some(&c))), Admission::Deliver);
        // The publisher changed it: the new one goes first.
        let changed = config();
        let next = video_with(false, Some(&changed));
        assert_eq!(core.admit(&next), Admission::DeliverAfter(changed));
        assert_eq!(core.stats().skipped, 2, "the lost one and the skipped one");
    }

    #[test]
    fn staying_behind_disconnects() {
        let t0 = Instant::now();
        let mut core = ViewerCore::new(true, true, Duration::from_secs(5));
        assert_eq!(core.lagged(100, t0), Verdict::Resync);
        assert_eq!(core.queue_full(t0 + Duration::from_secs(3)), Verdict::Resync);
        assert_eq!(core.queue_full(t0 + Duration::from_secs(6)), Verdict::Disconnect);
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
        core.queue_full(t0);
        assert_eq!(core.admit(&audio()), Admission::Deliver);
    }
}
