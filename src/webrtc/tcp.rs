//! ICE-TCP (RFC 6544): the one TCP port (`webrtc.tcp_addr`) a client on a network without
//! UDP reaches a session by. The node is ICE-lite and advertises passive TCP host
//! candidates only: clients connect, the node never does.
//!
//! Each connection carries RFC 4571 frames (a 2-byte length, then one STUN, DTLS, RTP or
//! RTCP packet; [`framing`]). A connection is unidentified until its first frame, which must
//! be a STUN binding request whose `USERNAME` names a session by the ufrag of its answer
//! (as on UDP, [`super::udp`]); from then on every frame goes to that session's queue
//! (with [`Via::Tcp`], so the session answers on this connection) and the session's
//! packets for it are framed onto it.
//!
//! Bounds, each counted in `zenlive_webrtc_tcp_refused_total{reason}`:
//! - at most [`MAX_UNIDENTIFIED`] connections wait for their first frame (`too_many`), each
//!   for at most [`HANDSHAKE_TIMEOUT`] (`timeout`);
//! - at most `webrtc.max_sessions` connections at all (`too_many`);
//! - a frame longer than [`MAX_PACKET`] (`oversized`: no WebRTC packet is, as each must
//!   fit a UDP datagram too), so a connection buffers at most one such frame;
//! - a first frame that is not a binding request naming a session (`not_stun`,
//!   `unknown_session`);
//! - a connection that sends no whole frame for `webrtc.idle_timeout` (`idle`).
//!
//! A session whose queue is full makes its connection wait (TCP's own back-pressure); a
//! connection whose outgoing queue is full loses the packet (as the session's UDP would).
//! A connection ends with its session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::stats::WebRtcStats;
use super::transport::{TcpLink, Via};
use super::udp::{stun_username, Datagram, SessionId};

/// Longest frame taken: a WebRTC packet also fits a UDP datagram, so anything longer is not
/// one (and no connection buffers more).
pub const MAX_PACKET: usize = 8 * 1024;

/// Connections at once that have not yet named a session.
pub const MAX_UNIDENTIFIED: usize = 64;

/// How long a new connection may take to send its first frame.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Packets queued for one connection before the session's next packets for it are lost.
const OUT_QUEUE: usize = 512;

/// The RFC 4571 framing: a 2-byte big-endian length, then that many bytes; frames longer
/// than [`MAX_PACKET`] are an error.
pub fn framing() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_length(2).max_frame_length(MAX_PACKET).new_codec()
}

/// The sessions a connection's first frame may name: each session's queue by the ufrag of
/// its answer.
#[derive(Default)]
pub struct Routes {
    by_ufrag: Mutex<HashMap<String, (SessionId, mpsc::Sender<Datagram>)>>,
}

impl Routes {
    /// Routes connections naming `ufrag` to `session`'s `queue`.
    pub fn register(&self, session: SessionId, ufrag: String, queue: mpsc::Sender<Datagram>) {
        self.by_ufrag.lock().insert(ufrag, (session, queue));
    }

    /// Forgets `session`.
    pub fn unregister(&self, session: &SessionId) {
        self.by_ufrag.lock().retain(|_, (id, _)| id != session);
    }

    /// The queue of the session a binding request's `USERNAME` names.
    fn find(&self, frame: &[u8]) -> Option<mpsc::Sender<Datagram>> {
        let ufrag = stun_username(frame)?.split(':').next()?;
        self.by_ufrag.lock().get(ufrag).map(|(_, queue)| queue.clone())
    }
}

/// Why a connection was closed early (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many connections (or unidentified ones) at once.
    TooMany,
    /// No first frame within [`HANDSHAKE_TIMEOUT`].
    Timeout,
    /// A frame longer than [`MAX_PACKET`].
    Oversized,
    /// The first frame is not a STUN message with a `USERNAME`.
    NotStun,
    /// The first frame names no open session.
    UnknownSession,
    /// No whole frame for `webrtc.idle_timeout`.
    Idle,
}

impl Refusal {
    /// The label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooMany => "too_many",
            Self::Timeout => "timeout",
            Self::Oversized => "oversized",
            Self::NotStun => "not_stun",
            Self::UnknownSession => "unknown_session",
            Self::Idle => "idle",
        }
    }

    /// Every reason, to show zeros.
    pub const ALL: [Refusal; 6] = [
        Self::TooMany,
        Self::Timeout,
        Self::Oversized,
        Self::NotStun,
        Self::UnknownSession,
        Self::Idle,
    ];
}

/// What the listener and its connections share.
struct Shared {
    routes: Arc<Routes>,
    stats: Arc<WebRtcStats>,
    unidentified: AtomicUsize,
    open: AtomicUsize,
    max_open: usize,
    idle_timeout: Duration,
    shutdown: CancellationToken,
}

/// Counts a connection while it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    /// Counts one unless `max` are counted.
    fn enter(count: &'a AtomicUsize, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(count))
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections on `listener` until `shutdown`; each runs in its own task.
pub async fn run(
    listener: TcpListener,
    routes: Arc<Routes>,
    stats: Arc<WebRtcStats>,
    max_open: usize,
    idle_timeout: Duration,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        routes,
        stats,
        unidentified: AtomicUsize::new(0),
        open: AtomicUsize::new(0),
        max_open,
        idle_timeout,
        shutdown: shutdown.clone(),
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, or a connection reset before it was accepted.
                tracing::debug!(%error, "webrtc: TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        actix_rt::spawn(async move {
            if let Err(refusal) = connection(stream, peer, &shared).await {
                shared.stats.tcp_refused(refusal.reason());
                tracing::debug!(%peer, reason = refusal.reason(), "webrtc: TCP connection refused");
            }
        });
    }
}

/// Serves one connection until it, its session or the node ends.
async fn connection(stream: TcpStream, peer: SocketAddr, shared: &Shared) -> Result<(), Refusal> {
    let Some(_open) = Counted::enter(&shared.open, shared.max_open) else {
        return Err(Refusal::TooMany);
    };
    let waiting = Counted::enter(&shared.unidentified, MAX_UNIDENTIFIED).ok_or(Refusal::TooMany)?;
    shared.stats.tcp_connections.inc();
    shared.stats.tcp_connections_total.inc();
    let result = serve(stream, peer, shared, waiting).await;
    shared.stats.tcp_connections.dec();
    result
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    waiting: Counted<'_>,
) -> Result<(), Refusal> {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else { return Ok(()) };
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, framing());
    let first = tokio::select! {
        _ = shared.shutdown.cancelled() => return Ok(()),
        first = tokio::time::timeout(HANDSHAKE_TIMEOUT, frames.next()) => first,
    };
    let first = match first {
        Err(_) => return Err(Refusal::Timeout),
        Ok(None) => return Ok(()),
        Ok(Some(Err(error))) => return ended(&error),
        Ok(Some(Ok(frame))) => frame,
    };
    if stun_username(&first).is_none() {
        return Err(Refusal::NotStun);
    }
    let queue = shared.routes.find(&first).ok_or(Refusal::UnknownSession)?;
    drop(waiting);
    let (out, outgoing) = mpsc::channel(OUT_QUEUE);
    let link = TcpLink { local, out };
    let datagram = |data: BytesMut| Datagram {
        from: peer,
        at: Instant::now(),
        data,
        via: Via::Tcp(link.clone()),
    };
    if queue.send(datagram(first)).await.is_err() {
        return Ok(());
    }
    let reader = async {
        loop {
            let frame = match tokio::time::timeout(shared.idle_timeout, frames.next()).await {
                Err(_) => return Err(Refusal::Idle),
                Ok(None) => return Ok(()),
                Ok(Some(Err(error))) => return ended(&error),
                Ok(Some(Ok(frame))) => frame,
            };
            if queue.send(datagram(frame)).await.is_err() {
                return Ok(()); // The session ended.
            }
        }
    };
    let writer = write_all(FramedWrite::new(write, framing()), outgoing);
    tokio::select! {
        _ = shared.shutdown.cancelled() => Ok(()),
        () = queue.closed() => Ok(()), // The session ended.
        read = reader => read,
        () = writer => Ok(()),
    }
}

/// Frames the session's packets onto the connection until the session drops its link or the
/// connection fails.
async fn write_all(
    mut sink: FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>,
    mut outgoing: mpsc::Receiver<BytesMut>,
) {
    while let Some(packet) = outgoing.recv().await {
        if sink.feed(Bytes::from(packet)).await.is_err() {
            return;
        }
        while let Ok(packet) = outgoing.try_recv() {
            if sink.feed(Bytes::from(packet)).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
    }
}

/// A read error: an oversized frame is refused; a connection error (reset) just ends it.
fn ended(error: &std::io::Error) -> Result<(), Refusal> {
    match error.get_ref().is_some_and(|e| e.is::<tokio_util::codec::LengthDelimitedCodecError>()) {
        true => Err(Refusal::Oversized),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::udp::tests::binding_request;
    use proptest::prelude::*;
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;

    fn encode(packets: &[Vec<u8>]) -> BytesMut {
        let mut codec = framing();
        let mut wire = BytesMut::new();
        for packet in packets {
            codec.encode(Bytes::from(packet.clone()), &mut wire).expect("fits");
        }
        wire
    }

    #[test]
    fn a_frame_is_a_two_byte_length_then_the_packet() {
        let wire = encode(&[vec![1, 2, 3], vec![]]);
        assert_eq!(&wire[..], &[0, 3, 1, 2, 3, 0, 0]);
    }

    #[test]
    fn a_frame_longer_than_a_packet_is_refused_before_it_is_buffered() {
        let mut codec = framing();
        let mut wire = BytesMut::from(&[0xff, 0xff, 1, 2, 3][..]);
        let error = codec.decode(&mut wire).expect_err("oversized");
        assert_eq!(ended(&error), Err(Refusal::Oversized));
        assert!(codec.encode(Bytes::from(vec![0; MAX_PACKET + 1]), &mut wire).is_err());
    }

    proptest! {
        #[test]
        fn frames_split_anywhere_come_out_whole(
            packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1500), 0..8),
            cuts in proptest::collection::vec(1usize..700, 0..20),
        ) {
            let wire = encode(&packets);
            let mut codec = framing();
            let mut buffer = BytesMut::new();
            let mut decoded = Vec::new();
            let mut rest = &wire[..];
            for cut in cuts.into_iter().chain(std::iter::repeat(usize::MAX)) {
                let take = cut.min(rest.len());
                buffer.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                while let Some(frame) = codec.decode(&mut buffer).expect("valid") {
                    decoded.push(frame.to_vec());
                }
                if rest.is_empty() {
                    break;
                }
            }
            prop_assert_eq!(decoded, packets);
            prop_assert!(buffer.is_empty());
        }

        #[test]
        fn any_bytes_never_panic_and_buffer_at_most_a_packet(
            data in proptest::collection::vec(any::<u8>(), 0..20_000),
        ) {
            let mut codec = framing();
            let mut buffer = BytesMut::new();
            for chunk in data.chunks(997) {
                buffer.extend_from_slice(chunk);
                loop {
                    match codec.decode(&mut buffer) {
                        Ok(Some(frame)) => prop_assert!(frame.len() <= MAX_PACKET),
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
                // What waits is at most one frame's header and body.
                prop_assert!(buffer.len() < 2 + MAX_PACKET + 997);
            }
        }

        #[test]
        fn a_first_frame_names_a_session_only_by_its_ufrag(
            data in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let routes = Routes::default();
            let (queue, _rx) = mpsc::channel(1);
            routes.register("s".into(), "u".into(), queue);
            let _ = routes.find(&data);
        }
    }

    #[test]
    fn routes_forget_a_session() {
        let routes = Routes::default();
        let (queue, _rx) = mpsc::channel(1);
        routes.register("s".into(), "ufrag".into(), queue);
        let request = binding_request("ufrag:peer");
        assert!(routes.find(&request).is_some());
        assert!(routes.find(&binding_request("other:peer")).is_none());
        routes.unregister(&"s".into());
        assert!(routes.find(&request).is_none());
    }
}
