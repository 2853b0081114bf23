//! H.264 as FLV carries it: the `AVCDecoderConfigurationRecord` (the sequence header) and
//! length-prefixed NAL units, converted to the Annex B byte stream MPEG-TS wants.
//!
//! The record and the length prefixes are simple framing that no crate parses for borrowed
//! input without copying; `h264-reader` reads the SPS itself (resolution, profile).

use bytes::Bytes;

/// Why an AVC structure could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvcError {
    /// The decoder configuration record is malformed.
    #[error("bad AVC decoder configuration record: {0}")]
    BadConfig(&'static str),
    /// A NAL unit's length runs past the end of the frame.
    #[error("NAL unit of {declared} bytes overruns the {available} bytes left")]
    NalOverrun {
        /// The length the prefix declared.
        declared: usize,
        /// What was left.
        available: usize,
    },
    /// A length prefix was cut off.
    #[error("truncated NAL length prefix")]
    TruncatedLength,
    /// The SPS could not be parsed.
    #[error("bad SPS: {0}")]
    BadSps(String),
}

/// The `AVCDecoderConfigurationRecord` from an AVC sequence header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcDecoderConfig {
    /// `AVCProfileIndication`.
    pub profile: u8,
    /// `profile_compatibility`.
    pub compatibility: u8,
    /// `AVCLevelIndication`.
    pub level: u8,
    /// Bytes in each NAL length prefix (1, 2 or 4).
    pub length_size: u8,
    /// Sequence parameter sets.
    pub sps: Vec<Bytes>,
    /// Picture parameter sets.
    pub pps: Vec<Bytes>,
}

/// Facts from a sequence parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsInfo {
    /// Picture width in pixels, after cropping.
    pub width: u32,
    /// Picture height in pixels, after cropping.
    pub height: u32,
    /// `profile_idc`.
    pub profile_idc: u8,
    /// `level_idc`.
    pub level_idc: u8,
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = (data.get(..n)?, data.get(n..)?);
    *data = rest;
    Some(head)
}

fn take_u8(data: &mut &[u8]) -> Option<u8> {
    take(data, 1).map(|b| b[0])
}

fn take_sets(data: &mut &[u8], count: usize) -> Result<Vec<Bytes>, AvcError> {
    (0..count)
        .map(|_| {
            let len = take(data, 2).ok_or(AvcError::BadConfig("truncated parameter set length"))?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let set = take(data, len).ok_or(AvcError::BadConfig("truncated parameter set"))?;
            Ok(Bytes::copy_from_slice(set))
        })
        .collect()
}

impl AvcDecoderConfig {
    /// Parses the record (the data after the video tag header of a sequence header).
    pub fn parse(record: &[u8]) -> Result<Self, AvcError> {
        let mut data = record;
        let head = take(&mut data, 6).ok_or(AvcError::BadConfig("shorter than 6 bytes"))?;
        if head[0] != 1 {
            return Err(AvcError::BadConfig("configurationVersion is not 1"));
        }
        let length_size = (head[4] & 0x03) + 1;
        if length_size == 3 {
            return Err(AvcError::BadConfig("NAL length size 3 is not allowed"));
        }
        let sps = take_sets(&mut data, usize::from(head[5] & 0x1f))?;
        let pps_count = take_u8(&mut data).ok_or(AvcError::BadConfig("missing PPS count"))?;
        let pps = take_sets(&mut data, usize::from(pps_count))?;
        if sps.is_empty() || pps.is_empty() {
            return Err(AvcError::BadConfig("no SPS or no PPS"));
        }
        Ok(Self { profile: head[1], compatibility: head[2], level: head[3], length_size, sps, pps })
    }

    /// The configuration of parameter sets received in-band (an RTP stream's SPS and PPS),
    /// with 4-byte NAL lengths; profile, compatibility and level are the SPS's bytes 1-3.
    pub fn from_parameter_sets(sps: Vec<Bytes>, pps: Vec<Bytes>) -> Result<Self, AvcError> {
        let first = sps.first().ok_or(AvcError::BadConfig("no SPS"))?;
        let head = first.get(1..4).ok_or(AvcError::BadConfig("SPS shorter than 4 bytes"))?;
        if pps.is_empty() {
            return Err(AvcError::BadConfig("no PPS"));
        }
        if sps.len() > 31 || pps.len() > 255 {
            return Err(AvcError::BadConfig("too many parameter sets"));
        }
        if sps.iter().chain(&pps).any(|set| set.is_empty() || set.len() > usize::from(u16::MAX)) {
            return Err(AvcError::BadConfig("parameter set empty or over 65535 bytes"));
        }
        Ok(Self {
            profile: head[0],
            compatibility: head[1],
            level: head[2],
            length_size: 4,
            sps,
            pps,
        })
    }

    /// The record's bytes (`AVCDecoderConfigurationRecord`), as FLV and MP4 carry it: the
    /// inverse of [`AvcDecoderConfig::parse`]. Counts and lengths past what the record can
    /// say are cut (31 SPS, 255 PPS, 65535 bytes each); [`AvcDecoderConfig::from_parameter_sets`]
    /// refuses such sets.
    pub fn to_record(&self) -> Bytes {
        let sps = &self.sps[..self.sps.len().min(31)];
        let pps = &self.pps[..self.pps.len().min(255)];
        let mut out =
            Vec::with_capacity(7 + sps.iter().chain(pps).map(|s| 2 + s.len()).sum::<usize>());
        let length_bits = self.length_size.clamp(1, 4) - 1;
        out.extend_from_slice(&[1, self.profile, self.compatibility, self.level]);
        out.push(0xfc | length_bits);
        out.push(0xe0 | sps.len() as u8);
        let put_sets = |out: &mut Vec<u8>, sets: &[Bytes]| {
            for set in sets {
                let set = &set[..set.len().min(usize::from(u16::MAX))];
                out.extend_from_slice(&(set.len() as u16).to_be_bytes());
                out.extend_from_slice(set);
            }
        };
        put_sets(&mut out, sps);
        out.push(pps.len() as u8);
        put_sets(&mut out, pps);
        Bytes::from(out)
    }

    /// Width, height, profile and level from the first SPS.
    pub fn sps_info(&self) -> Result<SpsInfo, AvcError> {
        use h264_reader::nal::sps::SeqParameterSet;
        use h264_reader::nal::{Nal, RefNal};
        use h264_reader::rbsp::BitReader;
        let sps = self.sps.first().ok_or(AvcError::BadConfig("no SPS"))?;
        let nal = RefNal::new(sps, &[], true);
        let parsed = SeqParameterSet::from_bits(BitReader::new(nal.rbsp_bytes()))
            .map_err(|e| AvcError::BadSps(format!("{e:?}")))?;
        let (width, height) =
            parsed.pixel_dimensions().map_err(|e| AvcError::BadSps(format!("{e:?}")))?;
        Ok(SpsInfo {
            width,
            height,
            profile_idc: parsed.profile_idc.into(),
            level_idc: parsed.level_idc,
        })
    }
}

/// The NAL units of a length-prefixed (AVCC) buffer.
pub fn nal_units(avcc: &[u8], length_size: u8) -> impl Iterator<Item = Result<&[u8], AvcError>> {
    let size = usize::from(length_size.clamp(1, 4));
    let mut data = avcc;
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let Some(prefix) = take(&mut data, size) else {
            data = &[];
            return Some(Err(AvcError::TruncatedLength));
        };
        let declared = prefix.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        match take(&mut data, declared) {
            Some(nal) => Some(Ok(nal)),
            None => {
                let available = data.len();
                data = &[];
                Some(Err(AvcError::NalOverrun { declared, available }))
            }
        }
    })
}

/// The NAL unit type (low five bits of the first byte).
fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Whether an AVCC buffer holds an IDR slice.
pub fn contains_idr(avcc: &[u8], length_size: u8) -> bool {
    nal_units(avcc, length_size).any(|nal| nal.is_ok_and(|n| nal_type(n) == 5))
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];
const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xf0];

/// Converts one AVCC access unit to Annex B: an access unit delimiter, then (for keyframes
/// that do not carry their own) the configuration's SPS and PPS, then every NAL unit with a
/// start code. Access unit delimiters in the input are dropped (one is written first).
/// On error `out` holds a partial access unit and must be discarded.
pub fn to_annexb(
    config: &AvcDecoderConfig,
    avcc: &[u8],
    keyframe: bool,
    out: &mut Vec<u8>,
) -> Result<(), AvcError> {
    out.extend_from_slice(&AUD);
    if keyframe {
        let has_sps =
            nal_units(avcc, config.length_size).any(|n| n.is_ok_and(|n| nal_type(n) == 7));
        if !has_sps {
            for set in config.sps.iter().chain(&config.pps) {
                out.extend_from_slice(&START_CODE);
                out.extend_from_slice(set);
            }
        }
    }
    for nal in nal_units(avcc, config.length_size) {
        let nal = nal?;
        if nal.is_empty() || nal_type(nal) == 9 {
            continue;
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_record_built_from_parameter_sets_reads_back() {
        let parsed = AvcDecoderConfig::parse(RECORD_320X240).expect("valid record");
        let rebuilt = AvcDecoderConfig::from_parameter_sets(parsed.sps.clone(), parsed.pps.clone())
            .expect("sets from a valid record");
        assert_eq!(rebuilt.to_record().as_ref(), RECORD_320X240);
        assert_eq!(AvcDecoderConfig::parse(&rebuilt.to_record()), Ok(rebuilt));
    }

    #[test]
    fn parameter_sets_that_make_no_record_are_refused() {
        let sps = Bytes::from_static(&[0x67, 0x64, 0, 0x0d]);
        let pps = Bytes::from_static(&[0x68, 0xeb]);
        assert!(AvcDecoderConfig::from_parameter_sets(vec![], vec![pps.clone()]).is_err());
        assert!(AvcDecoderConfig::from_parameter_sets(vec![sps.clone()], vec![]).is_err());
        let short = Bytes::from_static(&[0x67, 0x64]);
        assert!(AvcDecoderConfig::from_parameter_sets(vec![short], vec![pps.clone()]).is_err());
        assert!(AvcDecoderConfig::from_parameter_sets(vec![sps], vec![Bytes::new()]).is_err());
    }

    /// A real sequence header from x264 (320x240, High profile), as FFmpeg sends it.
    const RECORD_320X240: &[u8] = &[
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41,
        0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1,
        0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
    ];

    #[test]
    fn parses_a_real_record_and_its_sps() {
        let config = AvcDecoderConfig::parse(RECORD_320X240).expect("valid record");
        assert_eq!((config.profile, config.level, config.length_size), (100, 13, 4));
        assert_eq!((config.sps.len(), config.pps.len()), (1, 1));
        let info = config.sps_info().expect("valid SPS");
        assert_eq!((info.width, info.height), (320, 240));
    }

    #[test]
    fn keyframes_get_aud_sps_pps_and_start_codes() {
        let config = AvcDecoderConfig::parse(RECORD_320X240).expect("valid record");
        let avcc = [0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 3, 0x65, 1, 2];
        let mut out = Vec::new();
        to_annexb(&config, &avcc, true, &mut out).expect("valid");
        let mut expected = AUD.to_vec();
        for set in config.sps.iter().chain(&config.pps) {
            expected.extend_from_slice(&START_CODE);
            expected.extend_from_slice(set);
        }
        expected.extend_from_slice(&[0, 0, 0, 1, 0x65, 1, 2]);
        assert_eq!(out, expected);
        assert!(contains_idr(&avcc, 4));
    }

    #[test]
    fn refuses_hostile_records_and_lengths() {
        for bad in [
            &[][..],
            &[1, 2, 3],
            &[2, 0x64, 0, 0xd, 0xff, 0xe1],
            &[1, 0x64, 0, 0xd, 0xfe, 0xe1, 0, 0x19, 0x67],
        ] {
            assert!(AvcDecoderConfig::parse(bad).is_err(), "{bad:?}");
        }
        let config = AvcDecoderConfig::parse(RECORD_320X240).expect("valid record");
        let mut out = Vec::new();
        assert!(matches!(
            to_annexb(&config, &[0, 0, 0, 9, 1], false, &mut out),
            Err(AvcError::NalOverrun { .. })
        ));
        assert_eq!(
            to_annexb(&config, &[0, 0], false, &mut Vec::new()),
            Err(AvcError::TruncatedLength)
        );
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..256), key in any::<bool>()) {
            let _ = AvcDecoderConfig::parse(&data).map(|c| c.sps_info());
            let config = AvcDecoderConfig::parse(RECORD_320X240).expect("valid record");
            let mut out = Vec::new();
            let _ = to_annexb(&config, &data, key, &mut out);
            prop_assert!(out.len() <= data.len() + 64 + 6);
        }
    }
}
