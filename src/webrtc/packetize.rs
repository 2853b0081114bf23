//! A video frame → its RTP payloads, as a `PayloadList` buffer (empty when the frame
//! cannot be sent), made once per frame on a node and shared by every WHEP viewer (each
//! stamps its own headers: [`super::playback`]).
//!
//! - **H.264**: [`zenlive_media::rtp_h264_pack`] (packetization mode 1), with the SPS and
//!   PPS of the frame's configuration before every keyframe.
//! - **VP8**: `rtc`'s [`Vp8Payloader`] (RFC 7741, no picture id).
//! - **VP9**: a one-byte descriptor per packet (RFC 9628, non-flexible mode, no picture id
//!   or layer indices): `B` and `E` at the frame's ends, and `P` on inter frames. Written
//!   here: `rtc`'s `Vp9Payloader` sets `P=0` on every frame, which tells a receiver that
//!   each frame is independent of the ones before, and numbers pictures per payloader,
//!   which one payloading shared by every viewer cannot keep.
//! - **AV1**: `rtc`'s [`Av1Payloader`] (the AV1 RTP specification), given the temporal
//!   unit normalized and checked first ([`zenlive_media::av1::normalize`]; `rtc` slices by
//!   the sizes it reads without checking them), with the sequence header of the frame's
//!   configuration before a key frame that lacks one (Enhanced RTMP carries it in the
//!   record only; a WebRTC decoder needs it in band).

use bytes::{BufMut, Bytes, BytesMut};
use rtc::rtp::codec::av1::Av1Payloader;
use rtc::rtp::codec::vp8::Vp8Payloader;
use rtc::rtp::packetizer::Payloader as _;
use zenlive_media::av1;
use zenlive_media::avc::AvcDecoderConfig;
use zenlive_media::rtp_h264_pack::{packetize, DEFAULT_MAX_PAYLOAD};
use zenlive_media::vp9::{self, FrameHeader};
use zenlive_media::{Codec, MediaFrame};

/// The encoder of `codec`'s frames; `None` for codecs not sent over WebRTC.
pub fn encoder(codec: Codec) -> Option<fn(&MediaFrame) -> Bytes> {
    match codec {
        Codec::H264 => Some(h264),
        Codec::Vp8 => Some(vp8),
        Codec::Vp9 => Some(vp9),
        Codec::Av1 => Some(av1),
        _ => None,
    }
}

/// Payloads behind their 2-byte lengths (a `PayloadList`); empty if one is too long.
fn list(payloads: &[Bytes]) -> Bytes {
    let size: usize = payloads.iter().map(|p| p.len() + 2).sum();
    let mut out = BytesMut::with_capacity(size);
    for payload in payloads {
        let Ok(len) = u16::try_from(payload.len()) else { return Bytes::new() };
        out.put_u16(len);
        out.extend_from_slice(payload);
    }
    out.freeze()
}

/// An H.264 frame's payloads.
fn h264(frame: &MediaFrame) -> Bytes {
    let config = frame.config().and_then(|c| AvcDecoderConfig::parse(c.record()).ok());
    let length_size = config.as_ref().map_or(4, |c| c.length_size);
    let sets = config.as_ref().filter(|_| frame.keyframe());
    let mut out = BytesMut::with_capacity(frame.payload().len() + frame.payload().len() / 64 + 64);
    match packetize(frame.payload(), length_size, sets, DEFAULT_MAX_PAYLOAD, &mut out) {
        Ok(_) => out.freeze(),
        Err(_) => Bytes::new(),
    }
}

/// A VP8 frame's payloads.
fn vp8(frame: &MediaFrame) -> Bytes {
    match Vp8Payloader::default().payload(DEFAULT_MAX_PAYLOAD, frame.payload()) {
        Ok(payloads) => list(&payloads),
        Err(_) => Bytes::new(),
    }
}

/// A VP9 frame's payloads.
fn vp9(frame: &MediaFrame) -> Bytes {
    let data = frame.payload();
    if data.is_empty() {
        return Bytes::new();
    }
    let key = matches!(vp9::read_header(data), Ok(FrameHeader::Key(_)));
    let inter = if key { 0 } else { 0x40 };
    let chunk = DEFAULT_MAX_PAYLOAD - 1;
    let count = data.len().div_ceil(chunk);
    let payloads: Vec<Bytes> = data
        .chunks(chunk)
        .enumerate()
        .map(|(i, piece)| {
            let start = if i == 0 { 0x08 } else { 0 };
            let end = if i + 1 == count { 0x04 } else { 0 };
            let mut payload = BytesMut::with_capacity(piece.len() + 1);
            payload.put_u8(inter | start | end);
            payload.extend_from_slice(piece);
            payload.freeze()
        })
        .collect();
    list(&payloads)
}

/// An AV1 temporal unit's payloads.
fn av1(frame: &MediaFrame) -> Bytes {
    let Ok(unit) = av1::normalize(frame.payload()) else { return Bytes::new() };
    let unit = match frame.config().map(|c| av1::record_obus(c.record())) {
        Some(header) if frame.keyframe() && av1::sequence_header(&unit).is_none() => {
            let Ok(header) = av1::normalize(header) else { return Bytes::new() };
            let mut whole = BytesMut::with_capacity(header.len() + unit.len());
            whole.extend_from_slice(&header);
            whole.extend_from_slice(&unit);
            whole.freeze()
        }
        _ => unit,
    };
    match Av1Payloader::default().payload(DEFAULT_MAX_PAYLOAD, &unit) {
        Ok(payloads) => list(&payloads),
        Err(_) => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use zenlive_media::rtp_h264_pack::PayloadList;
    use zenlive_media::{CodecConfig, MediaTime};

    use super::*;

    fn frame(codec: Codec, key: bool, data: Vec<u8>, config: Option<CodecConfig>) -> MediaFrame {
        MediaFrame::video(codec, MediaTime::ZERO, MediaTime::ZERO, key, Bytes::from(data), config)
    }

    const VP9_KEY: &[u8] = &[0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf6, 0x08];
    const SEQUENCE_HEADER: &[u8] =
        &[0x0a, 0x0b, 0x00, 0x00, 0x00, 0x24, 0xc4, 0xff, 0xdf, 0x36, 0xbe, 0x40, 0x10];

    #[test]
    fn vp9_frames_are_split_with_their_frame_bounds_and_inter_flag() {
        let mut key = VP9_KEY.to_vec();
        key.resize(3000, 0xab);
        let list = PayloadList::new(vp9(&frame(Codec::Vp9, true, key.clone(), None)));
        let payloads: Vec<Bytes> = list.iter().collect();
        assert_eq!(payloads.len(), 3);
        assert_eq!(payloads.iter().map(|p| p[0]).collect::<Vec<_>>(), [0x08, 0x00, 0x04]);
        let joined: Vec<u8> = payloads.iter().flat_map(|p| p[1..].to_vec()).collect();
        assert_eq!(joined, key);
        let inter = PayloadList::new(vp9(&frame(Codec::Vp9, false, vec![0x86, 1, 2], None)));
        assert_eq!(inter.iter().map(|p| p[0]).collect::<Vec<_>>(), [0x4c]);
        assert!(vp9(&frame(Codec::Vp9, false, vec![], None)).is_empty());
    }

    #[test]
    fn an_av1_key_frame_without_a_sequence_header_is_sent_with_the_configuration_one() {
        let record = av1::config_record(SEQUENCE_HEADER).expect("record");
        let config = CodecConfig::new(Codec::Av1, record, MediaTime::ZERO);
        let key = frame(Codec::Av1, true, vec![0x32, 0x03, 0x10, 0x20, 0x30], Some(config));
        let list = PayloadList::new(av1(&key));
        let payloads: Vec<Bytes> = list.iter().collect();
        assert_eq!(payloads.len(), 1);
        // N=1 (a new coded video sequence), two OBU elements.
        assert_eq!(payloads[0][0] & 0b0011_1000, 0b0010_1000, "{:02x}", payloads[0][0]);
        // Garbage is not sent.
        assert!(av1(&frame(Codec::Av1, true, vec![0x32, 0x09, 0x10], None)).is_empty());
    }

    proptest! {
        #[test]
        fn any_frame_is_packetized_or_refused(
            data in proptest::collection::vec(any::<u8>(), 0..4000),
            key in any::<bool>(),
        ) {
            for codec in [Codec::H264, Codec::Vp8, Codec::Vp9, Codec::Av1] {
                let encode = encoder(codec).expect("sent over WebRTC");
                let list = PayloadList::new(encode(&frame(codec, key, data.clone(), None)));
                for payload in list.iter() {
                    prop_assert!(!payload.is_empty() && payload.len() <= DEFAULT_MAX_PAYLOAD);
                }
            }
        }
    }
}
