//! Merged reads for publishing connections.
//!
//! A 2.5 Mbit/s publisher arrives as a TCP segment every few milliseconds; reading each as
//! it lands costs a thread wake-up, an `epoll_wait` return, a `recv` and a pass of the chunk
//! parser per segment, per publisher. A publisher's media does not need millisecond
//! latency, so the kernel is asked to hold its bytes until about `rtmp.publish_read_delay`
//! of them are queued (`SO_RCVLOWAT`, set from the rate measured over the last second):
//! the connection then wakes and reads once per delay. SRS's "merged read" trades latency
//! for CPU the same way (by sleeping between reads); the low-water mark lets the kernel do
//! it without a timer per connection.
//!
//! Bytes below the mark would wait for more (a publisher whose rate drops, or one that
//! pauses), so a flush tick every [`FLUSH_TICKS`] delays reads whatever is queued. Ticks are
//! aligned to the process-wide [grid](crate::grid) so that every publisher of an event loop
//! flushes on the same wake-up.

use std::io;
use std::time::Duration;

use tokio::time::{Instant, Interval};

use crate::grid::aligned_interval;

/// The flush tick runs every this many delays.
pub const FLUSH_TICKS: u32 = 4;
/// Below this many bytes per delay merging saves nothing worth its latency: mark off.
const MIN_MARK: usize = 2048;
/// The highest mark: a quarter of the connection's read buffer, so a wake-up never finds
/// more queued than one read takes.
const MAX_MARK: usize = 16 * 1024;
/// How long a rate is measured before the mark follows it.
const RETUNE_PERIOD: Duration = Duration::from_secs(1);
/// A mark is only changed when the new one differs by more than this fraction: a
/// `setsockopt` per second per publisher for a few percent is not worth it.
const HYSTERESIS: f64 = 0.25;

/// The low-water mark of one publishing connection, following its rate.
#[derive(Debug)]
pub struct ReadMerge {
    delay: Duration,
    /// The mark now in effect (1: every byte wakes the reader, the kernel's default).
    mark: usize,
    bytes: u64,
    since: Instant,
}

impl ReadMerge {
    /// Merging with `delay` worth of data per read, from `now`; starts with the kernel's
    /// default mark until a rate is known.
    pub fn new(delay: Duration, now: Instant) -> Self {
        Self { delay, mark: 1, bytes: 0, since: now }
    }

    /// Counts bytes read.
    pub fn record(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }

    /// The mark in effect.
    pub fn mark(&self) -> usize {
        self.mark
    }

    /// Once per [`RETUNE_PERIOD`]: the mark to set now, if it should change.
    pub fn retune(&mut self, now: Instant) -> Option<usize> {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < RETUNE_PERIOD {
            return None;
        }
        let rate = self.bytes as f64 / elapsed.as_secs_f64();
        self.bytes = 0;
        self.since = now;
        let target = mark_for(rate, self.delay);
        let changed = if target == 1 || self.mark == 1 {
            target != self.mark
        } else {
            (target as f64 - self.mark as f64).abs() > self.mark as f64 * HYSTERESIS
        };
        changed.then(|| {
            self.mark = target;
            target
        })
    }

    /// The flush tick: every [`FLUSH_TICKS`] delays, on the process-wide grid.
    pub fn flush_interval(&self) -> Interval {
        aligned_interval(self.flush_period())
    }

    /// How many flush ticks make up `span` (at least one): the idle timeout in ticks.
    pub fn flush_ticks_in(&self, span: Duration) -> u32 {
        let ticks = span.as_nanos().div_ceil(self.flush_period().as_nanos().max(1));
        u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
    }

    fn flush_period(&self) -> Duration {
        (self.delay * FLUSH_TICKS).max(Duration::from_millis(1))
    }
}

/// The low-water mark for `rate` bytes per second and `delay`: what arrives in `delay`,
/// within [`MIN_MARK`, `MAX_MARK`], or 1 (off) when that is below [`MIN_MARK`].
pub fn mark_for(rate: f64, delay: Duration) -> usize {
    let per_delay = rate * delay.as_secs_f64();
    if !per_delay.is_finite() || per_delay < MIN_MARK as f64 {
        return 1;
    }
    (per_delay as usize).min(MAX_MARK)
}

/// Sets the socket's receive low-water mark (`SO_RCVLOWAT`): readiness is signalled only
/// once `bytes` are queued (or the peer closed). No crate wraps this option (socket2 and
/// rustix do not), hence the direct call.
#[cfg(target_os = "linux")]
pub fn set_recv_lowat(socket: &impl std::os::fd::AsRawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is open for the borrow's life, and the option value is a
    // c_int that lives across the call, whose size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the option's readiness semantics differ: reads are not merged.
#[cfg(not(target_os = "linux"))]
pub fn set_recv_lowat<T>(_socket: &T, _bytes: usize) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(50);

    #[test]
    fn mark_is_the_data_of_one_delay_within_bounds() {
        // 2.6 Mbit/s: 325 kB/s, 16 kB per 50 ms.
        assert_eq!(mark_for(325_000.0, DELAY), 16_250.min(MAX_MARK));
        assert_eq!(mark_for(100_000.0, DELAY), 5_000);
        // A 64 kbit/s audio-only publisher: 400 bytes per delay is not worth holding.
        assert_eq!(mark_for(8_000.0, DELAY), 1);
        // 50 Mbit/s: capped.
        assert_eq!(mark_for(6_250_000.0, DELAY), MAX_MARK);
        assert_eq!(mark_for(f64::NAN, DELAY), 1);
        assert_eq!(mark_for(f64::INFINITY, DELAY), 1);
        assert_eq!(mark_for(0.0, Duration::ZERO), 1);
    }

    #[test]
    fn retunes_once_a_second_with_hysteresis() {
        let t0 = Instant::now();
        let mut merge = ReadMerge::new(DELAY, t0);
        merge.record(100_000);
        assert_eq!(merge.retune(t0 + Duration::from_millis(500)), None, "too early");
        assert_eq!(merge.retune(t0 + Duration::from_secs(1)), Some(5_000));
        assert_eq!(merge.mark(), 5_000);
        // 10% more: kept.
        merge.record(110_000);
        assert_eq!(merge.retune(t0 + Duration::from_secs(2)), None);
        // Double: followed.
        merge.record(200_000);
        assert_eq!(merge.retune(t0 + Duration::from_secs(3)), Some(10_000));
        // Silence: off, and stays off.
        assert_eq!(merge.retune(t0 + Duration::from_secs(4)), Some(1));
        assert_eq!(merge.retune(t0 + Duration::from_secs(5)), None);
        assert_eq!(merge.mark(), 1);
    }

    #[test]
    fn the_idle_timeout_is_counted_in_flush_ticks() {
        let merge = ReadMerge::new(DELAY, Instant::now());
        assert_eq!(merge.flush_ticks_in(Duration::from_secs(30)), 150);
        assert_eq!(merge.flush_ticks_in(Duration::from_millis(250)), 2, "rounded up");
        assert_eq!(merge.flush_ticks_in(Duration::ZERO), 1);
        let tiny = ReadMerge::new(Duration::from_nanos(1), Instant::now());
        assert_eq!(tiny.flush_ticks_in(Duration::from_secs(1)), 1000);
    }

    #[test]
    fn counts_do_not_overflow() {
        let t0 = Instant::now();
        let mut merge = ReadMerge::new(DELAY, t0);
        merge.record(usize::MAX);
        merge.record(usize::MAX);
        assert_eq!(merge.retune(t0 + Duration::from_secs(1)), Some(MAX_MARK));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sets_the_option_on_a_tcp_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        set_recv_lowat(&client, 8192).expect("setsockopt");
        set_recv_lowat(&client, 1).expect("back to the default");
    }
}
