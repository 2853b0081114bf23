//! [`ChunkReader`]: turns the bytes an RTMP peer sends into whole messages, within bounds.
//!
//! Every byte a publisher sends passes through here, so it is built for that: one copy of
//! each payload (from the socket's read buffer into the message, sized once), no allocation
//! per chunk, chunk stream state in a short vector. rml_rtmp's deserializer copies each
//! message twice, allocates several times per message and has no limits (any chunk size
//! below 2^31, any message type, 16 MiB messages), and it keeps one partial message for all
//! chunk streams; measured on 100 publishers, its copies and allocations were most of the
//! user-space cost of ingest. No crate offers a bounded, allocation-lean RTMP dechunker, hence
//! this one by hand. rml_rtmp still runs the session: our [`session`](super::session)
//! hands it the command and control messages read here, while media goes straight to the
//! stream.
//!
//! Limits, each refused with a [`Violation`]: chunk sizes above [`MAX_CHUNK_SIZE`], message
//! types RTMP does not define, messages longer than their type allows, more than
//! [`MAX_CHUNK_STREAMS`] chunk streams or [`MAX_OPEN_MESSAGES`] half-received messages, and
//! more than [`MAX_BUFFERED_BYTES`] of partial messages. A connection that has not been
//! admitted as a publisher yet ([`ChunkReader::unadmitted`]) may hold far less: messages
//! and partial bytes of at most [`UNADMITTED_BUFFER`], enough for `connect` and `publish`
//! with the largest token, so an anonymous peer cannot pin megabytes before auth. It is
//! sans-IO: bytes in, messages or a verdict out.
//!
//! Timestamps follow FFmpeg and rml_rtmp: a type 0 header carries the absolute time, types
//! 1 and 2 a delta, and a type 3 header that starts a new message repeats the last delta
//! (after a type 0 header, that is its timestamp field). Arithmetic wraps like RTMP time.

use bytes::{Bytes, BytesMut};

/// Largest chunk size a peer may set.
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// Largest audio or video message.
pub const MAX_MEDIA_MESSAGE: u32 = 8 << 20;
/// Largest command or data message (`connect`, `@setDataFrame`...).
pub const MAX_COMMAND_MESSAGE: u32 = 64 << 10;
/// Largest protocol control message.
pub const MAX_CONTROL_MESSAGE: u32 = 64;
/// Most messages that may be partially received at once.
pub const MAX_OPEN_MESSAGES: usize = 8;
/// Most chunk streams a peer may use.
pub const MAX_CHUNK_STREAMS: usize = 64;
/// Most bytes of partially received messages.
pub const MAX_BUFFERED_BYTES: u64 = 16 << 20;
/// Longest message, and most bytes of partial messages, of a connection not admitted as a
/// publisher (commands only: `connect` and `publish` carry two 8 KiB tokens at most).
pub const UNADMITTED_BUFFER: u32 = 32 << 10;
/// Most payload capacity reserved for a message before its bytes arrive: a declared length
/// alone does not make us allocate megabytes.
const MAX_RESERVE: usize = 256 << 10;
/// Longest chunk header: 3 bytes of basic header, 11 of message header, 4 of extended time.
const MAX_HEADER: usize = 18;
/// The RTMP chunk size before a peer sets one.
const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Message type of Set Chunk Size and of Abort.
const TYPE_SET_CHUNK_SIZE: u8 = 1;
const TYPE_ABORT: u8 = 2;
/// A timestamp field with this value means "read the 4-byte extended timestamp".
const EXTENDED: u32 = 0x00ff_ffff;

/// What the peer did wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A chunk size of 0 or above the limit.
    #[error("chunk size {0} is outside 1..={MAX_CHUNK_SIZE}")]
    ChunkSize(u32),
    /// A message type RTMP does not define.
    #[error("unknown message type {0}")]
    UnknownMessageType(u8),
    /// A message longer than its type allows.
    #[error("message type {type_id} of {len} bytes exceeds the {limit}-byte limit")]
    MessageTooLarge {
        /// The message type.
        type_id: u8,
        /// Its declared length.
        len: u32,
        /// The limit for that type.
        limit: u32,
    },
    /// A compressed header on a chunk stream with no earlier header.
    #[error("chunk stream {0} continues a message it never started")]
    NoPreviousHeader(u32),
    /// Too many chunk streams or half-received messages at once.
    #[error("too many chunk streams or open messages")]
    TooManyStreams,
    /// Too many bytes of half-received messages.
    #[error("more than {0} bytes of partial messages")]
    TooMuchBuffered(u64),
}

/// One whole RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The chunk stream it came on.
    pub csid: u32,
    /// The message type id (8 audio, 9 video, 20 AMF0 command...).
    pub type_id: u8,
    /// The message stream id.
    pub stream_id: u32,
    /// Its timestamp in milliseconds (RTMP time, wrapping at 2^32).
    pub timestamp: u32,
    /// Its payload.
    pub payload: Bytes,
}

/// The state of one chunk stream: the last header's fields and the message in progress.
#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    timestamp: u32,
    delta: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    /// Bytes of the current message still to come; 0 when none is in progress.
    remaining: u32,
    payload: BytesMut,
}

impl ChunkStream {
    fn new(csid: u32) -> Self {
        Self {
            csid,
            timestamp: 0,
            delta: 0,
            len: 0,
            type_id: 0,
            stream_id: 0,
            extended: false,
            remaining: 0,
            payload: BytesMut::new(),
        }
    }

    fn open(&self) -> bool {
        self.remaining > 0 && self.remaining < self.len
    }
}

/// Reads one connection's incoming chunk stream. See the module docs.
#[derive(Debug)]
pub struct ChunkReader {
    chunk_size: u32,
    streams: Vec<ChunkStream>,
    /// A header split across reads.
    pending: [u8; MAX_HEADER],
    pending_len: usize,
    /// The chunk stream (index into `streams`) whose payload is being read.
    current: usize,
    /// Payload bytes of the current chunk still to read.
    chunk_left: u32,
    /// Bytes held in partial messages.
    buffered: u64,
    /// Longest message of any type (below the type's own limit).
    max_message: u32,
    /// Most bytes held in partial messages.
    max_buffered: u64,
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

fn limit_for(type_id: u8) -> Option<u32> {
    match type_id {
        1..=6 => Some(MAX_CONTROL_MESSAGE),
        8 | 9 => Some(MAX_MEDIA_MESSAGE),
        15..=20 | 22 => Some(MAX_COMMAND_MESSAGE),
        _ => None,
    }
}

fn be24(b: [u8; 3]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

/// `N` bytes of `b` from `at`, if there are that many.
fn take<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// A parsed chunk header: where its fields put the chunk stream.
struct Header {
    csid: u32,
    fmt: u8,
    /// Timestamp field (absolute for type 0, delta for types 1 and 2).
    time_field: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
    /// The extended timestamp, when one follows the header.
    extended_time: Option<u32>,
    /// Bytes the header took.
    size: usize,
}

impl ChunkReader {
    /// A reader for a connection allowed to publish (chunk size 128): media messages up to
    /// [`MAX_MEDIA_MESSAGE`], partial messages up to [`MAX_BUFFERED_BYTES`].
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            pending: [0; MAX_HEADER],
            pending_len: 0,
            current: 0,
            chunk_left: 0,
            buffered: 0,
            max_message: u32::MAX,
            max_buffered: MAX_BUFFERED_BYTES,
        }
    }

    /// A reader for a connection not admitted yet: every message, and all partial messages
    /// together, within [`UNADMITTED_BUFFER`]. See [`ChunkReader::admit`].
    pub fn unadmitted() -> Self {
        Self {
            max_message: UNADMITTED_BUFFER,
            max_buffered: u64::from(UNADMITTED_BUFFER),
            ..Self::new()
        }
    }

    /// The connection was admitted as a publisher: the limits of [`ChunkReader::new`].
    pub fn admit(&mut self) {
        self.max_message = u32::MAX;
        self.max_buffered = MAX_BUFFERED_BYTES;
    }

    /// Bytes held in partial messages now.
    pub fn buffered(&self) -> u64 {
        self.buffered
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Reads the next bytes of the stream, appending each message they complete to `out`.
    /// Set Chunk Size and Abort take effect here (and are still passed on).
    pub fn read(&mut self, mut input: &[u8], out: &mut Vec<Message>) -> Result<(), Violation> {
        while !input.is_empty() {
            if self.chunk_left > 0 {
                let n = (self.chunk_left as usize).min(input.len());
                let (payload, rest) = input.split_at(n);
                input = rest;
                self.chunk_left -= n as u32;
                self.buffered += n as u64;
                if self.buffered > self.max_buffered {
                    return Err(Violation::TooMuchBuffered(self.max_buffered));
                }
                let Some(stream) = self.streams.get_mut(self.current) else {
                    return Err(Violation::TooManyStreams);
                };
                stream.payload.extend_from_slice(payload);
                stream.remaining -= n as u32;
                if stream.remaining == 0 {
                    self.complete(out)?;
                }
                continue;
            }
            // A header: parse it in place, or from the bytes stashed by the last read.
            let used = if self.pending_len == 0 {
                match self.header(input)? {
                    Some(header) => self.start_chunk(header, out)?,
                    None => 0,
                }
            } else {
                let before = self.pending_len;
                let take = (MAX_HEADER - before).min(input.len());
                self.pending[before..before + take].copy_from_slice(&input[..take]);
                let stash = self.pending;
                match self.header(&stash[..before + take])? {
                    Some(header) => {
                        self.pending_len = 0;
                        // The header cannot be shorter than what was stashed before.
                        self.start_chunk(header, out)?.saturating_sub(before)
                    }
                    None => {
                        self.pending_len = before + take;
                        take
                    }
                }
            };
            if used == 0 {
                // An incomplete header at the end of the input (at most 17 bytes).
                let n = input.len().min(MAX_HEADER);
                self.pending[..n].copy_from_slice(&input[..n]);
                self.pending_len = n;
                return Ok(());
            }
            input = input.get(used..).unwrap_or_default();
        }
        Ok(())
    }

    /// Parses a chunk header at the start of `b`; `None` when more bytes are needed.
    fn header(&self, b: &[u8]) -> Result<Option<Header>, Violation> {
        let Some(&first) = b.first() else { return Ok(None) };
        let fmt = first >> 6;
        let (csid, mut at) = match first & 0x3f {
            0 => match b.get(1) {
                Some(&x) => (64 + u32::from(x), 2),
                None => return Ok(None),
            },
            1 => match take::<2>(b, 1) {
                Some([x, y]) => (64 + u32::from(x) + 256 * u32::from(y), 3),
                None => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let previous = self.streams.iter().find(|s| s.csid == csid);
        if fmt != 0 && previous.is_none() {
            return Err(Violation::NoPreviousHeader(csid));
        }
        let (mut time_field, mut len, mut type_id, mut stream_id) = match previous {
            Some(p) => (p.delta, p.len, p.type_id, p.stream_id),
            None => (0, 0, 0, 0),
        };
        let mut extended = previous.is_some_and(|p| p.extended);
        if fmt <= 2 {
            let Some(time) = take::<3>(b, at) else { return Ok(None) };
            time_field = be24(time);
            extended = time_field == EXTENDED;
            at += 3;
        }
        if fmt <= 1 {
            let Some(fields) = take::<4>(b, at) else { return Ok(None) };
            len = be24([fields[0], fields[1], fields[2]]);
            type_id = fields[3];
            at += 4;
        }
        if fmt == 0 {
            let Some(id) = take::<4>(b, at) else { return Ok(None) };
            stream_id = u32::from_le_bytes(id);
            at += 4;
        }
        let extended_time = if extended {
            let Some(time) = take::<4>(b, at) else { return Ok(None) };
            at += 4;
            Some(u32::from_be_bytes(time))
        } else {
            None
        };
        Ok(Some(Header { csid, fmt, time_field, len, type_id, stream_id, extended_time, size: at }))
    }

    /// Applies a parsed header to its chunk stream and sets up the chunk's payload; returns
    /// the header's size.
    fn start_chunk(&mut self, h: Header, out: &mut Vec<Message>) -> Result<usize, Violation> {
        let index = match self.streams.iter().position(|s| s.csid == h.csid) {
            Some(index) => index,
            None if self.streams.len() >= MAX_CHUNK_STREAMS => {
                return Err(Violation::TooManyStreams)
            }
            None => {
                self.streams.push(ChunkStream::new(h.csid));
                self.streams.len() - 1
            }
        };
        let open_elsewhere =
            self.streams.iter().enumerate().filter(|(i, s)| *i != index && s.open()).count();
        let Some(stream) = self.streams.get_mut(index) else {
            return Err(Violation::TooManyStreams);
        };
        let continuing = h.fmt == 3 && stream.remaining > 0;
        if h.fmt <= 2 {
            stream.extended = h.time_field == EXTENDED;
        }
        if !continuing {
            if stream.remaining > 0 {
                // A new header mid-message abandons the partial message.
                self.buffered =
                    self.buffered.saturating_sub(u64::from(stream.len - stream.remaining));
                stream.payload = BytesMut::new();
            }
            let value = h.extended_time.unwrap_or(h.time_field);
            match h.fmt {
                0 => stream.timestamp = value,
                1 | 2 => stream.timestamp = stream.timestamp.wrapping_add(value),
                _ => {
                    let delta = h.extended_time.unwrap_or(stream.delta);
                    stream.timestamp = stream.timestamp.wrapping_add(delta);
                }
            }
            if h.fmt <= 2 {
                stream.delta = value;
            }
            stream.len = h.len;
            stream.type_id = h.type_id;
            stream.stream_id = h.stream_id;
            let limit = limit_for(h.type_id)
                .ok_or(Violation::UnknownMessageType(h.type_id))?
                .min(self.max_message);
            if h.len > limit {
                return Err(Violation::MessageTooLarge { type_id: h.type_id, len: h.len, limit });
            }
            if h.len > 0 && open_elsewhere >= MAX_OPEN_MESSAGES {
                return Err(Violation::TooManyStreams);
            }
            stream.remaining = h.len;
            stream.payload.reserve((h.len as usize).min(MAX_RESERVE));
        }
        self.current = index;
        self.chunk_left = stream.remaining.min(self.chunk_size);
        if stream.remaining == 0 {
            // An empty message: complete with its header.
            self.complete(out)?;
        }
        Ok(h.size)
    }

    /// The current chunk stream's message is whole: hand it out.
    fn complete(&mut self, out: &mut Vec<Message>) -> Result<(), Violation> {
        let Some(stream) = self.streams.get_mut(self.current) else { return Ok(()) };
        self.buffered = self.buffered.saturating_sub(u64::from(stream.len));
        let message = Message {
            csid: stream.csid,
            type_id: stream.type_id,
            stream_id: stream.stream_id,
            timestamp: stream.timestamp,
            payload: std::mem::take(&mut stream.payload).freeze(),
        };
        match (message.type_id, take::<4>(&message.payload, 0)) {
            (TYPE_SET_CHUNK_SIZE, Some(size)) => {
                let size = u32::from_be_bytes(size) & 0x7fff_ffff;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(Violation::ChunkSize(size));
                }
                self.chunk_size = size;
            }
            (TYPE_ABORT, Some(csid)) => {
                let csid = u32::from_be_bytes(csid);
                if let Some(s) = self.streams.iter_mut().find(|s| s.csid == csid && s.open()) {
                    self.buffered = self.buffered.saturating_sub(u64::from(s.len - s.remaining));
                    s.remaining = 0;
                    s.payload = BytesMut::new();
                }
            }
            _ => {}
        }
        out.push(message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn type0(csid: u8, type_id: u8, len: u32, ts: u32) -> Vec<u8> {
        let mut v = vec![csid & 0x3f];
        v.extend_from_slice(&ts.min(0xffffff).to_be_bytes()[1..]);
        v.extend_from_slice(&len.to_be_bytes()[1..]);
        v.push(type_id);
        v.extend_from_slice(&1u32.to_le_bytes());
        if ts >= 0xffffff {
            v.extend_from_slice(&ts.to_be_bytes());
        }
        v
    }

    fn read_all(reader: &mut ChunkReader, input: &[u8]) -> Result<Vec<Message>, Violation> {
        let mut out = Vec::new();
        reader.read(input, &mut out)?;
        Ok(out)
    }

    /// A 300-byte video message in 128-byte chunks, Set Chunk Size 4096, a 5,000-byte
    /// message in two chunks, then a type 3 header starting a new message.
    fn sample() -> Vec<u8> {
        let mut stream = type0(4, 9, 300, 10);
        stream.extend((0..128u8).collect::<Vec<_>>());
        stream.push(0xc4);
        stream.extend(vec![1u8; 128]);
        stream.push(0xc4);
        stream.extend(vec![2u8; 44]);
        stream.extend(type0(2, 1, 4, 0));
        stream.extend(4096u32.to_be_bytes());
        // Type 1: delta 30, new length 5000.
        stream.extend([0x44, 0, 0, 30, 0, 0x13, 0x88, 9]);
        stream.extend(vec![3u8; 4096]);
        stream.push(0xc4);
        stream.extend(vec![4u8; 904]);
        // Type 3 starting a new message: same length and type, the delta again.
        stream.push(0xc4);
        stream.extend(vec![5u8; 4096]);
        stream.push(0xc4);
        stream.extend(vec![6u8; 904]);
        stream
    }

    #[test]
    fn reassembles_messages_split_at_every_byte() {
        let stream = sample();
        for split in 0..stream.len() {
            let mut reader = ChunkReader::new();
            let mut out = Vec::new();
            reader.read(&stream[..split], &mut out).expect("valid prefix");
            reader.read(&stream[split..], &mut out).expect("valid rest");
            assert_eq!(reader.chunk_size(), 4096);
            let summary: Vec<_> =
                out.iter().map(|m| (m.type_id, m.timestamp, m.payload.len())).collect();
            assert_eq!(summary, [(9, 10, 300), (1, 0, 4), (9, 40, 5000), (9, 70, 5000)]);
            assert_eq!(out[0].payload[..128], (0..128u8).collect::<Vec<_>>()[..]);
            assert_eq!(out[0].payload[128..256], [1u8; 128]);
            assert_eq!(out[2].payload[4095..4097], [3, 4]);
            assert_eq!(out[3].stream_id, 1);
            assert_eq!(reader.buffered, 0);
        }
    }

    #[test]
    fn reads_extended_timestamps_on_every_chunk() {
        let ts = 0x0100_0000;
        let mut stream = type0(4, 9, 200, ts);
        stream.extend(vec![0u8; 128]);
        // A continuation chunk repeats the extended timestamp.
        stream.push(0xc4);
        stream.extend(ts.to_be_bytes());
        stream.extend(vec![0u8; 72]);
        let out = read_all(&mut ChunkReader::new(), &stream).expect("valid");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].timestamp, ts);
        assert_eq!(out[0].payload.len(), 200);
    }

    #[test]
    fn interleaved_chunk_streams_keep_their_own_messages() {
        let mut stream = type0(4, 9, 200, 0);
        stream.extend(vec![9u8; 128]);
        stream.extend(type0(5, 8, 10, 0));
        stream.extend(vec![8u8; 10]);
        stream.push(0xc4);
        stream.extend(vec![9u8; 72]);
        let out = read_all(&mut ChunkReader::new(), &stream).expect("valid");
        let kinds: Vec<_> = out.iter().map(|m| (m.type_id, m.payload.len())).collect();
        assert_eq!(kinds, [(8, 10), (9, 200)]);
        assert!(out[1].payload.iter().all(|&b| b == 9));
    }

    #[test]
    fn abort_drops_a_partial_message() {
        let mut stream = type0(4, 9, 200, 0);
        stream.extend(vec![0u8; 128]);
        stream.extend(type0(2, 2, 4, 0));
        stream.extend(4u32.to_be_bytes());
        stream.extend(type0(4, 9, 3, 5));
        stream.extend([7, 7, 7]);
        let mut reader = ChunkReader::new();
        let out = read_all(&mut reader, &stream).expect("valid");
        let kinds: Vec<_> = out.iter().map(|m| (m.type_id, m.payload.len())).collect();
        assert_eq!(kinds, [(2, 4), (9, 3)]);
        assert_eq!(reader.buffered, 0);
    }

    #[test]
    fn refuses_huge_chunk_size() {
        let mut stream = type0(2, 1, 4, 0);
        stream.extend(0x8000_0000u32.to_be_bytes());
        // 2^31 with the reserved top bit cleared is 0: refused.
        assert_eq!(read_all(&mut ChunkReader::new(), &stream), Err(Violation::ChunkSize(0)));
        let mut stream = type0(2, 1, 4, 0);
        stream.extend(0x7fff_ffffu32.to_be_bytes());
        assert!(matches!(read_all(&mut ChunkReader::new(), &stream), Err(Violation::ChunkSize(_))));
    }

    #[test]
    fn refuses_unknown_types_and_oversized_messages() {
        assert_eq!(
            read_all(&mut ChunkReader::new(), &type0(3, 99, 10, 0)),
            Err(Violation::UnknownMessageType(99))
        );
        assert!(matches!(
            read_all(&mut ChunkReader::new(), &type0(3, 18, 0xffffff, 0)),
            Err(Violation::MessageTooLarge { .. })
        ));
        assert_eq!(read_all(&mut ChunkReader::new(), &[0xc5]), Err(Violation::NoPreviousHeader(5)));
    }

    #[test]
    fn refuses_many_half_open_messages() {
        let mut reader = ChunkReader::new();
        let mut result = Ok(Vec::new());
        for csid in 3..40u8 {
            let mut chunk = type0(csid, 9, 1000, 0);
            chunk.extend(vec![0u8; 128]);
            result = read_all(&mut reader, &chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Violation::TooManyStreams));
    }

    #[test]
    fn refuses_more_buffered_bytes_than_the_limit() {
        let mut reader = ChunkReader::new();
        let mut size = type0(2, 1, 4, 0);
        size.extend(MAX_CHUNK_SIZE.to_be_bytes());
        read_all(&mut reader, &size).expect("valid chunk size");
        let mut result = Ok(Vec::new());
        for csid in 3..8u8 {
            let mut chunk = type0(csid, 9, MAX_MEDIA_MESSAGE, 0);
            chunk.extend(vec![0u8; MAX_CHUNK_SIZE as usize]);
            for _ in 0..3 {
                chunk.push(0xc0 | csid);
                chunk.extend(vec![0u8; MAX_CHUNK_SIZE as usize]);
            }
            result = read_all(&mut reader, &chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Violation::TooMuchBuffered(MAX_BUFFERED_BYTES)));
    }

    #[test]
    fn a_connection_not_admitted_holds_a_few_kib_at_most() {
        // The probe's attack: a big chunk size, then a partial 8 MiB video message.
        let mut reader = ChunkReader::unadmitted();
        let mut size = type0(2, 1, 4, 0);
        size.extend(MAX_CHUNK_SIZE.to_be_bytes());
        read_all(&mut reader, &size).expect("a chunk size alone holds nothing");
        assert_eq!(
            read_all(&mut reader, &type0(4, 9, MAX_MEDIA_MESSAGE, 0)),
            Err(Violation::MessageTooLarge {
                type_id: 9,
                len: MAX_MEDIA_MESSAGE,
                limit: UNADMITTED_BUFFER
            })
        );
        // Many command messages just under the limit, none finished: the partial bytes
        // together stay within the same budget.
        let mut reader = ChunkReader::unadmitted();
        let mut half = type0(2, 1, 4, 0);
        half.extend((UNADMITTED_BUFFER / 2).to_be_bytes());
        read_all(&mut reader, &half).expect("chunk size");
        let mut result = Ok(Vec::new());
        for csid in 3..8u8 {
            // The first chunk (half the message) of each.
            let mut chunk = type0(csid, 20, UNADMITTED_BUFFER, 0);
            chunk.extend(vec![0u8; UNADMITTED_BUFFER as usize / 2]);
            result = read_all(&mut reader, &chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Violation::TooMuchBuffered(u64::from(UNADMITTED_BUFFER))));
        // Admitted, the same connection may send whole video frames.
        let mut reader = ChunkReader::unadmitted();
        reader.admit();
        read_all(&mut reader, &size).expect("chunk size");
        let mut frame = type0(4, 9, 1 << 20, 0);
        frame.extend(vec![0u8; 1 << 20]);
        assert_eq!(read_all(&mut reader, &frame).expect("a 1 MiB frame").len(), 1);
        assert_eq!(reader.buffered(), 0);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(
            data in proptest::collection::vec(any::<u8>(), 0..4096),
            split in 0usize..4096,
        ) {
            let mut reader = ChunkReader::new();
            let split = split.min(data.len());
            let mut out = Vec::new();
            let _ = reader.read(&data[..split], &mut out).and_then(|()| reader.read(&data[split..], &mut out));
            prop_assert!(reader.buffered <= MAX_BUFFERED_BYTES);
            prop_assert!(reader.streams.len() <= MAX_CHUNK_STREAMS);
        }

        #[test]
        fn valid_streams_read_the_same_in_any_pieces(split in 0usize..10_000, step in 1usize..600) {
            let stream = sample();
            let mut whole = Vec::new();
            ChunkReader::new().read(&stream, &mut whole).expect("valid");
            let mut reader = ChunkReader::new();
            let mut pieces = Vec::new();
            let split = split.min(stream.len());
            reader.read(&stream[..split], &mut pieces).expect("valid");
            for piece in stream[split..].chunks(step) {
                reader.read(piece, &mut pieces).expect("valid");
            }
            prop_assert_eq!(whole, pieces);
        }
    }
}
