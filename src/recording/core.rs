//! The recorder's decisions, as plain Rust: frames in, effects out (open a file, write
//! these bytes, the file is complete). No files, threads or clocks here: the writer
//! thread ([`super::writer`]) carries the effects out, and wall-clock time is an input.
//!
//! Rules:
//! - A segment starts on a sync point: a video keyframe, or any audio frame when the
//!   stream has no video. Frames before the first sync point are dropped.
//! - The first segment waits for both tracks: while only one is configured, its frames
//!   (from a sync point) are held, up to [`ONE_TRACK_AFTER`] of them. Audio that comes
//!   before video is then dropped and the segment starts on the video keyframe; video that
//!   comes before audio (a WebRTC publisher's Opus goes through a transcoder first) starts
//!   the segment with the audio; if the other track does not come, the held frames start a
//!   segment of one track.
//! - A segment is cut at the first sync point once `segment_duration` of media has passed
//!   since its start (so it is a minimum).
//! - A frame that does not fit the open segment (its track is missing, its codec
//!   configuration changed) cuts at the next sync point, and is dropped if it is not one.
//! - A timeline break (video time not increasing, audio going back by a second or more, or
//!   a jump forward of more than [`MAX_TIMESTAMP_JUMP`]) ends the segment at once; audio a
//!   little out of order is dropped. An interruption (the writer's queue overflowed, so
//!   frames were lost) also ends it: the gap falls between two files, never inside one.
//! - Only the codecs the format holds are recorded ([`SegmentFormat::carries`]); frames
//!   without a configuration are dropped.

use std::time::SystemTime;

use zenlive_actors::{CodecConfig, FrameKind, MediaFrame};
use zenlive_media::chunk::Chunk;
use zenlive_media::segment::{SegmentFormat, SegmentWriter};
use zenlive_media::MediaTime;

/// Why a frame of a codec the recording format cannot hold is dropped.
const NOT_CARRIED: &str =
    "the recording format cannot hold this codec (fMP4 and FLV: H.264, HEVC, AV1, VP9 and AAC; MPEG-TS: H.264 and AAC)";

/// A jump forward of more than this (in either track) is a new timeline.
pub const MAX_TIMESTAMP_JUMP: MediaTime = MediaTime::from_millis(10_000);
/// Audio going back by less than this is dropped; by more, a new timeline.
const AUDIO_REORDER: MediaTime = MediaTime::from_millis(1000);
/// One track with no configuration of the other for this long is recorded alone.
/// Publishers send a little audio before their first video frame, and a WebRTC publisher's
/// audio comes out of its transcoder after the first video frames; without this wait the
/// recording would begin with a short segment of one track.
pub const ONE_TRACK_AFTER: MediaTime = MediaTime::from_millis(1000);

/// What the recorder's shell is to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start a new file, whose first frame came at `wall` (the file's name comes from it).
    Open {
        /// Wall-clock time of the segment's first frame.
        wall: SystemTime,
    },
    /// Append these bytes to the open file (one vectored write).
    Write(Chunk),
    /// The open file is complete.
    Close {
        /// Its first frame's decode time on the stream's clock.
        start: MediaTime,
        /// Its media duration.
        duration: MediaTime,
    },
    /// A frame was not recorded, and why (for a log line, once per reason).
    Dropped(&'static str),
}

/// The recorder's decisions for one stream. See the module docs.
#[derive(Debug)]
pub struct RecorderCore {
    format: SegmentFormat,
    min_duration: MediaTime,
    fragment: MediaTime,
    video: Option<CodecConfig>,
    audio: Option<CodecConfig>,
    open: Option<SegmentWriter>,
    cut_pending: bool,
    last: [Option<MediaTime>; 2],
    /// Frames of one track held while it is not yet known whether the other comes, and
    /// when they came.
    held: Vec<(MediaFrame, SystemTime)>,
    /// The held frames were released: the stream is recorded with the tracks it has (a
    /// track that shows up later cuts a new segment).
    settled: bool,
}

impl RecorderCore {
    /// A core writing `format` segments of at least `min_duration`, in chunks of about
    /// `fragment`.
    pub fn new(format: SegmentFormat, min_duration: MediaTime, fragment: MediaTime) -> Self {
        Self {
            format,
            min_duration,
            fragment,
            video: None,
            audio: None,
            open: None,
            cut_pending: false,
            last: [None, None],
            held: Vec::new(),
            settled: false,
        }
    }

    /// A track's configuration as the publisher declared it (before its first frame, so a
    /// segment that starts on a video keyframe already has the audio track).
    pub fn declare(&mut self, config: &CodecConfig) {
        if !self.format.carries(config.codec()) {
            return;
        }
        match config.codec().kind() {
            FrameKind::Video => self.video = Some(config.clone()),
            FrameKind::Audio => self.audio = Some(config.clone()),
            FrameKind::Data => {}
        }
    }

    /// Whether a segment is open.
    pub fn recording(&self) -> bool {
        self.open.is_some()
    }

    /// Takes one frame that came at `wall`.
    pub fn push(&mut self, frame: &MediaFrame, wall: SystemTime, out: &mut Vec<Effect>) {
        let kind = frame.kind();
        if kind == FrameKind::Data {
            return;
        }
        if !self.format.carries(frame.codec()) {
            return out.push(Effect::Dropped(NOT_CARRIED));
        }
        let Some(config) = frame.config() else {
            return out.push(Effect::Dropped("a frame without its codec configuration"));
        };
        let latest = if kind == FrameKind::Video { &mut self.video } else { &mut self.audio };
        if latest.as_ref() != Some(config) {
            *latest = Some(config.clone());
        }
        let video = kind == FrameKind::Video;
        let dts = frame.dts();
        let index = usize::from(!video);
        if let Some(last) = self.last[index] {
            let jumped = dts > last + MAX_TIMESTAMP_JUMP;
            if !video && dts < last && dts + AUDIO_REORDER > last {
                return out.push(Effect::Dropped("audio out of order"));
            }
            if jumped || (video && dts <= last) || dts < last {
                // A new timeline for both tracks.
                self.release_held(out);
                self.close(None, out);
                self.last = [None, None];
            }
        }
        self.last[index] = Some(dts);
        let sync = frame.keyframe() || (!video && self.video.is_none());
        if let Some(open) = &self.open {
            let fits = open.accepts(frame).is_ok();
            let due = open.start().is_some_and(|start| dts - start >= self.min_duration);
            if sync && (!fits || due || self.cut_pending) {
                self.close(video.then_some(dts), out);
            } else if !fits {
                self.cut_pending = true;
                return out
                    .push(Effect::Dropped("a new track or configuration, waiting for a keyframe"));
            }
        }
        if self.open.is_none() {
            let other_known = if video { self.audio.is_some() } else { self.video.is_some() };
            let held_video = self.held.first().is_some_and(|(f, _)| f.kind() == FrameKind::Video);
            if !other_known && !self.settled {
                if self.held.is_empty() && !sync {
                    return out.push(Effect::Dropped("waiting for a keyframe"));
                }
                let first = self.held.first().map_or(dts, |(f, _)| f.dts());
                self.held.push((frame.clone(), wall));
                if dts - first >= ONE_TRACK_AFTER {
                    self.release_held(out);
                }
                return;
            }
            if held_video {
                // The audio is known now: the segment starts with the held video.
                self.release_held(out);
                if self.open.is_some() {
                    self.write(frame, out);
                }
                return;
            }
            // The video came: held audio is dropped, the segment starts on its keyframe.
            self.held.clear();
            if !sync {
                return out.push(Effect::Dropped("waiting for a keyframe"));
            }
            if !self.start(wall, out) {
                return;
            }
        }
        self.write(frame, out);
    }

    /// Opens a segment with the tracks known now; false (and why) if they are unusable.
    fn start(&mut self, wall: SystemTime, out: &mut Vec<Effect>) -> bool {
        let (video, audio) = (self.video.as_ref(), self.audio.as_ref());
        match SegmentWriter::new(self.format, video, audio, self.fragment) {
            Ok(writer) => {
                self.open = Some(writer);
                self.cut_pending = false;
                out.push(Effect::Open { wall });
                true
            }
            Err(_) => {
                out.push(Effect::Dropped("an unusable codec configuration"));
                false
            }
        }
    }

    /// Starts a segment with the held frames (and the tracks known now).
    fn release_held(&mut self, out: &mut Vec<Effect>) {
        let held = std::mem::take(&mut self.held);
        let Some((_, wall)) = held.first() else { return };
        self.settled = true;
        if self.start(*wall, out) {
            for (frame, _) in &held {
                self.write(frame, out);
            }
        }
    }

    fn write(&mut self, frame: &MediaFrame, out: &mut Vec<Effect>) {
        let Some(open) = &mut self.open else { return };
        match open.push(frame) {
            Ok(Some(chunk)) => out.push(Effect::Write(chunk)),
            Ok(None) => {}
            Err(_) => out.push(Effect::Dropped("a frame the segment cannot carry")),
        }
    }

    /// Frames were lost before the next one: the open segment ends here.
    pub fn interrupt(&mut self, out: &mut Vec<Effect>) {
        self.release_held(out);
        self.close(None, out);
    }

    /// The stream ended: the open segment ends (a short stream's held frames are written
    /// first).
    pub fn finish(&mut self, out: &mut Vec<Effect>) {
        if self.open.is_none() {
            self.release_held(out);
        }
        self.close(None, out);
    }

    fn close(&mut self, next_video: Option<MediaTime>, out: &mut Vec<Effect>) {
        let Some(mut writer) = self.open.take() else { return };
        match writer.finish(next_video) {
            Ok(Some(chunk)) => out.push(Effect::Write(chunk)),
            Ok(None) => {}
            Err(_) => out.push(Effect::Dropped("the segment's last fragment could not be built")),
        }
        out.push(Effect::Close {
            start: writer.start().unwrap_or(MediaTime::ZERO),
            duration: writer.duration(),
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;
    use zenlive_actors::Codec;

    use super::*;

    /// x264's 320x240 High-profile sequence header.
    const AVC_RECORD: &[u8] = &[
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41,
        0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1,
        0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
    ];

    pub(crate) fn configs() -> (CodecConfig, CodecConfig) {
        (
            CodecConfig::new(Codec::H264, Bytes::from_static(AVC_RECORD), MediaTime::ZERO),
            CodecConfig::new(Codec::Aac, Bytes::from_static(&[0x12, 0x10]), MediaTime::ZERO),
        )
    }

    pub(crate) fn video(config: &CodecConfig, ms: i64, key: bool) -> MediaFrame {
        let t = MediaTime::from_millis(ms);
        let payload = Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]);
        MediaFrame::video(Codec::H264, t, t, key, payload, Some(config.clone()))
    }

    pub(crate) fn audio(config: &CodecConfig, ms: i64) -> MediaFrame {
        let payload = Bytes::from_static(&[0x21, 0x10, 0x04]);
        MediaFrame::audio(Codec::Aac, MediaTime::from_millis(ms), payload, Some(config.clone()))
    }

    fn recorder() -> RecorderCore {
        RecorderCore::new(
            SegmentFormat::Fmp4,
            MediaTime::from_millis(4000),
            MediaTime::from_millis(1000),
        )
    }

    /// Feeds `frames` and answers (opens, closes as (start ms, duration ms), drops).
    fn run(
        core: &mut RecorderCore,
        frames: &[MediaFrame],
    ) -> (usize, Vec<(i64, i64)>, Vec<&'static str>) {
        let mut out = Vec::new();
        for frame in frames {
            core.push(frame, SystemTime::UNIX_EPOCH, &mut out);
        }
        let opens = out.iter().filter(|e| matches!(e, Effect::Open { .. })).count();
        let closes = out
            .iter()
            .filter_map(|e| match e {
                Effect::Close { start, duration } => {
                    Some((start.as_millis(), duration.as_millis()))
                }
                _ => None,
            })
            .collect();
        let drops = out
            .iter()
            .filter_map(|e| match e {
                Effect::Dropped(why) => Some(*why),
                _ => None,
            })
            .collect();
        (opens, closes, drops)
    }

    /// 25 fps video with a keyframe every second, from `from` ms for `seconds`.
    fn gops(config: &CodecConfig, from: i64, seconds: i64) -> Vec<MediaFrame> {
        (0..seconds * 25).map(|i| video(config, from + i * 40, i % 25 == 0)).collect()
    }

    #[test]
    fn cuts_on_the_first_keyframe_after_the_minimum_and_continues_the_timeline() {
        let (v, a) = configs();
        let mut core = recorder();
        core.declare(&a);
        let (opens, closes, drops) = run(&mut core, &gops(&v, 1000, 10));
        assert_eq!(opens, 3);
        // 4 s segments, each ending where the next starts.
        assert_eq!(closes, [(1000, 4000), (5000, 4000)]);
        assert!(drops.is_empty(), "{drops:?}");
        let mut out = Vec::new();
        core.finish(&mut out);
        assert!(matches!(out.last(), Some(Effect::Close { .. })));
    }

    #[test]
    fn frames_before_the_first_keyframe_or_without_configuration_are_dropped() {
        let (v, a) = configs();
        let mut core = recorder();
        core.declare(&a);
        let bare = MediaFrame::video(
            Codec::H264,
            MediaTime::ZERO,
            MediaTime::ZERO,
            true,
            Bytes::new(),
            None,
        );
        let (opens, _, drops) = run(&mut core, &[bare, video(&v, 40, false), video(&v, 80, true)]);
        assert_eq!(opens, 1);
        assert_eq!(drops, ["a frame without its codec configuration", "waiting for a keyframe"]);
    }

    #[test]
    fn audio_only_cuts_on_any_frame_and_video_only_works() {
        let (v, a) = configs();
        let mut core = recorder();
        let frames: Vec<_> = (0..200).map(|i| audio(&a, i * 23)).collect();
        let (opens, closes, _) = run(&mut core, &frames);
        assert_eq!(opens, 2);
        assert_eq!(closes.len(), 1);
        assert!(closes[0].1 >= 4000 && closes[0].1 < 4100, "{closes:?}");
        let mut video_only = recorder();
        let (opens, _, _) = run(&mut video_only, &gops(&v, 0, 3));
        assert_eq!(opens, 1);
    }

    #[test]
    fn a_vp8_stream_records_its_aac_audio_only() {
        let (_, a) = configs();
        let vp8 = CodecConfig::new(Codec::Vp8, Bytes::new(), MediaTime::ZERO);
        let mut core = recorder();
        core.declare(&vp8);
        core.declare(&a);
        let mut frames = Vec::new();
        for i in 0..100 {
            let at = MediaTime::from_millis(i * 40);
            let data = Bytes::from_static(&[0x50, 0, 0]);
            frames.push(MediaFrame::video(
                Codec::Vp8,
                at,
                at,
                i % 25 == 0,
                data,
                Some(vp8.clone()),
            ));
            frames.push(audio(&a, i * 40));
        }
        let (opens, _, drops) = run(&mut core, &frames);
        assert_eq!(opens, 1, "an audio-only segment");
        assert_eq!(drops.len(), 100, "every VP8 frame dropped");
        assert!(drops.iter().all(|d| *d == NOT_CARRIED), "{drops:?}");
    }

    #[test]
    fn a_configuration_change_starts_a_new_segment_at_its_keyframe() {
        let (v, a) = configs();
        let mut core = recorder();
        core.declare(&a);
        let new = CodecConfig::new(
            Codec::H264,
            Bytes::from_static(AVC_RECORD),
            MediaTime::from_millis(1),
        );
        // Equal bytes are no change; a new record is.
        let changed = CodecConfig::new(
            Codec::H264,
            // Another level: a different, valid record.
            Bytes::from([&AVC_RECORD[..3], &[0x1f], &AVC_RECORD[4..]].concat()),
            MediaTime::ZERO,
        );
        let mut frames = gops(&v, 0, 1);
        frames.push(video(&new, 1000, false));
        frames.push(video(&changed, 1040, false));
        frames.push(video(&changed, 1080, true));
        let (opens, closes, drops) = run(&mut core, &frames);
        assert_eq!(opens, 2, "{closes:?} {drops:?}");
        assert_eq!(closes, [(0, 1080)]);
        assert_eq!(drops, ["a new track or configuration, waiting for a keyframe"]);
    }

    #[test]
    fn a_new_audio_track_waits_for_the_next_keyframe() {
        let (v, a) = configs();
        let mut core = recorder();
        // Past the first segment's wait for a second track (see the next test).
        let mut frames = gops(&v, 0, 2);
        frames.push(audio(&a, 1990));
        frames.extend(gops(&v, 2000, 1));
        let (opens, closes, drops) = run(&mut core, &frames);
        assert_eq!((opens, closes), (2, vec![(0, 2000)]));
        assert_eq!(drops.len(), 1);
    }

    #[test]
    fn timestamps_going_backwards_or_jumping_end_the_segment() {
        let (v, a) = configs();
        let mut core = recorder();
        core.declare(&a);
        let mut frames = gops(&v, 10_000, 1);
        frames.push(audio(&a, 10_500));
        frames.push(audio(&a, 10_400)); // a little out of order: dropped
        frames.extend(gops(&v, 2000, 1)); // back in time: a new segment
        frames.extend(gops(&v, 60_000, 1)); // far ahead: another
        let (opens, closes, drops) = run(&mut core, &frames);
        assert_eq!(opens, 3);
        assert_eq!(closes.iter().map(|c| c.0).collect::<Vec<_>>(), [10_000, 2000]);
        assert_eq!(drops, ["audio out of order"]);
    }

    #[test]
    fn an_interruption_ends_the_segment_and_the_next_keyframe_starts_one() {
        let (v, _) = configs();
        let mut core = recorder();
        run(&mut core, &gops(&v, 0, 1));
        let mut out = Vec::new();
        core.interrupt(&mut out);
        assert!(!core.recording());
        let (opens, _, drops) = run(&mut core, &[video(&v, 2040, false), video(&v, 3000, true)]);
        assert_eq!((opens, drops), (1, vec!["waiting for a keyframe"]));
    }

    #[test]
    fn audio_configured_after_the_first_video_frames_starts_the_first_segment_with_both() {
        // A WHIP publisher: video at once, its Opus out of the transcoder as AAC 300 ms in.
        let (v, a) = configs();
        let mut core = recorder();
        let mut frames = gops(&v, 0, 6);
        frames.extend((13..260).map(|i| audio(&a, i * 23)));
        frames.sort_by_key(|f| f.dts());
        let (opens, closes, drops) = run(&mut core, &frames);
        assert_eq!(opens, 2, "{closes:?}");
        assert_eq!(closes, [(0, 4000)], "the first segment starts at the first keyframe");
        assert!(drops.is_empty(), "no frame waits for a keyframe to add the audio: {drops:?}");
        // Video alone for longer than the wait: recorded alone, the audio cuts a new one.
        let mut core = recorder();
        let mut frames = gops(&v, 0, 3);
        frames.extend((70..130).map(|i| audio(&a, i * 23)));
        frames.sort_by_key(|f| f.dts());
        let (opens, closes, drops) = run(&mut core, &frames);
        assert_eq!((opens, closes), (2, vec![(0, 2000)]));
        assert!(drops.iter().all(|d| d.starts_with("a new track")), "{drops:?}");
    }

    #[test]
    fn audio_before_the_first_video_frame_does_not_make_an_audio_only_segment() {
        let (v, a) = configs();
        let mut core = recorder();
        let mut frames: Vec<_> = (0..5).map(|i| audio(&a, i * 23)).collect();
        frames.extend(gops(&v, 100, 1));
        let (opens, _, drops) = run(&mut core, &frames);
        assert_eq!((opens, drops.len()), (1, 0));
        let mut out = Vec::new();
        core.finish(&mut out);
        assert!(
            matches!(out.last(), Some(Effect::Close { start, .. }) if start.as_millis() == 100)
        );
        // A short audio-only stream is still recorded when it ends.
        let mut short = recorder();
        run(&mut short, &[audio(&a, 0), audio(&a, 23)]);
        let mut out = Vec::new();
        short.finish(&mut out);
        assert!(matches!(out.first(), Some(Effect::Open { .. })), "{out:?}");
    }
}
