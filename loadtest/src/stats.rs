//! Per-client accounting (pure: time is passed in) and the JSON summary.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

/// A gap between media arrivals that exceeds the media time they cover by more than this
/// is a stall (the player would have frozen).
pub const STALL_THRESHOLD: Duration = Duration::from_secs(1);

/// What one player saw.
#[derive(Debug, Default, Clone)]
pub struct PlayerStats {
    /// Bytes received.
    pub bytes: u64,
    /// Video frames received (not counting sequence headers).
    pub video_frames: u64,
    /// Audio frames received.
    pub audio_frames: u64,
    /// Time from connecting to the first video frame.
    pub startup: Option<Duration>,
    /// Whether the first video frame after the headers was a keyframe.
    pub started_on_keyframe: Option<bool>,
    /// Stalls counted.
    pub stalls: u64,
    /// Media time covered by the video received, in ms.
    pub media_ms: u64,
    last_video: Option<(Instant, u32)>,
    first_video_ts: Option<u32>,
}

impl PlayerStats {
    /// Records one video frame arriving at `now` with media timestamp `ts`.
    pub fn video(&mut self, started: Instant, now: Instant, ts: u32, keyframe: bool, bytes: usize) {
        self.bytes += bytes as u64;
        self.video_frames += 1;
        if self.startup.is_none() {
            self.startup = Some(now.saturating_duration_since(started));
            self.started_on_keyframe = Some(keyframe);
        }
        let first = *self.first_video_ts.get_or_insert(ts);
        self.media_ms = u64::from(ts.wrapping_sub(first));
        if let Some((last_at, last_ts)) = self.last_video {
            let wall = now.saturating_duration_since(last_at);
            let media = Duration::from_millis(u64::from(ts.wrapping_sub(last_ts).min(60_000)));
            if wall > media + STALL_THRESHOLD {
                self.stalls += 1;
            }
        }
        self.last_video = Some((now, ts));
    }

    /// Records one non-video message.
    pub fn other(&mut self, audio: bool, bytes: usize) {
        self.bytes += bytes as u64;
        if audio {
            self.audio_frames += 1;
        }
    }

    /// Video frames per second of wall time over `elapsed`.
    pub fn fps(&self, elapsed: Duration) -> f64 {
        if elapsed.is_zero() {
            0.0
        } else {
            self.video_frames as f64 / elapsed.as_secs_f64()
        }
    }
}

/// Min / median / max of a sample.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`, or `None` when empty.
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some(Self {
            min: values[0],
            median: values[values.len() / 2],
            max: values[values.len() - 1],
        })
    }
}

/// Min / median / 99th percentile / max of a sample (nearest rank).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Tail {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Tail {
    /// The tail of `values`, or `None` when empty.
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
        Some(Self { min: values[0], p50: rank(0.5), p99: rank(0.99), max: rank(1.0) })
    }
}

/// The summary `whep` prints.
#[derive(Debug, Serialize)]
pub struct WhepSummary {
    /// How many players were asked for.
    pub players: usize,
    /// How many connected (ICE, DTLS).
    pub connected: usize,
    /// How many received a keyframe.
    pub players_with_video: usize,
    /// Seconds the run lasted.
    pub duration_secs: f64,
    /// RTP packets received, all players.
    pub packets: u64,
    /// RTP bytes received (payload plus the 12-byte fixed header), all players.
    pub bytes: u64,
    /// Received bitrate per player with video, Mbit/s from its first keyframe to the end.
    pub mbps_per_player: Option<Spread>,
    /// Audio packets among the packets.
    pub audio_packets: u64,
    /// Video packets missing by sequence number, all players.
    pub lost_packets: u64,
    /// Video frames (distinct RTP timestamps), all players.
    pub frames: u64,
    /// Keyframes, all players.
    pub keyframes: u64,
    /// Video fps per player, counted from 2 s after its first keyframe (the cached GOP's
    /// burst left out) to the end.
    pub fps: Option<Spread>,
    /// POST → the first packet of the first keyframe, ms.
    pub join_ms: Option<Tail>,
    /// POST → the peer connection connected (ICE and DTLS done), ms.
    pub connect_ms: Option<Tail>,
    /// Gaps of more than 500 ms between video packets, all players.
    pub stalls: u64,
    /// Players with at least one stall.
    pub players_with_stalls: usize,
    /// Players whose connection failed or closed before the end.
    pub ended_early: usize,
    /// Errors (players that never connected) by kind.
    pub errors: BTreeMap<String, usize>,
}

/// The summary `play` prints.
#[derive(Debug, Serialize)]
pub struct PlaySummary {
    /// How many players were asked for.
    pub players: usize,
    /// How many received video.
    pub players_with_video: usize,
    /// Seconds the run lasted.
    pub duration_secs: f64,
    /// Bytes received, all players.
    pub bytes: u64,
    /// Video fps per player.
    pub fps: Option<Spread>,
    /// Startup time per player, ms.
    pub startup_ms: Option<Spread>,
    /// Players whose first frame was not a keyframe.
    pub started_off_keyframe: usize,
    /// Stalls, all players.
    pub stalls: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, usize>,
}

/// What one publisher did.
#[derive(Debug, Default, Clone)]
pub struct PublisherStats {
    /// Bytes sent.
    pub bytes: u64,
    /// Messages sent.
    pub messages: u64,
    /// The most it fell behind its schedule.
    pub max_lag: Duration,
}

/// The summary `publish` prints.
#[derive(Debug, Serialize)]
pub struct PublishSummary {
    /// How many publishers were asked for.
    pub publishers: usize,
    /// How many published to the end without error.
    pub completed: usize,
    /// Seconds the run lasted.
    pub duration_secs: f64,
    /// Bytes sent, all publishers.
    pub bytes: u64,
    /// Publishers that fell more than a second behind realtime at some point.
    pub fell_behind: usize,
    /// Errors by kind.
    pub errors: BTreeMap<String, usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stalls_only_beyond_media_time() {
        let t0 = Instant::now();
        let mut s = PlayerStats::default();
        s.video(t0, t0 + Duration::from_millis(200), 1000, true, 10);
        s.video(t0, t0 + Duration::from_millis(233), 1033, false, 10);
        assert_eq!(s.stalls, 0);
        // 1.5 s of wall time for 33 ms of media: a stall.
        s.video(t0, t0 + Duration::from_millis(1733), 1066, false, 10);
        assert_eq!(s.stalls, 1);
        // A burst (media ahead of wall time) is not a stall.
        s.video(t0, t0 + Duration::from_millis(1734), 3000, false, 10);
        assert_eq!(s.stalls, 1);
        assert_eq!(s.startup, Some(Duration::from_millis(200)));
        assert_eq!(s.started_on_keyframe, Some(true));
        assert_eq!(s.media_ms, 2000);
        assert!((s.fps(Duration::from_secs(2)) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn tails() {
        assert_eq!(Tail::of(vec![]), None);
        let values: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        assert_eq!(Tail::of(values), Some(Tail { min: 1.0, p50: 101.0, p99: 198.0, max: 200.0 }));
    }

    #[test]
    fn spreads() {
        assert_eq!(Spread::of(vec![]), None);
        assert_eq!(
            Spread::of(vec![3.0, 1.0, 2.0]),
            Some(Spread { min: 1.0, median: 2.0, max: 3.0 })
        );
    }
}
