//! [`StreamCore`]: the decisions of one live stream, without actix.
//!
//! It remembers what a viewer joining mid-stream needs to start playing at once: the
//! metadata and the frames since the last video keyframe (the GOP cache), bounded in bytes
//! and frames. Codec configurations travel with the frames that use them; the core keeps
//! each track's current one as stream state. It also keeps the stream's input counters.
//!
//! Audio may come in two codecs at once: a WHIP publisher's Opus goes on as it came (for
//! WebRTC viewers) beside the AAC transcoded from it (for RTMP, FLV, HLS, recording), and
//! each output takes the codec it can carry. The core keeps one current configuration per
//! audio codec, so the two do not replace each other on every frame.

use std::time::{Duration, Instant};

use zenlive_media::{CodecConfig, FrameKind, MediaFrame, MediaTime};

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
    video_config: Option<CodecConfig>,
    /// One per audio codec, the most recently changed last.
    audio_configs: Vec<CodecConfig>,
    gop: Vec<MediaFrame>,
    gop_bytes: usize,
    /// True while the cache holds a GOP that starts on a keyframe.
    gop_valid: bool,
    stats: IngestStats,
    started: Instant,
    /// The decode time of the last audio or video frame, for a publisher that takes over
    /// to continue from.
    last_time: Option<MediaTime>,
}

impl StreamCore {
    /// An empty stream that started at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            metadata: None,
            video_config: None,
            audio_configs: Vec::new(),
            gop: Vec::new(),
            gop_bytes: 0,
            gop_valid: false,
            stats: IngestStats::default(),
            started: now,
            last_time: None,
        }
    }

    /// Takes one frame from the publisher into the caches and statistics. Answers whether
    /// the frame brought a track configuration the stream had not seen.
    pub fn on_frame(&mut self, frame: &MediaFrame) -> bool {
        self.stats.frames += 1;
        self.stats.bytes += frame.payload().len() as u64;
        let new_config = match frame.kind() {
            FrameKind::Data => {
                self.metadata = Some(frame.clone());
                return false;
            }
            FrameKind::Video => {
                self.stats.video_frames += 1;
                match (frame.config(), self.video_config.as_ref()) {
                    (Some(config), Some(current)) if config.same(current) => false,
                    (Some(config), _) => {
                        self.video_config = Some(config.clone());
                        true
                    }
                    (None, _) => false,
                }
            }
            FrameKind::Audio => {
                self.stats.audio_frames += 1;
                frame.config().is_some_and(|config| self.set_audio_config(config))
            }
        };
        self.last_time = Some(frame.dts());
        if frame.keyframe() {
            self.stats.keyframes += 1;
            self.clear_gop();
            self.gop_valid = true;
        }
        if !self.gop_valid {
            return new_config;
        }
        if self.gop.len() >= MAX_GOP_FRAMES
            || self.gop_bytes + frame.payload().len() > MAX_GOP_BYTES
        {
            // The GOP is too long to cache: late joiners wait for the next keyframe.
            self.clear_gop();
            return new_config;
        }
        self.gop_bytes += frame.payload().len();
        self.gop.push(frame.clone());
        new_config
    }

    /// A track's configuration from now on, declared before its first frame (the publisher
    /// sent a sequence header).
    pub fn set_config(&mut self, config: &CodecConfig) {
        match config.codec().kind() {
            FrameKind::Video => self.video_config = Some(config.clone()),
            FrameKind::Audio => {
                self.set_audio_config(config);
            }
            FrameKind::Data => {}
        }
    }

    /// Makes `config` its codec's current audio configuration; answers whether it is new.
    fn set_audio_config(&mut self, config: &CodecConfig) -> bool {
        let same_codec = self.audio_configs.iter().position(|c| c.codec() == config.codec());
        match same_codec {
            Some(i) if self.audio_configs[i].same(config) => false,
            Some(i) => {
                self.audio_configs.remove(i);
                self.audio_configs.push(config.clone());
                true
            }
            None => {
                self.audio_configs.push(config.clone());
                true
            }
        }
    }

    /// The tracks' current configurations (video first, then one per audio codec), which a
    /// new viewer receives before the snapshot.
    pub fn configs(&self) -> Vec<CodecConfig> {
        self.video_config.iter().chain(&self.audio_configs).cloned().collect()
    }

    fn clear_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
        self.gop_valid = false;
    }

    /// The decode time of the last audio or video frame, if any came.
    pub fn last_time(&self) -> Option<MediaTime> {
        self.last_time
    }

    /// What a new viewer receives before live frames, in order: the metadata, then the
    /// cached GOP (which starts on a keyframe; its frames carry their configurations).
    pub fn snapshot(&self) -> Vec<MediaFrame> {
        let mut frames = Vec::with_capacity(1 + self.gop.len());
        frames.extend(self.metadata.iter().cloned());
        frames.extend(self.gop.iter().cloned());
        frames
    }

    /// Whether the stream has shown video (a configured video track or a video frame).
    pub fn has_video(&self) -> bool {
        self.video_config.is_some() || self.stats.video_frames > 0
    }

    /// The video track's current configuration, if any.
    pub fn video_config(&self) -> Option<&CodecConfig> {
        self.video_config.as_ref()
    }

    /// The audio track's current configuration, if any (of the codec whose configuration
    /// changed last, when audio comes in two codecs).
    pub fn audio_config(&self) -> Option<&CodecConfig> {
        self.audio_configs.last()
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
    use zenlive_media::Codec;

    use super::*;

    fn at(ms: i64) -> MediaTime {
        MediaTime::from_millis(ms)
    }

    fn video_with(ms: i64, key: bool, len: usize, config: Option<&CodecConfig>) -> MediaFrame {
        let body = Bytes::from(vec![0; len]);
        MediaFrame::video(Codec::H264, at(ms), at(ms), key, body, config.cloned())
    }

    fn video(ms: i64, key: bool, len: usize) -> MediaFrame {
        video_with(ms, key, len, None)
    }

    fn audio(ms: i64) -> MediaFrame {
        MediaFrame::audio(Codec::Aac, at(ms), Bytes::from_static(&[0]), None)
    }

    #[test]
    fn snapshot_is_metadata_then_gop_from_last_keyframe() {
        let mut core = StreamCore::new(Instant::now());
        let vc = CodecConfig::new(Codec::H264, Bytes::from_static(&[1, 2]), at(0));
        core.on_frame(&MediaFrame::data(at(0), Bytes::from_static(b"meta")));
        assert!(core.on_frame(&video_with(0, false, 10, Some(&vc))), "a new configuration");
        core.on_frame(&video_with(40, true, 10, Some(&vc)));
        core.on_frame(&audio(50));
        core.on_frame(&video(80, false, 10));
        assert!(!core.on_frame(&video_with(120, true, 10, Some(&vc))), "new GOP, same config");
        core.on_frame(&audio(130));

        let snap = core.snapshot();
        let stamps: Vec<_> = snap.iter().map(|f| (f.kind(), f.dts().as_millis())).collect();
        assert_eq!(
            stamps,
            vec![(FrameKind::Data, 0), (FrameKind::Video, 120), (FrameKind::Audio, 130)]
        );
        assert!(snap[1].keyframe());
        assert!(core.has_video());
        assert!(core.video_config().is_some_and(|c| c.same(&vc)));
        assert_eq!(core.stats().keyframes, 2);
        assert_eq!(core.last_time(), Some(at(130)));
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
        for i in 0..(MAX_GOP_FRAMES as i64 * 2) {
            core.on_frame(&audio(i));
        }
        assert!(core.snapshot().len() <= MAX_GOP_FRAMES);
    }

    #[test]
    fn opus_and_the_aac_made_from_it_keep_one_configuration_each() {
        let mut core = StreamCore::new(Instant::now());
        let opus = CodecConfig::new(Codec::Opus, Bytes::from_static(b"OpusHead"), at(0));
        let aac = CodecConfig::new(Codec::Aac, Bytes::from_static(&[0x11, 0x90]), at(0));
        let frame = |codec, ms, config: &CodecConfig| {
            MediaFrame::audio(codec, at(ms), Bytes::from_static(&[0]), Some(config.clone()))
        };
        assert!(core.on_frame(&frame(Codec::Opus, 0, &opus)), "new");
        assert!(core.on_frame(&frame(Codec::Aac, 0, &aac)), "new");
        for ms in 1..100 {
            assert!(!core.on_frame(&frame(Codec::Opus, 20 * ms, &opus)), "not new again");
            assert!(!core.on_frame(&frame(Codec::Aac, 20 * ms, &aac)), "not new again");
        }
        let configs = core.configs();
        assert_eq!(configs.len(), 2);
        assert!(configs[0].same(&opus) && configs[1].same(&aac));
        assert!(core.audio_config().is_some_and(|c| c.same(&aac)));
        // A new AAC configuration replaces the old one, not Opus's.
        let aac2 = CodecConfig::new(Codec::Aac, Bytes::from_static(&[0x12, 0x10]), at(5));
        core.set_config(&aac2);
        let configs = core.configs();
        assert_eq!(configs.len(), 2);
        assert!(configs[0].same(&opus) && configs[1].same(&aac2));
    }
}
