//! The live HLS segmenter and media playlist, sans-IO: timed elementary-stream units in,
//! MPEG-TS segments and playlist text out. Wall-clock time is an argument (for
//! `EXT-X-PROGRAM-DATE-TIME`); nothing here reads a clock.
//!
//! Segments start on a video keyframe and are cut at the first keyframe at or after the
//! target duration (audio-only streams: at the target duration). The playlist lists the
//! last `window_segments` complete segments; a few more are kept so that a slow client's
//! download of a segment that just left the window still succeeds.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::ts::{pes_size_bound, Tracks, TsMuxer, PACKET};

/// Most segments held beyond the playlist window: RFC 8216 section 6.2.2 keeps a segment
/// that left the playlist for its own duration plus the playlist's (see
/// `Segmenter::expire`), which is `window + 1` segments of equal length; the cap holds
/// when lengths differ.
pub fn max_grace_segments(window: usize) -> usize {
    window + 2
}
/// A timestamp jump larger than this (either way) is a new timeline: a discontinuity.
pub const MAX_TIMESTAMP_JUMP_MS: i64 = 10_000;
/// AAC frames gathered into one PES packet (fewer, fuller TS packets).
const AUDIO_FRAMES_PER_PES: usize = 4;
/// A segment is written in chunks of (at least) this many bytes. Design change: one buffer
/// per segment (megabytes, regrown, then trimmed) was a fresh large allocation every
/// segment, which allocators hand back to the kernel and fault in again, zeroed: at 300
/// streams that page clearing was most of the HLS packager's CPU. Chunks of this size are
/// reused from the allocator's free lists, and nothing is ever copied to grow or trim.
const CHUNK: usize = 64 * 1024;

/// Segmenting parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsConfig {
    /// Target segment duration.
    pub target_duration: Duration,
    /// Complete segments listed in the playlist.
    pub window_segments: usize,
    /// A segment that grows beyond this is cut even without a keyframe.
    pub max_segment_bytes: usize,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            target_duration: Duration::from_secs(6),
            window_segments: 6,
            max_segment_bytes: 32 << 20,
        }
    }
}

/// A complete segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its media sequence number (its URI is `{sequence}.ts`).
    pub sequence: u64,
    /// Its duration from media timestamps.
    pub duration: Duration,
    /// Wall-clock time of its first frame.
    pub program_date_time: SystemTime,
    /// Whether a new timeline starts with it.
    pub discontinuity: bool,
    /// The MPEG-TS bytes.
    pub data: SegmentBytes,
}

/// A segment's MPEG-TS bytes, in the chunks they were written in. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct SegmentBytes {
    chunks: Arc<[Bytes]>,
    len: usize,
}

impl SegmentBytes {
    /// A segment made of `chunks`, in order.
    pub fn from_chunks(chunks: Vec<Bytes>) -> Self {
        let len = chunks.iter().map(Bytes::len).sum();
        Self { chunks: chunks.into(), len }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order: their concatenation is the segment.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The segment as one contiguous copy.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for chunk in self.chunks.iter() {
            out.extend_from_slice(chunk);
        }
        out
    }
}

/// A segment being written: the chunks already full, and the one being filled.
#[derive(Debug, Default)]
struct ChunkWriter {
    full: Vec<Bytes>,
    current: BytesMut,
    len: usize,
}

impl ChunkWriter {
    /// Runs `write`, which appends at most `bound` bytes, on the current chunk, or on a new
    /// one when the current lacks the room (a write never regrows, so never copies, a chunk).
    fn write(&mut self, bound: usize, write: impl FnOnce(&mut BytesMut)) {
        if self.current.capacity() - self.current.len() < bound {
            if !self.current.is_empty() {
                self.full.push(self.current.split().freeze());
            }
            self.current = BytesMut::with_capacity(bound.max(CHUNK));
        }
        let before = self.current.len();
        write(&mut self.current);
        self.len += self.current.len() - before;
    }

    /// The bytes not taken by [`ChunkWriter::take_full`] yet (all of them when it was
    /// never called).
    fn finish(mut self) -> SegmentBytes {
        if !self.current.is_empty() {
            self.full.push(self.current.freeze());
        }
        SegmentBytes::from_chunks(self.full)
    }

    /// Takes the chunks already full (the one being filled stays); `len` still counts them.
    fn take_full(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.full)
    }
}

#[derive(Debug)]
struct Building {
    sequence: u64,
    start_ms: i64,
    last_ms: i64,
    program_date_time: SystemTime,
    discontinuity: bool,
    data: ChunkWriter,
}

impl Building {
    fn write_video(
        &mut self,
        muxer: &mut TsMuxer,
        pts_90k: u64,
        dts_90k: u64,
        keyframe: bool,
        annexb: &[u8],
    ) {
        self.data.write(pes_size_bound(annexb.len()), |out| {
            muxer.write_video(out, pts_90k, dts_90k, keyframe, annexb)
        });
    }

    fn write_audio(&mut self, muxer: &mut TsMuxer, pts_90k: u64, adts: &[u8]) {
        self.data.write(pes_size_bound(adts.len()), |out| muxer.write_audio(out, pts_90k, adts));
    }

    fn write_tables(&mut self, muxer: &mut TsMuxer) {
        self.data.write(2 * PACKET, |out| muxer.write_tables(out));
    }
}

/// Extends RTMP's wrapping 32-bit millisecond clock to a monotonic-enough 64-bit one, and
/// flags jumps.
#[derive(Debug, Default)]
struct Timeline {
    last_raw: Option<u32>,
    last_ext: i64,
}

impl Timeline {
    /// Returns the extended time and whether this sample jumped (a new timeline).
    fn extend(&mut self, raw: u32) -> (i64, bool) {
        let Some(last_raw) = self.last_raw else {
            self.last_raw = Some(raw);
            self.last_ext = i64::from(raw);
            return (self.last_ext, false);
        };
        let delta = i64::from(raw.wrapping_sub(last_raw) as i32);
        self.last_raw = Some(raw);
        if delta.abs() > MAX_TIMESTAMP_JUMP_MS {
            // Continue the 64-bit line just after the last sample.
            self.last_ext += 1;
            return (self.last_ext, true);
        }
        self.last_ext += delta;
        (self.last_ext, false)
    }
}

/// The live segmenter. See the module docs.
#[derive(Debug)]
pub struct Segmenter {
    config: HlsConfig,
    muxer: TsMuxer,
    timeline: Timeline,
    building: Option<Building>,
    segments: VecDeque<Segment>,
    next_sequence: u64,
    discontinuity_sequence: u64,
    pending_discontinuity: bool,
    audio: Vec<u8>,
    audio_pts_ms: i64,
    audio_frames: usize,
    ended: bool,
}

impl Segmenter {
    /// A segmenter for a stream with `tracks`.
    pub fn new(config: HlsConfig, tracks: Tracks) -> Self {
        Self {
            config,
            muxer: TsMuxer::new(tracks),
            timeline: Timeline::default(),
            building: None,
            segments: VecDeque::new(),
            next_sequence: 0,
            discontinuity_sequence: 0,
            pending_discontinuity: false,
            audio: Vec::new(),
            audio_pts_ms: 0,
            audio_frames: 0,
            ended: false,
        }
    }

    /// The elementary streams its segments carry.
    pub fn tracks(&self) -> Tracks {
        self.muxer.tracks()
    }

    /// A fresh segmenter that carries this one's finished segments and numbering on, for
    /// `tracks`, starting a new timeline (`EXT-X-DISCONTINUITY`) with a fresh muxer: what a
    /// packager restarted after a crash continues from. The segment being built is not
    /// carried over.
    pub fn successor(&self, tracks: Tracks) -> Self {
        let mut next = Self::new(self.config.clone(), tracks);
        next.segments = self.segments.clone();
        // The segment being built was never published: its number is used again, so the
        // numbers stay consecutive (players count segments by position from
        // `EXT-X-MEDIA-SEQUENCE`).
        next.next_sequence = self.building.as_ref().map_or(self.next_sequence, |b| b.sequence);
        next.discontinuity_sequence = self.discontinuity_sequence;
        next.pending_discontinuity = true;
        next
    }

    /// A fresh segmenter for `tracks` that numbers on from this one but holds none of its
    /// segments: what a stream continues with once a track it lacked starts (a WHIP
    /// publisher's video after its audio). Its old segments leave the playlist at once, so
    /// no player starts from a segment without the track; the window moves on as if they
    /// had slid out (media and discontinuity sequences), and the next segment starts a new
    /// timeline (`EXT-X-DISCONTINUITY`).
    pub fn restart_for(&self, tracks: Tracks) -> Self {
        let mut next = self.successor(tracks);
        let window = self.window();
        next.discontinuity_sequence += window.iter().filter(|s| s.discontinuity).count() as u64;
        next.segments.clear();
        next
    }

    /// The publisher reconnected (a new timeline): the current segment ends, and the next
    /// one starts with `EXT-X-DISCONTINUITY`.
    pub fn mark_discontinuity(&mut self) {
        self.close_segment();
        self.timeline = Timeline::default();
        self.pending_discontinuity = true;
        self.ended = false;
    }

    /// Takes one H.264 access unit (Annex B; keyframes carry SPS/PPS).
    pub fn push_video(
        &mut self,
        dts_ms: u32,
        cts_ms: i32,
        keyframe: bool,
        annexb: &[u8],
        wall_clock: SystemTime,
    ) {
        let (dts, jumped) = self.timeline.extend(dts_ms);
        if jumped {
            self.close_segment();
            self.pending_discontinuity = true;
        }
        let cut_due = self.building.as_ref().is_some_and(|b| dts - b.start_ms >= self.target_ms());
        if keyframe && (self.building.is_none() || cut_due) {
            self.close_segment_at(Some(dts));
            self.open_segment(dts, wall_clock);
        }
        let Some(building) = self.building.as_mut() else {
            return; // before the first keyframe: nothing can decode it
        };
        // Audio gathered so far precedes this frame in the file.
        if !self.audio.is_empty() {
            building.write_audio(&mut self.muxer, to_90k(self.audio_pts_ms), &self.audio);
            self.audio.clear();
            self.audio_frames = 0;
        }
        let pts = dts + i64::from(cts_ms);
        building.write_video(&mut self.muxer, to_90k(pts), to_90k(dts), keyframe, annexb);
        building.last_ms = building.last_ms.max(dts);
        self.enforce_size_limit();
    }

    /// Takes one AAC frame with its ADTS header.
    pub fn push_audio(&mut self, ts_ms: u32, adts: &[u8], wall_clock: SystemTime) {
        let (ts, jumped) = self.timeline.extend(ts_ms);
        if jumped {
            self.close_segment();
            self.pending_discontinuity = true;
        }
        if !self.muxer.tracks().video {
            let cut_due =
                self.building.as_ref().is_some_and(|b| ts - b.start_ms >= self.target_ms());
            if self.building.is_none() || cut_due {
                self.close_segment_at(Some(ts));
                self.open_segment(ts, wall_clock);
            }
        }
        let Some(building) = self.building.as_mut() else { return };
        if self.audio.is_empty() {
            self.audio_pts_ms = ts;
        }
        self.audio.extend_from_slice(adts);
        self.audio_frames += 1;
        building.last_ms = building.last_ms.max(ts);
        if self.audio_frames >= AUDIO_FRAMES_PER_PES {
            building.write_audio(&mut self.muxer, to_90k(self.audio_pts_ms), &self.audio);
            self.audio.clear();
            self.audio_frames = 0;
        }
        self.enforce_size_limit();
    }

    /// The stream ended: completes the current segment.
    pub fn finish(&mut self) {
        self.close_segment();
        self.ended = true;
    }

    fn target_ms(&self) -> i64 {
        self.config.target_duration.as_millis() as i64
    }

    fn enforce_size_limit(&mut self) {
        if self.building.as_ref().is_some_and(|b| b.data.len > self.config.max_segment_bytes) {
            // Bounded memory beats a complete GOP; the next segment waits for a keyframe
            // (or, audio-only, starts with the next frame).
            self.close_segment();
        }
    }

    fn open_segment(&mut self, start_ms: i64, wall_clock: SystemTime) {
        let mut building = Building {
            sequence: self.next_sequence,
            start_ms,
            last_ms: start_ms,
            program_date_time: wall_clock,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            data: ChunkWriter::default(),
        };
        building.write_tables(&mut self.muxer);
        self.building = Some(building);
        self.next_sequence += 1;
    }

    /// Completes the current segment where the stream stops or jumps: its last frame is
    /// assumed to last one 30 fps frame.
    fn close_segment(&mut self) {
        self.close_segment_at(None);
    }

    /// Completes the current segment; `end_ms` is where the next one starts, if known.
    fn close_segment_at(&mut self, end_ms: Option<i64>) {
        let Some(mut building) = self.building.take() else { return };
        if !self.audio.is_empty() {
            building.write_audio(&mut self.muxer, to_90k(self.audio_pts_ms), &self.audio);
            self.audio.clear();
            self.audio_frames = 0;
        }
        let end = end_ms.unwrap_or(building.last_ms + 33);
        let duration_ms = (end - building.start_ms).max(1) as u64;
        self.segments.push_back(Segment {
            sequence: building.sequence,
            duration: Duration::from_millis(duration_ms),
            program_date_time: building.program_date_time,
            discontinuity: building.discontinuity,
            data: building.data.finish(),
        });
        // A discontinuity that leaves the playlist window advances the sequence.
        let window = self.config.window_segments;
        if self.segments.len() > window {
            let left = &self.segments[self.segments.len() - window - 1];
            if left.discontinuity {
                self.discontinuity_sequence += 1;
            }
        }
        self.expire();
    }

    /// Drops the segments that left the playlist long enough ago. RFC 8216 section 6.2.2:
    /// a segment removed from the playlist stays available for its duration plus that of
    /// the longest playlist that contained it, so that a client that read that playlist
    /// (and starts at its first segment, or pauses) still finds it. The time since the
    /// oldest segment left is at least the duration of the segments completed after the
    /// one whose arrival pushed it out.
    fn expire(&mut self) {
        let window = self.config.window_segments;
        let cap = window + max_grace_segments(window);
        while self.segments.len() > window {
            let durations = || self.segments.iter().map(|s| s.duration);
            let gone_for: Duration = durations().skip(window + 1).sum();
            let (oldest, playlist) =
                (durations().next().unwrap_or_default(), durations().take(window).sum());
            if self.segments.len() <= cap && gone_for < oldest + playlist {
                break;
            }
            self.segments.pop_front();
        }
    }

    /// The media playlist, or `None` before the first segment is complete.
    pub fn playlist(&self) -> Option<String> {
        let window = self.window();
        let first = window.first()?;
        let longest =
            window.iter().map(|s| s.duration.as_secs_f64().ceil() as u64).max().unwrap_or(1);
        let target = longest.max(self.config.target_duration.as_secs_f64().round() as u64).max(1);
        let mut text = String::with_capacity(128 + window.len() * 96);
        let _ = write!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            first.sequence, self.discontinuity_sequence
        );
        for segment in window {
            if segment.discontinuity {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = write!(
                text,
                "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{:.3},\n{}.ts\n",
                format_utc(segment.program_date_time),
                segment.duration.as_secs_f64(),
                segment.sequence
            );
        }
        Some(text)
    }

    fn window(&self) -> Vec<&Segment> {
        let skip = self.segments.len().saturating_sub(self.config.window_segments);
        self.segments.iter().skip(skip).collect()
    }

    /// A complete segment still held (in the window or its grace), by sequence number.
    pub fn segment(&self, sequence: u64) -> Option<SegmentBytes> {
        self.segments.iter().find(|s| s.sequence == sequence).map(|s| s.data.clone())
    }

    /// The segment being built, for a caller that stores it as it grows (a file, say): its
    /// sequence number and its bytes written since the last call, in whole chunks (the
    /// chunk being filled stays). Bytes taken here are not in the complete segment's
    /// [`Segment::data`] (nor [`Segmenter::segment`]) later: those hold the rest only.
    /// `None` while no segment is being built.
    pub fn take_building(&mut self) -> Option<(u64, Vec<Bytes>)> {
        let building = self.building.as_mut()?;
        Some((building.sequence, building.data.take_full()))
    }

    /// Moves a complete segment's bytes out (to a store of the caller's: a file, say),
    /// leaving its entry (duration, numbering) in the playlist; [`Segmenter::segment`]
    /// returns empty bytes for it from then on. `None` when no such segment is held.
    pub fn take_segment(&mut self, sequence: u64) -> Option<SegmentBytes> {
        let segment = self.segments.iter_mut().find(|s| s.sequence == sequence)?;
        Some(std::mem::take(&mut segment.data))
    }

    /// The sequence numbers of every segment still held.
    pub fn segment_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.segments.iter().map(|s| s.sequence)
    }

    /// The newest complete segment's sequence number.
    pub fn last_sequence(&self) -> Option<u64> {
        self.segments.back().map(|s| s.sequence)
    }

    /// Whether [`Segmenter::finish`] was called since the last (re)start.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// Milliseconds to the 90 kHz MPEG clock (negative times clamp to 0).
fn to_90k(ms: i64) -> u64 {
    (ms.max(0) as u64) * 90
}

/// `2026-11-24T10:00:00.000Z`
pub fn format_utc(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEY: &[u8] = &[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x65, 0x88];
    const INTER: &[u8] = &[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x41, 0x9a];
    const ADTS: &[u8] = &[0xff, 0xf1, 0x50, 0x80, 0x01, 0x3f, 0xfc, 1];

    fn config(target_secs: u64, window: usize) -> HlsConfig {
        HlsConfig {
            target_duration: Duration::from_secs(target_secs),
            window_segments: window,
            max_segment_bytes: 1 << 20,
        }
    }

    /// Pushes `seconds` of 30 fps video (keyframe every `gop` frames) and 44.1 kHz audio,
    /// starting at media time `start_ms`.
    fn feed(s: &mut Segmenter, start_ms: u32, seconds: u32, gop: u32) {
        let epoch = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let frames = seconds * 30;
        let mut audio_next = 0u64;
        for i in 0..frames {
            let ms = i * 1000 / 30;
            while audio_next * 1024 * 1000 / 44_100 <= u64::from(ms) {
                let ams = (audio_next * 1024 * 1000 / 44_100) as u32;
                s.push_audio(
                    start_ms.wrapping_add(ams),
                    ADTS,
                    epoch + Duration::from_millis(u64::from(ams)),
                );
                audio_next += 1;
            }
            let key = i % gop == 0;
            let wall = epoch + Duration::from_millis(u64::from(ms));
            s.push_video(start_ms.wrapping_add(ms), 0, key, if key { KEY } else { INTER }, wall);
        }
    }

    #[test]
    fn a_successor_keeps_the_finished_segments_and_their_numbers_after_a_discontinuity() {
        let mut s = Segmenter::new(config(2, 6), Tracks { video: true, audio: true });
        feed(&mut s, 0, 7, 30);
        let finished: Vec<u64> = s.segment_numbers().collect();
        assert_eq!(finished, vec![0, 1, 2], "segment 3 is being built");
        let mut next = s.successor(Tracks { video: true, audio: true });
        assert_eq!(next.segment_numbers().collect::<Vec<_>>(), finished);
        // A new timeline (the crashed packager's state is gone), numbered on from 3.
        feed(&mut next, 90_000, 5, 30);
        let playlist = next.playlist().expect("segments");
        let numbers: Vec<u64> = next.segment_numbers().collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert!(numbers.contains(&3) && numbers.contains(&4), "{numbers:?}");
        assert_eq!(playlist.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{playlist}");
        assert!(playlist.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME"), "{playlist}");
    }

    #[test]
    fn a_restart_for_a_late_track_drops_the_old_segments_and_numbers_on() {
        // Audio alone first: segments cut on time.
        let mut s = Segmenter::new(config(1, 6), Tracks { video: false, audio: true });
        let epoch = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        for i in 0..130u32 {
            let ms = i * 1024 * 1000 / 44_100;
            s.push_audio(ms, ADTS, epoch + Duration::from_millis(u64::from(ms)));
        }
        let old: Vec<u64> = s.segment_numbers().collect();
        assert!(!old.is_empty(), "audio-only segments were cut");
        let mut next = s.restart_for(Tracks { video: true, audio: true });
        assert_eq!(next.tracks(), Tracks { video: true, audio: true });
        assert!(next.playlist().is_none(), "no segment without video is listed");
        feed(&mut next, 3_000, 4, 30);
        let numbers: Vec<u64> = next.segment_numbers().collect();
        assert!(numbers.iter().all(|n| !old.contains(n)), "{old:?} then {numbers:?}");
        assert!(numbers[0] > *old.last().expect("old"), "{numbers:?}");
        let playlist = next.playlist().expect("segments");
        assert!(
            playlist.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{}\n", numbers[0])),
            "{playlist}"
        );
        assert!(playlist.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME"), "{playlist}");
    }

    #[test]
    fn cuts_on_keyframes_after_the_target_duration() {
        let mut s = Segmenter::new(config(2, 6), Tracks { video: true, audio: true });
        feed(&mut s, 0, 9, 30);
        let playlist = s.playlist().expect("segments");
        assert!(playlist.starts_with(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        ));
        assert_eq!(playlist.matches("#EXTINF:2.000,").count(), 4, "{playlist}");
        assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:2026-09-21T"), "{playlist}");
        let first = s.segment(0).expect("segment 0").to_vec();
        assert_eq!(first[0], 0x47);
        assert_eq!(first.len() % 188, 0);
    }

    #[test]
    fn bytes_taken_while_building_and_the_rest_make_the_whole_segment() {
        let tracks = Tracks { video: true, audio: false };
        let mut whole = Segmenter::new(config(1, 6), tracks);
        let mut taken = Segmenter::new(config(1, 6), tracks);
        let mut drained: std::collections::HashMap<u64, Vec<u8>> = Default::default();
        // 20 KB frames: several 64 KB chunks fill up within each one-second segment.
        let mut frame = vec![0, 0, 0, 1, 0x65];
        frame.resize(20_000, 0x88);
        for i in 0..120u32 {
            for s in [&mut whole, &mut taken] {
                s.push_video(i * 33, 0, i % 30 == 0, &frame, UNIX_EPOCH);
            }
            if let Some((sequence, chunks)) = taken.take_building() {
                chunks
                    .iter()
                    .for_each(|c| drained.entry(sequence).or_default().extend_from_slice(c));
            }
        }
        assert!(drained.values().any(|d| !d.is_empty()), "something was taken while building");
        for n in whole.segment_numbers().collect::<Vec<_>>() {
            let mut bytes = drained.remove(&n).unwrap_or_default();
            bytes.extend_from_slice(&taken.segment(n).expect("held").to_vec());
            assert_eq!(bytes, whole.segment(n).expect("held").to_vec(), "segment {n}");
        }
    }

    #[test]
    fn a_taken_segment_stays_listed_without_its_bytes() {
        let mut s = Segmenter::new(config(2, 6), Tracks { video: true, audio: true });
        feed(&mut s, 0, 7, 30);
        let first = s.segment_numbers().next().expect("a segment");
        let before = s.playlist();
        let taken = s.take_segment(first).expect("held");
        assert!(!taken.is_empty());
        assert!(s.segment(first).expect("still listed").is_empty());
        assert_eq!(s.playlist(), before, "the playlist does not change");
        assert!(s.take_segment(first + 100).is_none());
    }

    #[test]
    fn keeps_a_sliding_window_with_grace() {
        let mut s = Segmenter::new(config(1, 3), Tracks { video: true, audio: true });
        feed(&mut s, 0, 20, 30);
        let playlist = s.playlist().expect("segments");
        assert_eq!(playlist.matches("#EXTINF").count(), 3);
        let last = s.last_sequence().expect("last");
        assert!(playlist.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{}", last - 2)));
        assert!(s.segment(last - 3).is_some(), "grace keeps a segment that just left the window");
        assert!(s.segment(0).is_none(), "old segments are gone");
        // RFC 8216 6.2.2: a segment stays for its duration plus the playlist's after it
        // leaves, 1 s + 3 s here: the window and four one-second segments before it.
        let held: Vec<u64> = s.segment_numbers().collect();
        assert_eq!(held, (last - 6..=last).collect::<Vec<_>>());
    }

    #[test]
    fn discontinuities_are_flagged_and_counted_as_they_leave() {
        let mut s = Segmenter::new(config(1, 3), Tracks { video: true, audio: true });
        feed(&mut s, 5_000, 3, 30);
        s.mark_discontinuity();
        feed(&mut s, 0, 3, 30); // the reconnected publisher starts from 0
        let playlist = s.playlist().expect("segments");
        assert_eq!(playlist.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{playlist}");
        assert!(playlist.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0"));
        feed(&mut s, 100_000, 6, 30); // a jump: another discontinuity
        let playlist = s.playlist().expect("segments");
        // Both flagged segments (the reconnect and the jump) have left the 3-segment window.
        assert!(playlist.contains("#EXT-X-DISCONTINUITY-SEQUENCE:2"), "{playlist}");
        for line in playlist.lines().filter(|l| l.starts_with("#EXTINF:")) {
            let secs: f64 = line["#EXTINF:".len()..line.len() - 1].parse().expect("number");
            assert!((0.0..=1.2).contains(&secs), "{line}");
        }
    }

    #[test]
    fn survives_the_32_bit_timestamp_wrap() {
        let mut s = Segmenter::new(config(1, 6), Tracks { video: true, audio: true });
        feed(&mut s, u32::MAX - 2_500, 5, 30);
        let playlist = s.playlist().expect("segments");
        assert!(!playlist.contains("#EXT-X-DISCONTINUITY\n"), "{playlist}");
        assert_eq!(playlist.matches("#EXTINF:1.000,").count(), 4, "{playlist}");
    }

    #[test]
    fn writes_segments_in_whole_packet_chunks_without_regrowing() {
        let mut s = Segmenter::new(config(100, 6), Tracks { video: true, audio: true });
        let now = UNIX_EPOCH;
        // Ordinary frames, then one larger than a chunk, then ordinary ones again.
        let small = [KEY, &[0x55; 9_000]].concat();
        let huge = [INTER, &vec![0x66; 3 * CHUNK]].concat();
        for i in 0..30u32 {
            let frame = if i == 15 { &huge } else { &small };
            s.push_video(i * 33, 0, i == 0, frame, now);
            s.push_audio(i * 33, ADTS, now);
        }
        s.finish();
        let segment = s.segment(0).expect("segment 0");
        let chunks = segment.chunks();
        assert!(chunks.len() > 2, "{} chunks", chunks.len());
        assert_eq!(chunks.iter().map(Bytes::len).sum::<usize>(), segment.len());
        for chunk in chunks {
            assert_eq!(chunk.len() % PACKET, 0, "chunks end on packet boundaries");
            assert_eq!(chunk.first(), Some(&0x47));
        }
        // Only the chunk holding the huge frame is larger than a chunk.
        let oversized: Vec<usize> = chunks.iter().map(Bytes::len).filter(|&n| n > CHUNK).collect();
        assert_eq!(oversized.len(), 1, "{oversized:?}");
        let bytes = segment.to_vec();
        assert_eq!(bytes.len(), segment.len());
        let mut reader = mpeg2ts::ts::TsPacketReader::new(&bytes[..]);
        let mut packets = 0;
        while mpeg2ts::ts::ReadTsPacket::read_ts_packet(&mut reader).expect("valid TS").is_some() {
            packets += 1;
        }
        assert_eq!(packets * PACKET, bytes.len());
    }

    #[test]
    fn forces_a_cut_when_a_segment_outgrows_its_limit() {
        let mut config = config(100, 6);
        config.max_segment_bytes = 64 * 1024;
        let mut s = Segmenter::new(config, Tracks { video: true, audio: false });
        let big = vec![0u8; 10_000];
        let now = UNIX_EPOCH;
        s.push_video(0, 0, true, &big, now);
        for i in 1..20 {
            s.push_video(i * 33, 0, false, &big, now);
        }
        let sizes: Vec<usize> =
            s.segment_numbers().filter_map(|n| s.segment(n)).map(|b| b.len()).collect();
        assert!(!sizes.is_empty());
        assert!(sizes.iter().all(|&n| n <= 64 * 1024 + 12_000), "{sizes:?}");
    }

    #[test]
    fn audio_only_streams_cut_on_time() {
        let mut s = Segmenter::new(config(1, 6), Tracks { video: false, audio: true });
        for i in 0..200u32 {
            s.push_audio(i * 23, ADTS, UNIX_EPOCH);
        }
        assert!(s.last_sequence().is_some_and(|n| n >= 2));
    }

    #[test]
    fn formats_utc_like_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // 2000-02-29
        assert_eq!(format_utc(t), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            format_utc(UNIX_EPOCH + Duration::from_secs(1_795_000_000)),
            "2026-11-18T11:06:40.000Z"
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(ops in proptest::collection::vec((any::<u8>(), any::<u32>(), -1000i32..1000, 0usize..3000), 0..200)) {
            let mut config = config(1, 3);
            config.max_segment_bytes = 256 * 1024;
            let mut s = Segmenter::new(config, Tracks { video: true, audio: true });
            for (op, ts, cts, len) in ops {
                let data = vec![op; len];
                match op % 4 {
                    0 => s.push_video(ts, cts, true, &data, UNIX_EPOCH),
                    1 => s.push_video(ts, cts, false, &data, UNIX_EPOCH),
                    2 => s.push_audio(ts, &data, UNIX_EPOCH),
                    _ => s.mark_discontinuity(),
                }
            }
            let _ = s.playlist();
            prop_assert!(s.segment_numbers().count() <= 3 + max_grace_segments(3));
        }
    }
}
