//! What a WHEP player counts from the RTP it receives (pure: time is passed in): packets,
//! bytes, lost packets (sequence gaps), video frames (one per RTP timestamp), keyframes,
//! stalls, the join time and the steady frame rate. Nothing is decoded: a keyframe is told
//! by the H.264 NAL unit type at the start of its first packet (RFC 6184).

use std::time::{Duration, Instant};

/// A gap between two video packets longer than this is a stall (at 30 fps packets come
/// every 33 ms; a player would have frozen).
pub const STALL_GAP: Duration = Duration::from_millis(500);

/// The frame rate is counted from this long after the first keyframe: the cached GOP that
/// a new viewer receives at once (up to 2 s of frames at the fixtures' GOP) is left out.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Whether an H.264 RTP payload starts a keyframe: an IDR slice or an SPS alone, a STAP-A
/// holding either (the node sends the SPS and PPS in one before every keyframe), or the
/// first fragment (FU-A) of an IDR slice.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let Some(&first) = payload.first() else { return false };
    match first & 0x1f {
        IDR | SPS => true,
        STAP_A => {
            // 16-bit sizes, each followed by one NAL unit.
            let mut rest = &payload[1..];
            while let [hi, lo, tail @ ..] = rest {
                let size = usize::from(u16::from_be_bytes([*hi, *lo]));
                let Some(nal) = tail.get(..size) else { return false };
                if matches!(nal.first().map(|h| h & 0x1f), Some(IDR | SPS)) {
                    return true;
                }
                rest = &tail[size..];
            }
            false
        }
        FU_A => payload.get(1).is_some_and(|h| h & 0x80 != 0 && h & 0x1f == IDR),
        _ => false,
    }
}

/// What one WHEP player received.
#[derive(Debug, Clone)]
pub struct RtpStats {
    started: Instant,
    /// RTP packets received (video and audio).
    pub packets: u64,
    /// RTP bytes received: payload plus the 12-byte fixed header (after SRTP).
    pub bytes: u64,
    /// Audio packets among them.
    pub audio_packets: u64,
    /// Video packets missing by sequence number (lost, or so late they came out of order).
    pub lost: u64,
    /// Video frames (distinct RTP timestamps).
    pub frames: u64,
    /// Frames that started with a keyframe's packet.
    pub keyframes: u64,
    /// Gaps between video packets over [`STALL_GAP`] after the first keyframe.
    pub stalls: u64,
    /// From the offer's POST to the peer connection's `connected`.
    pub connected: Option<Duration>,
    /// From the offer's POST to the first packet of the first keyframe.
    pub join: Option<Duration>,
    /// Video frames that started after the first keyframe plus [`SETTLE`].
    steady_frames: u64,
    /// When the last video packet came, and the newest frame's RTP timestamp.
    last_video: Option<(Instant, u32)>,
    /// The highest video sequence number seen.
    highest_seq: Option<u16>,
}

impl RtpStats {
    /// Counting for a player whose offer was POSTed at `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            packets: 0,
            bytes: 0,
            audio_packets: 0,
            lost: 0,
            frames: 0,
            keyframes: 0,
            stalls: 0,
            connected: None,
            join: None,
            steady_frames: 0,
            last_video: None,
            highest_seq: None,
        }
    }

    /// The peer connection is up at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected.get_or_insert(now.saturating_duration_since(self.started));
    }

    /// One audio packet of `payload_len` bytes.
    pub fn audio(&mut self, payload_len: usize) {
        self.packets += 1;
        self.audio_packets += 1;
        self.bytes += payload_len as u64 + 12;
    }

    /// One video packet received at `now`.
    pub fn video(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]) {
        self.packets += 1;
        self.bytes += payload.len() as u64 + 12;
        // Forward distance on the 16-bit circle; a packet from the past (reordered, or a
        // retransmission) is no loss and moves nothing.
        match self.highest_seq {
            None => self.highest_seq = Some(seq),
            Some(highest) => {
                let ahead = seq.wrapping_sub(highest);
                if ahead != 0 && ahead < 0x8000 {
                    self.lost += u64::from(ahead - 1);
                    self.highest_seq = Some(seq);
                }
            }
        }
        // A frame is new when its timestamp is ahead of the newest one (on the 32-bit circle).
        let new_frame = match self.last_video {
            None => true,
            Some((at, newest)) => {
                if self.join.is_some() && now.saturating_duration_since(at) > STALL_GAP {
                    self.stalls += 1;
                }
                let ahead = timestamp.wrapping_sub(newest);
                ahead != 0 && ahead < 0x8000_0000
            }
        };
        let newest = match self.last_video {
            Some((_, newest)) if !new_frame => newest,
            _ => timestamp,
        };
        self.last_video = Some((now, newest));
        if !new_frame {
            return;
        }
        self.frames += 1;
        if starts_keyframe(payload) {
            self.keyframes += 1;
            self.join.get_or_insert(now.saturating_duration_since(self.started));
        }
        if self.steady_from().is_some_and(|from| now >= from) {
            self.steady_frames += 1;
        }
    }

    fn steady_from(&self) -> Option<Instant> {
        self.join.map(|join| self.started + join + SETTLE)
    }

    /// Received Mbit/s (the bytes counted) from the first keyframe until `end`; `None`
    /// when that is under a second.
    pub fn mbps(&self, end: Instant) -> Option<f64> {
        let window = end.saturating_duration_since(self.started + self.join?);
        (window >= Duration::from_secs(1))
            .then(|| self.bytes as f64 * 8.0 / 1e6 / window.as_secs_f64())
    }

    /// Video frames per second from the first keyframe plus [`SETTLE`] until `end`; `None`
    /// when that window is shorter than a second.
    pub fn fps(&self, end: Instant) -> Option<f64> {
        let window = end.saturating_duration_since(self.steady_from()?);
        (window >= Duration::from_secs(1)).then(|| self.steady_frames as f64 / window.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_told_by_their_first_packet() {
        assert!(starts_keyframe(&[0x65, 1, 2]), "IDR");
        assert!(starts_keyframe(&[0x67, 1]), "SPS");
        // STAP-A: SPS (3 bytes), PPS (2 bytes).
        assert!(starts_keyframe(&[0x78, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 1]));
        // STAP-A with a PPS then an IDR.
        assert!(starts_keyframe(&[0x78, 0, 2, 0x68, 1, 0, 2, 0x65, 1]));
        assert!(!starts_keyframe(&[0x78, 0, 2, 0x68, 1]), "PPS only");
        assert!(!starts_keyframe(&[0x78, 0, 9, 0x67]), "truncated");
        assert!(starts_keyframe(&[0x7c, 0x85, 1]), "FU-A start of an IDR");
        assert!(!starts_keyframe(&[0x7c, 0x05, 1]), "FU-A middle");
        assert!(!starts_keyframe(&[0x7c, 0x81, 1]), "FU-A start of a delta slice");
        assert!(!starts_keyframe(&[0x41, 1]), "delta slice");
        assert!(!starts_keyframe(&[]));
        assert!(!starts_keyframe(&[0x7c]));
    }

    #[test]
    fn counts_frames_keyframes_losses_stalls_and_the_steady_rate() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = RtpStats::new(t0);
        s.connected(ms(40));
        // The keyframe: STAP-A then two fragments, one timestamp.
        s.video(ms(100), 10, 9000, &[0x78, 0, 1, 0x67]);
        s.video(ms(100), 11, 9000, &[0x7c, 0x85]);
        s.video(ms(101), 12, 9000, &[0x7c, 0x45]);
        assert_eq!((s.frames, s.keyframes), (1, 1));
        assert_eq!(s.join, Some(Duration::from_millis(100)));
        assert_eq!(s.connected, Some(Duration::from_millis(40)));
        // Delta frames every 33 ms; packet 14 is lost.
        s.video(ms(133), 13, 12000, &[0x41]);
        s.video(ms(166), 15, 15000, &[0x41]);
        assert_eq!((s.frames, s.lost, s.stalls), (3, 1, 0));
        // 700 ms without video: a stall.
        s.video(ms(866), 16, 18000, &[0x41]);
        assert_eq!(s.stalls, 1);
        // From 2.1 s (join + SETTLE) on, 30 frames a second for 2 s.
        for i in 0..60u16 {
            s.video(
                ms(2100 + u64::from(i) * 1000 / 30),
                17 + i,
                21000 + u32::from(i) * 3000,
                &[0x41],
            );
        }
        assert_eq!(s.fps(ms(4100)), Some(30.0));
        assert_eq!(s.fps(ms(2500)), None, "under a second of steady time");
        assert_eq!(s.bytes, 16 + 14 + 14 + 13 * 63);
        s.audio(100);
        assert_eq!((s.packets, s.audio_packets), (67, 1));
    }

    #[test]
    fn reordered_packets_and_sequence_wrap_are_not_losses() {
        let t0 = Instant::now();
        let mut s = RtpStats::new(t0);
        s.video(t0, 65_534, 1, &[0x65]);
        s.video(t0, 65_535, 1, &[0x7c, 0x05]);
        s.video(t0, 0, 2, &[0x41]);
        // A retransmission of the keyframe's last packet.
        s.video(t0, 65_535, 1, &[0x7c, 0x05]);
        s.video(t0, 1, 3, &[0x41]);
        assert_eq!((s.lost, s.frames), (0, 3));
    }
}
