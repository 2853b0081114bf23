//! One RTMP connection: the thin shell around rml_rtmp's sans-IO `ServerSession`.
//!
//! It reads the socket into whole messages ([`ChunkReader`]), sends audio and video of a
//! publishing connection straight to its stream, hands every other message to rml_rtmp's
//! session, and acts on its events: a publish request becomes a [`StreamPublisher`], a play
//! request a [`ViewerSession`] whose frames come back through a bounded queue and are
//! written here. Policy (which names, which codecs) is decided here, never inside rml_rtmp.
//! Every failure closes only this connection, with a log line naming the peer and the
//! stream.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use zenlive_actors::events::{ConnectionKind, RejectReason};
use zenlive_actors::stream::PublisherCommand;
use zenlive_actors::{Protocol, StreamKey, StreamPublisher};

use crate::admission::{self, Publishing, Refusal, Request};
use zenlive_media::flv::TagType;
use zenlive_media::flv_frames::{FlvToFrames, Ingested};

use super::budget::Share;
use super::chunks::{self, SERVER_CHUNK_SIZE, SHARED_STREAM_ID};
use super::metadata::encode_on_metadata;
use super::read_merge::{set_recv_lowat, ReadMerge};
use super::reader::{ChunkReader, Message, Violation};
use super::sink::RtmpSink;
use super::transport::Reader;
use crate::auth::token;
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
/// Message slots kept between reads (a 64 KiB read of media holds a few dozen messages).
const KEPT_MESSAGE_SLOTS: usize = 64;
/// Idle checks per idle timeout (see `Connection::run`).
const IDLE_TICKS: u32 = 4;
/// Bytes read from a publisher's socket at a time.
const READ_BUFFER: usize = 64 * 1024;
/// Bytes read at a time before a connection publishes (and all along for a player).
const COMMAND_READ_BUFFER: usize = 4096;
/// The chunk stream rml_rtmp's serializer puts AMF0 data messages on.
const RML_DATA_CSID: u8 = 3;
/// Kernel send buffer of a playing connection (Linux doubles it). Left to autotuning, a
/// viewer that stops reading pins up to 4 MB of kernel memory and hides its stall for a
/// minute; 256 KiB still carries 40 Mbit/s at 100 ms round trip.
const PLAYER_SEND_BUFFER: usize = 256 * 1024;

/// RTMP message type ids the connection handles itself.
const TYPE_SET_CHUNK_SIZE: u8 = 1;
const TYPE_ABORT: u8 = 2;
const TYPE_WINDOW_ACK_SIZE: u8 = 5;
const TYPE_AUDIO: u8 = 8;
const TYPE_VIDEO: u8 = 9;
const TYPE_AMF3_COMMAND: u8 = 17;
const TYPE_AMF0_COMMAND: u8 = 20;
/// Most `createStream` commands one connection may send. rml_rtmp keeps an entry for each
/// stream created and never forgets one before `deleteStream`, so without a bound a peer
/// could grow its session without end before any auth; OBS and FFmpeg send one.
const MAX_CREATE_STREAM: u32 = 8;

/// Acknowledgements owed to the peer: after every `window` bytes received (the size the
/// peer asked for with Window Acknowledgement Size), the total received so far.
#[derive(Debug, Default)]
struct Acks {
    window: u32,
    total: u32,
    since_last: u32,
}

impl Acks {
    /// Counts `n` bytes received; the sequence number to acknowledge when one is due.
    fn received(&mut self, n: usize) -> Option<u32> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        // RTMP sequence numbers wrap at 2^32.
        self.total = self.total.wrapping_add(n);
        self.since_last = self.since_last.saturating_add(n);
        if self.window == 0 || self.since_last < self.window {
            return None;
        }
        self.since_last = 0;
        Some(self.total)
    }
}

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

impl From<Violation> for Closed {
    fn from(violation: Violation) -> Self {
        let reason = match violation {
            Violation::ChunkSize(_) => RejectReason::ChunkSize,
            Violation::UnknownMessageType(_) => RejectReason::UnknownMessageType,
            Violation::MessageTooLarge { .. } => RejectReason::MessageTooLarge,
            Violation::NoPreviousHeader(_) => RejectReason::Malformed,
            Violation::TooManyStreams | Violation::TooMuchBuffered(_) => {
                RejectReason::TooMuchBuffered
            }
        };
        Self::BadInput(reason, violation.to_string())
    }
}

enum Role {
    Idle,
    Publishing { publisher: Box<StreamPublisher>, frames: FlvToFrames },
    Playing { key: StreamKey },
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
    let partial = node.rtmp_partial.share();
    let mut conn = Connection {
        peer,
        node,
        pending: Some(pending),
        partial,
        reader,
        writer,
        session: None,
        dechunker: ChunkReader::unadmitted(),
        relay: ChunkSerializer::new(),
        messages: Vec::new(),
        acks: Acks::default(),
        app: None,
        app_token: None,
        role: Role::Idle,
        streams_created: 0,
        requested: None,
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
    /// What `dechunker` holds, counted in the node's `rtmp.max_partial_bytes`.
    partial: Share,
    reader: R,
    writer: W,
    session: Option<ServerSession>,
    dechunker: ChunkReader,
    /// Re-chunks the messages rml_rtmp handles for its own deserializer (at its default
    /// chunk size, which it keeps: Set Chunk Size is applied by `dechunker`, not forwarded).
    relay: ChunkSerializer,
    /// The messages of one read, kept to reuse the allocation.
    messages: Vec<Message>,
    acks: Acks,
    app: Option<String>,
    /// A `?token=` that came with the app name in `connect`.
    app_token: Option<String>,
    role: Role,
    /// `createStream` commands received (see [`MAX_CREATE_STREAM`]).
    streams_created: u32,
    /// The stream last asked to publish or play, for the close line of a refused request.
    requested: Option<StreamKey>,
    commands: Option<mpsc::Receiver<PublisherCommand>>,
    media: Option<mpsc::Receiver<Bytes>>,
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
        let leftover = timeout(rtmp.handshake_timeout, self.handshake())
            .await
            .map_err(|_| Closed::HandshakeTimeout)??;
        let config = ServerSessionConfig {
            chunk_size: SERVER_CHUNK_SIZE as u32,
            ..ServerSessionConfig::new()
        };
        let (session, initial) = ServerSession::new(config).map_err(|e| {
            Closed::BadInput(RejectReason::Malformed, format!("session setup: {e:?}"))
        })?;
        self.session = Some(session);
        self.handle_results(initial).await?;
        if !leftover.is_empty() {
            self.input(&leftover).await?;
        }

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
        // Commands and a player's acknowledgements are small: the full buffer only once
        // the connection publishes (see below).
        let mut buf = BytesMut::with_capacity(COMMAND_READ_BUFFER);
        let mut batch: Vec<Bytes> = Vec::with_capacity(32);
        let write_delay = live.play.write_delay;
        let mut next_flush: Option<tokio::time::Instant> = None;
        loop {
            // Players may legitimately send nothing for a long time; everyone else must not.
            let playing = matches!(self.role, Role::Playing { .. });
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
                            // the parser copies what it keeps, so nothing here is
                            // allocated per read.
                            self.input(&buf).await?;
                            buf.clear();
                            if buf.capacity() < READ_BUFFER
                                && matches!(self.role, Role::Publishing { .. })
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
                    None => return Err(Closed::StreamEnded),
                },
                count = async {
                    match &mut self.media {
                        Some(rx) => {
                            if let Some(at) = next_flush {
                                tokio::time::sleep_until(at).await;
                            }
                            rx.recv_many(&mut batch, MAX_IOVECS).await
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
                    if !write_delay.is_zero() && count < MAX_IOVECS {
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

    /// Runs the server side of the RTMP handshake; returns bytes that followed it.
    async fn handshake(&mut self) -> Result<Vec<u8>, Closed> {
        let mut handshake = Handshake::new(PeerType::Server);
        let mut buf = [0u8; 4096];
        loop {
            let n = self.reader.read(&mut buf).await?;
            if n == 0 {
                return Err(Closed::Eof);
            }
            let slice = buf.get(..n).unwrap_or_default();
            match handshake.process_bytes(slice) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    self.writer.write_all(&response_bytes).await?;
                }
                Ok(HandshakeProcessResult::Completed { response_bytes, remaining_bytes }) => {
                    self.writer.write_all(&response_bytes).await?;
                    return Ok(remaining_bytes);
                }
                Err(e) => {
                    return Err(Closed::BadInput(
                        RejectReason::Handshake,
                        format!("handshake: {e:?}"),
                    ))
                }
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        timeout(WRITE_TIMEOUT, self.writer.write_all(bytes))
            .await
            .map_err(|_| Closed::WriteTimeout)??;
        Ok(())
    }

    fn session(&mut self) -> Result<&mut ServerSession, Closed> {
        self.session
            .as_mut()
            .ok_or_else(|| Closed::BadInput(RejectReason::Malformed, "no session".into()))
    }

    async fn input(&mut self, bytes: &[u8]) -> Result<(), Closed> {
        let mut messages = std::mem::take(&mut self.messages);
        let read = self.dechunker.read(bytes, &mut messages).map_err(Closed::from);
        if !self.partial.set(self.dechunker.buffered()) {
            let budget = &self.node.rtmp_partial;
            let detail = format!(
                "the node holds {} bytes of partial RTMP messages, over rtmp.max_partial_bytes ({})",
                budget.used(),
                budget.max()
            );
            self.node.refusals.refuse(Some(self.peer.ip()), Limit::RtmpPartialBytes, &detail);
            return Err(Closed::BadInput(RejectReason::TooMuchBuffered, detail));
        }
        read?;
        for message in messages.drain(..) {
            self.on_message(message).await?;
        }
        // A read of tiny messages (a 1-byte header each) may have grown the vector to
        // thousands of slots: keep only what ordinary reads need between reads.
        messages.shrink_to(KEPT_MESSAGE_SLOTS);
        self.messages = messages;
        if let Some(total) = self.acks.received(bytes.len()) {
            self.write(&chunks::acknowledgement(total)).await?;
        }
        Ok(())
    }

    /// Acts on one whole message: media of a publisher goes to its stream, chunk-level
    /// control stays here, the rest is rml_rtmp's.
    async fn on_message(&mut self, message: Message) -> Result<(), Closed> {
        match message.type_id {
            TYPE_AUDIO | TYPE_VIDEO => {
                if !matches!(self.role, Role::Publishing { .. }) {
                    // As rml_rtmp did: media outside a publish is ignored.
                    tracing::debug!(peer = %self.peer, "ignoring media from a connection that is not publishing");
                    return Ok(());
                }
                let tag =
                    if message.type_id == TYPE_AUDIO { TagType::Audio } else { TagType::Video };
                self.push(tag, message.timestamp, message.payload).await
            }
            // Applied by the reader.
            TYPE_SET_CHUNK_SIZE | TYPE_ABORT => Ok(()),
            TYPE_WINDOW_ACK_SIZE => {
                if let Some(size) = message.payload.first_chunk::<4>() {
                    self.acks.window = u32::from_be_bytes(*size);
                }
                Ok(())
            }
            _ => {
                if is_create_stream(message.type_id, &message.payload) {
                    self.streams_created += 1;
                    if self.streams_created > MAX_CREATE_STREAM {
                        return Err(Closed::BadInput(
                            RejectReason::Malformed,
                            format!("more than {MAX_CREATE_STREAM} createStream commands"),
                        ));
                    }
                }
                let payload = MessagePayload {
                    timestamp: RtmpTimestamp::new(message.timestamp),
                    type_id: message.type_id,
                    message_stream_id: message.stream_id,
                    data: message.payload,
                };
                let packet = self
                    .relay
                    .serialize(&payload, true, false)
                    .map_err(|e| Closed::BadInput(RejectReason::Malformed, format!("{e:?}")))?;
                let results = self
                    .session()?
                    .handle_input(&packet.bytes)
                    .map_err(|e| Closed::BadInput(RejectReason::Malformed, format!("{e:?}")))?;
                self.handle_results(results).await
            }
        }
    }

    async fn handle_results(&mut self, results: Vec<ServerSessionResult>) -> Result<(), Closed> {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => self.write(&packet.bytes).await?,
                ServerSessionResult::RaisedEvent(event) => self.on_event(event).await?,
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    tracing::debug!(peer = %self.peer, type_id = payload.type_id, "ignoring unsupported RTMP message");
                }
            }
        }
        Ok(())
    }

    async fn accept(&mut self, request_id: u32) -> Result<(), Closed> {
        let results = self.accepted(request_id)?;
        Box::pin(self.handle_results(results)).await
    }

    /// rml_rtmp's answer to accepting `request_id`.
    fn accepted(&mut self, request_id: u32) -> Result<Vec<ServerSessionResult>, Closed> {
        self.session()?
            .accept_request(request_id)
            .map_err(|e| Closed::BadInput(RejectReason::Malformed, format!("{e:?}")))
    }

    /// Accepts a play request. rml_rtmp's answer ends with two data messages stamped with
    /// the session's clock: `|RtmpSampleAccess` and an `onStatus` `NetStream.Data.Start`.
    /// FFmpeg (ffprobe, ffplay, `ffmpeg -i`) makes a subtitle stream of the first and a data
    /// stream of the second, which breaks `ffmpeg -i rtmp://… -c copy out.mp4`. They are the
    /// only messages rml_rtmp sends on its data chunk stream to a player, so dropping them
    /// leaves its header compression intact; `|RtmpSampleAccess` goes out at timestamp 0
    /// instead, as nginx-rtmp sends it.
    async fn accept_play(&mut self, request_id: u32, stream_id: u32) -> Result<(), Closed> {
        let results = self
            .accepted(request_id)?
            .into_iter()
            .filter(|result| {
                !matches!(result, ServerSessionResult::OutboundResponse(packet)
                    if packet.bytes.first().is_some_and(|b| b & 0x3f == RML_DATA_CSID))
            })
            .collect();
        Box::pin(self.handle_results(results)).await?;
        self.write(&chunks::sample_access(stream_id)).await
    }

    async fn reject(
        &mut self,
        request_id: u32,
        code: &str,
        description: String,
    ) -> Result<(), Closed> {
        let results = self
            .session()?
            .reject_request(request_id, code, &description)
            .map_err(|e| Closed::BadInput(RejectReason::Malformed, format!("{e:?}")))?;
        Box::pin(self.handle_results(results)).await?;
        Err(Closed::Refused(description))
    }

    async fn on_event(&mut self, event: ServerSessionEvent) -> Result<(), Closed> {
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                let (app, query) = token::split_query(&app_name);
                self.app = Some(app.to_owned());
                self.app_token = query.and_then(token::from_query);
                self.accept(request_id).await
            }
            ServerSessionEvent::ReleaseStreamRequested { request_id, .. } => {
                self.accept(request_id).await
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id, app_name, stream_key, ..
            } => self.on_publish(request_id, &app_name, &stream_key).await,
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                app_name,
                stream_key,
                stream_id,
                ..
            } => self.on_play(request_id, &app_name, &stream_key, stream_id).await,
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                self.push(TagType::Script, 0, encode_on_metadata(&metadata)).await
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                self.push(TagType::Video, timestamp.value, data).await
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                self.push(TagType::Audio, timestamp.value, data).await
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Role::Publishing { publisher, .. } =
                    std::mem::replace(&mut self.role, Role::Idle)
                {
                    publisher.finish("publisher finished");
                    self.commands = None;
                }
                Ok(())
            }
            ServerSessionEvent::PlayStreamFinished { .. } => {
                self.media = None;
                self.role = Role::Idle;
                Ok(())
            }
            // The reader applies chunk size changes; rml_rtmp never sees them.
            ServerSessionEvent::ClientChunkSizeChanged { .. } => Ok(()),
            ServerSessionEvent::UnhandleableAmf0Command { command_name, .. } => {
                // FCPublish, FCUnpublish, getStreamLength...: nothing to answer.
                tracing::debug!(peer = %self.peer, command = %command_name, "ignoring RTMP command");
                Ok(())
            }
            ServerSessionEvent::AcknowledgementReceived { .. }
            | ServerSessionEvent::PingResponseReceived { .. } => Ok(()),
        }
    }

    fn stream_key(&self, app_name: &str, stream_key: &str) -> Result<StreamKey, String> {
        let app = self.app.as_deref().unwrap_or_else(|| token::split_query(app_name).0);
        StreamKey::new(app, token::split_query(stream_key).0).map_err(|e| e.to_string())
    }

    /// The token for a stream named `stream_name`: from its `?token=` (OBS's stream key
    /// box), or else the app's.
    fn token(&self, stream_name: &str) -> Option<String> {
        token::split_query(stream_name)
            .1
            .and_then(token::from_query)
            .or_else(|| self.app_token.clone())
    }

    async fn on_publish(
        &mut self,
        request_id: u32,
        app_name: &str,
        stream_key: &str,
    ) -> Result<(), Closed> {
        if !matches!(self.role, Role::Idle) {
            return self
                .reject(
                    request_id,
                    "NetStream.Publish.BadName",
                    "connection is already busy".into(),
                )
                .await;
        }
        let key = match self.stream_key(app_name, stream_key) {
            Ok(key) => key,
            Err(reason) => {
                return self.reject(request_id, "NetStream.Publish.BadName", reason).await
            }
        };
        self.requested = Some(key.clone());
        let token = self.token(stream_key);
        let request = Request {
            key,
            protocol: Protocol::Rtmp,
            peer: Some(self.peer),
            token: token.as_deref(),
        };
        match admission::admit_publish(&self.node, request).await {
            Ok(Publishing { publisher, commands, .. }) => {
                self.admitted();
                self.dechunker.admit();
                self.role =
                    Role::Publishing { publisher: Box::new(publisher), frames: FlvToFrames::new() };
                self.commands = Some(commands);
                self.accept(request_id).await
            }
            Err(refusal) => {
                let code = match refusal {
                    Refusal::Auth(_) => "NetStream.Publish.Unauthorized",
                    Refusal::Draining | Refusal::Denied(_) => "NetStream.Publish.Rejected",
                    Refusal::NotLive(_) | Refusal::Start(_) => "NetStream.Publish.BadName",
                };
                self.reject(request_id, code, refusal.to_string()).await
            }
        }
    }

    /// Takes one FLV tag body from the publisher apart (the RTMP edge of the codec-neutral
    /// frame) and hands the frame or the track's new configuration to the stream. A codec
    /// this node cannot serve ends the publish with the reason: HLS needs H.264 and AAC,
    /// so anything else is refused at once rather than half-served.
    async fn push(&mut self, tag: TagType, timestamp: u32, body: Bytes) -> Result<(), Closed> {
        let Role::Publishing { publisher, frames } = &mut self.role else {
            return Err(Closed::BadInput(
                RejectReason::Malformed,
                "media from a connection that is not publishing".into(),
            ));
        };
        let reason = match frames.push(tag, timestamp, body) {
            Ok(Ingested::Frame(frame)) => {
                return publisher.push(frame).await.map_err(|_| Closed::StreamEnded);
            }
            Ok(Ingested::Config { config, changed }) => {
                if changed {
                    publisher.set_config(&config);
                }
                return Ok(());
            }
            Ok(Ingested::Skipped(why)) => {
                tracing::debug!(peer = %self.peer, stream = %publisher.key(), why, "media message skipped");
                return Ok(());
            }
            Err(unsupported) => unsupported.to_string(),
        };
        tracing::warn!(peer = %self.peer, stream = %publisher.key(), %reason, "unsupported codec; closing publisher");
        self.node.counters.reject(RejectReason::UnsupportedCodec);
        let status = chunks::status_message(
            SHARED_STREAM_ID,
            "error",
            "NetStream.Publish.Rejected",
            &reason,
        );
        // Best effort: the connection closes either way.
        let _ = self.write(&status).await;
        Err(Closed::Refused(reason))
    }

    async fn on_play(
        &mut self,
        request_id: u32,
        app_name: &str,
        stream_key: &str,
        stream_id: u32,
    ) -> Result<(), Closed> {
        if !matches!(self.role, Role::Idle) {
            return self
                .reject(request_id, "NetStream.Play.Failed", "connection is already busy".into())
                .await;
        }
        let key = match self.stream_key(app_name, stream_key) {
            Ok(key) => key,
            Err(reason) => {
                return self.reject(request_id, "NetStream.Play.StreamNotFound", reason).await
            }
        };
        self.requested = Some(key.clone());
        let token = self.token(stream_key);
        let request = Request {
            key,
            protocol: Protocol::Rtmp,
            peer: Some(self.peer),
            token: token.as_deref(),
        };
        let ticket = match admission::admit_play(&self.node, request).await {
            Ok(ticket) => ticket,
            Err(refusal) => {
                let code = match refusal {
                    Refusal::Auth(_) => "NetStream.Play.Unauthorized",
                    Refusal::NotLive(_) => "NetStream.Play.StreamNotFound",
                    Refusal::Draining | Refusal::Denied(_) | Refusal::Start(_) => {
                        "NetStream.Play.Failed"
                    }
                };
                return self.reject(request_id, code, refusal.to_string()).await;
            }
        };
        let key = ticket.key().clone();
        self.accept_play(request_id, stream_id).await?;
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
        self.role = Role::Playing { key };
        Ok(())
    }

    /// The connection publishes or plays: it no longer counts against its address's
    /// `rtmp.max_pending_per_address`.
    fn admitted(&mut self) {
        self.pending = None;
    }

    /// Keeps reading (and discarding) briefly, so a client that only reads between writes,
    /// like FFmpeg publishing, receives the error we sent before the socket closes.
    async fn linger(&mut self) {
        let mut sink = [0u8; 8192];
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
        let stream = match &self.role {
            Role::Publishing { publisher, .. } => Some(publisher.key().to_string()),
            Role::Playing { key } => Some(key.to_string()),
            Role::Idle => self.requested.as_ref().map(ToString::to_string),
        };
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
                    tracing::warn!(peer = %self.peer, stream = stream.as_deref().unwrap_or("-"), %reason, reject = why.as_str(), "rtmp connection rejected (more from this address for this reason within a minute are counted, not logged)");
                }
            }
            _ => {
                tracing::info!(peer = %self.peer, stream = stream.as_deref().unwrap_or("-"), %reason, "rtmp connection closed")
            }
        }
        if let Role::Publishing { publisher, .. } = std::mem::replace(&mut self.role, Role::Idle) {
            publisher.finish(reason);
        }
    }
}

/// Whether a command message is `createStream` (AMF0 string marker, length, name; an AMF3
/// command message has one byte before it).
fn is_create_stream(type_id: u8, payload: &[u8]) -> bool {
    const NAME: &[u8] = b"createStream";
    let command = match type_id {
        TYPE_AMF0_COMMAND => payload,
        TYPE_AMF3_COMMAND => payload.get(1..).unwrap_or_default(),
        _ => return false,
    };
    command.get(..3) == Some(&[0x02, 0x00, NAME.len() as u8][..])
        && command.get(3..3 + NAME.len()) == Some(NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_follow_the_peers_window_and_count_every_byte() {
        let mut acks = Acks::default();
        // No window announced: no acknowledgements, but the bytes count.
        assert_eq!(acks.received(1_000), None);
        acks.window = 2_500_000;
        assert_eq!(acks.received(2_000_000), None);
        assert_eq!(acks.received(600_000), Some(2_601_000));
        assert_eq!(acks.received(2_499_999), None);
        assert_eq!(acks.received(1), Some(5_101_000));
        // Sequence numbers wrap at 2^32.
        acks.total = u32::MAX;
        assert_eq!(acks.received(2_500_000), Some(2_499_999));
    }

    #[test]
    fn create_stream_commands_are_recognised() {
        let mut command = vec![0x02, 0x00, 12];
        command.extend_from_slice(b"createStream");
        command.extend_from_slice(&[0x00, 0x40, 0x00]);
        assert!(is_create_stream(TYPE_AMF0_COMMAND, &command));
        let amf3: Vec<u8> = std::iter::once(0).chain(command.iter().copied()).collect();
        assert!(is_create_stream(TYPE_AMF3_COMMAND, &amf3));
        assert!(!is_create_stream(TYPE_AMF0_COMMAND, b"\x02\x00\x07connect"));
        assert!(!is_create_stream(TYPE_AMF0_COMMAND, &command[..10]), "truncated");
        assert!(!is_create_stream(TYPE_AMF0_COMMAND, &[]));
        assert!(!is_create_stream(18, &command), "not a command message");
    }
}
