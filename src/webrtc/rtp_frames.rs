//! A WHIP publisher's VP8 (RFC 7741), VP9 (RFC 9628) or AV1 (AV1 RTP specification) RTP
//! → whole frames, sans-IO: packets (sequence number, timestamp, marker bit, payload) go
//! in; frames with their keyframe flag, and keyframe requests, come out.
//!
//! One assembler ([`FrameDepacketizer`]) for the three; what differs is how a packet's
//! payload descriptor says a frame begins and which bytes are the frame's
//! ([`FramePayload`]): `rtc`'s [`Vp8Packet`] and [`Vp9Packet`] read the descriptors (a
//! fresh one per packet: they keep optional fields from the packet before otherwise), and
//! [`super::av1_rtp`] reads AV1's aggregation headers. A frame starts at a packet that
//! says so and ends at the marker bit (or when the timestamp moves on); whether a decoder
//! can start at it is read from the whole frame (VP8's frame tag, VP9's uncompressed
//! header, AV1's first frame header). A sequence gap, a malformed descriptor or a frame
//! over [`MAX_FRAME_BYTES`] loses that frame and every frame up to the next keyframe, and
//! asks for one once ([`Depacketized::KeyframeNeeded`]), as the H.264 depacketizer does.

use std::collections::VecDeque;
use std::fmt;

use bytes::{Bytes, BytesMut};
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::codec::vp9::Vp9Packet;
use rtc::rtp::packetizer::Depacketizer as _;
use zenlive_media::rtp_h264::{Arrival, DropCounts, Sequence};
use zenlive_media::vp9::{self, FrameHeader};

/// Largest frame assembled (a 4K keyframe at a high bitrate is well under this).
pub const MAX_FRAME_BYTES: usize = 8 << 20;

/// A payload descriptor that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// What one packet's payload holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// It begins a frame.
    pub starts: bool,
    /// The frame's bytes it carries (may be empty).
    pub data: Bytes,
}

/// How one codec's RTP payloads begin frames and carry their bytes.
pub trait FramePayload: Default + fmt::Debug {
    /// Reads one packet's payload; `building` says whether a frame is being assembled.
    fn read(&mut self, payload: &Bytes, building: bool) -> Result<Piece, Malformed>;

    /// Forgets what is kept between packets (a frame was lost).
    fn reset(&mut self) {}

    /// Whether a decoder can start at the whole `frame`.
    fn is_keyframe(frame: &[u8]) -> bool;
}

/// VP8 (RFC 7741): a frame starts at `S=1` with partition index 0; the first payload
/// byte's `P` bit (RFC 6386, 9.1: 0 = key frame) marks a key frame.
#[derive(Debug, Default)]
pub struct Vp8;

impl FramePayload for Vp8 {
    fn read(&mut self, payload: &Bytes, _building: bool) -> Result<Piece, Malformed> {
        let mut descriptor = Vp8Packet::default();
        let data = descriptor.depacketize(payload).map_err(|_| Malformed)?;
        Ok(Piece { starts: descriptor.s == 1 && descriptor.pid == 0, data })
    }

    fn is_keyframe(frame: &[u8]) -> bool {
        frame.first().is_some_and(|tag| tag & 1 == 0)
    }
}

/// VP9 (RFC 9628): a frame starts at `B=1`; its uncompressed header says whether it is a
/// key frame.
#[derive(Debug, Default)]
pub struct Vp9;

impl FramePayload for Vp9 {
    fn read(&mut self, payload: &Bytes, _building: bool) -> Result<Piece, Malformed> {
        let mut descriptor = Vp9Packet::default();
        let data = descriptor.depacketize(payload).map_err(|_| Malformed)?;
        Ok(Piece { starts: descriptor.b, data })
    }

    fn is_keyframe(frame: &[u8]) -> bool {
        matches!(vp9::read_header(frame), Ok(FrameHeader::Key(_)))
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its RTP timestamp.
    pub timestamp: u32,
    /// A key frame (a decoder can start here).
    pub keyframe: bool,
    /// The frame, as a decoder takes it.
    pub data: Bytes,
}

/// What the depacketizer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Depacketized {
    /// A whole frame.
    Frame(Frame),
    /// Frames were lost: ask the publisher for a keyframe.
    KeyframeNeeded,
}

#[derive(Debug)]
struct Building {
    timestamp: u32,
    data: BytesMut,
}

/// The depacketizer of one RTP stream of codec `P`. See the module docs.
#[derive(Debug)]
pub struct FrameDepacketizer<P: FramePayload> {
    payload: P,
    sequence: Sequence,
    building: Option<Building>,
    /// The frame being built lost a packet: drop it when it ends.
    broken: bool,
    waiting_keyframe: bool,
    out: VecDeque<Depacketized>,
    dropped: DropCounts,
}

impl<P: FramePayload> Default for FrameDepacketizer<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: FramePayload> FrameDepacketizer<P> {
    /// A depacketizer waiting for its first keyframe.
    pub fn new() -> Self {
        Self {
            payload: P::default(),
            sequence: Sequence::default(),
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
        match self.sequence.arrive(seq) {
            // A duplicate or a late retransmission: its frame is gone already.
            Arrival::Late => return,
            Arrival::AfterGap => {
                self.dropped.gaps += 1;
                self.fail();
            }
            Arrival::InOrder => {}
        }
        if payload.is_empty() {
            // Padding only (a sender's bandwidth probe): it holds nothing but its number.
            return;
        }
        if self.building.as_ref().is_some_and(|b| b.timestamp != timestamp) {
            // The previous frame lost its marker: it ends here.
            self.finish();
        }
        let Ok(piece) = self.payload.read(payload, self.building.is_some()) else {
            self.dropped.malformed += 1;
            self.fail();
            return;
        };
        if piece.starts {
            if self.building.is_some() {
                // A new frame under the same timestamp: the last one is incomplete.
                self.fail();
                self.finish();
            } else {
                // Packets lost before a frame's first one are not this frame's.
                self.broken = false;
            }
            self.building = Some(Building { timestamp, data: BytesMut::new() });
        }
        match self.building.as_mut() {
            Some(building) if building.data.len() + piece.data.len() <= MAX_FRAME_BYTES => {
                building.data.extend_from_slice(&piece.data);
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
        self.payload.reset();
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
        let keyframe = P::is_keyframe(&building.data);
        if self.waiting_keyframe && !keyframe {
            self.dropped.waiting += 1;
            return;
        }
        self.waiting_keyframe = false;
        self.out.push_back(Depacketized::Frame(Frame {
            timestamp: building.timestamp,
            keyframe,
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

    fn drain(d: &mut FrameDepacketizer<Vp8>) -> Vec<Depacketized> {
        std::iter::from_fn(|| d.poll()).collect()
    }

    #[test]
    fn packets_become_whole_frames_with_their_keyframe_flag() {
        let mut d = FrameDepacketizer::<Vp8>::new();
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
        let mut d = FrameDepacketizer::<Vp8>::new();
        // X=1, S=1; I=1 with a 15-bit picture id; then the frame.
        let mut payload = vec![0x90, 0x80, 0x81, 0x23];
        payload.extend_from_slice(KEY);
        d.push(1, 0, true, &Bytes::from(payload));
        assert!(matches!(&drain(&mut d)[..], [Depacketized::Frame(f)] if f.data == KEY));
    }

    #[test]
    fn delta_frames_before_the_first_keyframe_are_dropped() {
        let mut d = FrameDepacketizer::<Vp8>::new();
        d.push(1, 0, true, &packet(true, &[0x51, 1, 2, 3]));
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.dropped().waiting, 1);
    }

    #[test]
    fn a_gap_loses_frames_until_the_next_keyframe_and_asks_for_one_once() {
        let mut d = FrameDepacketizer::<Vp8>::new();
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
        let mut d = FrameDepacketizer::<Vp8>::new();
        for bad in [&[0x10][..], &[0x90, 0xff], &[0x90, 0x80, 0x80]] {
            d.push(0, 0, true, &Bytes::copy_from_slice(bad));
            d.sequence.reset();
        }
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.dropped().malformed, 3);
    }

    #[test]
    fn padding_only_packets_keep_the_count_and_lose_nothing() {
        let mut d = FrameDepacketizer::<Vp8>::new();
        d.push(1, 0, false, &packet(true, &KEY[..5]));
        d.push(2, 0, false, &Bytes::new()); // a bandwidth probe between a frame's packets
        d.push(3, 0, true, &packet(false, &KEY[5..]));
        d.push(4, 0, false, &Bytes::new());
        d.push(5, 3000, true, &packet(true, &[0x51, 7, 7, 7]));
        let out = drain(&mut d);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(&out[0], Depacketized::Frame(f) if f.keyframe && &f.data[..] == KEY));
        assert_eq!(d.dropped(), DropCounts::default());
    }

    /// The start of a libvpx VP9 key frame (320x240) and of the inter frame after it.
    const VP9_KEY: &[u8] = &[0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf6, 0x08];
    const VP9_INTER: &[u8] = &[0x86, 0x00, 0x40, 0x92, 0x9c, 0x30, 0x50];

    /// A VP9 packet: descriptor (B at a frame's start, E at its end, P for inter frames).
    fn vp9(start: bool, end: bool, inter: bool, data: &[u8]) -> Bytes {
        let descriptor = u8::from(inter) << 6 | u8::from(start) << 3 | u8::from(end) << 2;
        let mut out = vec![descriptor];
        out.extend_from_slice(data);
        Bytes::from(out)
    }

    #[test]
    fn vp9_frames_start_at_b_and_are_keyframes_by_their_header() {
        let mut d = FrameDepacketizer::<Vp9>::new();
        d.push(1, 0, false, &vp9(true, false, false, &VP9_KEY[..4]));
        d.push(2, 0, true, &vp9(false, true, false, &VP9_KEY[4..]));
        d.push(3, 3000, true, &vp9(true, true, true, VP9_INTER));
        let out = std::iter::from_fn(|| d.poll()).collect::<Vec<_>>();
        let [Depacketized::Frame(key), Depacketized::Frame(inter)] = &out[..] else {
            panic!("two frames: {out:?}");
        };
        assert!(key.keyframe && &key.data[..] == VP9_KEY);
        assert!(!inter.keyframe && &inter.data[..] == VP9_INTER);
        // An inter frame first is dropped while waiting; garbage is counted.
        let mut d = FrameDepacketizer::<Vp9>::new();
        d.push(1, 0, true, &vp9(true, true, true, VP9_INTER));
        d.push(2, 10, true, &Bytes::from_static(&[0x80])); // I=1 and no picture id
        d.push(3, 20, true, &Bytes::from_static(&[0x80, 0x80])); // 15 bits cut short
        assert!(d.poll().is_none());
        assert_eq!((d.dropped().waiting, d.dropped().malformed), (1, 2));
    }

    fn packets() -> impl Strategy<Value = Vec<(u16, u32, bool, Vec<u8>)>> {
        proptest::collection::vec(
            (
                any::<u16>(),
                any::<u32>(),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            0..64,
        )
    }

    fn bounded<P: FramePayload>(
        packets: Vec<(u16, u32, bool, Vec<u8>)>,
    ) -> Result<(), TestCaseError> {
        let mut d = FrameDepacketizer::<P>::new();
        for (seq, ts, marker, payload) in packets {
            d.push(seq % 8, ts % 4, marker, &Bytes::from(payload));
            while let Some(out) = d.poll() {
                if let Depacketized::Frame(frame) = out {
                    prop_assert!(!frame.data.is_empty() && frame.data.len() <= MAX_FRAME_BYTES);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_vp9_and_av1_packets_never_panic_and_stay_bounded(packets in packets()) {
            bounded::<Vp9>(packets.clone())?;
            bounded::<super::super::av1_rtp::Av1>(packets)?;
        }

        #[test]
        fn any_packets_never_panic_and_stay_bounded(
            packets in proptest::collection::vec(
                (any::<u16>(), any::<u32>(), any::<bool>(),
                 proptest::collection::vec(any::<u8>(), 0..64)),
                0..64,
            )
        ) {
            let mut d = FrameDepacketizer::<Vp8>::new();
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
