//! Bounded WebSocket input: the limit on a frame's size holds as its bytes arrive, and no
//! more than about one frame of a peer's input waits to be decoded.
//!
//! actix-http's frame decoder (under `actix-web-actors`) checks a frame's declared length
//! only once the whole frame is in its buffer, and `actix-web-actors` moves everything the
//! socket has into that buffer before it decodes one frame: a peer that declares a 2^40-byte
//! frame and keeps sending is buffered without end. [`GatedPayload`] sits between the
//! request body and that decoder. Its [`FrameScanner`] (sans-IO: bytes in, frame ends or a
//! verdict out) reads each frame header as it passes and refuses a declared length above the
//! limit before a byte of the payload is kept; and it lets bytes through only while what
//! was let through and not yet decoded stays within [`budget`] (the session reports each
//! decoded frame through its [`FrameGate`]). No crate offers a streaming WebSocket header
//! check in front of actix's decoder, hence this one by hand.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;

/// Longest frame header: 2 bytes, an 8-byte extended length, a 4-byte mask key.
const MAX_HEADER: usize = 14;
/// Most frames let through and not yet decoded; bounds the frame-end queue.
const MAX_PENDING_FRAMES: usize = 64;

/// Bytes that may be let through and not yet decoded, for frames of at most `max_payload`:
/// one whole frame, and as much again of the next ones so small frames flow freely.
pub fn budget(max_payload: usize) -> usize {
    2 * (max_payload + MAX_HEADER)
}

/// A frame whose declared payload is over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a frame of {declared} bytes is over the {limit}-byte limit")]
pub struct Oversized {
    /// The length the frame header declared.
    pub declared: u64,
    /// The limit.
    pub limit: u64,
}

/// Follows frame boundaries in a WebSocket byte stream (client to server). See the module
/// docs.
#[derive(Debug)]
pub struct FrameScanner {
    limit: u64,
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
}

/// The header's total length once its first two bytes are known.
fn header_len(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

impl FrameScanner {
    /// A scanner refusing frames whose payload is longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit: limit as u64, header: [0; MAX_HEADER], header_len: 0, remaining: 0 }
    }

    /// Reads `input` up to the end of at most `max_frames` frames. Each frame that ends is
    /// reported with the offset in `input` just past it. Answers how many bytes were read
    /// (all of `input` unless `max_frames` frames ended first), or the first frame whose
    /// declared length is over the limit.
    pub fn feed(
        &mut self,
        input: &[u8],
        max_frames: usize,
        mut frame_end: impl FnMut(usize),
    ) -> Result<usize, Oversized> {
        let mut at = 0;
        let mut frames = 0;
        while at < input.len() && frames < max_frames {
            if self.remaining > 0 {
                let left = input.len() - at;
                let n = usize::try_from(self.remaining).map_or(left, |r| r.min(left));
                at += n;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    frame_end(at);
                    frames += 1;
                }
                continue;
            }
            // One header byte at a time: headers are at most 14 bytes.
            let Some(&byte) = input.get(at) else { break };
            at += 1;
            if let Some(slot) = self.header.get_mut(self.header_len) {
                *slot = byte;
                self.header_len += 1;
            }
            if self.header_len < 2 || self.header_len < header_len(self.header[1]) {
                continue;
            }
            let declared = match self.header[1] & 0x7f {
                126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                127 => {
                    let mut len = [0u8; 8];
                    len.copy_from_slice(&self.header[2..10]);
                    u64::from_be_bytes(len)
                }
                n => u64::from(n),
            };
            self.header_len = 0;
            if declared > self.limit {
                return Err(Oversized { declared, limit: self.limit });
            }
            self.remaining = declared;
            if declared == 0 {
                frame_end(at);
                frames += 1;
            }
        }
        Ok(at)
    }
}

/// What the gate and the session share.
#[derive(Debug, Default)]
struct GateState {
    /// Stream offsets just past each frame let through and not yet decoded.
    ends: VecDeque<u64>,
    /// Stream offset up to which the session has decoded.
    decoded: u64,
    /// The gate's task, waiting for the session to decode.
    waker: Option<Waker>,
    /// Why the gate closed the input, if it did.
    oversized: Option<Oversized>,
}

/// The session's side of a [`GatedPayload`]: it reports each frame it was handed (a message
/// or an error), which lets more input through.
#[derive(Debug, Clone, Default)]
pub struct FrameGate {
    state: Rc<RefCell<GateState>>,
}

impl FrameGate {
    /// A frame was decoded and handled.
    pub fn frame_handled(&self) {
        let mut state = self.state.borrow_mut();
        if let Some(end) = state.ends.pop_front() {
            state.decoded = end;
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// The oversized frame that closed the input, if one did.
    pub fn oversized(&self) -> Option<Oversized> {
        self.state.borrow().oversized
    }
}

/// A request body that lets WebSocket frames through within bounds. See the module docs.
pub struct GatedPayload<S> {
    inner: S,
    scanner: FrameScanner,
    /// Bytes received and not let through yet.
    held: Bytes,
    /// Stream offset of the next byte to let through.
    passed: u64,
    budget: u64,
    state: Rc<RefCell<GateState>>,
    failed: bool,
}

impl<S> GatedPayload<S> {
    /// Gates `inner` for frames of at most `max_payload` bytes; `gate` is the session's
    /// side.
    pub fn new(inner: S, max_payload: usize, gate: &FrameGate) -> Self {
        Self {
            inner,
            scanner: FrameScanner::new(max_payload),
            held: Bytes::new(),
            passed: 0,
            budget: budget(max_payload) as u64,
            state: Rc::clone(&gate.state),
            failed: false,
        }
    }
}

impl<S> Stream for GatedPayload<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        if this.held.is_empty() {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.held = chunk,
                other => return other,
            }
        }
        let mut state = this.state.borrow_mut();
        let waiting = this.passed.saturating_sub(state.decoded);
        let room = this.budget.saturating_sub(waiting);
        let pending_frames = MAX_PENDING_FRAMES.saturating_sub(state.ends.len());
        if room == 0 || pending_frames == 0 {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let take = usize::try_from(room).map_or(this.held.len(), |r| r.min(this.held.len()));
        let base = this.passed;
        let ends = &mut state.ends;
        let scanned = this.scanner.feed(&this.held[..take], pending_frames, |end| {
            ends.push_back(base + end as u64);
        });
        match scanned {
            Ok(n) => {
                this.passed += n as u64;
                Poll::Ready(Some(Ok(this.held.split_to(n))))
            }
            Err(oversized) => {
                state.oversized = Some(oversized);
                this.failed = true;
                this.held = Bytes::new();
                Poll::Ready(Some(Err(PayloadError::Overflow)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use proptest::prelude::*;

    use super::*;

    /// A masked client frame with `payload`.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => v.push(0x80 | n as u8),
            n if n <= 0xffff => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&[1, 2, 3, 4]);
        v.extend_from_slice(payload);
        v
    }

    fn ends_of(scanner: &mut FrameScanner, input: &[u8]) -> Result<Vec<usize>, Oversized> {
        let mut ends = Vec::new();
        let n = scanner.feed(input, usize::MAX, |e| ends.push(e))?;
        assert_eq!(n, input.len());
        Ok(ends)
    }

    #[test]
    fn frame_ends_are_found_at_every_split() {
        let mut input = frame(1, b"hello");
        input.extend(frame(9, b""));
        input.extend(frame(1, &[b'x'; 300]));
        input.extend(frame(2, &[0; 70_000]));
        let mut whole = FrameScanner::new(100_000);
        let expected = ends_of(&mut whole, &input).expect("within the limit");
        assert_eq!(expected.len(), 4);
        assert_eq!(expected.last(), Some(&input.len()));
        for split in 0..input.len().min(400) {
            let mut scanner = FrameScanner::new(100_000);
            let mut ends = ends_of(&mut scanner, &input[..split]).expect("first part");
            let rest = ends_of(&mut scanner, &input[split..]).expect("second part");
            ends.extend(rest.into_iter().map(|e| e + split));
            assert_eq!(ends, expected, "split at {split}");
        }
    }

    #[test]
    fn an_oversized_frame_is_refused_on_its_header() {
        // A 2^40-byte declaration, header only: refused before any payload arrives.
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        let mut scanner = FrameScanner::new(16 * 1024);
        assert_eq!(
            ends_of(&mut scanner, &header),
            Err(Oversized { declared: 1 << 40, limit: 16 * 1024 })
        );
        // A continuation frame is held to the same limit.
        let mut scanner = FrameScanner::new(100);
        let mut input = vec![0x01, 0x80 | 50, 1, 2, 3, 4];
        input.extend_from_slice(&[0; 50]);
        input.extend(frame(0, &[0; 101]));
        assert_eq!(ends_of(&mut scanner, &input), Err(Oversized { declared: 101, limit: 100 }));
    }

    #[test]
    fn feeding_stops_after_the_frames_asked_for() {
        let mut input = Vec::new();
        for _ in 0..5 {
            input.extend(frame(1, b"ab"));
        }
        let mut scanner = FrameScanner::new(100);
        let mut ends = Vec::new();
        let n = scanner.feed(&input, 2, |e| ends.push(e)).expect("small frames");
        assert_eq!(ends, vec![8, 16]);
        assert_eq!(n, 16);
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..2000), limit in 0usize..5000) {
            let mut scanner = FrameScanner::new(limit);
            let _ = scanner.feed(&input, usize::MAX, |_| {});
        }
    }

    #[actix_rt::test]
    async fn the_gate_holds_input_until_frames_are_decoded() {
        // 200 small frames arrive at once: the gate lets through at most its budget until
        // the session reports frames decoded.
        let mut input = Vec::new();
        for _ in 0..200 {
            input.extend(frame(1, &[b'a'; 100]));
        }
        let chunks = futures_util::stream::iter(vec![Ok(Bytes::from(input))]);
        let gate = FrameGate::default();
        let mut payload = GatedPayload::new(chunks, 100, &gate);
        let first = payload.next().await.expect("bytes").expect("ok");
        assert!(first.len() as u64 <= budget(100) as u64, "{} bytes let through", first.len());
        let stalled = futures_util::poll!(payload.next());
        assert!(stalled.is_pending(), "nothing more before a frame is decoded");
        let mut total = first.len();
        while total < 200 * 106 {
            gate.frame_handled();
            if let Poll::Ready(Some(Ok(more))) = futures_util::poll!(payload.next()) {
                total += more.len();
            }
        }
        assert_eq!(total, 200 * 106);
    }

    #[actix_rt::test]
    async fn the_gate_fails_on_an_oversized_frame() {
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        let chunks = futures_util::stream::iter(vec![Ok(Bytes::from(header))]);
        let gate = FrameGate::default();
        let mut payload = GatedPayload::new(chunks, 16 * 1024, &gate);
        assert!(matches!(payload.next().await, Some(Err(PayloadError::Overflow))));
        assert!(payload.next().await.is_none());
        assert_eq!(gate.oversized().map(|o| o.declared), Some(1 << 40));
    }
}
