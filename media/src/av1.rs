//! AV1 temporal units as sequences of OBUs (AV1 specification, 5.3): walked with every
//! size checked, normalized to the form MP4 samples, Enhanced RTMP and the RTP packetizer
//! take (each OBU with its `obu_size`, no temporal delimiters, tile lists or padding),
//! and read for what a receiver needs: whether a decoder can start at the unit, and the
//! `av1C` configuration record made from its sequence header (WebRTC carries none; the
//! sequence header itself is parsed by `scuffle-av1`).

use bytes::{BufMut, Bytes, BytesMut};

/// OBU type of a sequence header.
pub const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_FRAME_HEADER: u8 = 3;
const OBU_FRAME: u8 = 6;
const OBU_TILE_LIST: u8 = 8;
const OBU_PADDING: u8 = 15;

const HAS_EXTENSION: u8 = 0b0000_0100;
const HAS_SIZE: u8 = 0b0000_0010;

/// Why AV1 data was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Av1Error {
    /// An OBU's header or size runs past the data, or a size field is malformed.
    #[error("an AV1 OBU runs past the end of its data")]
    Truncated,
    /// The forbidden bit is set: not AV1.
    #[error("not an AV1 OBU (forbidden bit set)")]
    Forbidden,
    /// An OBU without a size field is followed by more data.
    #[error("an AV1 OBU without a size is not the last")]
    UnsizedNotLast,
    /// No OBU is left once delimiters and padding are dropped.
    #[error("no AV1 OBU carries a picture")]
    Empty,
    /// The sequence header could not be parsed.
    #[error("the AV1 sequence header is malformed")]
    BadSequenceHeader,
}

/// One OBU of a temporal unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obu<'a> {
    /// `obu_type`.
    pub kind: u8,
    /// The header byte, and the extension byte when there is one (without the size).
    pub header: &'a [u8],
    /// The OBU's payload.
    pub payload: &'a [u8],
    /// The whole OBU as it was found, header, size field and payload.
    pub whole: &'a [u8],
}

/// Reads a `leb128()` of at most 8 bytes, at most `u32::MAX` (AV1 specification, 4.10.5):
/// the value and the bytes it took.
pub fn read_leb128(data: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, byte) in data.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = usize::try_from(u32::try_from(value).ok()?).ok()?;
            return Some((value, i + 1));
        }
    }
    None
}

/// Appends `value` as a `leb128()`.
pub fn put_leb128(out: &mut BytesMut, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// The OBUs of `data`, in order. Every OBU but the last must carry its size.
pub fn obus(data: &[u8]) -> Result<Vec<Obu<'_>>, Av1Error> {
    walk(data).collect()
}

/// The OBUs of `data` one by one, without collecting them (per frame: no allocation); the
/// walk ends after the first error.
pub fn walk(data: &[u8]) -> impl Iterator<Item = Result<Obu<'_>, Av1Error>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rest = data.get(at..).filter(|rest| !rest.is_empty())?;
        let obu = read_obu(rest);
        // After an error, nothing more is read.
        at = match &obu {
            Ok(obu) => at + obu.whole.len(),
            Err(_) => data.len(),
        };
        Some(obu)
    })
}

/// The OBU at the start of `rest` (not empty).
fn read_obu(rest: &[u8]) -> Result<Obu<'_>, Av1Error> {
    let first = *rest.first().ok_or(Av1Error::Truncated)?;
    if first & 0x80 != 0 {
        return Err(Av1Error::Forbidden);
    }
    let header_len = if first & HAS_EXTENSION != 0 { 2 } else { 1 };
    let header = rest.get(..header_len).ok_or(Av1Error::Truncated)?;
    let (payload_at, payload_len) = if first & HAS_SIZE != 0 {
        let sized = rest.get(header_len..).ok_or(Av1Error::Truncated)?;
        let (len, taken) = read_leb128(sized).ok_or(Av1Error::Truncated)?;
        (header_len + taken, len)
    } else {
        (header_len, rest.len() - header_len)
    };
    let end = payload_at.checked_add(payload_len).ok_or(Av1Error::Truncated)?;
    let whole = rest.get(..end).ok_or(Av1Error::Truncated)?;
    if first & HAS_SIZE == 0 && end != rest.len() {
        return Err(Av1Error::UnsizedNotLast);
    }
    Ok(Obu { kind: (first >> 3) & 0x0f, header, payload: &whole[payload_at..], whole })
}

/// `data` with every OBU carrying its size and without temporal delimiters, tile lists
/// or padding; refused when malformed or when nothing is left.
pub fn normalize(data: &[u8]) -> Result<Bytes, Av1Error> {
    let mut out = BytesMut::with_capacity(data.len() + 8);
    for obu in walk(data) {
        let obu = obu?;
        if matches!(obu.kind, OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING) {
            continue;
        }
        out.put_u8(obu.header[0] | HAS_SIZE);
        out.extend_from_slice(&obu.header[1..]);
        put_leb128(&mut out, obu.payload.len());
        out.extend_from_slice(obu.payload);
    }
    if out.is_empty() {
        return Err(Av1Error::Empty);
    }
    Ok(out.freeze())
}

/// The first sequence header OBU of `data` (whole, as found), if any.
pub fn sequence_header(data: &[u8]) -> Option<&[u8]> {
    walk(data).map_while(Result::ok).find(|o| o.kind == OBU_SEQUENCE_HEADER).map(|o| o.whole)
}

/// Whether a decoder can start at `data`: its first frame header shows a new key frame
/// (`show_existing_frame` 0, `frame_type` `KEY_FRAME`). Streams with reduced still-picture
/// headers (still images) are not live video and are not recognized.
pub fn is_keyframe(data: &[u8]) -> bool {
    walk(data)
        .map_while(Result::ok)
        .find(|o| matches!(o.kind, OBU_FRAME_HEADER | OBU_FRAME))
        // show_existing_frame (1 bit) = 0, frame_type (2 bits) = 0.
        .is_some_and(|frame| frame.payload.first().is_some_and(|b| b & 0b1110_0000 == 0))
}

/// The `av1C` record (`AV1CodecConfigurationRecord`, the body Enhanced RTMP and MP4
/// carry) for the stream `sequence_header` (a whole OBU) begins; the OBU itself is its
/// `configOBUs`.
pub fn config_record(sequence_header: &[u8]) -> Result<Bytes, Av1Error> {
    use scuffle_av1::seq::SequenceHeaderObu;
    use scuffle_av1::{AV1CodecConfigurationRecord, ObuHeader};
    let bad = |_| Av1Error::BadSequenceHeader;
    let config_obu = normalize(sequence_header)?;
    let mut reader = std::io::Cursor::new(&config_obu[..]);
    let header = ObuHeader::parse(&mut reader).map_err(bad)?;
    let parsed = SequenceHeaderObu::parse(header, &mut reader).map_err(bad)?;
    let point = parsed.operating_points.first().ok_or(Av1Error::BadSequenceHeader)?;
    let color = parsed.color_config;
    let record = AV1CodecConfigurationRecord {
        seq_profile: parsed.seq_profile,
        seq_level_idx_0: point.seq_level_idx,
        seq_tier_0: point.seq_tier,
        high_bitdepth: color.bit_depth > 8,
        twelve_bit: color.bit_depth == 12,
        monochrome: color.mono_chrome,
        chroma_subsampling_x: color.subsampling_x,
        chroma_subsampling_y: color.subsampling_y,
        chroma_sample_position: color.chroma_sample_position,
        hdr_wcg_idc: 0,
        initial_presentation_delay_minus_one: None,
        config_obu: config_obu.clone(),
    };
    let mut out = Vec::with_capacity(4 + config_obu.len());
    record.mux(&mut out).map_err(bad)?;
    Ok(Bytes::from(out))
}

/// What an `av1C` record says of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo {
    /// `seq_profile` (0 main, 1 high, 2 professional).
    pub profile: u8,
    /// `seq_level_idx[0]` (8 is level 4.0).
    pub level: u8,
    /// The largest picture's width (`max_frame_width_minus_1` + 1), 0 without a sequence
    /// header.
    pub width: u32,
    /// The largest picture's height, 0 without a sequence header.
    pub height: u32,
}

/// Reads an `av1C` record; `None` when it is not one.
pub fn record_info(record: &[u8]) -> Option<RecordInfo> {
    use scuffle_av1::seq::SequenceHeaderObu;
    use scuffle_av1::ObuHeader;
    if record.len() < 4 || record[0] != 0x81 {
        return None;
    }
    let (profile, level) = (record[1] >> 5, record[1] & 0x1f);
    let size = sequence_header(record_obus(record)).and_then(|obu| {
        let mut reader = std::io::Cursor::new(obu);
        let header = ObuHeader::parse(&mut reader).ok()?;
        let parsed = SequenceHeaderObu::parse(header, &mut reader).ok()?;
        Some((
            u32::try_from(parsed.max_frame_width).ok()?,
            u32::try_from(parsed.max_frame_height).ok()?,
        ))
    });
    let (width, height) = size.unwrap_or((0, 0));
    Some(RecordInfo { profile, level, width, height })
}

/// The `configOBUs` of an `av1C` record (its sequence header), empty when it has none.
pub fn record_obus(record: &[u8]) -> &[u8] {
    record.get(4..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The sequence header OBU libaom (FFmpeg 5.1, `-usage realtime`) wrote for 640x480
    /// 8-bit 4:2:0.
    pub(crate) const SEQUENCE_HEADER: &[u8] =
        &[0x0a, 0x0b, 0x00, 0x00, 0x00, 0x24, 0xc4, 0xff, 0xdf, 0x36, 0xbe, 0x40, 0x10];

    #[test]
    fn sizes_are_read_and_written_as_leb128() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as usize] {
            let mut out = BytesMut::new();
            put_leb128(&mut out, value);
            assert_eq!(read_leb128(&out), Some((value, out.len())), "{value}");
        }
        assert_eq!(read_leb128(&[0x80; 9]), None);
        assert_eq!(read_leb128(&[0xff, 0xff, 0xff, 0xff, 0x7f]), None, "over u32");
        assert_eq!(read_leb128(&[]), None);
    }

    #[test]
    fn obus_are_walked_and_normalized() {
        // Temporal delimiter, sequence header, an unsized frame OBU last.
        let mut unit = vec![0x12, 0x00];
        unit.extend_from_slice(SEQUENCE_HEADER);
        unit.extend_from_slice(&[0x30, 0x10, 0x20, 0x30]); // frame, key, no size
        let found = obus(&unit).expect("walk");
        assert_eq!(found.iter().map(|o| o.kind).collect::<Vec<_>>(), [2, 1, 6]);
        assert!(is_keyframe(&unit));
        assert_eq!(sequence_header(&unit), Some(SEQUENCE_HEADER));
        let normal = normalize(&unit).expect("normalize");
        let mut expected = SEQUENCE_HEADER.to_vec();
        expected.extend_from_slice(&[0x32, 0x03, 0x10, 0x20, 0x30]);
        assert_eq!(&normal[..], &expected[..]);
        assert!(is_keyframe(&normal));
        // An inter frame (frame_type 1).
        assert!(!is_keyframe(&[0x32, 0x02, 0x20, 0x00]));
        // A repeat of an earlier frame.
        assert!(!is_keyframe(&[0x32, 0x01, 0x80]));
    }

    #[test]
    fn malformed_units_are_refused_with_a_reason() {
        assert_eq!(obus(&[0x80]), Err(Av1Error::Forbidden));
        assert_eq!(obus(&[0x32, 0x05, 0x00]), Err(Av1Error::Truncated));
        assert_eq!(obus(&[0x36]), Err(Av1Error::Truncated), "extension byte missing");
        assert_eq!(obus(&[0x32]), Err(Av1Error::Truncated), "size missing");
        assert_eq!(obus(&[0x32, 0xff]), Err(Av1Error::Truncated), "size cut short");
        assert_eq!(normalize(&[0x12, 0x00]), Err(Av1Error::Empty));
        assert_eq!(normalize(&[]), Err(Av1Error::Empty));
        assert_eq!(config_record(&[0x0a, 0x01, 0xff]), Err(Av1Error::BadSequenceHeader));
    }

    #[test]
    fn a_sequence_header_becomes_an_av1c_record() {
        let record = config_record(SEQUENCE_HEADER).expect("record");
        // marker+version, profile 0, 8-bit 4:2:0, no delay; then the OBU.
        assert_eq!(record[0], 0x81);
        assert_eq!(record[1] >> 5, 0, "profile");
        assert_eq!(record[2] & 0b0000_1100, 0b0000_1100, "4:2:0");
        assert_eq!(record_obus(&record), SEQUENCE_HEADER);
        assert_eq!(record_obus(&[0x81]), b"");
        let info = record_info(&record).expect("info");
        assert_eq!((info.profile, info.width, info.height), (0, 640, 480));
        assert_eq!(record_info(&[0x81, 0, 0]), None);
    }

    proptest! {
        #[test]
        fn any_bytes_are_walked_or_refused(data in proptest::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(normal) = normalize(&data) {
                let again = normalize(&normal).expect("a normalized unit normalizes");
                prop_assert_eq!(&again[..], &normal[..]);
            }
            let _ = is_keyframe(&data);
            let _ = sequence_header(&data);
            let _ = config_record(&data);
            let _ = record_info(&data);
        }
    }
}
