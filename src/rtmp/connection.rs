//! One RTMP connection: the socket loop around its sans-IO [`Session`].
//!
//! It reads the socket (merged reads for a publisher, see `read_merge`; TCP or TLS, see
//! `transport`), feeds every byte to the session and carries out the session's actions in
//! order: writes, frames and configurations for the publisher's [`StreamPublisher`],
//! admission (`admission::admit_publish` / `admit_play`, whose answers go back to the
//! session), a player's [`ViewerSession`](zenlive_actors::ViewerSession) whose frames come
//! back through a bounded queue and are written here on the players' grid. The timers
//! (handshake, idle, write pacing) are here too; protocol and policy are the session's.
//! Every failure closes only this connection, with a log line naming the peer and the
//! stream.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use zenlive_actors::events::{ConnectionKind, RejectReason};
use zenlive_actors::stream::PublisherCommand;
use zenlive_actors::{MediaFrame, Protocol, StreamKey, StreamPublisher};

use super::read_merge::{set_recv_lowat, ReadMerge};
use super::session::{Action, Ended, Ignored, Session};
use super::sink::RtmpSink;
use super::transport::Reader;
use crate::admission::{self, Publishing, Refusal, Request, Ticket};
use crate::context::NodeContext;
use crate::grid;
use crate::refusals::Limit;
use zenlive_actors::quota::Slot;

/// Frames queued for one player before it counts as behind (about a second of media).
const PLAYER_QUEUE_FRAMES: usize = 96;
/// How long one write to a player may take before the player is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a refused client is given to read the reason before the socket closes.
const LINGER: Duration = Duration::from_secs(2);
/// Idle checks per idle timeout (see `Connection::run`).
const IDLE_TICKS: u32 = 4;
/// Bytes read from a publisher's socket at a time.
const READ_BUFFER: usize = 64 * 1024;
/// Bytes read at a time before a connection publishes or plays.
const COMMAND_READ_BUFFER: usize = 4096;
/// The read buffer of a playing connection (its input is acknowledgements, mostly).
const PLAYER_READ_BUFFER: usize = 512;
/// Kernel send buffer of a playing connection (Linux doubles it). Left to autotuning, a
/// viewer that stops reading pins up to 4 MB of kernel memory and hides its stall for a
/// minute; 256 KiB still carries 40 Mbit/s at 100 ms round trip.
const PLAYER_SEND_BUFFER: usize = 256 * 1024;
/// Action slots a publisher keeps between reads (a 64 KiB read of media makes a few dozen).
const KEPT_ACTION_SLOTS: usize = 64;

/// Why a connection closed.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("client closed the connection")]
    Eof,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake not completed in time")]
    HandshakeTimeout,
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("bad input: {1}")]
    BadInput(RejectReason, String),
    #[error("write to player timed out")]
    WriteTimeout,
    #[error("{0}")]
    Refused(String),
    /// The stream closed the publisher; the reason says why (`kicked: …`, shutdown).
    #[error("{0}")]
    Kicked(String),
    #[error("stream ended")]
    StreamEnded,
}

/// An admission answer, to hand back to the session.
enum Answer {
    Publish(Result<Publishing, Refusal>),
    Play(Result<Ticket, Refusal>),
}

/// Serves one accepted connection to its end.
/// `pending` is the connection's place under `rtmp.max_pending_per_address`, given back
/// once it publishes or plays.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    node: Arc<NodeContext>,
    pending: Slot,
) {
    // Media is latency-sensitive and written in whole messages: never wait for Nagle.
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    serve_on(reader, writer, peer, node, pending).await;
}

/// Serves one RTMPS connection: the TLS handshake (within `rtmp.handshake_timeout`), then
/// RTMP over it, as [`serve`].
pub(crate) async fn serve_tls(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    peer: SocketAddr,
    node: Arc<NodeContext>,
    pending: Slot,
) {
    let _ = stream.set_nodelay(true);
    // Set before the socket disappears behind TLS (see `PLAYER_SEND_BUFFER`).
    let _ = SockRef::from(&stream).set_send_buffer_size(PLAYER_SEND_BUFFER);
    let limit = node.live().rtmp.handshake_timeout;
    let tls = match timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            node.counters.reject(RejectReason::Handshake);
            if node.refusals.should_log(Some(peer.ip()), "rtmps_handshake") {
                tracing::warn!(%peer, %error, "rtmps: TLS handshake failed (more from this address within a minute are counted, not logged)");
            }
            return;
        }
        Err(_) => {
            node.counters.reject(RejectReason::HandshakeTimeout);
            return;
        }
    };
    let (reader, writer) = tokio::io::split(tls);
    serve_on(reader, writer, peer, node, pending).await;
}

async fn serve_on<R: Reader, W: AsyncWrite + Unpin + Send>(
    reader: R,
    writer: W,
    peer: SocketAddr,
    node: Arc<NodeContext>,
    pending: Slot,
) {
    let _open = node.counters.connection(ConnectionKind::Rtmp);
    let session = Session::new(node.rtmp_partial.share());
    let mut conn = Connection {
        peer,
        node,
        pending: Some(pending),
        reader,
        writer,
        session,
        actions: Vec::new(),
        publisher: None,
        ticket: None,
        commands: None,
        media: None,
    };
    let result = conn.run().await;
    conn.close(&result);
    if matches!(result, Err(Closed::Refused(_))) {
        conn.linger().await;
    }
}

struct Connection<R, W> {
    peer: SocketAddr,
    node: Arc<NodeContext>,
    /// The place under `rtmp.max_pending_per_address`, until the connection is admitted.
    pending: Option<Slot>,
    reader: R,
    writer: W,
    session: Session,
    /// The session's actions of one read, kept to reuse the allocation.
    actions: Vec<Action>,
    /// The stream this connection publishes to (boxed: most connections play).
    publisher: Option<Box<StreamPublisher>>,
    /// A player's admission, between the answer and the session's [`Action::Play`].
    ticket: Option<Ticket>,
    commands: Option<mpsc::Receiver<PublisherCommand>>,
    media: Option<mpsc::Receiver<Bytes>>,
}

/// A stream for log lines, `-` when there is none (formatted only if the line is logged).
struct StreamName<'a>(Option<&'a StreamKey>);

impl std::fmt::Display for StreamName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(key) => std::fmt::Display::fmt(key, f),
            None => f.write_str("-"),
        }
    }
}

/// Waits on an optional receiver; pending forever when there is none.
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Most buffers handed to one `writev`.
const MAX_IOVECS: usize = 64;
/// Most queued messages a player takes for one write: a new player's first GOP leaves in a
/// few writes of this many, a playing one's few frames per tick in one. Small, because the
/// batch's vector is kept for the connection's life.
const BATCH_FRAMES: usize = 16;

/// Writes every buffer of `batch` with vectored writes, then empties it.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < batch.len() {
        let slices: Vec<IoSlice<'_>> =
            batch[first..].iter().take(MAX_IOVECS).map(|b| IoSlice::new(b)).collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(head) = batch.get_mut(first) else { break };
            if written >= head.len() {
                written -= head.len();
                first += 1;
            } else {
                head.advance(written);
                written = 0;
            }
        }
    }
    batch.clear();
    Ok(())
}

impl<R: Reader, W: AsyncWrite + Unpin + Send> Connection<R, W> {
    async fn run(&mut self) -> Result<(), Closed> {
        let node = Arc::clone(&self.node);
        let live = node.live();
        let rtmp = &live.rtmp;
        // Commands and a player's acknowledgements are small: the full buffer only once
        // the connection publishes (see below).
        let mut buf = BytesMut::with_capacity(COMMAND_READ_BUFFER);
        self.handshake(rtmp.handshake_timeout, &mut buf).await?;

        let idle = rtmp.idle_timeout;
        // Silence is detected by a tick every quarter of the timeout that checks whether
        // anything was read since the one before: a timer per read (`timeout` around each
        // read) cost a timer-wheel insert and removal per message. Closes after between 1
        // and 1.25 times the timeout of silence.
        let mut idle_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + idle / IDLE_TICKS,
            (idle / IDLE_TICKS).max(Duration::from_millis(10)),
        );
        idle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet_limit = IDLE_TICKS;
        let mut quiet_ticks = 0;
        let mut read_since_tick = false;
        // Set once publishing starts (and merging is on): see `read_merge`. The idle tick
        // then becomes its flush tick.
        let merge_delay = rtmp.publish_read_delay;
        let mut merge: Option<ReadMerge> = None;
        // Grows to `BATCH_FRAMES` once playing (`recv_many` never takes more).
        let mut batch: Vec<Bytes> = Vec::new();
        let write_delay = live.play.write_delay;
        let mut next_flush: Option<tokio::time::Instant> = None;
        loop {
            // Players may legitimately send nothing for a long time; everyone else must not.
            let playing = self.session.is_playing();
            tokio::select! {
                read = self.reader.read_buf(&mut buf) => {
                    match read {
                        Ok(0) => return Err(Closed::Eof),
                        Ok(n) => {
                            read_since_tick = true;
                            if let Some(merge) = merge.as_mut() {
                                merge.record(n);
                            }
                            // One buffer, reused (grown once, when publishing starts):
                            // the session's reader copies what it keeps, so nothing here
                            // is allocated per read.
                            self.input(&buf).await?;
                            buf.clear();
                            if buf.capacity() > PLAYER_READ_BUFFER && self.session.is_playing() {
                                // A player sends acknowledgements and the odd command:
                                // a smaller buffer for the hours it watches.
                                buf = BytesMut::with_capacity(PLAYER_READ_BUFFER);
                            }
                            if buf.capacity() < READ_BUFFER
                                && self.session.is_publishing()
                            {
                                // Publishing started: the full read buffer, and merging.
                                buf.reserve(READ_BUFFER);
                                if !merge_delay.is_zero() && self.reader.socket().is_some() {
                                    let now = tokio::time::Instant::now();
                                    let started = ReadMerge::new(merge_delay, now);
                                    idle_tick = started.flush_interval();
                                    quiet_limit = started.flush_ticks_in(idle);
                                    merge = Some(started);
                                }
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                _ = idle_tick.tick(), if !playing => {
                    if let Some(merge) = merge.as_mut() {
                        if self.flush_merged(merge, &mut buf).await? {
                            read_since_tick = true;
                        }
                    }
                    quiet_ticks = if read_since_tick { 0 } else { quiet_ticks + 1 };
                    read_since_tick = false;
                    if quiet_ticks >= quiet_limit {
                        return Err(Closed::Idle(idle));
                    }
                }
                command = recv_opt(&mut self.commands) => match command {
                    Some(PublisherCommand::Close { reason }) => return Err(Closed::Kicked(reason)),
                    // RTMP has no way to ask an encoder for a keyframe.
                    Some(PublisherCommand::KeyframeRequest) => {}
                    None => return Err(Closed::StreamEnded),
                },
                count = async {
                    match &mut self.media {
                        Some(rx) => {
                            if let Some(at) = next_flush {
                                tokio::time::sleep_until(at).await;
                            }
                            rx.recv_many(&mut batch, BATCH_FRAMES).await
                        }
                        None => std::future::pending().await,
                    }
                } => {
                    if count == 0 {
                        return Err(Closed::StreamEnded);
                    }
                    // Frames that arrived together leave together: one syscall per batch.
                    timeout(WRITE_TIMEOUT, write_all_vectored(&mut self.writer, &mut batch))
                        .await
                        .map_err(|_| Closed::WriteTimeout)??;
                    // The next write waits for the next tick of the players' grid: what
                    // arrives meanwhile goes out with it (see `play.write_delay`). A
                    // full batch (a new player's first GOP) continues at once.
                    next_flush = None;
                    if !write_delay.is_zero() && count < BATCH_FRAMES {
                        next_flush = Some(grid::next_tick(write_delay, tokio::time::Instant::now()));
                    }
                }
            }
        }
    }

    /// The flush tick of a merged-read publisher: reads what waits below the low-water mark
    /// and follows the publisher's rate with the mark. Returns whether anything was read.
    async fn flush_merged(
        &mut self,
        merge: &mut ReadMerge,
        buf: &mut BytesMut,
    ) -> Result<bool, Closed> {
        let Some(socket) = self.reader.socket() else { return Ok(false) };
        if let Some(mark) = merge.retune(tokio::time::Instant::now()) {
            if let Err(error) = set_recv_lowat(socket, mark) {
                tracing::debug!(peer = %self.peer, %error, "cannot set SO_RCVLOWAT");
            }
        }
        if merge.mark() <= 1 {
            return Ok(false); // every byte wakes the reader: nothing can be waiting
        }
        // Bypasses tokio's readiness, which is clear until the mark is reached. The socket
        // is non-blocking: nothing queued is WouldBlock. Below the mark means less than one
        // buffer (see `read_merge::MAX_MARK`).
        buf.resize(merge.mark().min(READ_BUFFER), 0);
        let read = std::io::Read::read(&mut &*SockRef::from(socket), buf);
        let n = match read {
            Ok(0) => return Err(Closed::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e.into()),
        };
        buf.truncate(n);
        if n > 0 {
            merge.record(n);
            self.input(buf).await?;
        }
        buf.clear();
        Ok(n > 0)
    }

    /// Reads until the session's handshake is done, within `limit` of reads (a peer that
    /// trickles it in is cut off at the deadline, however often it sends).
    async fn handshake(&mut self, limit: Duration, buf: &mut BytesMut) -> Result<(), Closed> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.session.handshaking() {
            let read = tokio::time::timeout_at(deadline, self.reader.read_buf(buf))
                .await
                .map_err(|_| Closed::HandshakeTimeout)?;
            if read? == 0 {
                return Err(Closed::Eof);
            }
            self.input(buf).await?;
            buf.clear();
        }
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        timeout(WRITE_TIMEOUT, self.writer.write_all(bytes))
            .await
            .map_err(|_| Closed::WriteTimeout)??;
        Ok(())
    }

    /// Feeds bytes read to the session and carries out what it answers.
    async fn input(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        let mut actions = std::mem::take(&mut self.actions);
        self.session.handle_input(bytes, &mut actions);
        let result = self.act(&mut actions).await;
        actions.clear();
        // A publisher's reads make dozens of actions each; anyone else's a few, now and
        // then: nothing is kept for them (a player holds its connection for hours).
        let kept = if self.session.is_publishing() { KEPT_ACTION_SLOTS } else { 0 };
        actions.shrink_to(kept);
        self.actions = actions;
        result
    }

    /// Carries out the session's actions in order. An admission question is always the
    /// last of a batch (the session waits for the answer); the answer's actions follow.
    async fn act(&mut self, actions: &mut Vec<Action>) -> Result<(), Closed> {
        loop {
            let mut answer = None;
            for action in actions.drain(..) {
                match action {
                    Action::Write(bytes) => self.write(&bytes).await?,
                    Action::Frame(frame) => self.push(frame).await?,
                    Action::Config(config) => {
                        if let Some(publisher) = self.publisher.as_mut() {
                            publisher.set_config(&config);
                        }
                    }
                    // Admission futures are boxed: they are large (auth, deciders, the
                    // registry) and run once, while the connection's future lives as long
                    // as the connection.
                    Action::AdmitPublish { key, token } => {
                        let request = self.request(key, token.as_deref());
                        let admit = Box::pin(admission::admit_publish(&self.node, request));
                        answer = Some(Answer::Publish(admit.await));
                    }
                    Action::AdmitPlay { key, token } => {
                        let request = self.request(key, token.as_deref());
                        let admit = Box::pin(admission::admit_play(&self.node, request));
                        answer = Some(Answer::Play(admit.await));
                    }
                    Action::Play { stream_id } => self.play(stream_id),
                    Action::PublishFinished => {
                        if let Some(publisher) = self.publisher.take() {
                            publisher.finish("publisher finished");
                        }
                        self.commands = None;
                    }
                    Action::PlayFinished => self.media = None,
                    Action::Ignored(what) => self.ignored(what),
                    Action::Close(ended) => return Err(self.ended(ended).await),
                }
            }
            match answer {
                None => return Ok(()),
                Some(Answer::Publish(Ok(Publishing { publisher, commands, .. }))) => {
                    let key = publisher.key().clone();
                    self.admitted();
                    self.publisher = Some(Box::new(publisher));
                    self.commands = Some(commands);
                    self.session.publish_admitted(key, actions);
                }
                Some(Answer::Publish(Err(refusal))) => {
                    self.session.publish_refused(&refusal, actions);
                }
                Some(Answer::Play(Ok(ticket))) => {
                    let key = ticket.key().clone();
                    self.ticket = Some(ticket);
                    self.session.play_admitted(key, actions);
                }
                Some(Answer::Play(Err(refusal))) => self.session.play_refused(&refusal, actions),
            }
        }
    }

    fn request<'a>(&self, key: StreamKey, token: Option<&'a str>) -> Request<'a> {
        Request { key, protocol: Protocol::Rtmp, peer: Some(self.peer), token }
    }

    /// Hands one frame of the publisher to its stream.
    async fn push(&mut self, frame: MediaFrame) -> Result<(), Closed> {
        // The session gives frames only while publishing, which starts with `publisher`.
        let Some(publisher) = self.publisher.as_mut() else { return Ok(()) };
        publisher.push(frame).await.map_err(|_| Closed::StreamEnded)
    }

    /// The play is accepted: the player's queue, and its viewer session.
    fn play(&mut self, stream_id: u32) {
        // The session says Play only after `play_admitted`, which follows a ticket.
        let Some(ticket) = self.ticket.take() else { return };
        // (RTMPS connections had theirs bounded before the TLS handshake.)
        if let Some(socket) = self.reader.socket() {
            if let Err(error) = SockRef::from(socket).set_send_buffer_size(PLAYER_SEND_BUFFER) {
                tracing::debug!(peer = %self.peer, %error, "could not bound the send buffer");
            }
        }
        let (tx, rx) = mpsc::channel(PLAYER_QUEUE_FRAMES);
        ticket.watch(Box::new(RtmpSink::new(tx, stream_id)));
        self.admitted();
        self.media = Some(rx);
    }

    fn ignored(&self, what: Ignored) {
        let peer = &self.peer;
        match what {
            Ignored::MediaNotPublishing => {
                tracing::debug!(%peer, "ignoring media from a connection that is not publishing");
            }
            Ignored::MediaSkipped(why) => {
                let stream = StreamName(self.session.stream());
                tracing::debug!(%peer, %stream, why, "media message skipped");
            }
            Ignored::Command(command) => {
                tracing::debug!(%peer, %command, "ignoring RTMP command");
            }
            Ignored::Message(type_id) => {
                tracing::debug!(%peer, type_id, "ignoring unsupported RTMP message");
            }
        }
    }

    /// What the session's end becomes: counted and logged as the kind deserves.
    async fn ended(&mut self, ended: Ended) -> Closed {
        match ended {
            Ended::BadInput(why, detail) => Closed::BadInput(why, detail),
            Ended::NodeBudget => {
                let budget = &self.node.rtmp_partial;
                let detail = format!(
                    "the node holds {} bytes of partial RTMP messages, over rtmp.max_partial_bytes ({})",
                    budget.used(),
                    budget.max()
                );
                self.node.refusals.refuse(Some(self.peer.ip()), Limit::RtmpPartialBytes, &detail);
                Closed::BadInput(RejectReason::TooMuchBuffered, detail)
            }
            Ended::Refused(description) => Closed::Refused(description),
            Ended::Unsupported { reason, status } => {
                let stream = StreamName(self.session.stream());
                tracing::warn!(peer = %self.peer, %stream, %reason, "unsupported codec; closing publisher");
                self.node.counters.reject(RejectReason::UnsupportedCodec);
                // Best effort: the connection closes either way.
                let _ = self.write(&status).await;
                Closed::Refused(reason.to_string())
            }
        }
    }

    /// The connection publishes or plays: it no longer counts against its address's
    /// `rtmp.max_pending_per_address`.
    fn admitted(&mut self) {
        self.pending = None;
    }

    /// Keeps reading (and discarding) briefly, so a client that only reads between writes,
    /// like FFmpeg publishing, receives the error we sent before the socket closes.
    async fn linger(&mut self) {
        // On the heap: an array here would be part of every connection's future.
        let mut sink = vec![0u8; 4096];
        let _ = timeout(LINGER, async {
            while matches!(self.reader.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    fn close(&mut self, result: &Result<(), Closed>) {
        let reason = match result {
            Ok(()) => "closed".to_owned(),
            Err(e) => e.to_string(),
        };
        let stream = StreamName(self.session.stream());
        let rejected = match result {
            Err(Closed::BadInput(why, _)) => Some(*why),
            Err(Closed::HandshakeTimeout) => Some(RejectReason::HandshakeTimeout),
            Err(Closed::Idle(_)) => Some(RejectReason::IdleTimeout),
            _ => None,
        };
        match rejected {
            Some(why) => {
                self.node.counters.reject(why);
                // Counted always; logged once a minute per address and reason.
                if self.node.refusals.should_log(Some(self.peer.ip()), why.as_str()) {
                    tracing::warn!(peer = %self.peer, %stream, %reason, reject = why.as_str(), "rtmp connection rejected (more from this address for this reason within a minute are counted, not logged)");
                }
            }
            _ => {
                tracing::info!(peer = %self.peer, %stream, %reason, "rtmp connection closed")
            }
        }
        if let Some(publisher) = self.publisher.take() {
            publisher.finish(reason);
        }
    }
}
