//! AV1 RTP payloads (the AV1 RTP specification, 4.4) → the temporal unit's OBUs, each with
//! its size ([`zenlive_media::av1::normalize`]), for [`super::rtp_frames`].
//!
//! A payload is an aggregation header (`Z`: the first element continues an OBU from the
//! packet before; `Y`: the last element continues in the next; `W`: the element count, 0
//! when every element has a length; `N`: a new coded video sequence) and OBU elements.
//! A temporal unit begins at a packet with `Z=0` when none is being assembled (the one
//! before ended at its marker bit or its timestamp).
//!
//! Written here rather than taken from `rtc`'s `Av1Depacketizer`: that one keeps a
//! continued fragment without a bound and slices past the end of a short element with an
//! extension header (a panic on network input); this one bounds the fragment by
//! [`MAX_FRAME_BYTES`] and checks every length.

use bytes::{Bytes, BytesMut};
use zenlive_media::av1::{self, Av1Error};

use super::rtp_frames::{FramePayload, Malformed, Piece, MAX_FRAME_BYTES};

const Z: u8 = 0b1000_0000;
const Y: u8 = 0b0100_0000;

/// The reader of one AV1 RTP stream: the OBU fragment carried over from the packet before.
#[derive(Debug, Default)]
pub struct Av1 {
    fragment: BytesMut,
}

impl FramePayload for Av1 {
    fn read(&mut self, payload: &Bytes, building: bool) -> Result<Piece, Malformed> {
        let (&header, body) = payload.split_first().ok_or(Malformed)?;
        let (continues, continued) = (header & Z != 0, header & Y != 0);
        let count = usize::from((header >> 4) & 0b11);
        let starts = !building && !continues;
        let mut data = BytesMut::new();
        let mut at = 0;
        let mut index = 0;
        if !continues {
            self.fragment.clear();
        }
        while at < body.len() {
            let rest = &body[at..];
            let last_by_count = count != 0 && index + 1 == count;
            let (element, taken) = if last_by_count {
                (rest, rest.len())
            } else {
                let (len, size) = av1::read_leb128(rest).ok_or(Malformed)?;
                let end = size.checked_add(len).ok_or(Malformed)?;
                (rest.get(size..end).ok_or(Malformed)?, end)
            };
            at += taken;
            let last = at == body.len();
            let obu = if index == 0 && continues {
                if self.fragment.is_empty() {
                    // The OBU's beginning was lost (the gap is counted): skip the rest of it.
                    index += 1;
                    continue;
                }
                let mut whole = std::mem::take(&mut self.fragment);
                whole.extend_from_slice(element);
                whole
            } else {
                BytesMut::from(element)
            };
            index += 1;
            if last && continued {
                if obu.len() > MAX_FRAME_BYTES {
                    return Err(Malformed);
                }
                self.fragment = obu;
                break;
            }
            if obu.is_empty() {
                continue;
            }
            match av1::normalize(&obu) {
                Ok(normal) => data.extend_from_slice(&normal),
                // A temporal delimiter, tile list or padding: nothing to keep.
                Err(Av1Error::Empty) => {}
                Err(_) => return Err(Malformed),
            }
        }
        Ok(Piece { starts, data: data.freeze() })
    }

    fn reset(&mut self) {
        self.fragment.clear();
    }

    fn is_keyframe(frame: &[u8]) -> bool {
        av1::is_keyframe(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webrtc::rtp_frames::{Depacketized, FrameDepacketizer};

    /// libaom's sequence header, then the start of a key frame OBU (no size fields, as RTP
    /// carries them).
    const SEQUENCE_HEADER: &[u8] =
        &[0x08, 0x00, 0x00, 0x00, 0x24, 0xc4, 0xff, 0xdf, 0x36, 0xbe, 0x40, 0x10];
    const KEY_FRAME: &[u8] = &[0x30, 0x10, 0x00, 0x85, 0xa0, 0x04, 0x10, 0x41];

    #[test]
    fn aggregated_and_fragmented_obus_become_one_sized_unit() {
        let mut d = FrameDepacketizer::<Av1>::new();
        // Packet 1: W=2, N=1: the sequence header (with its length) and the frame's first
        // half (the rest of the packet), continued (Y=1).
        let mut first = vec![Y | 0b0010_0000 | 0b0000_1000, SEQUENCE_HEADER.len() as u8];
        first.extend_from_slice(SEQUENCE_HEADER);
        first.extend_from_slice(&KEY_FRAME[..4]);
        d.push(7, 900, false, &Bytes::from(first));
        // Packet 2: Z=1, W=1: the rest of the frame.
        let mut second = vec![Z | 0b0001_0000];
        second.extend_from_slice(&KEY_FRAME[4..]);
        d.push(8, 900, true, &Bytes::from(second));
        let Some(Depacketized::Frame(frame)) = d.poll() else { panic!("a frame") };
        assert!(frame.keyframe);
        let mut expected = vec![0x0a, 0x0b];
        expected.extend_from_slice(&SEQUENCE_HEADER[1..]);
        expected.extend_from_slice(&[0x32, 0x07]);
        expected.extend_from_slice(&KEY_FRAME[1..]);
        assert_eq!(&frame.data[..], &expected[..]);
        assert_eq!(
            av1::config_record(av1::sequence_header(&frame.data).expect("header")).map(|r| r[0]),
            Ok(0x81)
        );
    }

    #[test]
    fn a_lost_first_fragment_loses_the_unit_and_lengths_are_checked() {
        let mut d = FrameDepacketizer::<Av1>::new();
        // Starts with Z=1 and nothing carried over: the beginning is gone.
        let mut orphan = vec![Z | 0b0001_0000];
        orphan.extend_from_slice(&KEY_FRAME[4..]);
        d.push(1, 0, true, &Bytes::from(orphan));
        assert!(d.poll().is_none());
        // A length past the end, and an OBU cut inside its header: malformed.
        d.push(2, 10, true, &Bytes::from_static(&[0x00, 0x09, 0x30]));
        d.push(3, 20, true, &Bytes::from_static(&[0x10, 0x36]));
        assert!(d.poll().is_none());
        assert_eq!(d.dropped().malformed, 2);
    }
}
