//! A process-wide grid of ticks: deadlines of equal period fall on the same instants in
//! every connection, so one event-loop wake-up serves all the connections due then (the
//! timer wheel fires them together) instead of one wake-up each. Used by merged publisher
//! reads and paced player writes (RTMP and HTTP-FLV).

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// The grid's origin: the first time anyone asks.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The first grid point of `period` strictly after `now` (multiples of `period` since the
/// process-wide epoch; `period` at least 1 ms).
pub fn next_tick(period: Duration, now: Instant) -> Instant {
    let period = period.max(Duration::from_millis(1));
    let epoch = epoch();
    let step = period.as_nanos();
    // Whole periods as a duration (u64 nanoseconds: 584 years).
    let periods = |n: u128| Duration::from_nanos(u64::try_from(n * step).unwrap_or(u64::MAX));
    if now < epoch {
        // The grid runs back from the epoch too (`now` may predate the first call).
        let before = epoch.duration_since(now).as_nanos();
        return epoch.checked_sub(periods((before - 1) / step)).unwrap_or(epoch);
    }
    let since = now.duration_since(epoch).as_nanos();
    epoch.checked_add(periods(since / step + 1)).unwrap_or(now + period)
}

/// An interval of `period` whose ticks fall on the grid, skipping missed ticks.
pub fn aligned_interval(period: Duration) -> Interval {
    let period = period.max(Duration::from_millis(1));
    let mut interval = tokio::time::interval_at(next_tick(period, Instant::now()), period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    interval
}

/// The items of `rx` in batches: whatever is queued goes out at once, then nothing until
/// the next tick of `delay` on the grid, so a consumer that writes what it was given when
/// the stream turns pending (an HTTP response body) writes at most once per `delay`. A
/// zero `delay` passes items through as they come.
pub fn paced<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
    delay: Duration,
) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(
        (rx, None),
        move |(mut rx, next): (_, Option<Instant>)| async move {
            if let Some(at) = next {
                tokio::time::sleep_until(at).await;
            }
            let item = rx.recv().await?;
            let next =
                (!delay.is_zero() && rx.is_empty()).then(|| next_tick(delay, Instant::now()));
            Some((item, (rx, next)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_multiples_of_the_period_after_now() {
        let period = Duration::from_millis(100);
        let now = Instant::now();
        let tick = next_tick(period, now);
        assert!(tick > now && tick - now <= period, "{:?}", tick - now);
        assert_eq!(tick.duration_since(epoch()).as_nanos() % period.as_nanos(), 0);
        // Exactly on a grid point: the next one.
        assert_eq!(next_tick(period, tick), tick + period);
        // Another instant within the same period: the same tick.
        assert_eq!(next_tick(period, tick - Duration::from_millis(1)), tick);
        // A zero period is 1 ms.
        let tiny = next_tick(Duration::ZERO, now);
        assert!(tiny > now && tiny - now <= Duration::from_millis(1));
        // Before the epoch: the grid runs backwards.
        let early = epoch() - Duration::from_millis(150);
        assert_eq!(next_tick(period, early), epoch() - period);
        assert_eq!(next_tick(period, epoch() - period), epoch());
    }

    #[tokio::test]
    async fn aligned_intervals_of_equal_period_tick_together() {
        let period = Duration::from_millis(40);
        let mut a = aligned_interval(period);
        tokio::time::sleep(Duration::from_millis(7)).await;
        let mut b = aligned_interval(period);
        let (ta, tb) = (a.tick().await, b.tick().await);
        // Both deadlines are the same grid point (or one period apart if the grid point
        // passed between the two calls).
        let apart = if ta > tb { ta - tb } else { tb - ta };
        assert!(apart == Duration::ZERO || apart == period, "{apart:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn paced_streams_hand_out_what_is_queued_then_wait_for_the_next_tick() {
        use futures_util::StreamExt;
        let delay = Duration::from_millis(100);
        let (tx, rx) = mpsc::channel(8);
        let stream = paced(rx, delay);
        tokio::pin!(stream);
        for i in 0..3 {
            tx.send(i).await.expect("send");
        }
        // The queued batch at once.
        for i in 0..3 {
            assert_eq!(stream.next().await, Some(i));
        }
        // The next item, though already queued, waits for the tick.
        tx.send(3).await.expect("send");
        let before = Instant::now();
        assert_eq!(stream.next().await, Some(3));
        let waited = Instant::now() - before;
        assert!(waited > Duration::ZERO && waited <= delay, "{waited:?}");
        drop(tx);
        assert_eq!(stream.next().await, None, "ends with its channel");
    }
}
