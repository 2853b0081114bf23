//! The RTMP chunk writer for media sent to players: sans-IO, one encoding per frame.
//!
//! rml_rtmp's serializer compresses headers against per-connection state, so its output
//! differs per player and must be built per player. Media instead goes out here, on chunk
//! streams rml_rtmp never uses, always starting with a full (type 0) header: the bytes then
//! depend only on the frame, the chunk size and the message stream id, so one encoding is
//! shared by every player (see [`zenlive_media::EncodingSlot`]). No crate offers this, hence
//! the few lines by hand. A frame goes out as the FLV tag body RTMP carries: the codec's
//! few header bytes ([`zenlive_media::flv_frames`]), then its payload as it is.

use bytes::{BufMut, Bytes, BytesMut};
use zenlive_media::flv_frames::{config_body_header, frame_body_header};
use zenlive_media::{CodecConfig, FrameKind, MediaFrame};

/// The chunk size this server announces to every client, in bytes.
pub const SERVER_CHUNK_SIZE: usize = 4096;
/// The message stream id nearly every player gets for its first `createStream`; frames
/// for players on it share one encoding.
pub const SHARED_STREAM_ID: u32 = 1;

/// The protocol control chunk stream.
const CONTROL_CSID: u8 = 2;
/// Chunk stream ids for media; rml_rtmp uses 2 to 6 for everything else.
const VIDEO_CSID: u8 = 7;
const AUDIO_CSID: u8 = 8;
const DATA_CSID: u8 = 9;
const COMMAND_CSID: u8 = 10;
const EXTENDED_TIMESTAMP: u32 = 0x00ff_ffff;

/// RTMP message type ids.
const TYPE_ACKNOWLEDGEMENT: u8 = 3;
const TYPE_AUDIO: u8 = 8;
const TYPE_VIDEO: u8 = 9;
const TYPE_DATA_AMF0: u8 = 18;
const TYPE_COMMAND_AMF0: u8 = 20;

fn media_stream(kind: FrameKind) -> (u8, u8) {
    match kind {
        FrameKind::Video => (VIDEO_CSID, TYPE_VIDEO),
        FrameKind::Audio => (AUDIO_CSID, TYPE_AUDIO),
        FrameKind::Data => (DATA_CSID, TYPE_DATA_AMF0),
    }
}

/// Encodes one frame as a complete RTMP message on the media chunk streams; `None` when
/// RTMP cannot carry its codec.
pub fn encode_frame(frame: &MediaFrame, stream_id: u32, chunk_size: usize) -> Option<Bytes> {
    let head = frame_body_header(frame)?;
    let (csid, type_id) = media_stream(frame.kind());
    let timestamp = frame.dts().as_rtmp_millis();
    let body = [head.as_slice(), &frame.payload()[..]];
    Some(encode_message(csid, type_id, stream_id, timestamp, body, chunk_size))
}

/// Encodes a codec configuration as the sequence header message players expect; `None`
/// when RTMP cannot carry its codec.
pub fn encode_config(config: &CodecConfig, stream_id: u32, chunk_size: usize) -> Option<Bytes> {
    let head = config_body_header(config)?;
    let (csid, type_id) = media_stream(config.codec().kind());
    let timestamp = config.since().as_rtmp_millis();
    let body = [head.as_slice(), &config.record()[..]];
    Some(encode_message(csid, type_id, stream_id, timestamp, body, chunk_size))
}

/// An `onStatus` command (`level` `error` or `status`, a NetStream `code`, a description
/// for people), for errors rml_rtmp has no call for, such as refusing a codec mid-publish.
pub fn status_message(stream_id: u32, level: &str, code: &str, description: &str) -> Bytes {
    use std::collections::HashMap;

    use rml_amf0::Amf0Value;
    let text = |s: &str| Amf0Value::Utf8String(s.to_owned());
    let info: HashMap<String, Amf0Value> =
        [("level", text(level)), ("code", text(code)), ("description", text(description))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    let values =
        [text("onStatus"), Amf0Value::Number(0.0), Amf0Value::Null, Amf0Value::Object(info)];
    // Strings, a number and null always serialize; an empty message only loses the reason.
    let body = rml_amf0::serialize(&values.to_vec()).unwrap_or_default();
    encode_message(COMMAND_CSID, TYPE_COMMAND_AMF0, stream_id, 0, [&body, &[]], SERVER_CHUNK_SIZE)
}

/// An Acknowledgement (message type 3) of `total` bytes received, on the protocol control
/// chunk stream. Its full header does not depend on earlier headers on that stream.
pub fn acknowledgement(total: u32) -> Bytes {
    encode_message(
        CONTROL_CSID,
        TYPE_ACKNOWLEDGEMENT,
        0,
        0,
        [&total.to_be_bytes(), &[]],
        SERVER_CHUNK_SIZE,
    )
}

/// `|RtmpSampleAccess(true, true)`, the data message a player gets when its play starts,
/// at timestamp 0 on the media data chunk stream (as nginx-rtmp sends it). FFmpeg skips
/// script data at timestamp 0 it knows; at any other time it makes a subtitle stream of it.
pub fn sample_access(stream_id: u32) -> Bytes {
    use rml_amf0::Amf0Value;
    let values = vec![
        Amf0Value::Utf8String("|RtmpSampleAccess".to_owned()),
        Amf0Value::Boolean(true),
        Amf0Value::Boolean(true),
    ];
    // A string and booleans always serialize.
    let body = rml_amf0::serialize(&values).unwrap_or_default();
    encode_message(DATA_CSID, TYPE_DATA_AMF0, stream_id, 0, [&body, &[]], SERVER_CHUNK_SIZE)
}

/// Encodes one message whose payload is `parts` one after the other: a type 0 chunk, then
/// type 3 chunks every `chunk_size` bytes.
///
/// `csid` must be 2..=63 (one-byte basic header) and the payload at most 2^24 - 1 bytes,
/// which every message that arrived over RTMP satisfies.
fn encode_message(
    csid: u8,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    parts: [&[u8]; 2],
    chunk_size: usize,
) -> Bytes {
    let chunk_size = chunk_size.max(1);
    let len = parts[0].len() + parts[1].len();
    let extended = timestamp >= EXTENDED_TIMESTAMP;
    let chunks = len.div_ceil(chunk_size).max(1);
    let per_chunk_overhead = 1 + if extended { 4 } else { 0 };
    let mut out = BytesMut::with_capacity(11 + len + chunks * per_chunk_overhead);

    out.put_u8(csid & 0x3f);
    let field = if extended { EXTENDED_TIMESTAMP } else { timestamp };
    put_u24(&mut out, field);
    put_u24(&mut out, len as u32);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(timestamp);
    }
    let [mut head, mut body] = parts;
    for i in 0..chunks {
        if i > 0 {
            out.put_u8(0xc0 | (csid & 0x3f));
            if extended {
                out.put_u32(timestamp);
            }
        }
        let mut room = chunk_size;
        for part in [&mut head, &mut body] {
            let (now, later) = part.split_at(room.min(part.len()));
            out.put_slice(now);
            room -= now.len();
            *part = later;
        }
    }
    out.freeze()
}

fn put_u24(out: &mut BytesMut, value: u32) {
    out.put_slice(&value.to_be_bytes()[1..]);
}

#[cfg(test)]
mod tests {
    use rml_rtmp::chunk_io::ChunkDeserializer;
    use zenlive_media::{Codec, MediaTime};

    use super::*;

    fn decode_all(bytes: &[u8], chunk_size: usize) -> Vec<(u8, u32, u32, Vec<u8>)> {
        let mut de = ChunkDeserializer::new();
        de.set_max_chunk_size(chunk_size).expect("chunk size");
        let mut out = Vec::new();
        let mut input: &[u8] = bytes;
        while let Some(payload) = de.get_next_message(input).expect("valid chunks") {
            out.push((
                payload.type_id,
                payload.message_stream_id,
                payload.timestamp.value,
                payload.data.to_vec(),
            ));
            input = &[];
        }
        out
    }

    fn at(ms: i64) -> MediaTime {
        MediaTime::from_millis(ms)
    }

    #[test]
    fn rml_rtmp_reads_what_we_write() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let frame = MediaFrame::video(
            Codec::H264,
            at(1234),
            at(1274),
            false,
            Bytes::from(payload.clone()),
            None,
        );
        let bytes = encode_frame(&frame, 1, 4096).expect("H.264 goes over RTMP");
        let msgs = decode_all(&bytes, 4096);
        let mut body = vec![0x27, 1, 0, 0, 40];
        body.extend_from_slice(&payload);
        assert_eq!(msgs, vec![(TYPE_VIDEO, 1, 1234, body)]);
    }

    #[test]
    fn extended_timestamps_repeat_on_every_chunk() {
        let payload = vec![7u8; 298];
        let frame =
            MediaFrame::audio(Codec::Aac, at(0x0100_0000), Bytes::from(payload.clone()), None);
        let bytes = encode_frame(&frame, 3, 128).expect("AAC goes over RTMP");
        assert_eq!(bytes.len(), 12 + 4 + 300 + 2 * 5);
        let msgs = decode_all(&bytes, 128);
        let mut body = vec![0xaf, 1];
        body.extend_from_slice(&payload);
        assert_eq!(msgs, vec![(TYPE_AUDIO, 3, 0x0100_0000, body)]);
    }

    #[test]
    fn configurations_go_as_sequence_headers_and_other_codecs_not_at_all() {
        let config = CodecConfig::new(Codec::Aac, Bytes::from_static(&[0x12, 0x10]), at(5));
        let bytes = encode_config(&config, 1, 4096).expect("AAC");
        assert_eq!(decode_all(&bytes, 4096), vec![(TYPE_AUDIO, 1, 5, vec![0xaf, 0, 0x12, 0x10])]);
        let opus = MediaFrame::audio(Codec::Opus, at(0), Bytes::from_static(&[1]), None);
        assert!(encode_frame(&opus, 1, 4096).is_none());
    }

    #[test]
    fn status_messages_decode_as_amf0_commands() {
        let bytes = status_message(1, "error", "NetStream.Publish.Rejected", "only H.264");
        let msgs = decode_all(&bytes, SERVER_CHUNK_SIZE);
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].0, msgs[0].1), (TYPE_COMMAND_AMF0, 1));
        let values =
            rml_amf0::deserialize(&mut std::io::Cursor::new(msgs[0].3.clone())).expect("AMF0");
        assert_eq!(values[0], rml_amf0::Amf0Value::Utf8String("onStatus".into()));
    }

    #[test]
    fn empty_payload_is_one_header() {
        let frame = MediaFrame::data(at(0), Bytes::new());
        assert_eq!(encode_frame(&frame, 1, 4096).map(|b| b.len()), Some(12));
    }
}
