//! [`MediaTime`]: one clock for every source.
//!
//! RTMP stamps frames in milliseconds, RTP video in 90 kHz ticks, Opus and AAC over RTP in
//! 48 kHz (or 44.1 kHz) samples, MPEG-TS in 90 kHz. A frame's times are nanoseconds in an
//! `i64` (about 292 years either way), so each of those converts in and back out exactly
//! (rounding to the nearest unit), and no clock wraps inside the node: the 32-bit RTMP and
//! RTP clocks are extended once, at ingest.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// A point (or a distance) on a stream's media clock, in nanoseconds. Arithmetic saturates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MediaTime(i64);

impl MediaTime {
    /// Time zero.
    pub const ZERO: Self = Self(0);

    /// From nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    /// From milliseconds (RTMP and FLV time).
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis.saturating_mul(1_000_000))
    }

    /// From `ticks` of a clock running at `rate` Hz (90 000 for video over RTP and
    /// MPEG-TS, the sample rate for audio). A `rate` of 0 is taken as 1.
    pub fn from_ticks(ticks: i64, rate: u32) -> Self {
        let rate = i128::from(rate.max(1));
        Self(clamp(div_round(i128::from(ticks) * NANOS_PER_SEC, rate)))
    }

    /// In nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// In whole ticks of a clock at `rate` Hz, rounded to the nearest tick. A `rate` of 0
    /// is taken as 1.
    pub fn as_ticks(self, rate: u32) -> i64 {
        let rate = i128::from(rate.max(1));
        clamp(div_round(i128::from(self.0) * rate, NANOS_PER_SEC))
    }

    /// In milliseconds, rounded to the nearest (as [`MediaTime::as_ticks`] at 1000 Hz, in
    /// plain `i64`: this one runs for every frame RTMP or FLV sends).
    pub fn as_millis(self) -> i64 {
        self.0.saturating_add(500_000).div_euclid(1_000_000)
    }

    /// RTMP/FLV time: milliseconds modulo 2^32 (those clocks wrap).
    pub fn as_rtmp_millis(self) -> u32 {
        self.as_millis() as u32
    }

    /// The distance as a [`Duration`]; negative distances are zero.
    pub fn to_duration(self) -> Duration {
        Duration::from_nanos(u64::try_from(self.0).unwrap_or(0))
    }

    /// The distance of a [`Duration`] (saturating at the largest time).
    pub fn from_duration(duration: Duration) -> Self {
        Self(i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// `n / d` rounded to the nearest integer (halves away from negative infinity), `d > 0`.
fn div_round(n: i128, d: i128) -> i128 {
    (2 * n + d).div_euclid(2 * d)
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

impl Add for MediaTime {
    type Output = Self;

    fn add(self, rhs: Self) -> Self {
        Self(self.0.saturating_add(rhs.0))
    }
}

impl Sub for MediaTime {
    type Output = Self;

    fn sub(self, rhs: Self) -> Self {
        Self(self.0.saturating_sub(rhs.0))
    }
}

impl fmt::Display for MediaTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}s", self.0 as f64 / 1e9)
    }
}

/// Extends a wrapping 32-bit clock (RTMP milliseconds, RTP ticks) to 64 bits: each reading
/// is taken as the nearest one to the last, so small steps back (interleaved audio and
/// video) stay small and the wrap at 2^32 is crossed forwards.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unwrapper {
    last: Option<(u32, i64)>,
}

impl Unwrapper {
    /// The extended value of `raw`, remembered as the new reference.
    pub fn extend(&mut self, raw: u32) -> i64 {
        let value = self.peek(raw);
        self.last = Some((raw, value));
        value
    }

    /// The extended value of `raw`, without moving the reference (for readings that do not
    /// belong to the main timeline, such as script data stamped 0).
    pub fn peek(&self, raw: u32) -> i64 {
        match self.last {
            None => i64::from(raw),
            Some((last_raw, last)) => last + i64::from(raw.wrapping_sub(last_raw) as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn clocks_convert_exactly() {
        assert_eq!(MediaTime::from_millis(40).as_nanos(), 40_000_000);
        assert_eq!(MediaTime::from_ticks(3003, 90_000).as_ticks(90_000), 3003);
        assert_eq!(MediaTime::from_ticks(1024, 48_000).as_ticks(48_000), 1024);
        assert_eq!(MediaTime::from_ticks(1024, 44_100).as_ticks(44_100), 1024);
        assert_eq!(MediaTime::from_millis(1000).as_ticks(90_000), 90_000);
        assert_eq!(MediaTime::from_ticks(-90, 90_000).as_millis(), -1);
        assert_eq!(MediaTime::from_millis(5000).as_rtmp_millis(), 5000);
        for nanos in [-1_500_000, -500_001, -500_000, -1, 0, 499_999, 500_000, 1_500_000] {
            let t = MediaTime::from_nanos(nanos);
            assert_eq!(t.as_millis(), t.as_ticks(1000), "{nanos} ns");
        }
        assert_eq!(MediaTime::from_millis(1 << 32).as_rtmp_millis(), 0);
    }

    #[test]
    fn arithmetic_saturates() {
        let max = MediaTime::from_nanos(i64::MAX);
        assert_eq!(max + MediaTime::from_millis(1), max);
        let min = MediaTime::from_nanos(i64::MIN);
        assert_eq!(min - MediaTime::from_millis(1), min);
        assert_eq!(MediaTime::from_millis(-5).to_duration(), Duration::ZERO);
        assert_eq!(MediaTime::from_ticks(i64::MAX, 1).as_nanos(), i64::MAX);
    }

    #[test]
    fn unwrapping_crosses_the_wrap_and_allows_small_steps_back() {
        let mut clock = Unwrapper::default();
        assert_eq!(clock.extend(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(clock.extend(5), (1i64 << 32) + 5);
        assert_eq!(clock.extend(2), (1i64 << 32) + 2);
        assert_eq!(clock.peek(0), 1i64 << 32);
        assert_eq!(clock.extend(40), (1i64 << 32) + 40);
    }

    proptest! {
        #[test]
        fn ticks_round_trip(ticks in -(1i64 << 40)..(1i64 << 40), rate in prop::sample::select(vec![1000u32, 8000, 44_100, 48_000, 90_000])) {
            prop_assert_eq!(MediaTime::from_ticks(ticks, rate).as_ticks(rate), ticks);
        }

        #[test]
        fn any_input_is_safe(ticks: i64, rate: u32, nanos: i64) {
            let _ = MediaTime::from_ticks(ticks, rate).as_ticks(rate);
            let _ = MediaTime::from_nanos(nanos).as_rtmp_millis();
        }
    }
}
