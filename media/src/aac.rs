//! AAC as FLV carries it: the `AudioSpecificConfig` (the sequence header), and the 7-byte
//! ADTS header each raw frame needs inside MPEG-TS. A dozen bit fields, read by hand: the
//! crates that parse them (symphonia) bring a whole decoder along.

/// Why an AAC structure could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AacError {
    /// The config is shorter than its fields.
    #[error("truncated AudioSpecificConfig")]
    Truncated,
    /// A field holds a reserved value.
    #[error("invalid AudioSpecificConfig: {0}")]
    Invalid(&'static str),
    /// ADTS cannot express this stream (object type above 4, or an odd sample rate).
    #[error("not expressible in ADTS: {0}")]
    NotAdts(&'static str),
    /// A frame longer than ADTS's 13-bit length allows.
    #[error("AAC frame of {0} bytes is too long for ADTS")]
    FrameTooLong(usize),
}

/// Sample rates by `samplingFrequencyIndex`.
const SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// The fields of an `AudioSpecificConfig` that packaging needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// Audio object type (2 = AAC-LC, 5 = SBR, 29 = PS ...).
    pub object_type: u8,
    /// `samplingFrequencyIndex`, or 15 when the rate is explicit.
    pub sampling_index: u8,
    /// The sample rate in Hz.
    pub sample_rate: u32,
    /// `channelConfiguration` (0 = defined in-band, 1..=7).
    pub channels: u8,
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Result<u32, AacError> {
        let mut value = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8).ok_or(AacError::Truncated)?;
            value = (value << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(value)
    }
}

impl AudioSpecificConfig {
    /// Parses the config (the data after the audio tag header of a sequence header).
    pub fn parse(data: &[u8]) -> Result<Self, AacError> {
        let mut bits = Bits { data, pos: 0 };
        let mut object_type = bits.read(5)? as u8;
        if object_type == 31 {
            object_type = 32 + bits.read(6)? as u8;
        }
        if object_type == 0 {
            return Err(AacError::Invalid("object type 0"));
        }
        let sampling_index = bits.read(4)? as u8;
        let sample_rate = match sampling_index {
            15 => bits.read(24)?,
            i => *SAMPLE_RATES
                .get(usize::from(i))
                .ok_or(AacError::Invalid("reserved sampling frequency index"))?,
        };
        if sample_rate == 0 {
            return Err(AacError::Invalid("sample rate 0"));
        }
        let channels = bits.read(4)? as u8;
        if channels > 7 {
            return Err(AacError::Invalid("reserved channel configuration"));
        }
        Ok(Self { object_type, sampling_index, sample_rate, channels })
    }

    /// The sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Samples per frame: 1024 for every object type FLV publishers send.
    pub fn samples_per_frame(&self) -> u32 {
        1024
    }
}

/// The 7-byte ADTS header (MPEG-4, no CRC) for a raw frame of `payload_len` bytes.
pub fn adts_header(config: &AudioSpecificConfig, payload_len: usize) -> Result<[u8; 7], AacError> {
    // SBR/PS streams are signalled implicitly: ADTS carries their AAC-LC core.
    let profile = match config.object_type {
        1..=4 => config.object_type - 1,
        5 | 29 => 1,
        _ => return Err(AacError::NotAdts("object type above 4")),
    };
    let index = match config.sampling_index {
        i @ 0..=12 => i,
        _ => SAMPLE_RATES
            .iter()
            .position(|&r| r == config.sample_rate)
            .map(|i| i as u8)
            .ok_or(AacError::NotAdts("sample rate has no ADTS index"))?,
    };
    let len = payload_len + 7;
    if len > 0x1fff {
        return Err(AacError::FrameTooLong(payload_len));
    }
    let len = len as u16;
    let ch = config.channels;
    Ok([
        0xff,
        0xf1,
        (profile << 6) | (index << 2) | (ch >> 2),
        ((ch & 3) << 6) | ((len >> 11) as u8),
        (len >> 3) as u8,
        (((len & 7) as u8) << 5) | 0x1f,
        0xfc,
    ])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_lc_stereo_44100() {
        let config = AudioSpecificConfig::parse(&[0x12, 0x10]).expect("valid");
        assert_eq!((config.object_type, config.sample_rate(), config.channels), (2, 44100, 2));
        // What FFmpeg's ADTS muxer writes for a 100-byte LC stereo 44.1 kHz frame.
        assert_eq!(
            adts_header(&config, 100).expect("fits"),
            [0xff, 0xf1, 0x50, 0x80, 0x0d, 0x7f, 0xfc]
        );
    }

    #[test]
    fn parses_escaped_object_type_and_explicit_rate() {
        // object type 31+ escape → 32 + 1 = 33; index 15 with explicit 48000; mono.
        let mut bits: u64 = 0;
        let mut push = |v: u64, n: u32| bits = (bits << n) | v;
        push(31, 5);
        push(1, 6);
        push(15, 4);
        push(48000, 24);
        push(1, 4);
        let total = 5 + 6 + 4 + 24 + 4;
        let bytes = (bits << (48 - total)).to_be_bytes();
        let config = AudioSpecificConfig::parse(&bytes[2..]).expect("valid");
        assert_eq!((config.object_type, config.sample_rate, config.channels), (33, 48000, 1));
        assert!(adts_header(&config, 10).is_err(), "object type 33 has no ADTS profile");
    }

    #[test]
    fn refuses_hostile_configs_and_frames() {
        assert_eq!(AudioSpecificConfig::parse(&[]), Err(AacError::Truncated));
        assert!(AudioSpecificConfig::parse(&[0x00, 0x00]).is_err());
        assert!(
            AudioSpecificConfig::parse(&[0x17, 0x90]).is_err(),
            "reserved index 14... or channels"
        );
        let config = AudioSpecificConfig::parse(&[0x12, 0x10]).expect("valid");
        assert_eq!(adts_header(&config, 9000), Err(AacError::FrameTooLong(9000)));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..8), len in 0usize..20_000) {
            if let Ok(config) = AudioSpecificConfig::parse(&data) {
                let _ = adts_header(&config, len);
            }
        }
    }
}
