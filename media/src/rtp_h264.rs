//! [`H264Depacketizer`]: H.264 over RTP (RFC 6184, packetization mode 1: single NAL units,
//! STAP-A, FU-A) → access units in the canonical form of [`MediaFrame`](crate::MediaFrame):
//! AVCC with 4-byte lengths, the SPS and PPS lifted out into an
//! [`AvcDecoderConfig`].
//!
//! Sans-IO: the caller pushes each RTP packet's sequence number, timestamp, marker bit and
//! payload ([`H264Depacketizer::push`]) and drains [`H264Depacketizer::poll`]. An access
//! unit ends at the marker bit, or when a packet of a later timestamp starts the next one.
//!
//! Every packet comes from the network and may be hostile: nothing here panics or indexes
//! unchecked, and every buffer has a named limit. A lost packet (a gap in sequence numbers),
//! a malformed one, or an access unit over a limit drops the access unit being built and
//! every later one until the next IDR, whose arrival a decoder can start from; the caller is
//! told ([`Depacketized::KeyframeNeeded`]) so it can ask the publisher for one (PLI).
//! Packets older than the last one (duplicates, late retransmissions) are ignored.
//!
//! webrtc-rs has a depacketizer (`rtp::codecs::h264::H264Packet`), but it indexes past the
//! end of a truncated STAP-A and lets an unterminated FU-A grow without bound, so network
//! input does not go through it.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use crate::avc::AvcDecoderConfig;

/// Largest access unit accepted (a 4K intra frame at a high bitrate fits).
pub const MAX_ACCESS_UNIT_BYTES: usize = 8 << 20;
/// Most NAL units in one access unit.
pub const MAX_NALS_PER_ACCESS_UNIT: usize = 1024;
/// Largest SPS or PPS accepted.
pub const MAX_PARAMETER_SET_BYTES: usize = 4096;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// One complete access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// Its RTP timestamp.
    pub timestamp: u32,
    /// Its NAL units, each behind a 4-byte length, without SPS, PPS and delimiters.
    pub avcc: Bytes,
    /// Whether it holds an IDR slice (a decoder can start here).
    pub keyframe: bool,
    /// The decoder configuration, when the SPS or PPS changed with this access unit (the
    /// first keyframe always carries one).
    pub config: Option<AvcDecoderConfig>,
}

/// What the depacketizer has for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Depacketized {
    /// An access unit.
    AccessUnit(AccessUnit),
    /// Media was lost or malformed: nothing comes out until an IDR arrives; ask for one.
    KeyframeNeeded,
}

/// Why a packet or access unit was dropped, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A sequence number was skipped.
    Gap,
    /// The payload is malformed (truncated aggregate, FU-A out of order, forbidden bit).
    Malformed,
    /// A packetization mode 1 does not use (STAP-B, MTAP, FU-B) or a reserved type.
    Unsupported,
    /// Over [`MAX_ACCESS_UNIT_BYTES`], [`MAX_NALS_PER_ACCESS_UNIT`] or
    /// [`MAX_PARAMETER_SET_BYTES`].
    TooLarge,
}

/// Where an RTP packet's sequence number puts it, for a depacketizer that takes packets in
/// order (16-bit numbers, wrapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next packet, or the first.
    InOrder,
    /// After a gap: packets were lost.
    AfterGap,
    /// A duplicate or a packet from before: what it belonged to is gone already.
    Late,
}

/// The sequence numbers of one RTP stream. See [`Arrival`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequence {
    next: Option<u16>,
}

impl Sequence {
    /// Places `seq`; the next expected number moves past it unless it is [`Arrival::Late`].
    pub fn arrive(&mut self, seq: u16) -> Arrival {
        let arrival = match self.next {
            Some(expected) => match seq.wrapping_sub(expected) as i16 {
                ahead if ahead < 0 => return Arrival::Late,
                0 => Arrival::InOrder,
                _ => Arrival::AfterGap,
            },
            None => Arrival::InOrder,
        };
        self.next = Some(seq.wrapping_add(1));
        arrival
    }

    /// Forgets the numbers seen (the next packet is taken as the first).
    pub fn reset(&mut self) {
        self.next = None;
    }
}

/// Counts of what was dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Access units lost to a sequence gap.
    pub gaps: u64,
    /// Packets that were malformed.
    pub malformed: u64,
    /// Packets of unsupported types.
    pub unsupported: u64,
    /// Access units over a limit.
    pub too_large: u64,
    /// Whole access units skipped while waiting for a keyframe.
    pub waiting: u64,
}

#[derive(Debug, Default)]
struct Building {
    timestamp: u32,
    nals: Vec<Bytes>,
    bytes: usize,
}

/// The depacketizer of one H.264 RTP stream. See the module docs.
#[derive(Debug)]
pub struct H264Depacketizer {
    sequence: Sequence,
    building: Option<Building>,
    /// The NAL header and data of a fragmented unit in progress.
    fragment: Option<(u8, BytesMut)>,
    /// The access unit being built is broken: drop it when it ends.
    broken: bool,
    /// No IDR since the start or the last loss.
    waiting_keyframe: bool,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// The configuration last handed out, to tell whether SPS/PPS changed.
    announced: Option<(Bytes, Bytes)>,
    out: VecDeque<Depacketized>,
    dropped: DropCounts,
}

impl Default for H264Depacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl H264Depacketizer {
    /// A depacketizer waiting for its first keyframe.
    pub fn new() -> Self {
        Self {
            sequence: Sequence::default(),
            building: None,
            fragment: None,
            broken: false,
            waiting_keyframe: true,
            sps: None,
            pps: None,
            announced: None,
            out: VecDeque::new(),
            dropped: DropCounts::default(),
        }
    }

    /// What was dropped so far.
    pub fn dropped(&self) -> DropCounts {
        self.dropped
    }

    /// The next output, if any.
    pub fn poll(&mut self) -> Option<Depacketized> {
        self.out.pop_front()
    }

    /// Takes one RTP packet: its sequence number, timestamp, marker bit and payload.
    pub fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &Bytes) {
        match self.sequence.arrive(seq) {
            // A duplicate or a late retransmission: its access unit is gone already.
            Arrival::Late => return,
            Arrival::AfterGap => {
                self.dropped.gaps += 1;
                self.fail(DropReason::Gap);
            }
            Arrival::InOrder => {}
        }
        if payload.is_empty() {
            // Padding only (a sender's bandwidth probe): it holds nothing but its number.
            return;
        }
        if self.building.as_ref().is_some_and(|b| b.timestamp != timestamp) {
            // The previous access unit lost its marker: it ends here.
            self.finish();
        }
        self.building.get_or_insert_with(|| Building { timestamp, ..Building::default() });
        if let Err(reason) = self.payload(payload) {
            match reason {
                DropReason::Malformed => self.dropped.malformed += 1,
                DropReason::Unsupported => self.dropped.unsupported += 1,
                DropReason::TooLarge => self.dropped.too_large += 1,
                DropReason::Gap => self.dropped.gaps += 1,
            }
            self.fail(reason);
        }
        if marker {
            self.finish();
        }
    }

    /// The access unit being built is lost, and so is everything up to the next IDR.
    fn fail(&mut self, _reason: DropReason) {
        self.broken = true;
        self.fragment = None;
        if !self.waiting_keyframe {
            self.waiting_keyframe = true;
            self.out.push_back(Depacketized::KeyframeNeeded);
        }
    }

    fn payload(&mut self, payload: &Bytes) -> Result<(), DropReason> {
        let header = *payload.first().ok_or(DropReason::Malformed)?;
        if header & 0x80 != 0 {
            return Err(DropReason::Malformed);
        }
        match header & 0x1f {
            1..=23 => self.nal(payload.clone()),
            STAP_A => {
                let mut rest = payload.slice(1..);
                while !rest.is_empty() {
                    let len = match rest.get(..2) {
                        Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
                        _ => return Err(DropReason::Malformed),
                    };
                    let end = 2usize.checked_add(len).filter(|&end| end <= rest.len() && len > 0);
                    let end = end.ok_or(DropReason::Malformed)?;
                    self.nal(rest.slice(2..end))?;
                    rest = rest.slice(end..);
                }
                Ok(())
            }
            FU_A => {
                let fu = *payload.get(1).ok_or(DropReason::Malformed)?;
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                let data = payload.get(2..).ok_or(DropReason::Malformed)?;
                if start {
                    if self.fragment.is_some() {
                        return Err(DropReason::Malformed);
                    }
                    self.fragment = Some(((header & 0xe0) | (fu & 0x1f), BytesMut::new()));
                }
                let Some((nal_header, buffer)) = self.fragment.as_mut() else {
                    // A middle or end fragment whose start was not seen.
                    return Err(DropReason::Malformed);
                };
                let building = self.building.as_ref().map_or(0, |b| b.bytes);
                if building + buffer.len() + data.len() + 1 > MAX_ACCESS_UNIT_BYTES {
                    return Err(DropReason::TooLarge);
                }
                if buffer.is_empty() {
                    buffer.put_u8(*nal_header);
                }
                buffer.extend_from_slice(data);
                if end {
                    let (_, buffer) = self.fragment.take().ok_or(DropReason::Malformed)?;
                    return self.nal(buffer.freeze());
                }
                Ok(())
            }
            _ => Err(DropReason::Unsupported),
        }
    }

    /// One whole NAL unit of the access unit being built.
    fn nal(&mut self, nal: Bytes) -> Result<(), DropReason> {
        let kind = nal.first().map(|b| b & 0x1f).ok_or(DropReason::Malformed)?;
        match kind {
            NAL_SPS | NAL_PPS if nal.len() > MAX_PARAMETER_SET_BYTES => Err(DropReason::TooLarge),
            NAL_SPS => {
                self.sps = Some(nal);
                Ok(())
            }
            NAL_PPS => {
                self.pps = Some(nal);
                Ok(())
            }
            NAL_AUD => Ok(()),
            _ => {
                let building = self.building.get_or_insert_with(Building::default);
                if building.nals.len() >= MAX_NALS_PER_ACCESS_UNIT
                    || building.bytes + 4 + nal.len() > MAX_ACCESS_UNIT_BYTES
                {
                    return Err(DropReason::TooLarge);
                }
                building.bytes += 4 + nal.len();
                building.nals.push(nal);
                Ok(())
            }
        }
    }

    /// Ends the access unit being built: hands it out, or drops it.
    fn finish(&mut self) {
        let Some(building) = self.building.take() else { return };
        let broken = std::mem::replace(&mut self.broken, false);
        if self.fragment.take().is_some() {
            // The access unit ended inside a fragmented NAL unit.
            self.dropped.malformed += 1;
            self.fail(DropReason::Malformed);
            return;
        }
        if broken || building.nals.is_empty() {
            return;
        }
        let keyframe = building.nals.iter().any(|n| n.first().is_some_and(|b| b & 0x1f == NAL_IDR));
        let config = match (&self.sps, &self.pps) {
            (Some(sps), Some(pps)) if keyframe => {
                let changed = self.announced.as_ref().is_none_or(|(s, p)| s != sps || p != pps);
                if changed {
                    match AvcDecoderConfig::from_parameter_sets(
                        vec![sps.clone()],
                        vec![pps.clone()],
                    ) {
                        Ok(config) => {
                            self.announced = Some((sps.clone(), pps.clone()));
                            Some(config)
                        }
                        Err(_) => {
                            self.dropped.malformed += 1;
                            return;
                        }
                    }
                } else {
                    None
                }
            }
            _ => None,
        };
        if self.waiting_keyframe {
            if !keyframe || self.announced.is_none() {
                self.dropped.waiting += 1;
                return;
            }
            self.waiting_keyframe = false;
        }
        let mut avcc = BytesMut::with_capacity(building.bytes);
        for nal in &building.nals {
            // Each NAL unit is under MAX_ACCESS_UNIT_BYTES, far below 2^32.
            avcc.put_u32(nal.len() as u32);
            avcc.extend_from_slice(nal);
        }
        self.out.push_back(Depacketized::AccessUnit(AccessUnit {
            timestamp: building.timestamp,
            avcc: avcc.freeze(),
            keyframe,
            config,
        }));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
        0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn idr(len: usize) -> Vec<u8> {
        let mut nal = vec![0x65];
        nal.extend((0..len).map(|i| (i % 251) as u8 | 1));
        nal
    }

    fn slice(len: usize) -> Vec<u8> {
        let mut nal = vec![0x41];
        nal.extend((0..len).map(|i| (i % 241) as u8 | 1));
        nal
    }

    fn stap_a(nals: &[&[u8]]) -> Bytes {
        let mut out = vec![0x78];
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            out.extend_from_slice(nal);
        }
        Bytes::from(out)
    }

    /// FU-A fragments of `nal`, `size` bytes of it each.
    fn fu_a(nal: &[u8], size: usize) -> Vec<Bytes> {
        let (header, body) = (nal[0], &nal[1..]);
        let chunks: Vec<&[u8]> = body.chunks(size).collect();
        let last = chunks.len() - 1;
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut fu = header & 0x1f;
                if i == 0 {
                    fu |= 0x80;
                }
                if i == last {
                    fu |= 0x40;
                }
                let mut out = vec![(header & 0xe0) | FU_A, fu];
                out.extend_from_slice(chunk);
                Bytes::from(out)
            })
            .collect()
    }

    fn avcc(nals: &[&[u8]]) -> Bytes {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
        Bytes::from(out)
    }

    fn drain(d: &mut H264Depacketizer) -> Vec<Depacketized> {
        std::iter::from_fn(|| d.poll()).collect()
    }

    fn units(out: &[Depacketized]) -> Vec<&AccessUnit> {
        out.iter()
            .filter_map(|o| match o {
                Depacketized::AccessUnit(au) => Some(au),
                Depacketized::KeyframeNeeded => None,
            })
            .collect()
    }

    /// A keyframe (SPS+PPS aggregated, the IDR in fragments) and a delta frame as packets.
    fn two_frames() -> Vec<(u32, bool, Bytes)> {
        let mut packets = vec![(3000, false, stap_a(&[SPS, PPS]))];
        let frags = fu_a(&idr(3000), 1000);
        let last = frags.len() - 1;
        packets.extend(frags.into_iter().enumerate().map(|(i, f)| (3000, i == last, f)));
        packets.push((6000, true, Bytes::from(slice(500))));
        packets
    }

    #[test]
    fn a_keyframe_and_a_delta_frame_come_out_whole() {
        let mut d = H264Depacketizer::new();
        for (i, (ts, marker, payload)) in two_frames().into_iter().enumerate() {
            d.push(100 + i as u16, ts, marker, &payload);
        }
        let out = drain(&mut d);
        let units = units(&out);
        assert_eq!(units.len(), 2, "{out:?}");
        assert!(units[0].keyframe);
        assert_eq!(units[0].avcc, avcc(&[&idr(3000)]));
        let config = units[0].config.as_ref().expect("the first keyframe carries the config");
        assert_eq!((config.sps[0].as_ref(), config.pps[0].as_ref()), (SPS, PPS));
        assert_eq!(config.sps_info().map(|i| (i.width, i.height)), Ok((320, 240)));
        assert!(!units[1].keyframe);
        assert_eq!(units[1].config, None);
        assert_eq!((units[0].timestamp, units[1].timestamp), (3000, 6000));
    }

    #[test]
    fn delta_frames_before_the_first_keyframe_are_skipped() {
        let mut d = H264Depacketizer::new();
        d.push(1, 0, true, &Bytes::from(slice(10)));
        assert!(drain(&mut d).is_empty());
        assert_eq!(d.dropped().waiting, 1);
    }

    #[test]
    fn an_access_unit_without_its_marker_ends_at_the_next_timestamp() {
        let mut d = H264Depacketizer::new();
        d.push(1, 0, false, &stap_a(&[SPS, PPS, &idr(10)]));
        d.push(2, 3000, true, &Bytes::from(slice(10)));
        assert_eq!(units(&drain(&mut d)).len(), 2);
    }

    #[test]
    fn a_gap_drops_the_frame_and_waits_for_the_next_keyframe() {
        let mut d = H264Depacketizer::new();
        d.push(1, 0, true, &stap_a(&[SPS, PPS, &idr(10)]));
        d.push(2, 3000, true, &Bytes::from(slice(10)));
        // Packet 3 is lost.
        d.push(4, 6000, true, &Bytes::from(slice(10)));
        d.push(5, 9000, true, &Bytes::from(slice(10)));
        d.push(6, 12000, true, &Bytes::from(idr(10)));
        let out = drain(&mut d);
        assert_eq!(out[2], Depacketized::KeyframeNeeded, "{out:?}");
        let units = units(&out);
        assert_eq!(units.len(), 3);
        assert!(units[2].keyframe && units[2].config.is_none(), "same SPS/PPS: no new config");
        assert_eq!(d.dropped().gaps, 1);
    }

    #[test]
    fn duplicates_and_late_packets_are_ignored() {
        let mut d = H264Depacketizer::new();
        d.push(10, 0, true, &stap_a(&[SPS, PPS, &idr(10)]));
        d.push(10, 0, true, &stap_a(&[SPS, PPS, &idr(10)]));
        d.push(9, 0, true, &Bytes::from(slice(10)));
        assert_eq!(units(&drain(&mut d)).len(), 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut d = H264Depacketizer::new();
        d.push(u16::MAX, 0, true, &stap_a(&[SPS, PPS, &idr(10)]));
        d.push(0, 3000, true, &Bytes::from(slice(10)));
        assert_eq!(units(&drain(&mut d)).len(), 2);
        assert_eq!(d.dropped(), DropCounts::default());
    }

    #[test]
    fn sequence_numbers_wrap_and_place_gaps_and_late_packets() {
        let mut s = Sequence::default();
        assert_eq!(s.arrive(65_534), Arrival::InOrder);
        assert_eq!(s.arrive(65_535), Arrival::InOrder);
        assert_eq!(s.arrive(0), Arrival::InOrder);
        assert_eq!(s.arrive(3), Arrival::AfterGap);
        assert_eq!(s.arrive(2), Arrival::Late);
        assert_eq!(s.arrive(4), Arrival::InOrder);
        s.reset();
        assert_eq!(s.arrive(100), Arrival::InOrder);
    }

    #[test]
    fn hostile_payloads_are_dropped_and_counted() {
        let mut d = H264Depacketizer::new();
        d.push(1, 0, true, &stap_a(&[SPS, PPS, &idr(10)]));
        let bad: [&[u8]; 7] = [
            &[0x78, 0x00],             // STAP-A cut in a length
            &[0x78, 0x00, 0x05, 0x65], // STAP-A length past the end
            &[0x78, 0x00, 0x00],       // STAP-A empty unit
            &[0x7c],                   // FU-A without its header
            &[0x7c, 0x05, 1, 2],       // FU-A middle without a start
            &[0xe5, 1, 2],             // forbidden bit
            &[0x79, 0, 1, 2],          // STAP-B
        ];
        for (i, payload) in bad.iter().enumerate() {
            d.push(2 + i as u16, 3000 * (i as u32 + 1), true, &Bytes::copy_from_slice(payload));
        }
        let out = drain(&mut d);
        assert_eq!(units(&out).len(), 1);
        let dropped = d.dropped();
        assert_eq!(dropped.malformed + dropped.unsupported, 7, "{dropped:?}");
        // A padding-only packet (empty payload) is not malformed: it is nothing.
        d.push(9, 3000 * 9, true, &Bytes::new());
        assert_eq!(d.dropped(), dropped);
    }

    #[test]
    fn an_endless_fragment_stops_at_the_limit() {
        let mut d = H264Depacketizer::new();
        let mut first = vec![0x7c, 0x85];
        first.extend(std::iter::repeat_n(7u8, 1200));
        d.push(0, 0, false, &Bytes::from(first));
        let middle = Bytes::from([&[0x7c, 0x05][..], &[7u8; 1200][..]].concat());
        for seq in 1..=(MAX_ACCESS_UNIT_BYTES / 1200 + 10) as u16 {
            d.push(seq, 0, false, &middle);
        }
        assert!(d.dropped().too_large >= 1);
        assert!(d.fragment.as_ref().is_none_or(|(_, b)| b.len() <= MAX_ACCESS_UNIT_BYTES));
    }

    #[test]
    fn too_many_nal_units_drop_the_access_unit() {
        let mut d = H264Depacketizer::new();
        d.push(0, 0, false, &stap_a(&[SPS, PPS]));
        let tiny = slice(1);
        for seq in 1..=(MAX_NALS_PER_ACCESS_UNIT + 1) as u16 {
            d.push(seq, 0, false, &Bytes::from(tiny.clone()));
        }
        assert_eq!(d.dropped().too_large, 1);
    }

    proptest! {
        #[test]
        fn any_packets_never_panic_and_stay_bounded(
            packets in proptest::collection::vec(
                (any::<u16>(), 0u32..5, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)),
                0..200,
            ),
        ) {
            let mut d = H264Depacketizer::new();
            for (seq, ts, marker, payload) in packets {
                d.push(seq, ts * 3000, marker, &Bytes::from(payload));
                while let Some(out) = d.poll() {
                    if let Depacketized::AccessUnit(au) = out {
                        prop_assert!(au.avcc.len() <= MAX_ACCESS_UNIT_BYTES);
                    }
                }
            }
        }

        #[test]
        fn valid_streams_come_out_whole_for_any_fragment_size(size in 1usize..1500) {
            let mut d = H264Depacketizer::new();
            let mut seq = 0u16;
            for frame in 0..3u32 {
                let nal = if frame == 0 { idr(4000) } else { slice(2000) };
                if frame == 0 {
                    d.push(seq, 0, false, &stap_a(&[SPS, PPS]));
                    seq += 1;
                }
                let frags = fu_a(&nal, size);
                let last = frags.len() - 1;
                for (i, f) in frags.into_iter().enumerate() {
                    d.push(seq, frame * 3000, i == last, &f);
                    seq += 1;
                }
            }
            let out = drain(&mut d);
            let units = units(&out);
            prop_assert_eq!(units.len(), 3);
            prop_assert_eq!(&units[0].avcc, &avcc(&[&idr(4000)]));
            prop_assert_eq!(&units[2].avcc, &avcc(&[&slice(2000)]));
        }
    }
}
