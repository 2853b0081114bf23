//! [`ChunkGuard`]: bounds on what an RTMP peer may make us buffer, checked before rml_rtmp
//! sees the bytes.
//!
//! rml_rtmp accepts any chunk size below 2^31, any message type, messages up to 16 MiB on
//! any number of chunk streams at once: a peer could make it hold gigabytes. This guard
//! follows the chunk headers (without copying payloads) and refuses, with a reason, chunk
//! sizes above [`MAX_CHUNK_SIZE`], unknown message types, oversized messages per type, too
//! many half-received messages, and more than [`MAX_BUFFERED_BYTES`] of partial messages.
//! It is sans-IO: bytes in, verdict out. rml_rtmp offers no such limits, hence by hand.

use std::collections::HashMap;

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
    #[error("more than {MAX_BUFFERED_BYTES} bytes of partial messages")]
    TooMuchBuffered,
}

#[derive(Debug, Clone, Copy, Default)]
struct StreamState {
    len: u32,
    type_id: u8,
    remaining: u32,
    extended_timestamp: bool,
}

/// Follows one connection's incoming chunk stream. See the module docs.
#[derive(Debug)]
pub struct ChunkGuard {
    chunk_size: u32,
    streams: HashMap<u32, StreamState>,
    /// A header split across reads (at most 18 bytes).
    pending: Vec<u8>,
    /// Payload bytes of the current chunk still to skip.
    skip: u32,
    /// The chunk stream whose payload is being skipped.
    current: u32,
    /// Payload of a Set Chunk Size message being collected.
    set_chunk_size: Option<Vec<u8>>,
}

impl Default for ChunkGuard {
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

fn be24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

impl ChunkGuard {
    /// A guard for a fresh connection (chunk size 128).
    pub fn new() -> Self {
        Self {
            chunk_size: 128,
            streams: HashMap::new(),
            pending: Vec::new(),
            skip: 0,
            current: 0,
            set_chunk_size: None,
        }
    }

    /// Records a chunk size change that rml_rtmp reported (normally already seen here).
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), Violation> {
        if size == 0 || size > MAX_CHUNK_SIZE {
            return Err(Violation::ChunkSize(size));
        }
        self.chunk_size = size;
        Ok(())
    }

    /// Checks the next bytes of the stream.
    pub fn check(&mut self, mut input: &[u8]) -> Result<(), Violation> {
        while !input.is_empty() {
            if self.skip > 0 {
                let n = (self.skip as usize).min(input.len());
                if let Some(collect) = self.set_chunk_size.as_mut() {
                    collect
                        .extend_from_slice(&input[..n.min(4usize.saturating_sub(collect.len()))]);
                }
                self.skip -= n as u32;
                input = &input[n..];
                if self.skip == 0 {
                    self.chunk_done()?;
                }
                continue;
            }
            // Parse a header from pending + input; stash it if incomplete.
            let take = (18 - self.pending.len()).min(input.len());
            let mut head = std::mem::take(&mut self.pending);
            let before = head.len();
            head.extend_from_slice(&input[..take]);
            match self.header(&head)? {
                Some(used) => {
                    input = input.get(used.saturating_sub(before)..).unwrap_or_default();
                }
                None => {
                    self.pending = head;
                    input = &input[take..];
                }
            }
        }
        Ok(())
    }

    /// Parses one chunk header; `None` when more bytes are needed.
    fn header(&mut self, b: &[u8]) -> Result<Option<usize>, Violation> {
        let Some(&first) = b.first() else { return Ok(None) };
        let fmt = first >> 6;
        let (csid, mut at) = match first & 0x3f {
            0 => match b.get(1) {
                Some(&x) => (64 + u32::from(x), 2),
                None => return Ok(None),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&x), Some(&y)) => (64 + u32::from(x) + 256 * u32::from(y), 3),
                _ => return Ok(None),
            },
            n => (u32::from(n), 1),
        };
        let header_len = [11, 7, 3, 0][usize::from(fmt)];
        let Some(fields) = b.get(at..at + header_len) else { return Ok(None) };
        at += header_len;
        if !self.streams.contains_key(&csid) && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(Violation::TooManyStreams);
        }
        let previous = self.streams.get(&csid).copied();
        let mut state = previous.unwrap_or_default();
        let continuing = fmt == 3 && state.remaining > 0;
        if fmt != 0 && previous.is_none() {
            return Err(Violation::NoPreviousHeader(csid));
        }
        if fmt <= 2 {
            state.extended_timestamp = be24(&fields[0..3]) == 0x00ff_ffff;
        }
        if fmt <= 1 {
            state.len = be24(&fields[3..6]);
            state.type_id = fields[6];
        }
        if state.extended_timestamp {
            if b.len() < at + 4 {
                return Ok(None);
            }
            at += 4;
        }
        if !continuing {
            let limit =
                limit_for(state.type_id).ok_or(Violation::UnknownMessageType(state.type_id))?;
            if state.len > limit {
                return Err(Violation::MessageTooLarge {
                    type_id: state.type_id,
                    len: state.len,
                    limit,
                });
            }
            state.remaining = state.len;
            let open = self
                .streams
                .iter()
                .filter(|(id, s)| **id != csid && s.remaining > 0 && s.remaining < s.len)
                .count();
            if open >= MAX_OPEN_MESSAGES {
                return Err(Violation::TooManyStreams);
            }
            self.set_chunk_size = (state.type_id == 1).then(Vec::new);
        }
        let chunk = state.remaining.min(self.chunk_size);
        state.remaining -= chunk;
        self.streams.insert(csid, state);
        let buffered: u64 = self
            .streams
            .values()
            .filter(|s| s.remaining > 0)
            .map(|s| u64::from(s.len - s.remaining))
            .sum();
        if buffered > MAX_BUFFERED_BYTES {
            return Err(Violation::TooMuchBuffered);
        }
        self.current = csid;
        self.skip = chunk;
        if chunk == 0 {
            self.chunk_done()?;
        }
        Ok(Some(at))
    }

    /// The current chunk's payload has been skipped.
    fn chunk_done(&mut self) -> Result<(), Violation> {
        let complete = self.streams.get(&self.current).is_some_and(|s| s.remaining == 0);
        if !complete {
            return Ok(());
        }
        if let Some(payload) = self.set_chunk_size.take() {
            if let [a, b, c, d] = payload[..] {
                let size = u32::from_be_bytes([a, b, c, d]) & 0x7fff_ffff;
                self.set_chunk_size(size)?;
            }
        }
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

    #[test]
    fn accepts_chunked_media_split_at_every_byte() {
        let mut stream = type0(4, 9, 300, 0);
        stream.extend(vec![0u8; 128]);
        stream.push(0xc4);
        stream.extend(vec![0u8; 128]);
        stream.push(0xc4);
        stream.extend(vec![0u8; 44]);
        // Set chunk size 4096, then a 5000-byte message in two chunks.
        stream.extend(type0(2, 1, 4, 0));
        stream.extend(4096u32.to_be_bytes());
        stream.extend(type0(4, 9, 5000, 40));
        stream.extend(vec![0u8; 4096]);
        stream.push(0xc4);
        stream.extend(vec![0u8; 904]);
        for split in 0..stream.len() {
            let mut guard = ChunkGuard::new();
            guard.check(&stream[..split]).expect("valid prefix");
            guard.check(&stream[split..]).expect("valid rest");
            assert_eq!(guard.chunk_size, 4096);
        }
    }

    #[test]
    fn refuses_huge_chunk_size() {
        let mut stream = type0(2, 1, 4, 0);
        stream.extend(0x8000_0000u32.to_be_bytes());
        let mut guard = ChunkGuard::new();
        // 2^31 with the reserved top bit cleared is 0: refused.
        assert_eq!(guard.check(&stream), Err(Violation::ChunkSize(0)));
        let mut stream = type0(2, 1, 4, 0);
        stream.extend(0x7fff_ffffu32.to_be_bytes());
        assert!(matches!(ChunkGuard::new().check(&stream), Err(Violation::ChunkSize(_))));
    }

    #[test]
    fn refuses_unknown_types_and_oversized_messages() {
        assert_eq!(
            ChunkGuard::new().check(&type0(3, 99, 10, 0)),
            Err(Violation::UnknownMessageType(99))
        );
        assert!(matches!(
            ChunkGuard::new().check(&type0(3, 18, 0xffffff, 0)),
            Err(Violation::MessageTooLarge { .. })
        ));
        assert!(matches!(ChunkGuard::new().check(&[0xc5]), Err(Violation::NoPreviousHeader(5))));
    }

    #[test]
    fn refuses_many_half_open_messages() {
        let mut guard = ChunkGuard::new();
        let mut result = Ok(());
        for csid in 3..40u8 {
            let mut chunk = type0(csid, 9, 1000, 0);
            chunk.extend(vec![0u8; 128]);
            result = guard.check(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(Violation::TooManyStreams));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096), split in 0usize..4096) {
            let mut guard = ChunkGuard::new();
            let split = split.min(data.len());
            let _ = guard.check(&data[..split]).and_then(|()| guard.check(&data[split..]));
        }
    }
}
