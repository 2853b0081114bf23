//! What a VP9 frame says of itself: whether a decoder can start at it, and, for a key
//! frame, the facts an MP4 `vpcC` record carries (profile, bit depth, chroma subsampling,
//! colour), so that VP9 that arrived without a record (WebRTC carries none) can be written
//! to fMP4 and Enhanced RTMP like VP9 that came with one.
//!
//! Reads the start of the uncompressed header (VP9 bitstream specification, 6.2 and 7.2):
//! frame marker, profile, `show_existing_frame`, `frame_type`, the sync code and
//! `color_config()` of a key frame, and the frame size. Hand-written: the part read is a
//! few dozen bits, and no kept crate reads it without decoding. A superframe's first
//! frame is the one read (a key frame comes first in its superframe).

use bytes::Bytes;

/// The key frame sync code (`frame_sync_code`).
const SYNC_CODE: u32 = 0x49_83_42;

/// `color_space` value `CS_RGB`.
const CS_RGB: u32 = 7;

/// A key frame's header facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeInfo {
    /// Profile 0-3.
    pub profile: u8,
    /// 8, 10 or 12.
    pub bit_depth: u8,
    /// `color_space` (0 unknown, 1 BT.601, 2 BT.709, 3 SMPTE-170, 4 SMPTE-240, 5 BT.2020,
    /// 7 RGB).
    pub color_space: u8,
    /// Full-range samples.
    pub full_range: bool,
    /// Chroma halved horizontally.
    pub subsampling_x: bool,
    /// Chroma halved vertically.
    pub subsampling_y: bool,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
}

/// What a frame's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHeader {
    /// A key frame: a decoder can start here.
    Key(KeyframeInfo),
    /// Any other frame (inter frame, intra-only frame, or a repeat of an earlier one).
    Other,
}

/// Why a frame's header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Vp9Error {
    /// The data ended inside the header.
    #[error("the VP9 frame header is cut short")]
    Truncated,
    /// Not a VP9 frame (frame marker or sync code wrong).
    #[error("not a VP9 frame header")]
    NotVp9,
}

/// Reads bits most-significant first.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, count: u32) -> Result<u32, Vp9Error> {
        let mut value = 0;
        for _ in 0..count {
            let byte = self.data.get(self.at / 8).ok_or(Vp9Error::Truncated)?;
            let bit = (byte >> (7 - self.at % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.at += 1;
        }
        Ok(value)
    }

    fn flag(&mut self) -> Result<bool, Vp9Error> {
        Ok(self.read(1)? == 1)
    }
}

/// Reads the header of `frame` (a frame or superframe as an RTP depacketizer or an
/// Enhanced RTMP publisher gives it).
pub fn read_header(frame: &[u8]) -> Result<FrameHeader, Vp9Error> {
    let mut bits = Bits { data: frame, at: 0 };
    if bits.read(2)? != 2 {
        return Err(Vp9Error::NotVp9);
    }
    let low = bits.read(1)?;
    let high = bits.read(1)?;
    let profile = (high << 1 | low) as u8;
    if profile == 3 {
        bits.read(1)?; // reserved_zero
    }
    if bits.flag()? {
        return Ok(FrameHeader::Other); // show_existing_frame
    }
    let key = !bits.flag()?; // frame_type: 0 is KEY_FRAME
    if !key {
        return Ok(FrameHeader::Other);
    }
    bits.read(2)?; // show_frame, error_resilient_mode
    if bits.read(24)? != SYNC_CODE {
        return Err(Vp9Error::NotVp9);
    }
    let bit_depth = match (profile >= 2, profile >= 2 && bits.flag()?) {
        (true, true) => 12,
        (true, false) => 10,
        _ => 8,
    };
    let color_space = bits.read(3)?;
    let (full_range, subsampling_x, subsampling_y) = if color_space == CS_RGB {
        if profile == 1 || profile == 3 {
            bits.read(1)?; // reserved_zero
        }
        (true, false, false)
    } else {
        let full_range = bits.flag()?;
        if profile == 1 || profile == 3 {
            let x = bits.flag()?;
            let y = bits.flag()?;
            bits.read(1)?; // reserved_zero
            (full_range, x, y)
        } else {
            (full_range, true, true)
        }
    };
    let width = bits.read(16)? + 1;
    let height = bits.read(16)? + 1;
    Ok(FrameHeader::Key(KeyframeInfo {
        profile,
        bit_depth,
        color_space: color_space as u8,
        full_range,
        subsampling_x,
        subsampling_y,
        width,
        height,
    }))
}

impl KeyframeInfo {
    /// The `vpcC` box's body (version 1, flags, `VPCodecConfigurationRecord`), the VP9
    /// configuration record as Enhanced RTMP and fMP4 carry it.
    pub fn record(&self) -> Bytes {
        // ISO/IEC 23001-8 colour codes for each VP9 colour space: primaries, transfer,
        // matrix (2 = unspecified).
        let (primaries, transfer, matrix) = match self.color_space {
            1 | 3 => (6, 6, 6),
            2 => (1, 1, 1),
            4 => (7, 7, 7),
            5 => (9, 1, 9),
            7 => (2, 2, 0),
            _ => (2, 2, 2),
        };
        let chroma = match (self.subsampling_x, self.subsampling_y) {
            (true, true) => 0,  // 4:2:0, chroma sited between luma rows
            (true, false) => 2, // 4:2:2
            _ => 3,             // 4:4:4
        };
        let fields = (self.bit_depth << 4) | (chroma << 1) | u8::from(self.full_range);
        Bytes::from(vec![
            1,
            0,
            0,
            0,
            self.profile,
            self.level(),
            fields,
            primaries,
            transfer,
            matrix,
            0,
            0,
        ])
    }

    /// The lowest VP9 level whose picture size holds this picture (rates are not known
    /// from one frame; the level is advisory in `vpcC`).
    pub fn level(&self) -> u8 {
        let samples = u64::from(self.width) * u64::from(self.height);
        [
            (36_864, 10),
            (73_728, 11),
            (122_880, 20),
            (245_760, 21),
            (552_960, 30),
            (983_040, 31),
            (2_228_224, 40),
            (8_912_896, 50),
        ]
        .into_iter()
        .find(|(limit, _)| samples <= *limit)
        .map_or(60, |(_, level)| level)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The start of the key frame libvpx (FFmpeg 5.1) wrote for 320x240 8-bit 4:2:0.
    const KEY: &[u8] = &[0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf6, 0x08];
    /// The start of the inter frame that followed it.
    const INTER: &[u8] = &[0x86, 0x00, 0x40, 0x92, 0x9c, 0x30, 0x50];

    #[test]
    fn a_key_frame_gives_its_profile_depth_colour_and_size() {
        let header = read_header(KEY).expect("read");
        let FrameHeader::Key(info) = header else { panic!("{header:?}") };
        assert_eq!(
            info,
            KeyframeInfo {
                profile: 0,
                bit_depth: 8,
                color_space: 0,
                full_range: false,
                subsampling_x: true,
                subsampling_y: true,
                width: 320,
                height: 240,
            }
        );
        assert_eq!(info.level(), 20);
        assert_eq!(&info.record()[..], &[1, 0, 0, 0, 0, 20, 0x80, 2, 2, 2, 0, 0]);
    }

    #[test]
    fn inter_frames_and_repeats_are_not_key_frames() {
        assert_eq!(read_header(INTER), Ok(FrameHeader::Other));
        let repeat = [0b1000_1000];
        assert_eq!(read_header(&repeat), Ok(FrameHeader::Other));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(read_header(&[]), Err(Vp9Error::Truncated));
        assert_eq!(read_header(&[0x00, 0xff]), Err(Vp9Error::NotVp9));
        assert_eq!(read_header(&KEY[..4]), Err(Vp9Error::Truncated));
        let mut wrong_sync = KEY.to_vec();
        wrong_sync[1] ^= 0x10;
        assert_eq!(read_header(&wrong_sync), Err(Vp9Error::NotVp9));
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_or_refused(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(FrameHeader::Key(info)) = read_header(&data) {
                prop_assert!(info.record().len() == 12);
            }
        }
    }
}
