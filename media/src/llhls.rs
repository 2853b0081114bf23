//! Low-Latency HLS (RFC 8216bis, Apple's LL-HLS), sans-IO: frames in; CMAF parts,
//! segments and the media playlist out; blocking playlist requests answered as a decision
//! ([`LlPlaylist::check`]) that the HTTP side waits on. Wall-clock time is an argument;
//! nothing here reads a clock or waits.
//!
//! - **Parts and segments.** Frames go into one fragmented MP4 writer ([`Fmp4Writer`]) per
//!   init section; each fragment (`moof` + `mdat`, about `part_target` of media) is a part.
//!   A segment starts on a video keyframe (audio-only streams: on any frame) and ends at
//!   the first keyframe at or after `target_duration`; its bytes are its parts' bytes in
//!   order, so a segment is never held twice. A part that begins with a keyframe is
//!   `INDEPENDENT=YES`.
//! - **The playlist** lists the last `window_segments` complete segments, the parts of
//!   the last few ([`PART_SEGMENTS`]) and of the one being built, and a preload hint for
//!   the next part. `EXT-X-SERVER-CONTROL` says `CAN-BLOCK-RELOAD=YES`,
//!   `PART-HOLD-BACK` (three part targets) and `CAN-SKIP-UNTIL` (six target durations):
//!   a delta update (`_HLS_skip=YES`) replaces the older segments by `EXT-X-SKIP`.
//! - **Blocking reloads** (`_HLS_msn`, `_HLS_part`): [`LlPlaylist::check`] answers
//!   whether the playlist already holds the asked part, whether to wait, or that the ask
//!   is bad (a part without a segment number, a segment more than two past the last: 400,
//!   as the spec says). Once the stream has ended every wait is over.
//!
//! - **Off the heap.** A complete segment's parts can move out of the heap: the caller
//!   takes each newly complete segment's bytes ([`LlPlaylist::take_complete`]), keeps
//!   them where it likes (a spool file the kernel pages) and hands back a
//!   [`KeptSegment`] ([`LlPlaylist::keep`]); its parts are then ranges of it. Only the
//!   segment being built stays in the heap.
//!
//! URIs are relative to the playlist, after the caller's prefix: `{msn}.{part}.m4s` (a
//! part), `{msn}.m4s` (a whole segment), `init{n}.mp4` (an init section; `n` counts init
//! changes), each followed by the caller's `query` (an HLS session).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::chunk::Chunk;
use crate::fmp4::{Fmp4Error, Fmp4Writer, FragmentInfo};
use crate::frame::{CodecConfig, FrameKind, MediaFrame};
use crate::hls::format_utc;
use crate::time::MediaTime;

/// Segments at the end of the playlist whose parts are listed (the spec asks for the
/// parts of segments within three target durations of the end; with parts of a third of
/// a target or more, that is at most this many segments).
pub const PART_SEGMENTS: usize = 3;
/// A segment that grows beyond this is cut even without a keyframe.
const MAX_SEGMENT_BYTES: usize = 32 << 20;

/// LL-HLS parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlConfig {
    /// Target segment duration.
    pub target_duration: Duration,
    /// Target part duration.
    pub part_target: Duration,
    /// Complete segments listed in the playlist.
    pub window_segments: usize,
}

impl Default for LlConfig {
    fn default() -> Self {
        Self {
            target_duration: Duration::from_secs(2),
            part_target: Duration::from_millis(333),
            window_segments: 6,
        }
    }
}

/// A complete segment's bytes, kept by the caller outside the heap (see the module docs).
pub trait KeptSegment: Send + Sync + std::fmt::Debug {
    /// Its length in bytes.
    fn len(&self) -> u64;

    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All its bytes (e.g. a mapping of its file), or why they cannot be read.
    fn bytes(&self) -> std::io::Result<Bytes>;
}

/// One part (a `moof` + `mdat`) and what the playlist says of it.
#[derive(Debug, Clone)]
struct Part {
    /// Its bytes while they are in the heap; `None` once its segment is kept elsewhere
    /// (it is then at the sum of the earlier parts' lengths in the kept segment).
    held: Option<Chunk>,
    len: usize,
    duration: Duration,
    /// Whether it starts with a keyframe (or the stream has no video).
    independent: bool,
}

/// The bytes of a part or segment, as [`LlPlaylist::part`] and [`LlPlaylist::segment`]
/// find them: cheap to take under a lock; [`Media::read`] does the reading.
#[derive(Debug, Clone)]
pub enum Media {
    /// Buffers in the heap, in order.
    Held(Vec<Bytes>),
    /// `len` bytes at `offset` of a kept segment.
    Kept {
        /// The segment.
        segment: Arc<dyn KeptSegment>,
        /// Where the bytes start.
        offset: usize,
        /// How many.
        len: usize,
    },
}

impl Media {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Held(buffers) => buffers.iter().map(Bytes::len).sum(),
            Self::Kept { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its bytes, in order (a kept segment is read, e.g. mapped, the first time; that may
    /// fail).
    pub fn read(self) -> std::io::Result<Vec<Bytes>> {
        match self {
            Self::Held(buffers) => Ok(buffers),
            Self::Kept { segment, offset, len } => {
                let all = segment.bytes()?;
                let end =
                    offset.checked_add(len).filter(|&end| end <= all.len()).ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!(
                                "a kept segment of {} bytes has no {len} at {offset}",
                                all.len()
                            ),
                        )
                    })?;
                Ok(vec![all.slice(offset..end)])
            }
        }
    }
}

/// A segment: complete, or the one being built.
#[derive(Debug, Clone)]
struct Segment {
    msn: u64,
    parts: Vec<Part>,
    /// Where its bytes went once complete, if they left the heap.
    kept: Option<Arc<dyn KeptSegment>>,
    /// The init section its parts need, and its number.
    init: (u64, Bytes),
    wall: SystemTime,
    start: MediaTime,
    /// Set once complete.
    duration: Option<Duration>,
    bytes: usize,
    discontinuity: bool,
}

impl Segment {
    /// The bytes of its parts that are in the heap, in order (all of them until it is kept).
    fn held_buffers(&self) -> Vec<Bytes> {
        self.parts.iter().filter_map(|p| p.held.as_ref()).flat_map(|c| c.parts()).cloned().collect()
    }
}

/// What a blocking playlist request is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// The playlist holds what was asked (or the stream ended): answer now.
    Ready,
    /// Not yet: wait for the next change, then ask again.
    Wait,
}

/// Why a playlist or part request is refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlRequestError {
    /// A query parameter that does not parse.
    #[error("{0} is not a valid number")]
    BadNumber(&'static str),
    /// `_HLS_part` without `_HLS_msn`.
    #[error("_HLS_part needs _HLS_msn")]
    PartWithoutMsn,
    /// A segment more than two beyond the playlist's last.
    #[error("_HLS_msn {asked} is more than two past the last segment ({last})")]
    TooFarAhead {
        /// The segment asked for.
        asked: u64,
        /// The playlist's last segment.
        last: u64,
    },
}

/// The LL-HLS directives of a playlist request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `_HLS_msn`.
    pub msn: Option<u64>,
    /// `_HLS_part`.
    pub part: Option<u64>,
    /// `_HLS_skip=YES` (or `v2`): a delta update.
    pub skip: bool,
}

impl Directives {
    /// Reads `_HLS_msn`, `_HLS_part` and `_HLS_skip` from a query string's pairs; other
    /// keys are ignored.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, LlRequestError> {
        let mut out = Self::default();
        for (key, value) in pairs {
            let number = |name| {
                // At most 20 digits: u64 and nothing longer.
                (value.len() <= 20 && value.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| value.parse::<u64>().ok())
                    .flatten()
                    .ok_or(LlRequestError::BadNumber(name))
            };
            match key {
                "_HLS_msn" => out.msn = Some(number("_HLS_msn")?),
                "_HLS_part" => out.part = Some(number("_HLS_part")?),
                "_HLS_skip" => out.skip = matches!(value, "YES" | "v2"),
                _ => {}
            }
        }
        if out.part.is_some() && out.msn.is_none() {
            return Err(LlRequestError::PartWithoutMsn);
        }
        Ok(out)
    }
}

/// A stream's LL-HLS state: the packager and its playlist. See the module docs.
#[derive(Debug)]
pub struct LlPlaylist {
    config: LlConfig,
    writer: Option<Fmp4Writer>,
    /// The init of the writer, and how many inits came before it.
    init: Option<(u64, Bytes)>,
    inits: u64,
    segments: VecDeque<Segment>,
    /// Complete segments not yet handed out by [`LlPlaylist::take_complete`].
    untaken: Vec<u64>,
    next_msn: u64,
    /// The next segment starts a new timeline.
    discontinuity: bool,
    ended: bool,
    /// Bumped at every change a blocked request may wait for.
    version: u64,
}

impl LlPlaylist {
    /// An empty playlist.
    pub fn new(config: LlConfig) -> Self {
        Self {
            config,
            writer: None,
            init: None,
            inits: 0,
            segments: VecDeque::new(),
            untaken: Vec::new(),
            next_msn: 0,
            discontinuity: false,
            ended: false,
            version: 0,
        }
    }

    /// Starts the tracks `video` and `audio` (the codecs [`crate::fmp4::carries`]): a new
    /// init section, and a new timeline if media came before. Frames of other
    /// configurations are refused until the next call.
    pub fn start(
        &mut self,
        video: Option<&CodecConfig>,
        audio: Option<&CodecConfig>,
    ) -> Result<(), Fmp4Error> {
        let fragment = MediaTime::from_duration(self.config.part_target);
        let writer = Fmp4Writer::new(video, audio, fragment)?;
        // The old init's last samples end its segment.
        if let Some(mut old) = self.writer.take() {
            if let Ok(Some(part)) = old.finish(None) {
                self.add_part(part, old.last_fragment());
            }
        }
        self.close_segment(None);
        if !self.segments.is_empty() {
            self.discontinuity = true;
        }
        self.inits += 1;
        self.init = Some((self.inits, writer.init()));
        self.writer = Some(writer);
        self.ended = false;
        Ok(())
    }

    /// Whether [`LlPlaylist::start`] was called and the stream has not ended.
    pub fn started(&self) -> bool {
        self.writer.is_some()
    }

    /// Adds `frame`, which came at `wall`; a frame of a track the init lacks is an error.
    pub fn push(&mut self, frame: &MediaFrame, wall: SystemTime) -> Result<(), Fmp4Error> {
        let Some(writer) = &mut self.writer else { return Ok(()) };
        if frame.kind() == FrameKind::Data {
            return Ok(());
        }
        let video = frame.kind() == FrameKind::Video;
        let sync = if writer.has_video() { video && frame.keyframe() } else { true };
        let open = self.segments.back().filter(|s| s.duration.is_none());
        if open.is_none() && !sync {
            // Waiting for the first keyframe.
            return Ok(());
        }
        let due = open.is_some_and(|s| {
            let long =
                frame.dts() - s.start >= MediaTime::from_duration(self.config.target_duration);
            (sync && long) || s.bytes >= MAX_SEGMENT_BYTES
        });
        if let Some(part) = writer.push(frame)? {
            let info = writer.last_fragment();
            self.add_part(part, info);
        }
        if due {
            // The part before this frame ends the segment.
            if let Some(writer) = &mut self.writer {
                if let Some(part) = writer.cut(frame.dts())? {
                    let info = writer.last_fragment();
                    self.add_part(part, info);
                }
            }
            self.close_segment(Some(frame.dts()));
        }
        if self.segments.back().is_none_or(|s| s.duration.is_some()) {
            self.open_segment(frame.dts(), wall);
        }
        Ok(())
    }

    /// The stream ended: the last part and segment are complete, and the playlist says
    /// `EXT-X-ENDLIST`.
    pub fn finish(&mut self) {
        if let Some(mut writer) = self.writer.take() {
            if let Ok(Some(part)) = writer.finish(None) {
                self.add_part(part, writer.last_fragment());
            }
        }
        self.close_segment(None);
        self.ended = true;
        self.version += 1;
    }

    fn open_segment(&mut self, start: MediaTime, wall: SystemTime) {
        let Some(init) = self.init.clone() else { return };
        self.segments.push_back(Segment {
            msn: self.next_msn,
            parts: Vec::new(),
            kept: None,
            init,
            wall,
            start,
            duration: None,
            bytes: 0,
            discontinuity: std::mem::take(&mut self.discontinuity),
        });
        self.next_msn += 1;
    }

    fn add_part(&mut self, bytes: Chunk, info: Option<FragmentInfo>) {
        let Some(segment) = self.segments.back_mut().filter(|s| s.duration.is_none()) else {
            return;
        };
        let Some(info) = info else { return };
        segment.bytes += bytes.len();
        let duration = info.duration.to_duration();
        segment.parts.push(Part {
            len: bytes.len(),
            held: Some(bytes),
            duration,
            independent: info.independent,
        });
        self.version += 1;
    }

    /// Completes the open segment, if any (`next`: the decode time that starts the next).
    fn close_segment(&mut self, next: Option<MediaTime>) {
        let Some(segment) = self.segments.back_mut().filter(|s| s.duration.is_none()) else {
            return;
        };
        let parts: Duration = segment.parts.iter().map(|p| p.duration).sum();
        segment.duration = Some(match next {
            Some(next) if next > segment.start => (next - segment.start).to_duration(),
            _ => parts,
        });
        if segment.parts.is_empty() {
            self.segments.pop_back();
            self.next_msn -= 1;
        } else {
            self.untaken.push(segment.msn);
        }
        self.version += 1;
        let keep = self.config.window_segments + 2;
        while self.segments.iter().filter(|s| s.duration.is_some()).count() > keep {
            self.segments.pop_front();
        }
        if let Some(first) = self.segments.front().map(|s| s.msn) {
            self.untaken.retain(|&msn| msn >= first);
        }
    }

    /// The segments completed since the last call (still held), each as its number and
    /// bytes: for the caller to keep elsewhere and hand back with [`LlPlaylist::keep`].
    pub fn take_complete(&mut self) -> Vec<(u64, Vec<Bytes>)> {
        let untaken = std::mem::take(&mut self.untaken);
        untaken
            .into_iter()
            .filter_map(|msn| {
                let segment = self.segments.iter().find(|s| s.msn == msn && s.kept.is_none())?;
                Some((msn, segment.held_buffers()))
            })
            .collect()
    }

    /// Complete segment `msn`'s bytes are now `kept` (all of them, its parts in order):
    /// its parts leave the heap. False (nothing changes) when the playlist no longer holds
    /// that segment, or `kept`'s length is not the segment's.
    pub fn keep(&mut self, msn: u64, kept: Arc<dyn KeptSegment>) -> bool {
        let Some(segment) = self.segments.iter_mut().find(|s| s.msn == msn && s.duration.is_some())
        else {
            return false;
        };
        if segment.kept.is_some() || kept.len() != segment.bytes as u64 {
            return false;
        }
        for part in &mut segment.parts {
            part.held = None;
        }
        segment.kept = Some(kept);
        true
    }

    /// Bytes of media held in the heap (the segment being built, and complete ones not
    /// kept elsewhere).
    pub fn held_bytes(&self) -> usize {
        self.segments.iter().filter(|s| s.kept.is_none()).map(|s| s.bytes).sum()
    }

    /// Bumped at every change a blocked request may wait for.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the stream ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The last segment's number (complete or being built), if any.
    pub fn last_msn(&self) -> Option<u64> {
        self.segments.back().map(|s| s.msn)
    }

    /// What a playlist request with `directives` is to do (see the module docs).
    pub fn check(&self, directives: &Directives) -> Result<Blocking, LlRequestError> {
        let Some(msn) = directives.msn else { return Ok(Blocking::Ready) };
        let last = self.last_msn().unwrap_or(0);
        if msn > last + 2 {
            return Err(LlRequestError::TooFarAhead { asked: msn, last });
        }
        if self.ended || self.has(msn, directives.part) {
            return Ok(Blocking::Ready);
        }
        Ok(Blocking::Wait)
    }

    /// Whether the playlist holds segment `msn` complete, or its part `part`.
    fn has(&self, msn: u64, part: Option<u64>) -> bool {
        let Some(segment) = self.segments.iter().find(|s| s.msn == msn) else {
            // Older than the playlist: long there.
            return self.segments.front().is_some_and(|s| msn < s.msn);
        };
        match part {
            None => segment.duration.is_some(),
            Some(part) => {
                let parts = segment.parts.len() as u64;
                // A part past the segment's last is the next segment's first.
                part < parts || (segment.duration.is_some() && self.next_has_part(msn))
            }
        }
    }

    fn next_has_part(&self, msn: u64) -> bool {
        self.segments.iter().any(|s| s.msn > msn && !s.parts.is_empty())
    }

    /// Part `part` of segment `msn`, if held and complete.
    pub fn part(&self, msn: u64, part: u64) -> Option<Media> {
        let segment = self.segments.iter().find(|s| s.msn == msn)?;
        let index = usize::try_from(part).ok()?;
        let part = segment.parts.get(index)?;
        Some(match &segment.kept {
            Some(kept) => Media::Kept {
                segment: Arc::clone(kept),
                offset: segment.parts[..index].iter().map(|p| p.len).sum(),
                len: part.len,
            },
            None => Media::Held(part.held.as_ref()?.parts().to_vec()),
        })
    }

    /// Whether part `part` of segment `msn` may still come (it is the next one, the one a
    /// preload hint names): a request for it waits.
    pub fn part_pending(&self, msn: u64, part: u64) -> bool {
        if self.ended {
            return false;
        }
        let Some(last) = self.segments.back() else { return false };
        let open = last.duration.is_none();
        let next_index = last.parts.len() as u64;
        (open && msn == last.msn && part == next_index)
            || (!open && msn == last.msn + 1 && part == 0)
    }

    /// Complete segment `msn`'s bytes (its parts in order), if held.
    pub fn segment(&self, msn: u64) -> Option<Media> {
        let segment = self.segments.iter().find(|s| s.msn == msn && s.duration.is_some())?;
        Some(match &segment.kept {
            Some(kept) => Media::Kept { segment: Arc::clone(kept), offset: 0, len: segment.bytes },
            None => Media::Held(segment.held_buffers()),
        })
    }

    /// Init section `n`, if a held segment needs it.
    pub fn init(&self, n: u64) -> Option<Bytes> {
        self.segments
            .iter()
            .map(|s| &s.init)
            .chain(self.init.as_ref())
            .find(|(number, _)| *number == n)
            .map(|(_, bytes)| bytes.clone())
    }

    /// The media playlist (a delta update with `skip`), each URI after `prefix` (where the
    /// media is served relative to the playlist, `""` or `ll/`) and followed by `query`
    /// (`""`, or `?s=...`); `None` before the first part.
    pub fn render(&self, skip: bool, prefix: &str, query: &str) -> Option<String> {
        let complete: Vec<&Segment> =
            self.segments.iter().filter(|s| s.duration.is_some()).collect();
        let window_start = complete.len().saturating_sub(self.config.window_segments);
        let mut listed: Vec<&Segment> = complete[window_start..].to_vec();
        if let Some(open) = self.segments.back().filter(|s| s.duration.is_none()) {
            if !open.parts.is_empty() {
                listed.push(open);
            }
        }
        let first = listed.first()?;
        let target = self.target_seconds(&listed);
        let part_target = self.config.part_target.as_secs_f64();
        let skip_until = 6.0 * target as f64;
        let mut text = String::with_capacity(512 + listed.len() * 256);
        let _ = write!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={skip_until:.1}\n\
             #EXT-X-PART-INF:PART-TARGET={part_target:.3}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            3.0 * part_target,
            first.msn
        );
        // Delta update: segments older than CAN-SKIP-UNTIL from the end are skipped.
        let mut skipped = 0;
        if skip {
            // Never within CAN-SKIP-UNTIL of the end: the segment that crosses it stays.
            let mut from_end = 0.0;
            let mut skippable = 0;
            for (i, segment) in listed.iter().enumerate().rev() {
                from_end += segment.duration.map_or(0.0, |d| d.as_secs_f64());
                if from_end >= skip_until {
                    skippable = i;
                    break;
                }
            }
            // Only whole segments with nothing special about them are skipped.
            skipped = listed[..skippable]
                .iter()
                .take_while(|s| !s.discontinuity && s.duration.is_some())
                .count();
            if skipped > 0 {
                let _ = writeln!(text, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
            }
        }
        let parts_from = listed.len().saturating_sub(PART_SEGMENTS + 1);
        let mut map = None;
        for (i, segment) in listed.iter().enumerate() {
            if map != Some(segment.init.0) {
                if i >= skipped {
                    let _ = writeln!(
                        text,
                        "#EXT-X-MAP:URI=\"{prefix}init{}.mp4{query}\"",
                        segment.init.0
                    );
                }
                map = Some(segment.init.0);
            }
            if i < skipped {
                continue;
            }
            if segment.discontinuity {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(text, "#EXT-X-PROGRAM-DATE-TIME:{}", format_utc(segment.wall));
            if i >= parts_from {
                for (n, part) in segment.parts.iter().enumerate() {
                    let _ = writeln!(
                        text,
                        "#EXT-X-PART:DURATION={:.3},URI=\"{prefix}{}.{n}.m4s{query}\"{}",
                        part.duration.as_secs_f64(),
                        segment.msn,
                        if part.independent { ",INDEPENDENT=YES" } else { "" }
                    );
                }
            }
            if let Some(duration) = segment.duration {
                let _ = writeln!(
                    text,
                    "#EXTINF:{:.3},\n{prefix}{}.m4s{query}",
                    duration.as_secs_f64(),
                    segment.msn
                );
            }
        }
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        } else if let Some(last) = listed.last() {
            let (msn, part) = match last.duration {
                None => (last.msn, last.parts.len()),
                Some(_) => (last.msn + 1, 0),
            };
            let _ = writeln!(
                text,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{prefix}{msn}.{part}.m4s{query}\""
            );
        }
        Some(text)
    }

    /// `EXT-X-TARGETDURATION`: the longest listed segment, rounded, at least the target.
    fn target_seconds(&self, listed: &[&Segment]) -> u64 {
        let longest = listed
            .iter()
            .filter_map(|s| s.duration)
            .map(|d| d.as_secs_f64().round() as u64)
            .max()
            .unwrap_or(0);
        longest.max(self.config.target_duration.as_secs_f64().round() as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmp4_cut::Fmp4File;
    use crate::testdata::{aac_config, av, avc_config};

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    /// A playlist fed `seconds` of 30 fps video (a keyframe a second) and AAC, 2 s
    /// segments of 333 ms parts.
    fn fed(seconds: i64) -> LlPlaylist {
        let (v, a) = (avc_config(), aac_config());
        let mut playlist = LlPlaylist::new(LlConfig::default());
        playlist.start(Some(&v), Some(&a)).expect("start");
        for frame in av(&v, &a, 0, seconds) {
            let wall = T0 + frame.dts().to_duration();
            playlist.push(&frame, wall).expect("push");
        }
        playlist
    }

    #[test]
    fn segments_start_on_keyframes_and_are_made_of_parts() {
        let playlist = fed(7);
        let text = playlist.render(false, "", "").expect("a playlist");
        // 0..2, 2..4, 4..6 complete; 6.. being built.
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"), "{text}");
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.333\n"), "{text}");
        assert!(text.contains("CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.999"), "{text}");
        assert!(text.contains("#EXT-X-MAP:URI=\"init1.mp4\"\n"), "{text}");
        for msn in 0..3 {
            assert!(text.contains(&format!("#EXTINF:2.000,\n{msn}.m4s\n")), "{msn}: {text}");
            assert!(text.contains(&format!("URI=\"{msn}.0.m4s\",INDEPENDENT=YES")), "{text}");
        }
        assert!(text.contains("URI=\"3.0.m4s\",INDEPENDENT=YES"), "{text}");
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"3."), "{text}");
        assert!(!text.contains("#EXT-X-ENDLIST"), "{text}");
        // Parts about a third of a second; a segment is its parts, whole and continuous.
        let durations: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
            .map(|l| l.split(',').next().and_then(|d| d.parse().ok()).expect("duration"))
            .collect();
        assert!(durations.iter().all(|d| (0.2..=0.45).contains(d)), "{durations:?}");
        let mut file = playlist.init(1).expect("init").to_vec();
        for bytes in playlist.segment(1).expect("segment 1").read().expect("held") {
            file.extend_from_slice(&bytes);
        }
        let read = Fmp4File::read(&Bytes::from(file)).expect("a whole file");
        let video = read.tracks.iter().position(|t| t.video).expect("video");
        assert_eq!(read.sample_count(video), 60);
        let (first, _, sync) = read.sample(video, 0).expect("sample");
        assert_eq!((first, sync), (MediaTime::from_millis(2000), true));
        assert!(playlist.segment(3).is_none(), "segment 3 is not complete");
    }

    /// A kept segment in memory, for the tests.
    #[derive(Debug)]
    struct InMemory(Bytes);

    impl KeptSegment for InMemory {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }

        fn bytes(&self) -> std::io::Result<Bytes> {
            Ok(self.0.clone())
        }
    }

    fn joined(media: Media) -> Vec<u8> {
        media.read().expect("readable").concat()
    }

    #[test]
    fn complete_segments_leave_the_heap_and_read_the_same() {
        let mut playlist = fed(7);
        let held_before = playlist.held_bytes();
        let parts_before: Vec<Vec<u8>> =
            (0..6).map_while(|n| playlist.part(1, n)).map(joined).collect();
        assert!(parts_before.len() >= 5, "{}", parts_before.len());
        let whole_before = joined(playlist.segment(1).expect("segment 1"));
        let complete = playlist.take_complete();
        assert_eq!(complete.iter().map(|(msn, _)| *msn).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(playlist.take_complete().is_empty(), "each segment is handed out once");
        for (msn, bytes) in complete {
            let kept = Arc::new(InMemory(Bytes::from(bytes.concat())));
            // A length that is not the segment's is refused.
            let short = Arc::new(InMemory(kept.0.slice(1..)));
            assert!(!playlist.keep(msn, short));
            assert!(playlist.keep(msn, kept));
        }
        assert!(playlist.held_bytes() < held_before / 2, "only the open segment is held");
        let parts_after: Vec<Vec<u8>> =
            (0..6).map_while(|n| playlist.part(1, n)).map(joined).collect();
        assert_eq!(parts_after, parts_before);
        assert!(matches!(playlist.part(1, 0), Some(Media::Kept { .. })));
        assert_eq!(joined(playlist.segment(1).expect("segment 1")), whole_before);
        assert!(matches!(playlist.part(3, 0), Some(Media::Held(_))), "being built");
        assert!(!playlist.keep(3, Arc::new(InMemory(Bytes::new()))), "not complete");
    }

    #[test]
    fn a_kept_segment_that_shrank_is_an_error_not_a_panic() {
        let mut playlist = fed(3);
        let (msn, bytes) = playlist.take_complete().pop().expect("segment 0");
        #[derive(Debug)]
        struct Shrinking(u64);
        impl KeptSegment for Shrinking {
            fn len(&self) -> u64 {
                self.0
            }
            fn bytes(&self) -> std::io::Result<Bytes> {
                Ok(Bytes::from_static(b"short"))
            }
        }
        let len = bytes.iter().map(Bytes::len).sum::<usize>() as u64;
        assert!(playlist.keep(msn, Arc::new(Shrinking(len))));
        assert!(playlist.segment(msn).expect("kept").read().is_err());
        assert!(playlist.part(msn, 1).expect("kept").read().is_err());
    }

    #[test]
    fn blocking_requests_wait_for_their_part_and_bad_ones_are_refused() {
        let mut playlist = fed(3);
        // Segment 0 complete, segment 1 being built.
        let last = playlist.last_msn().expect("segments");
        assert_eq!(last, 1);
        let ask = |msn, part| Directives { msn: Some(msn), part, skip: false };
        assert_eq!(playlist.check(&Directives::default()), Ok(Blocking::Ready));
        assert_eq!(playlist.check(&ask(0, None)), Ok(Blocking::Ready));
        assert_eq!(playlist.check(&ask(1, Some(0))), Ok(Blocking::Ready));
        assert_eq!(playlist.check(&ask(1, None)), Ok(Blocking::Wait));
        assert_eq!(playlist.check(&ask(1, Some(40))), Ok(Blocking::Wait));
        assert_eq!(playlist.check(&ask(3, Some(0))), Ok(Blocking::Wait));
        assert_eq!(
            playlist.check(&ask(4, None)),
            Err(LlRequestError::TooFarAhead { asked: 4, last: 1 })
        );
        // The hinted part may be waited for; a part far ahead is not.
        let next = playlist.render(false, "", "").expect("playlist");
        let hint =
            next.lines().find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""));
        let (msn, part) = hint
            .and_then(|h| h.strip_suffix(".m4s\""))
            .and_then(|h| h.split_once('.'))
            .map(|(m, p)| (m.parse().expect("msn"), p.parse().expect("part")))
            .expect("a preload hint");
        assert!(playlist.part_pending(msn, part));
        assert!(playlist.part(msn, part).is_none());
        assert!(!playlist.part_pending(msn, part + 5));
        let version = playlist.version();
        // The end answers every wait.
        playlist.finish();
        assert!(playlist.version() > version);
        assert_eq!(playlist.check(&ask(3, Some(0))), Ok(Blocking::Ready));
        assert!(!playlist.part_pending(msn, part));
        let text = playlist.render(false, "", "?s=abc").expect("playlist");
        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
        assert!(text.contains("1.m4s?s=abc\n") && text.contains("init1.mp4?s=abc"), "{text}");
    }

    #[test]
    fn a_delta_update_skips_the_old_segments() {
        let mut playlist = LlPlaylist::new(LlConfig { window_segments: 20, ..LlConfig::default() });
        let (v, a) = (avc_config(), aac_config());
        playlist.start(Some(&v), Some(&a)).expect("start");
        for frame in av(&v, &a, 0, 31) {
            playlist.push(&frame, T0 + frame.dts().to_duration()).expect("push");
        }
        let full = playlist.render(false, "", "").expect("playlist");
        let delta = playlist.render(true, "", "").expect("playlist");
        // 15 complete segments of 2 s; the last 12 s (CAN-SKIP-UNTIL) and more stay.
        assert!(full.contains("CAN-SKIP-UNTIL=12.0"), "{full}");
        let skipped: usize = delta
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS="))
            .and_then(|n| n.parse().ok())
            .expect("a skip tag");
        assert!((8..=9).contains(&skipped), "{skipped}: {delta}");
        assert!(!delta.contains("\n0.m4s") && full.contains("\n0.m4s"), "{delta}");
        let kept = delta.lines().filter(|l| l.starts_with("#EXTINF")).count();
        assert_eq!(kept + skipped, full.lines().filter(|l| l.starts_with("#EXTINF")).count());
    }

    #[test]
    fn a_new_init_starts_a_new_timeline() {
        let mut playlist = fed(3);
        let (v, a) = (avc_config(), aac_config());
        playlist.start(Some(&v), Some(&a)).expect("restart");
        for frame in av(&v, &a, 50_000, 3) {
            playlist.push(&frame, T0 + frame.dts().to_duration()).expect("push");
        }
        let text = playlist.render(false, "", "").expect("playlist");
        let map2 = text.find("init2.mp4").expect("the new init");
        let discontinuity = text.find("#EXT-X-DISCONTINUITY").expect("a discontinuity");
        assert!(text.find("init1.mp4").is_some_and(|m1| m1 < discontinuity), "{text}");
        assert!(map2 < discontinuity, "the map comes before its segment: {text}");
        assert!(playlist.init(1).is_some() && playlist.init(2).is_some());
    }

    #[test]
    fn directives_parse_strictly() {
        let parse = |q: &[(&'static str, &'static str)]| Directives::parse(q.iter().copied());
        assert_eq!(
            parse(&[("_HLS_msn", "12"), ("_HLS_part", "3"), ("_HLS_skip", "YES"), ("s", "x")]),
            Ok(Directives { msn: Some(12), part: Some(3), skip: true })
        );
        for bad in ["-1", "1e3", "", " 1", "0x10", "99999999999999999999999", "１"] {
            assert!(parse(&[("_HLS_msn", bad)]).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&[("_HLS_part", "1")]), Err(LlRequestError::PartWithoutMsn));
        assert_eq!(parse(&[("_HLS_skip", "maybe")]), Ok(Directives::default()));
    }

    #[test]
    fn an_audio_only_stream_cuts_on_any_frame() {
        let a = aac_config();
        let mut playlist = LlPlaylist::new(LlConfig::default());
        playlist.start(None, Some(&a)).expect("start");
        for frame in av(&avc_config(), &a, 0, 5).iter().filter(|f| f.kind() == FrameKind::Audio) {
            playlist.push(frame, T0).expect("push");
        }
        let text = playlist.render(false, "", "").expect("playlist");
        assert!(text.contains("0.m4s") && text.contains("1.m4s"), "{text}");
        assert!(!text.contains("INDEPENDENT=YES") || text.matches("INDEPENDENT=YES").count() > 3);
    }
}
