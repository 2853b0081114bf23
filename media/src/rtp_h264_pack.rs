//! [`packetize`]: one H.264 access unit in the canonical form of
//! [`MediaFrame`](crate::MediaFrame) (AVCC, length-prefixed NAL units) → RTP payloads in
//! packetization mode 1 (RFC 6184): a NAL unit that fits goes whole (single NAL unit
//! packet), a larger one in FU-A fragments, and a keyframe's SPS and PPS go first, together
//! in one STAP-A, so a receiver can start decoding at any keyframe (WebRTC receivers do not
//! read an out-of-band configuration).
//!
//! Sans-IO and stateless: RTP headers (sequence numbers, timestamps, SSRC) are the caller's;
//! the marker bit belongs on the last payload. The payloads are written into one buffer
//! as a [`PayloadList`] (each behind a 2-byte length), so a frame is packetized once per
//! node and every viewer slices the same bytes.
//!
//! The input is a frame that came from a publisher: a length prefix that runs past the end,
//! or an access unit over [`MAX_ACCESS_UNIT_BYTES`], refuses the whole frame (nothing is
//! half-sent); nothing here panics or indexes unchecked.
//!
//! webrtc-rs has a payloader (`rtp::codecs::h264::H264Payloader`), but it takes Annex B
//! input (our frames are AVCC: converting costs a copy and a scan for start codes, which a
//! NAL unit's data may imitate) and emits SPS/PPS only when they appear in-band.

use bytes::{BufMut, Bytes, BytesMut};

use crate::avc::{nal_units, AvcDecoderConfig, AvcError};

/// The RTP payload size WebRTC stacks use (1200 bytes: fits any path MTU with room for
/// SRTP, header extensions and tunnels).
pub const DEFAULT_MAX_PAYLOAD: usize = 1200;
/// Smallest payload size accepted (a FU-A needs 2 bytes of header; below this the packet
/// count explodes).
pub const MIN_PAYLOAD: usize = 64;
/// Largest payload size (a STAP-A's NAL sizes and the list's lengths are 16 bits).
pub const MAX_PAYLOAD: usize = u16::MAX as usize;
/// Largest access unit packetized (as the depacketizer's limit).
pub const MAX_ACCESS_UNIT_BYTES: usize = crate::rtp_h264::MAX_ACCESS_UNIT_BYTES;

const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Why an access unit was not packetized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketizeError {
    /// The AVCC framing is broken.
    #[error(transparent)]
    Malformed(#[from] AvcError),
    /// Over [`MAX_ACCESS_UNIT_BYTES`].
    #[error("access unit of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// RTP payloads, each behind a 2-byte big-endian length, in one buffer (what [`packetize`]
/// writes). Build one with [`PayloadList::new`] on bytes [`packetize`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadList(Bytes);

impl PayloadList {
    /// The list in `bytes` (as [`packetize`] wrote them). Bytes that are not such a list
    /// yield the payloads up to the first broken length.
    pub fn new(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The buffer.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Whether it holds no payload.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The payloads, in order; each is a slice of the list's buffer (no copy).
    pub fn iter(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut at = 0usize;
        std::iter::from_fn(move || {
            let len = self.0.get(at..at + 2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let end = at + 2 + len;
            let payload = (end <= self.0.len()).then(|| self.0.slice(at + 2..end))?;
            at = end;
            Some(payload)
        })
    }
}

/// Packetizes one access unit (`avcc`, NAL units behind `length_size`-byte lengths) into
/// payloads of at most `max_payload` bytes (clamped to [`MIN_PAYLOAD`]..=[`MAX_PAYLOAD`]),
/// appended to `out` as a [`PayloadList`]. With `parameter_sets` (give them for keyframes)
/// their SPS and PPS go first and in-band ones are left out; access unit delimiters and
/// filler data are always left out. Returns how many payloads were written; on error
/// `out` is as it was.
pub fn packetize(
    avcc: &[u8],
    length_size: u8,
    parameter_sets: Option<&AvcDecoderConfig>,
    max_payload: usize,
    out: &mut BytesMut,
) -> Result<usize, PacketizeError> {
    if avcc.len() > MAX_ACCESS_UNIT_BYTES {
        return Err(PacketizeError::TooLarge(avcc.len()));
    }
    let max = max_payload.clamp(MIN_PAYLOAD, MAX_PAYLOAD);
    // Check the framing first, so a broken frame writes nothing.
    for nal in nal_units(avcc, length_size) {
        nal?;
    }
    let mut count = 0;
    if let Some(config) = parameter_sets {
        let sets: Vec<&[u8]> = config
            .sps
            .iter()
            .chain(&config.pps)
            .map(|s| s.as_ref())
            .filter(|s| !s.is_empty())
            .collect();
        count += write_parameter_sets(&sets, max, out);
    }
    for nal in nal_units(avcc, length_size) {
        // Checked above: every NAL unit is whole.
        let Ok(nal) = nal else { continue };
        let Some(&header) = nal.first() else { continue };
        match header & 0x1f {
            NAL_AUD | NAL_FILLER => continue,
            NAL_SPS | NAL_PPS if parameter_sets.is_some() => continue,
            _ => {}
        }
        count += write_nal(nal, max, out);
    }
    Ok(count)
}

/// The SPS and PPS: one STAP-A when they fit together, else each on its own.
fn write_parameter_sets(sets: &[&[u8]], max: usize, out: &mut BytesMut) -> usize {
    let aggregate: usize = 1 + sets.iter().map(|s| 2 + s.len()).sum::<usize>();
    if sets.len() > 1 && aggregate <= max {
        // F is the OR of the units' F bits, NRI their maximum (RFC 6184 §5.7.1).
        let first = |s: &&[u8]| s.first().copied().unwrap_or(0);
        let f = sets.iter().fold(0, |f, s| f | (first(s) & 0x80));
        let nri = sets.iter().map(|s| first(s) & 0x60).max().unwrap_or(0x60);
        out.put_u16(aggregate as u16);
        out.put_u8(f | nri | STAP_A);
        for set in sets {
            out.put_u16(set.len() as u16);
            out.put_slice(set);
        }
        return 1;
    }
    sets.iter().map(|set| write_nal(set, max, out)).sum()
}

/// One NAL unit (not empty): whole, or in FU-A fragments.
fn write_nal(nal: &[u8], max: usize, out: &mut BytesMut) -> usize {
    let Some(&header) = nal.first() else { return 0 };
    if nal.len() <= max {
        out.put_u16(nal.len() as u16);
        out.put_slice(nal);
        return 1;
    }
    let indicator = (header & 0xe0) | FU_A;
    let kind = header & 0x1f;
    let body = &nal[1..];
    let chunk = max - 2;
    let last = body.len().div_ceil(chunk) - 1;
    for (i, piece) in body.chunks(chunk).enumerate() {
        let mut fu = kind;
        if i == 0 {
            fu |= 0x80;
        }
        if i == last {
            fu |= 0x40;
        }
        out.put_u16((piece.len() + 2) as u16);
        out.put_u8(indicator);
        out.put_u8(fu);
        out.put_slice(piece);
    }
    last + 1
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::rtp_h264::{Depacketized, H264Depacketizer};

    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
        0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn config() -> AvcDecoderConfig {
        AvcDecoderConfig::from_parameter_sets(
            vec![Bytes::from_static(SPS)],
            vec![Bytes::from_static(PPS)],
        )
        .expect("valid sets")
    }

    fn nal(kind: u8, len: usize) -> Vec<u8> {
        let mut nal = vec![0x60 | kind];
        nal.extend((1..len).map(|i| (i % 251) as u8 | 1));
        nal
    }

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
        out
    }

    fn payloads(
        frame: &[u8],
        sets: Option<&AvcDecoderConfig>,
        max: usize,
    ) -> Result<Vec<Bytes>, PacketizeError> {
        let mut out = BytesMut::new();
        let n = packetize(frame, 4, sets, max, &mut out)?;
        let list: Vec<Bytes> = PayloadList::new(out.freeze()).iter().collect();
        assert_eq!(list.len(), n);
        Ok(list)
    }

    /// Depacketizes `payloads` (one access unit) with ZenLive's depacketizer.
    fn roundtrip(payloads: &[Bytes], seq: u16) -> Vec<Depacketized> {
        let mut depacketizer = H264Depacketizer::new();
        let last = payloads.len() - 1;
        for (i, payload) in payloads.iter().enumerate() {
            depacketizer.push(seq.wrapping_add(i as u16), 90_000, i == last, payload);
        }
        std::iter::from_fn(|| depacketizer.poll()).collect()
    }

    #[test]
    fn a_keyframe_starts_with_its_parameter_sets_in_one_stap_a() {
        let idr = nal(5, 3000);
        let frame = avcc(&[&nal(9, 2), &nal(6, 20), &idr]);
        let list = payloads(&frame, Some(&config()), DEFAULT_MAX_PAYLOAD).expect("packetized");
        assert_eq!(list[0][0] & 0x1f, STAP_A);
        assert_eq!(&list[0][1..3], &(SPS.len() as u16).to_be_bytes());
        assert_eq!(&list[0][3..3 + SPS.len()], SPS);
        assert_eq!(list[1].as_ref(), nal(6, 20).as_slice(), "the SEI whole; the AUD left out");
        // 2999 bytes after the IDR's header, 1198 per fragment: 3 fragments.
        assert_eq!(list.len(), 5);
        let fus = &list[2..];
        assert!(fus.iter().all(|p| p[0] == 0x60 | FU_A && p.len() <= DEFAULT_MAX_PAYLOAD));
        assert_eq!((fus[0][1], fus[1][1], fus[2][1]), (0x80 | 5, 5, 0x40 | 5));
        let [Depacketized::AccessUnit(unit)] = &roundtrip(&list, 65_534)[..] else {
            panic!("one access unit");
        };
        assert!(unit.keyframe);
        let record = unit.config.as_ref().expect("the parameter sets");
        assert_eq!((record.sps[0].as_ref(), record.pps[0].as_ref()), (SPS, PPS));
        assert_eq!(unit.avcc.as_ref(), avcc(&[&nal(6, 20), &idr]).as_slice());
    }

    #[test]
    fn in_band_parameter_sets_give_way_to_the_configurations() {
        let old_sps = nal(7, 12);
        let frame = avcc(&[&old_sps, &nal(8, 4), &nal(5, 100)]);
        let list = payloads(&frame, Some(&config()), DEFAULT_MAX_PAYLOAD).expect("packetized");
        assert_eq!(list.len(), 2);
        // Without a configuration (a delta frame), in-band sets pass as they are.
        let list = payloads(&frame, None, DEFAULT_MAX_PAYLOAD).expect("packetized");
        assert_eq!(list[0].as_ref(), old_sps.as_slice());
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn nal_units_at_the_payload_size_go_whole_and_one_byte_more_fragments() {
        for max in [MIN_PAYLOAD, 100, DEFAULT_MAX_PAYLOAD] {
            let exact = payloads(&avcc(&[&nal(1, max)]), None, max).expect("packetized");
            assert_eq!(exact.len(), 1);
            assert_eq!(exact[0].len(), max);
            let over = payloads(&avcc(&[&nal(1, max + 1)]), None, max).expect("packetized");
            assert_eq!(over.len(), 2);
            assert!(over.iter().all(|p| p.len() <= max));
            // A body that divides exactly: every fragment full, the last one marked.
            let full = payloads(&avcc(&[&nal(1, 1 + 3 * (max - 2))]), None, max).expect("ok");
            assert_eq!(full.len(), 3);
            assert!(full.iter().all(|p| p.len() == max));
            assert_eq!(full[2][1] & 0x40, 0x40);
        }
    }

    #[test]
    fn a_huge_nal_unit_fragments_within_the_limits_and_over_them_is_refused() {
        let big = nal(5, 4 << 20);
        let list = payloads(&avcc(&[&big]), Some(&config()), DEFAULT_MAX_PAYLOAD).expect("ok");
        assert_eq!(list.len(), 1 + (big.len() - 1).div_ceil(DEFAULT_MAX_PAYLOAD - 2));
        let [Depacketized::AccessUnit(_)] = &roundtrip(&list, 0)[..] else {
            panic!("does not come back whole");
        };
        let too_big = vec![0u8; MAX_ACCESS_UNIT_BYTES + 1];
        let mut out = BytesMut::new();
        let error = packetize(&too_big, 4, None, DEFAULT_MAX_PAYLOAD, &mut out);
        assert_eq!(error, Err(PacketizeError::TooLarge(MAX_ACCESS_UNIT_BYTES + 1)));
        assert!(out.is_empty());
    }

    #[test]
    fn empty_and_broken_frames_write_nothing() {
        assert_eq!(payloads(&[], None, DEFAULT_MAX_PAYLOAD), Ok(vec![]));
        // Zero-length NAL units and delimiters only: nothing to send.
        assert_eq!(payloads(&avcc(&[&[], &nal(9, 2)]), None, DEFAULT_MAX_PAYLOAD), Ok(vec![]));
        let mut out = BytesMut::from(&b"kept"[..]);
        let overrun = [0, 0, 0, 9, 0x65, 1];
        assert!(packetize(&overrun, 4, None, DEFAULT_MAX_PAYLOAD, &mut out).is_err());
        assert!(packetize(&[0, 0], 4, Some(&config()), DEFAULT_MAX_PAYLOAD, &mut out).is_err());
        assert_eq!(&out[..], b"kept");
    }

    #[test]
    fn parameter_sets_too_large_to_aggregate_go_on_their_own() {
        let big = AvcDecoderConfig::from_parameter_sets(
            vec![Bytes::from(nal(7, 150))],
            vec![Bytes::from(nal(8, 10))],
        )
        .expect("valid");
        let list = payloads(&avcc(&[&nal(5, 10)]), Some(&big), MIN_PAYLOAD).expect("ok");
        // The SPS in 3 fragments of 62, the PPS whole, the IDR whole.
        assert_eq!(list.len(), 5);
        assert_eq!(list[0][0] & 0x1f, FU_A);
        assert_eq!(list[3][0] & 0x1f, 8);
    }

    #[test]
    fn two_and_one_byte_lengths_are_read() {
        let mut frame = Vec::new();
        for n in [nal(1, 10), nal(1, 20)] {
            frame.extend_from_slice(&(n.len() as u16).to_be_bytes());
            frame.extend_from_slice(&n);
        }
        let mut out = BytesMut::new();
        assert_eq!(packetize(&frame, 2, None, DEFAULT_MAX_PAYLOAD, &mut out), Ok(2));
        let mut out = BytesMut::new();
        assert_eq!(packetize(&[3, 0x41, 1, 2], 1, None, 0, &mut out), Ok(1));
    }

    #[test]
    fn a_broken_payload_list_stops_at_the_break() {
        let list = PayloadList::new(Bytes::from_static(&[0, 1, 0xaa, 0, 9, 0xbb]));
        assert_eq!(list.iter().collect::<Vec<_>>(), vec![Bytes::from_static(&[0xaa])]);
        assert!(PayloadList::default().iter().next().is_none());
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic_and_stay_in_bounds(
            frame in proptest::collection::vec(any::<u8>(), 0..4000),
            length_size in 0u8..6,
            max in 0usize..2000,
        ) {
            let mut out = BytesMut::new();
            if packetize(&frame, length_size, Some(&config()), max, &mut out).is_ok() {
                let limit = max.clamp(MIN_PAYLOAD, MAX_PAYLOAD);
                prop_assert!(PayloadList::new(out.freeze()).iter().all(|p| p.len() <= limit));
            }
        }

        #[test]
        fn access_units_come_back_whole(
            sizes in proptest::collection::vec(1usize..5000, 1..8),
            max in MIN_PAYLOAD..1500,
            seq in any::<u16>(),
        ) {
            let nals: Vec<Vec<u8>> = sizes.iter().map(|&n| nal(5, n)).collect();
            let refs: Vec<&[u8]> = nals.iter().map(Vec::as_slice).collect();
            let frame = avcc(&refs);
            let list = payloads(&frame, Some(&config()), max).expect("packetized");
            prop_assert!(list.iter().all(|p| p.len() <= max));
            let out = roundtrip(&list, seq);
            let [Depacketized::AccessUnit(unit)] = &out[..] else {
                return Err(TestCaseError::fail(format!("{out:?}")));
            };
            prop_assert_eq!(unit.avcc.as_ref(), frame.as_slice());
        }
    }
}
