//! [`RtpClock`]: one RTP track's 32-bit timestamps → [`MediaTime`] on the stream's clock.
//!
//! An RTP timestamp counts ticks of the track's clock (90 kHz for video, 48 kHz for Opus)
//! from a random origin and wraps at 2^32 (13.25 hours at 90 kHz, 24.9 hours at 48 kHz).
//! The clock extends it once, at ingest, by the signed distance from the previous
//! timestamp, so a wrap is one more step forward and a reordered (older) packet a step
//! back; the first timestamp of the track is placed at an anchor the caller chooses (its
//! arrival on the stream's clock), so tracks that start at different times line up.
//!
//! Position `n` ticks after the first is `anchor + n / rate`, computed from the tick count
//! (never accumulated from rounded steps), so there is no drift over hours.

use crate::time::MediaTime;

/// One track's RTP clock. See the module docs.
#[derive(Debug, Clone)]
pub struct RtpClock {
    rate: u32,
    last: Option<u32>,
    /// Ticks since the first timestamp.
    ticks: i64,
    anchor: MediaTime,
}

impl RtpClock {
    /// A clock of `rate` Hz (0 is taken as 1) that has seen no timestamp yet.
    pub fn new(rate: u32) -> Self {
        Self { rate: rate.max(1), last: None, ticks: 0, anchor: MediaTime::ZERO }
    }

    /// The clock rate in Hz.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The media time of RTP timestamp `timestamp`. The first call places it at `anchor`;
    /// later calls ignore `anchor`.
    pub fn time(&mut self, timestamp: u32, anchor: MediaTime) -> MediaTime {
        match self.last {
            None => self.anchor = anchor,
            Some(last) => {
                // The signed distance on the 32-bit circle: a wrap is a small step forward.
                let step = i64::from(timestamp.wrapping_sub(last) as i32);
                self.ticks = self.ticks.saturating_add(step);
            }
        }
        self.last = Some(timestamp);
        self.anchor + MediaTime::from_ticks(self.ticks, self.rate)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const VIDEO: u32 = 90_000;

    #[test]
    fn the_first_timestamp_is_placed_at_the_anchor() {
        let mut clock = RtpClock::new(VIDEO);
        let anchor = MediaTime::from_millis(1_500);
        assert_eq!(clock.time(123_456, anchor), anchor);
        let later = anchor + MediaTime::from_ticks(3_000, VIDEO);
        assert_eq!(clock.time(123_456 + 3_000, MediaTime::ZERO), later);
    }

    #[test]
    fn a_wrap_is_a_step_forward() {
        let mut clock = RtpClock::new(VIDEO);
        let start = u32::MAX - 1_499;
        assert_eq!(clock.time(start, MediaTime::ZERO), MediaTime::ZERO);
        // 3000 ticks later, past 2^32.
        assert_eq!(clock.time(1_500, MediaTime::ZERO), MediaTime::from_ticks(3_000, VIDEO));
    }

    #[test]
    fn a_reordered_packet_steps_back_and_the_next_one_forward_again() {
        let mut clock = RtpClock::new(VIDEO);
        clock.time(10_000, MediaTime::ZERO);
        assert_eq!(clock.time(13_000, MediaTime::ZERO), MediaTime::from_ticks(3_000, VIDEO));
        assert_eq!(clock.time(11_500, MediaTime::ZERO), MediaTime::from_ticks(1_500, VIDEO));
        assert_eq!(clock.time(16_000, MediaTime::ZERO), MediaTime::from_ticks(6_000, VIDEO));
    }

    #[test]
    fn thirty_hours_of_video_at_30_fps_do_not_drift() {
        let mut clock = RtpClock::new(VIDEO);
        let first = 4_000_000_000u32;
        clock.time(first, MediaTime::ZERO);
        let frames: i64 = 30 * 3600 * 30;
        let mut at = MediaTime::ZERO;
        for n in 1..=frames {
            let timestamp = first.wrapping_add((n * 3_000) as u32);
            at = clock.time(timestamp, MediaTime::ZERO);
        }
        // 30 hours exactly: the 32-bit clock wrapped twice on the way.
        assert_eq!(at, MediaTime::from_millis(30 * 3600 * 1000));
    }

    proptest! {
        #[test]
        fn steps_under_half_the_circle_are_exact(
            first in any::<u32>(),
            steps in proptest::collection::vec(-1_000_000i64..10_000_000, 1..200),
        ) {
            let mut clock = RtpClock::new(48_000);
            clock.time(first, MediaTime::ZERO);
            let mut ticks = 0i64;
            for step in steps {
                ticks += step;
                let timestamp = (i64::from(first) + ticks).rem_euclid(1 << 32) as u32;
                prop_assert_eq!(
                    clock.time(timestamp, MediaTime::ZERO),
                    MediaTime::from_ticks(ticks, 48_000)
                );
            }
        }
    }
}
