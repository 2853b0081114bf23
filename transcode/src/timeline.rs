//! [`Timeline`]: where the samples of one continuous PCM stream sit on the media clock.
//!
//! A transcoder decodes packets into one continuous run of samples and cuts that run into
//! frames of another size (960 ↔ 1024 samples), so an output frame rarely starts where an
//! input frame did. Its time is therefore computed from its position in the run: a
//! segment says "sample `pos` is at time `t`", and sample `p` of that segment is at
//! `t + (p - pos) / rate`, from the sample count, never from accumulated rounded steps,
//! so there is no drift however long the stream runs.
//!
//! Each input frame is placed against the time the run has reached ([`Timeline::place`]):
//! - within [`TOLERANCE`] of it: the frame continues the run (its own time is ignored:
//!   millisecond stamps from RTMP jitter by a millisecond; the sample count does not);
//! - later by up to [`MAX_GAP`]: packets were lost or the publisher paused: the caller
//!   fills the gap (concealment or silence), so the run stays continuous and in sync;
//! - earlier by up to [`MAX_GAP`]: a duplicate or a late packet: dropped;
//! - further off either way (a publisher's clock jump, a restart): a new segment starts
//!   at the run's current position with the frame's time (a re-anchor).
//!
//! Segments no frame can need any more are dropped ([`Timeline::forget_before`]), and at
//! most [`MAX_SEGMENTS`] are kept: memory is bounded.

use std::collections::VecDeque;

use zenlive_media::MediaTime;

/// How far a frame's time may be from where the run has reached and still continue it.
pub const TOLERANCE: MediaTime = MediaTime::from_millis(10);

/// The largest gap filled (or step back dropped); beyond it the timeline re-anchors.
pub const MAX_GAP: MediaTime = MediaTime::from_millis(1_000);

/// Most segments kept (older ones are dropped first).
pub const MAX_SEGMENTS: usize = 8;

/// Where an input frame goes. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The first frame, or a jump: a new segment starts here.
    Anchor,
    /// Right after the previous frame.
    Continue,
    /// After a gap of this many samples, to fill first.
    Gap(u64),
    /// Before where the run has reached: drop the frame.
    Late,
}

/// The segments of one run. See the module docs.
#[derive(Debug, Clone)]
pub struct Timeline {
    rate: u32,
    /// `(position, time)`, ascending positions.
    segments: VecDeque<(i64, MediaTime)>,
    /// The position of the next sample (samples written so far).
    written: i64,
}

impl Timeline {
    /// An empty run of `rate` Hz.
    pub fn new(rate: u32) -> Self {
        Self { rate: rate.max(1), segments: VecDeque::new(), written: 0 }
    }

    /// The sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The position of the next sample.
    pub fn written(&self) -> i64 {
        self.written
    }

    /// Where a frame stamped `at` goes.
    pub fn place(&self, at: MediaTime) -> Placement {
        let Some(expected) = self.time_of_next() else { return Placement::Anchor };
        let ahead = at - expected;
        if ahead > MAX_GAP || ahead < MediaTime::ZERO - MAX_GAP {
            Placement::Anchor
        } else if ahead > TOLERANCE {
            Placement::Gap(ahead.as_ticks(self.rate).max(0) as u64)
        } else if ahead < MediaTime::ZERO - TOLERANCE {
            Placement::Late
        } else {
            Placement::Continue
        }
    }

    /// Starts a segment at the current position, at time `at`.
    pub fn anchor(&mut self, at: MediaTime) {
        if self.segments.back().is_some_and(|&(pos, _)| pos == self.written) {
            self.segments.pop_back();
        }
        self.segments.push_back((self.written, at));
        while self.segments.len() > MAX_SEGMENTS {
            self.segments.pop_front();
        }
    }

    /// Counts `n` samples written.
    pub fn advance(&mut self, n: u64) {
        self.written = self.written.saturating_add(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The time of the next sample, once anchored.
    pub fn time_of_next(&self) -> Option<MediaTime> {
        self.time_of(self.written)
    }

    /// The time of the sample at `pos` (which may lie before the first segment: encoders'
    /// priming), once anchored.
    pub fn time_of(&self, pos: i64) -> Option<MediaTime> {
        let &(start, time) = self
            .segments
            .iter()
            .rev()
            .find(|&&(start, _)| start <= pos)
            .or_else(|| self.segments.front())?;
        Some(time + MediaTime::from_ticks(pos - start, self.rate))
    }

    /// Drops segments that no position from `pos` on can need.
    pub fn forget_before(&mut self, pos: i64) {
        while self.segments.len() > 1 && self.segments[1].0 <= pos {
            self.segments.pop_front();
        }
    }

    /// How many segments are kept.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const RATE: u32 = 48_000;

    fn ms(n: i64) -> MediaTime {
        MediaTime::from_millis(n)
    }

    #[test]
    fn positions_map_to_times_from_the_sample_count() {
        let mut line = Timeline::new(RATE);
        assert_eq!(line.place(ms(500)), Placement::Anchor);
        assert_eq!(line.time_of(0), None);
        line.anchor(ms(500));
        line.advance(960);
        assert_eq!(line.time_of_next(), Some(ms(520)));
        assert_eq!(line.time_of(-2048), Some(ms(500) - MediaTime::from_ticks(2048, RATE)));
        // A day of 20 ms packets: exact, no drift.
        line.advance(960 * 50 * 86_400);
        assert_eq!(line.time_of_next(), Some(ms(520 + 86_400_000)));
    }

    #[test]
    fn frames_are_placed_by_their_distance_from_the_run() {
        let mut line = Timeline::new(RATE);
        line.anchor(ms(0));
        line.advance(960);
        assert_eq!(line.place(ms(20)), Placement::Continue);
        assert_eq!(line.place(ms(29)), Placement::Continue, "jitter within the tolerance");
        assert_eq!(line.place(ms(60)), Placement::Gap(1920), "two packets lost");
        assert_eq!(line.place(ms(0)), Placement::Late, "a duplicate");
        assert_eq!(line.place(ms(5_000)), Placement::Anchor, "a jump forwards");
        assert_eq!(line.place(ms(-5_000)), Placement::Anchor, "a jump backwards");
    }

    #[test]
    fn a_new_segment_takes_over_from_its_position_and_old_ones_are_forgotten() {
        let mut line = Timeline::new(RATE);
        line.anchor(ms(0));
        line.advance(48_000);
        line.anchor(ms(100_000));
        line.advance(480);
        assert_eq!(line.time_of(47_999), Some(ms(0) + MediaTime::from_ticks(47_999, RATE)));
        assert_eq!(line.time_of(48_000), Some(ms(100_000)));
        assert_eq!(line.time_of_next(), Some(ms(100_010)));
        line.forget_before(48_000);
        assert_eq!(line.segments(), 1);
        for i in 0..20 {
            line.advance(1);
            line.anchor(ms(i * 1000));
        }
        assert_eq!(line.segments(), MAX_SEGMENTS);
    }

    proptest! {
        #[test]
        fn any_sequence_is_safe(steps in proptest::collection::vec((any::<i64>(), 0u64..100_000), 0..50)) {
            let mut line = Timeline::new(RATE);
            for (at, n) in steps {
                let at = MediaTime::from_nanos(at);
                if line.place(at) == Placement::Anchor {
                    line.anchor(at);
                }
                line.advance(n);
                let _ = line.time_of(line.written() - 5000);
                line.forget_before(line.written() - 5000);
                prop_assert!(line.segments() <= MAX_SEGMENTS);
            }
        }
    }
}
