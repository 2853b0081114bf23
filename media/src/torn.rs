//! How much of a segment file cut short is whole, sans-IO: a recorder killed mid-write
//! (`kill -9`, a power cut) leaves a `.part` file whose tail may be half a fragment, half a
//! packet or half a tag. [`whole_prefix`] finds the longest prefix made of complete units,
//! reading only headers through a `read_at` callback (a segment can be large; nothing is
//! held whole), so its caller can truncate the file there and keep it as a segment:
//!
//! - fragmented MP4 ([`crate::fmp4`]): the init (`ftyp`, `moov`) and every `moof` + `mdat`
//!   pair that is complete; the prefix ends after the last complete `mdat` that follows a
//!   `moof`.
//! - MPEG-TS ([`crate::ts`]): whole 188-byte packets, the last of which starts with the
//!   sync byte (a packet that does not is dropped with everything after it).
//! - FLV ([`crate::flv`]): the file header and every complete tag, each followed by its
//!   `PreviousTagSize` equal to the tag's length.
//!
//! A file with no complete unit of media (no fragment, no packet, no tag) has a whole
//! prefix of 0: the caller deletes it. Hostile bytes never panic nor allocate by a size
//! they declare: sizes are checked against the file's length before anything is read
//! past a header, and each step moves forward by at least a header.

use crate::segment::SegmentFormat;

/// MPEG-TS packet size.
pub const TS_PACKET: u64 = 188;
/// MPEG-TS sync byte.
const TS_SYNC: u8 = 0x47;
/// Most trailing packets searched back for one that starts with the sync byte.
const MAX_TS_RESYNC: u64 = 64;
/// FLV tag header size.
const FLV_TAG_HEADER: u64 = 11;
/// FLV `PreviousTagSize` field size.
const FLV_PREVIOUS_SIZE: u64 = 4;

/// The length of the longest prefix of a `len`-byte file in `format` made of complete
/// units (see the module docs); 0 when not one unit of media is complete. `read_at(offset,
/// buf)` must fill `buf` with the file's bytes at `offset` (the scan never asks past
/// `len`); its error ends the scan and is handed back.
pub fn whole_prefix<E>(
    format: SegmentFormat,
    len: u64,
    mut read_at: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
) -> Result<u64, E> {
    match format {
        SegmentFormat::Fmp4 => fmp4(len, &mut read_at),
        SegmentFormat::Ts => ts(len, &mut read_at),
        SegmentFormat::Flv => flv(len, &mut read_at),
    }
}

fn be32(b: &[u8]) -> u64 {
    u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be24(b: &[u8]) -> u64 {
    u64::from(u32::from_be_bytes([0, b[0], b[1], b[2]]))
}

fn fmp4<E>(len: u64, read_at: &mut impl FnMut(u64, &mut [u8]) -> Result<(), E>) -> Result<u64, E> {
    let (mut at, mut whole) = (0u64, 0u64);
    let (mut moov, mut moof) = (false, false);
    loop {
        if len.saturating_sub(at) < 8 {
            break;
        }
        let mut head = [0u8; 16];
        read_at(at, &mut head[..8])?;
        let kind = [head[4], head[5], head[6], head[7]];
        if !kind.iter().all(|b| (0x20..=0x7e).contains(b)) {
            // Not a box header: garbage (or zeros) where the next box should be.
            break;
        }
        let (size, header) = match be32(&head) {
            // "To the end of the file": whether it is complete cannot be known, and the
            // writer never writes one.
            0 => break,
            1 => {
                if len - at < 16 {
                    break;
                }
                read_at(at + 8, &mut head[8..16])?;
                (
                    u64::from_be_bytes([
                        head[8], head[9], head[10], head[11], head[12], head[13], head[14],
                        head[15],
                    ]),
                    16,
                )
            }
            n => (n, 8),
        };
        if size < header {
            break;
        }
        let Some(end) = at.checked_add(size).filter(|end| *end <= len) else { break };
        match &kind {
            b"moov" => moov = true,
            b"moof" => moof = moov,
            b"mdat" if moof => {
                moof = false;
                whole = end;
            }
            _ => {}
        }
        at = end;
    }
    Ok(whole)
}

fn ts<E>(len: u64, read_at: &mut impl FnMut(u64, &mut [u8]) -> Result<(), E>) -> Result<u64, E> {
    let mut packets = len / TS_PACKET;
    let mut sync = [0u8; 1];
    for _ in 0..MAX_TS_RESYNC {
        if packets == 0 {
            return Ok(0);
        }
        read_at((packets - 1) * TS_PACKET, &mut sync)?;
        if sync[0] == TS_SYNC {
            return Ok(packets * TS_PACKET);
        }
        packets -= 1;
    }
    // The tail is not MPEG-TS for a long way back: keep nothing rather than guess.
    Ok(0)
}

fn flv<E>(len: u64, read_at: &mut impl FnMut(u64, &mut [u8]) -> Result<(), E>) -> Result<u64, E> {
    let mut head = [0u8; 9];
    if len < 9 {
        return Ok(0);
    }
    read_at(0, &mut head)?;
    if &head[..3] != b"FLV" {
        return Ok(0);
    }
    // The header's own size, then PreviousTagSize0.
    let mut at = be32(&head[5..9]).saturating_add(FLV_PREVIOUS_SIZE);
    let mut whole = 0;
    loop {
        if len.saturating_sub(at) < FLV_TAG_HEADER {
            break;
        }
        let mut tag = [0u8; FLV_TAG_HEADER as usize];
        read_at(at, &mut tag)?;
        // Audio, video, script data (the filter bit aside).
        if !matches!(tag[0] & 0x1f, 8 | 9 | 18) {
            break;
        }
        let body = be24(&tag[1..4]);
        let tag_len = FLV_TAG_HEADER + body;
        let Some(end) = at.checked_add(tag_len + FLV_PREVIOUS_SIZE).filter(|end| *end <= len)
        else {
            break;
        };
        let mut previous = [0u8; FLV_PREVIOUS_SIZE as usize];
        read_at(at + tag_len, &mut previous)?;
        if be32(&previous) != tag_len {
            break;
        }
        whole = end;
        at = end;
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn prefix(format: SegmentFormat, bytes: &[u8]) -> u64 {
        let read = |at: u64, buf: &mut [u8]| -> Result<(), ()> {
            let at = usize::try_from(at).map_err(|_| ())?;
            let end = at.checked_add(buf.len()).ok_or(())?;
            // The scan never reads past the length it was given.
            buf.copy_from_slice(bytes.get(at..end).expect("a read inside the file"));
            Ok(())
        };
        whole_prefix(format, bytes.len() as u64, read).expect("reads succeed")
    }

    fn mp4_box(kind: &[u8; 4], body_len: usize) -> Vec<u8> {
        let mut b = ((8 + body_len) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend(std::iter::repeat_n(0xab, body_len));
        b
    }

    /// ftyp + moov, then `fragments` moof + mdat pairs; answers the file and where each
    /// fragment ends.
    fn fmp4_file(fragments: usize) -> (Vec<u8>, Vec<usize>) {
        let mut file = mp4_box(b"ftyp", 16);
        file.extend(mp4_box(b"moov", 300));
        let mut ends = Vec::new();
        for i in 0..fragments {
            file.extend(mp4_box(b"moof", 100 + i));
            file.extend(mp4_box(b"mdat", 4000 + 7 * i));
            ends.push(file.len());
        }
        (file, ends)
    }

    #[test]
    fn fmp4_keeps_every_complete_fragment_at_every_cut() {
        let (file, ends) = fmp4_file(3);
        for cut in 0..=file.len() {
            let want = ends.iter().rev().find(|end| **end <= cut).copied().unwrap_or(0);
            assert_eq!(prefix(SegmentFormat::Fmp4, &file[..cut]), want as u64, "cut at {cut}");
        }
    }

    #[test]
    fn fmp4_without_init_or_with_an_mdat_alone_keeps_nothing() {
        let mut no_init = mp4_box(b"moof", 10);
        no_init.extend(mp4_box(b"mdat", 10));
        assert_eq!(prefix(SegmentFormat::Fmp4, &no_init), 0);
        let (mut file, _) = fmp4_file(0);
        file.extend(mp4_box(b"mdat", 10));
        assert_eq!(prefix(SegmentFormat::Fmp4, &file), 0, "an mdat needs its moof");
    }

    #[test]
    fn fmp4_stops_at_garbage_zeros_and_lying_sizes() {
        let (file, ends) = fmp4_file(2);
        let good = ends[1];
        let moof: &[u8] = b"moof";
        for tail in [
            // Zeros: a size of 0.
            vec![0u8; 64],
            // Not a box type.
            vec![0xff; 64],
            // Smaller than its own header.
            [&7u32.to_be_bytes()[..], moof].concat(),
            // A 64-bit size, huge.
            [&1u32.to_be_bytes()[..], moof, &[0xff; 8][..]].concat(),
            // A 64-bit size, torn.
            [&1u32.to_be_bytes()[..], moof, &[0; 3][..]].concat(),
            // Past the end.
            [&u32::MAX.to_be_bytes()[..], moof].concat(),
        ] {
            let mut torn = file.clone();
            torn.extend(&tail);
            assert_eq!(prefix(SegmentFormat::Fmp4, &torn), good as u64, "tail {tail:?}");
        }
    }

    #[test]
    fn fmp4_reads_64_bit_sizes() {
        let (mut file, _) = fmp4_file(0);
        file.extend(mp4_box(b"moof", 20));
        let mut mdat = 1u32.to_be_bytes().to_vec();
        mdat.extend_from_slice(b"mdat");
        mdat.extend_from_slice(&(16u64 + 5).to_be_bytes());
        mdat.extend_from_slice(&[1, 2, 3, 4, 5]);
        file.extend(&mdat);
        assert_eq!(prefix(SegmentFormat::Fmp4, &file), file.len() as u64);
    }

    #[test]
    fn ts_keeps_whole_packets_ending_on_a_sync_byte() {
        let mut file = Vec::new();
        for i in 0..4u8 {
            file.push(TS_SYNC);
            file.extend(std::iter::repeat_n(i, 187));
        }
        for cut in 0..=file.len() {
            let want = cut as u64 / TS_PACKET * TS_PACKET;
            assert_eq!(prefix(SegmentFormat::Ts, &file[..cut]), want, "cut at {cut}");
        }
        // A last packet that is not one (garbage written over it) is dropped.
        let mut bad = file.clone();
        bad[3 * 188] = 0;
        assert_eq!(prefix(SegmentFormat::Ts, &bad), 3 * TS_PACKET);
        assert_eq!(prefix(SegmentFormat::Ts, &vec![0u8; 188 * 100]), 0, "no sync byte anywhere");
    }

    fn flv_file(tags: usize) -> (Vec<u8>, Vec<usize>) {
        let mut file = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        let mut ends = Vec::new();
        for i in 0..tags {
            let body = 30 + i * 11;
            file.push(if i % 2 == 0 { 9 } else { 8 });
            file.extend_from_slice(&(body as u32).to_be_bytes()[1..]);
            file.extend_from_slice(&[0, 0, i as u8, 0, 0, 0, 0]);
            file.extend(std::iter::repeat_n(0x17, body));
            file.extend_from_slice(&((11 + body) as u32).to_be_bytes());
            ends.push(file.len());
        }
        (file, ends)
    }

    #[test]
    fn flv_keeps_every_complete_tag_at_every_cut() {
        let (file, ends) = flv_file(4);
        for cut in 0..=file.len() {
            let want = ends.iter().rev().find(|end| **end <= cut).copied().unwrap_or(0);
            assert_eq!(prefix(SegmentFormat::Flv, &file[..cut]), want as u64, "cut at {cut}");
        }
    }

    #[test]
    fn flv_stops_at_a_wrong_previous_size_or_type() {
        let (file, ends) = flv_file(3);
        let mut wrong_size = file.clone();
        let last = wrong_size.len() - 1;
        wrong_size[last] ^= 1;
        assert_eq!(prefix(SegmentFormat::Flv, &wrong_size), ends[1] as u64);
        let mut wrong_type = file.clone();
        wrong_type[ends[0]] = 0x42;
        assert_eq!(prefix(SegmentFormat::Flv, &wrong_type), ends[0] as u64);
        assert_eq!(prefix(SegmentFormat::Flv, b"NOT AN FLV FILE AT ALL"), 0);
        let mut huge_offset = file;
        huge_offset[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(prefix(SegmentFormat::Flv, &huge_offset), 0);
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic_nor_read_past_the_end(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            head in 0usize..3,
        ) {
            // Sometimes behind a valid head, so the walk gets past the first header.
            let mut file = match head {
                0 => Vec::new(),
                1 => fmp4_file(1).0,
                _ => flv_file(1).0,
            };
            file.extend(bytes);
            for format in [SegmentFormat::Fmp4, SegmentFormat::Ts, SegmentFormat::Flv] {
                let whole = prefix(format, &file);
                prop_assert!(whole <= file.len() as u64);
            }
        }
    }
}
