//! A WHIP publisher's VP8 RTP (RFC 7741) → whole VP8 frames, sans-IO: packets (sequence
//! number, timestamp, marker bit, payload) go in; frames with their keyframe flag, and
//! keyframe requests, come out.
//!
//! The payload descriptor is parsed by `rtc`'s [`Vp8Packet`] (a fresh one per packet: it
//! keeps optional fields from the packet before otherwise). A frame starts at a packet
//! with `S=1` and partition index 0 and ends at the marker bit (or when the timestamp
//! moves on); its first payload byte's `P` bit (RFC 6386, 9.1: 0 = key frame) says whether
//! a decoder can start from it. A sequence gap, a malformed descriptor or a frame over
//! [`MAX_FRAME_BYTES`] loses that frame and every frame up to the next keyframe, and asks
//! for one once ([`Depacketized::KeyframeNeeded`]), as the H.264 depacketizer does.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer as _;
use zenlive_media::rtp_h264::DropCounts;

/// Largest VP8 frame assembled (a 4K keyframe at a high bitrate is well under this).
pub const MAX_FRAME_BYTES: usize = 8 << 20;

/// One VP8 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vp8Frame {
    /// Its RTP timestamp.
    pub timestamp: u32,
    /// A key frame (a decoder can start here).
    pub keyframe: bool,
    /// The frame, as a VP8 decoder takes it.
    pub data: Bytes,
}

/// What the depacketizer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Depacketized {
    /// A whole frame.
    Frame(Vp8Frame),
    /// Frames were lost: ask the publisher for a keyframe.
    KeyframeNeeded,
}

#[derive(Debug)]
struct Building {
    timestamp: u32,
    keyframe: bool,
    data: BytesMut,
}

/// The depacketizer of one VP8 RTP stream. See the module docs.
#[derive(Debug)]
pub struct Vp8Depacketizer {
    next_seq: Option<u16>,
    building: Option<Building>,
    /// The frame being built lost a packet: drop it when it ends.
    broken: bool,
    waiting_keyframe: bool,
    out: VecDeque<Depacketized>,
    dropped: DropCounts,
}

impl Default for Vp8Depacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Vp8Depacketizer {
    /// A depacketizer waiting for its first keyframe.
    pub fn new() -> Self {
        Self {
            next_seq: None,
            building: None,
            broken: false,
            waiting_keyframe: true,
            out: VecDeque::new(),
            dropped: DropCounts::default(),
        }
    }

    /// What was dropped so far (`unsupported` stays 0).
    pub fn dropped(&self) -> DropCounts {
        self.dropped
    }

    /// The next output, if any.
    pub fn poll(&mut self) -> Option<Depacketized> {
        self.out.pop_front()
    }

    /// Takes one RTP packet.
    pub fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &Bytes) {
        if let Some(expected) = self.next_seq {
            let ahead = seq.wrapping_sub(expected) as i16;
            if ahead < 0 {
                // A duplicate or a late retransmission: its frame is gone already.
                return;
            }
            if ahead > 0 {
                self.dropped.gaps += 1;
                self.fail();
            }
        }
        self.next_seq = Some(seq.wrapping_add(1));
        if self.building.as_ref().is_some_and(|b| b.timestamp != timestamp) {
            // The previous frame lost its marker: it ends here.
            self.finish();
        }
        let mut descriptor = Vp8Packet::default();
        let Ok(data) = descriptor.depacketize(payload) else {
            self.dropped.malformed += 1;
            self.fail();
            return;
        };
        if descriptor.s == 1 && descriptor.pid == 0 {
            if self.building.is_some() {
                // A new frame under the same timestamp: the last one is incomplete.
                self.fail();
                self.finish();
            } else {
                // Packets lost before a frame's first one are not this frame's.
                self.broken = false;
            }
            // RFC 6386, 9.1: bit 0 of the frame tag is 0 for a key frame.
            let keyframe = data.first().is_some_and(|tag| tag & 1 == 0);
            self.building = Some(Building { timestamp, keyframe, data: BytesMut::new() });
        }
        match self.building.as_mut() {
            Some(building) if building.data.len() + data.len() <= MAX_FRAME_BYTES => {
                building.data.extend_from_slice(&data);
            }
            Some(_) => {
                self.dropped.too_large += 1;
                self.fail();
            }
            // The middle of a frame whose start was lost (already counted as a gap).
            None => self.broken = true,
        }
        if marker {
            self.finish();
        }
    }

    /// The frame being built is lost, and so is everything up to the next keyframe.
    fn fail(&mut self) {
        self.broken = true;
        if !self.waiting_keyframe {
            self.waiting_keyframe = true;
            self.out.push_back(Depacketized::KeyframeNeeded);
        }
    }

    fn finish(&mut self) {
        let broken = std::mem::take(&mut self.broken);
        let Some(building) = self.building.take() else { return };
        if broken || building.data.is_empty() {
            return;
        }
        if self.waiting_keyframe && !building.keyframe {
            self.dropped.waiting += 1;
            return;
        }
        self.waiting_keyframe = false;
        self.out.push_back(Depacketized::Frame(Vp8Frame {
            timestamp: building.timestamp,
            keyframe: building.keyframe,
            data: building.data.freeze(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A keyframe's first bytes: frame tag (P=0), start code, 320x240.
    const KEY: &[u8] = &[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];

    fn packet(start: bool, data: &[u8]) -> Bytes {
        let mut out = vec![if start { 0x10 } else { 0x00 }];
        out.extend_from_slice(data);
        Bytes::from(out)
    }

    fn drain(d: &mut Vp8Depacketizer) -> Vec<Depacketized> {
        std::iter::from_fn(|| d.poll()).collect()
    }

    #[test]
    fn packets_become_whole_frames_with_their_keyframe_flag() {
        let mut d = Vp8Depacketizer::new();
        d.push(1, 100, false, &packet(true, &KEY[..5]));
        d.push(2, 100, true, &packet(false, &KEY[5..]));
        d.push(3, 3100, true, &packet(true, &[0x51, 7, 7, 7]));
        let out = drain(&mut d);
        let [Depacketized::Frame(key), Depacketized::Frame(delta)] = &out[..] else {
            panic!("two frames: {out:?}");
        };
        assert_eq!((key.timestamp, key.keyframe, &key.data[..]), (100, true, KEY));
        assert_eq!(
            (delta.timestamp, delta.keyframe, &delta.data[..]),
            (3100, false, &[0x51, 7, 7, 7][..])
        );
    }

    #[test]
    fn extended_descriptors_are_stripped() {
        let mut d = Vp8Depacketizer::new();
        // X=1, S=1; I=1 with a 15-bit picture id; then the frame.
        let mut payload = vec![0x90, 0x80, 0x81, 0x23];
        payload.extend_from_slice(KEY);
        d.push(1, 0, true, &Bytes::from(payload));
        assert!(matches!(&drain(&mut d)[..], [Depacketized::Frame(f)] if f.data == KEY));
    }

    #[test]
    fn delta_frames_before_the_first_keyframe_are_dropped() {
        let mut d = Vp8Depacketizer::new();
        d.push(1, 0, true, &packet(true, &[0x51, 1, 2, 3]));
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.dropped().waiting, 1);
    }

    #[test]
    fn a_gap_loses_frames_until_the_next_keyframe_and_asks_for_one_once() {
        let mut d = Vp8Depacketizer::new();
        d.push(1, 0, true, &packet(true, KEY));
        d.push(2, 3000, false, &packet(true, &[0x51, 1, 2, 3]));
        // Seq 3 lost.
        d.push(4, 3000, true, &packet(false, &[4, 5, 6]));
        d.push(5, 6000, true, &packet(true, &[0x51, 1, 2, 3]));
        d.push(7, 9000, true, &packet(true, &[0x51, 1, 2, 3]));
        d.push(8, 12000, true, &packet(true, KEY));
        let out = drain(&mut d);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(matches!(&out[0], Depacketized::Frame(f) if f.keyframe));
        assert_eq!(out[1], Depacketized::KeyframeNeeded);
        assert!(matches!(&out[2], Depacketized::Frame(f) if f.keyframe && f.timestamp == 12000));
        assert_eq!(d.dropped().gaps, 2);
    }

    #[test]
    fn garbage_descriptors_are_counted_not_trusted() {
        let mut d = Vp8Depacketizer::new();
        for bad in [&[][..], &[0x10], &[0x90, 0xff], &[0x90, 0x80, 0x80]] {
            d.push(0, 0, true, &Bytes::copy_from_slice(bad));
            d.next_seq = None;
        }
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.dropped().malformed, 4);
    }

    proptest! {
        #[test]
        fn any_packets_never_panic_and_stay_bounded(
            packets in proptest::collection::vec(
                (any::<u16>(), any::<u32>(), any::<bool>(),
                 proptest::collection::vec(any::<u8>(), 0..64)),
                0..64,
            )
        ) {
            let mut d = Vp8Depacketizer::new();
            for (seq, ts, marker, payload) in packets {
                d.push(seq % 8, ts % 4, marker, &Bytes::from(payload));
                while let Some(out) = d.poll() {
                    if let Depacketized::Frame(frame) = out {
                        prop_assert!(!frame.data.is_empty() && frame.data.len() <= MAX_FRAME_BYTES);
                    }
                }
            }
        }
    }
}
