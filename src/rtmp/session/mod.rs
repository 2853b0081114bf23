//! [`Session`]: one RTMP connection's protocol, without IO. Bytes go in, [`Action`]s come
//! out; the connection (`connection.rs`) reads the socket, carries the actions out and
//! answers the decisions the session asks for.
//!
//! It runs the handshake, reads the chunks into whole messages ([`ChunkReader`], one copy
//! per payload), sends the Acknowledgements the peer's window asks for, and turns the audio
//! and video of a publishing connection into frames and track configurations
//! ([`FlvToFrames`]: frames are slices of the reader's copy). Every other message goes to
//! rml_rtmp's `ServerSession`, re-chunked for its deserializer, until a play starts (then
//! the session is dropped for memory and the player's few commands are read here, see
//! `Phase::Playing`), and its events are decided here: which name a request is for, whether the connection may ask (one role at a time,
//! at most [`MAX_CREATE_STREAM`] streams), which `onStatus` a refusal becomes
//! ([`status`]). Whether a publisher or player is let in is not decided here: the session
//! asks ([`Action::AdmitPublish`], [`Action::AdmitPlay`]), acts on nothing else until the
//! answer comes ([`Session::publish_admitted`], [`Session::publish_refused`], ...), then
//! carries on with the messages that followed the request.
//!
//! No decision here depends on time: the timers (handshake, idle, write pacing) are the
//! connection's. rml_rtmp stamps its own command responses from the system clock, which
//! only the peer sees.

mod control;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::vec;

use bytes::Bytes;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;
use zenlive_actors::events::RejectReason;
use zenlive_actors::StreamKey;
use zenlive_media::flv::TagType;
use zenlive_media::flv_frames::{FlvToFrames, Ingested, Unsupported};
use zenlive_media::{CodecConfig, MediaFrame};

use self::control::{
    command_head, is_create_stream, Acks, TYPE_ABORT, TYPE_AUDIO, TYPE_SET_CHUNK_SIZE, TYPE_VIDEO,
    TYPE_WINDOW_ACK_SIZE,
};
use super::budget::Share;
use super::chunks::{self, SERVER_CHUNK_SIZE, SHARED_STREAM_ID};
use super::metadata::encode_on_metadata;
use super::reader::{ChunkReader, Message, Violation};
use crate::admission::Refusal;
use crate::auth::token;

/// Most `createStream` commands one connection may send. rml_rtmp keeps an entry for each
/// stream created and never forgets one before `deleteStream`, so without a bound a peer
/// could grow its session without end before any auth; OBS and FFmpeg send one.
pub const MAX_CREATE_STREAM: u32 = 8;
/// Message slots kept between reads (a 64 KiB read of media holds a few dozen messages).
const KEPT_MESSAGE_SLOTS: usize = 64;
/// The chunk stream rml_rtmp's serializer puts AMF0 data messages on.
const RML_DATA_CSID: u8 = 3;

/// What the connection is to do, in order. See [`Session`].
#[derive(Debug)]
pub enum Action {
    /// Write these bytes to the peer, in order with every other `Write`.
    Write(Bytes),
    /// Ask admission whether this connection may publish `key`; answer with
    /// [`Session::publish_admitted`] or [`Session::publish_refused`]. Always the last
    /// action of a call: the session acts on nothing else until the answer.
    AdmitPublish {
        /// The stream asked for.
        key: StreamKey,
        /// The token that came with the stream name, or else with the app name.
        token: Option<String>,
    },
    /// Ask admission whether this connection may play `key`; answer with
    /// [`Session::play_admitted`] or [`Session::play_refused`]. As
    /// [`Action::AdmitPublish`], the last action until the answer.
    AdmitPlay {
        /// The stream asked for.
        key: StreamKey,
        /// The token that came with the stream name, or else with the app name.
        token: Option<String>,
    },
    /// A frame for the stream being published, in the order received.
    Frame(MediaFrame),
    /// A track's new configuration (a sequence header that differs from the one before),
    /// for the stream being published; the frames after it point at it.
    Config(CodecConfig),
    /// The play was accepted and its replies written: start sending the stream's frames,
    /// on message stream `stream_id`.
    Play {
        /// The message stream the player's frames go on.
        stream_id: u32,
    },
    /// The peer stopped publishing (`deleteStream`): finish the publisher; the connection
    /// stays open.
    PublishFinished,
    /// The peer stopped playing: stop sending frames; the connection stays open.
    PlayFinished,
    /// Something the session ignored, for a debug log.
    Ignored(Ignored),
    /// Close the connection. The last action the session gives: input afterwards is
    /// ignored.
    Close(Ended),
}

/// What the session ignored (see [`Action::Ignored`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Audio or video from a connection that is not publishing (rml_rtmp ignored it too).
    MediaNotPublishing,
    /// A media message with nothing for viewers (an end-of-sequence marker, a body too
    /// short for its header...): why.
    MediaSkipped(&'static str),
    /// A command with nothing to answer (`FCPublish`, `getStreamLength`...).
    Command(String),
    /// A message rml_rtmp does not handle, by type id.
    Message(u8),
}

/// Why the session ended the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// The peer broke the protocol or one of its limits.
    #[error("bad input: {1}")]
    BadInput(RejectReason, String),
    /// The node's bound on partial messages (`rtmp.max_partial_bytes`) is exceeded.
    #[error("the node's partial RTMP messages are over rtmp.max_partial_bytes")]
    NodeBudget,
    /// A request was refused; its `onStatus` has been written. The description.
    #[error("{0}")]
    Refused(String),
    /// A codec this node does not serve: `status` is its `onStatus`
    /// `NetStream.Publish.Rejected`, to write before closing (the client is told why).
    #[error("{reason}")]
    Unsupported {
        /// What was refused.
        reason: Unsupported,
        /// The `onStatus` message to write.
        status: Bytes,
    },
}

impl From<Violation> for Ended {
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

/// An rml_rtmp failure: the peer sent something it cannot take.
fn malformed(error: impl std::fmt::Debug) -> Ended {
    Ended::BadInput(RejectReason::Malformed, format!("{error:?}"))
}

enum Phase {
    /// Boxed: the handshake's 1.5 KiB are freed once it is done.
    Handshake(Box<Handshake>),
    /// Boxed to keep the phase small either way (one allocation per connection).
    Running(Box<ServerSession>),
    /// Playing on message stream `stream_id`. rml_rtmp's session is dropped once a play
    /// starts: its buffers were a quarter of what a player cost, for hours, and a player
    /// sends nothing but acknowledgements and the command that ends the play, which
    /// [`Session::player_message`] reads.
    Playing {
        stream_id: u32,
    },
    Ended,
}

enum Role {
    Idle,
    Publishing { key: StreamKey, frames: FlvToFrames },
    Playing { key: StreamKey },
}

/// A request waiting for admission's answer.
enum Awaiting {
    Publish { request_id: u32 },
    Play { request_id: u32, stream_id: u32 },
}

/// One RTMP connection's protocol state. See the module docs.
///
/// The connection calls [`Session::handle_input`] with every byte it reads, in order, and
/// carries out the actions appended to its vector in order (writes, frames, admission
/// questions); the vector is the caller's, reused from call to call, so the media path
/// allocates nothing per message here. After an [`Action::AdmitPublish`] or
/// [`Action::AdmitPlay`] it answers with the matching `*_admitted` / `*_refused` call
/// before anything else.
pub struct Session {
    phase: Phase,
    reader: ChunkReader,
    /// What `reader` holds, counted in the node's `rtmp.max_partial_bytes`.
    partial: Share,
    /// Re-chunks the messages rml_rtmp handles for its own deserializer (at its default
    /// chunk size, which it keeps: Set Chunk Size is applied by `reader`, not forwarded).
    relay: ChunkSerializer,
    /// The messages of one read, kept to reuse the allocation.
    messages: Vec<Message>,
    /// Messages behind a request that waits for admission.
    waiting: VecDeque<Message>,
    /// rml_rtmp results held back while a request waits for admission.
    held: Option<vec::IntoIter<ServerSessionResult>>,
    acks: Acks,
    /// Bytes received whose acknowledgement is counted once their messages are acted on
    /// (a Window Acknowledgement Size among them applies to them).
    unacked: usize,
    app: Option<String>,
    /// A `?token=` that came with the app name in `connect`.
    app_token: Option<String>,
    role: Role,
    awaiting: Option<Awaiting>,
    /// `createStream` commands received (see [`MAX_CREATE_STREAM`]).
    streams_created: u32,
    /// The stream last asked to publish or play, for the close line of a refused request.
    requested: Option<StreamKey>,
}

impl Session {
    /// A connection's session before the handshake; `partial` is its share of the node's
    /// bound on partial messages.
    pub fn new(partial: Share) -> Self {
        Self {
            phase: Phase::Handshake(Box::new(Handshake::new(PeerType::Server))),
            reader: ChunkReader::unadmitted(),
            partial,
            relay: ChunkSerializer::new(),
            messages: Vec::new(),
            waiting: VecDeque::new(),
            held: None,
            acks: Acks::default(),
            unacked: 0,
            app: None,
            app_token: None,
            role: Role::Idle,
            awaiting: None,
            streams_created: 0,
            requested: None,
        }
    }

    /// Whether the handshake is still under way (the connection bounds its duration).
    pub fn handshaking(&self) -> bool {
        matches!(self.phase, Phase::Handshake(_))
    }

    /// Whether the connection publishes.
    pub fn is_publishing(&self) -> bool {
        matches!(self.role, Role::Publishing { .. })
    }

    /// Whether the connection plays (a player may stay silent for long).
    pub fn is_playing(&self) -> bool {
        matches!(self.role, Role::Playing { .. })
    }

    /// The stream published or played, or else the one last asked for: for log lines.
    pub fn stream(&self) -> Option<&StreamKey> {
        match &self.role {
            Role::Publishing { key, .. } | Role::Playing { key } => Some(key),
            Role::Idle => self.requested.as_ref(),
        }
    }

    /// Takes the next bytes read from the peer; appends what to do to `out`.
    pub fn handle_input(&mut self, bytes: &[u8], out: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Handshake(handshake) => match handshake.process_bytes(bytes) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    write(out, response_bytes);
                }
                Ok(HandshakeProcessResult::Completed { response_bytes, remaining_bytes }) => {
                    write(out, response_bytes);
                    self.start(out);
                    if !remaining_bytes.is_empty() {
                        self.handle_input(&remaining_bytes, out);
                    }
                }
                Err(e) => self.end(
                    Ended::BadInput(RejectReason::Handshake, format!("handshake: {e:?}")),
                    out,
                ),
            },
            Phase::Running(_) | Phase::Playing { .. } => self.receive(bytes, out),
            Phase::Ended => {}
        }
    }

    /// Admission let the connection publish `key` (the name it asked for).
    pub fn publish_admitted(&mut self, key: StreamKey, out: &mut Vec<Action>) {
        let Some(Awaiting::Publish { request_id }) = self.answered() else { return };
        self.reader.admit();
        self.role = Role::Publishing { key, frames: FlvToFrames::new() };
        self.accept(request_id, out);
        self.resume(out);
    }

    /// Admission refused the publish: the client is told why, then the connection closes.
    pub fn publish_refused(&mut self, refusal: &Refusal, out: &mut Vec<Action>) {
        let Some(Awaiting::Publish { request_id }) = self.answered() else { return };
        self.reject(request_id, status::publish_refused(refusal), refusal.to_string(), out);
    }

    /// Admission let the connection play `key` (the stream it found for the name).
    pub fn play_admitted(&mut self, key: StreamKey, out: &mut Vec<Action>) {
        let Some(Awaiting::Play { request_id, stream_id }) = self.answered() else { return };
        self.accept_play(request_id, stream_id, out);
        if matches!(self.phase, Phase::Ended) {
            return;
        }
        self.role = Role::Playing { key };
        out.push(Action::Play { stream_id });
        self.resume(out);
        if self.is_playing() && self.awaiting.is_none() && !self.ended() {
            // From here on, a player's few messages are read without rml_rtmp.
            self.phase = Phase::Playing { stream_id };
            self.relay = ChunkSerializer::new();
            self.held = None;
        }
    }

    /// Admission refused the play: the client is told why, then the connection closes.
    pub fn play_refused(&mut self, refusal: &Refusal, out: &mut Vec<Action>) {
        let Some(Awaiting::Play { request_id, .. }) = self.answered() else { return };
        self.reject(request_id, status::play_refused(refusal), refusal.to_string(), out);
    }

    /// The request admission answered. Answers always come one per question (see
    /// [`Session`]); one without a question is a bug in the caller, ignored in release.
    fn answered(&mut self) -> Option<Awaiting> {
        let awaiting = self.awaiting.take();
        debug_assert!(awaiting.is_some(), "an admission answer without a question");
        awaiting
    }

    /// The handshake is done: rml_rtmp's session starts, with its greeting.
    fn start(&mut self, out: &mut Vec<Action>) {
        let config = ServerSessionConfig {
            chunk_size: SERVER_CHUNK_SIZE as u32,
            ..ServerSessionConfig::new()
        };
        match ServerSession::new(config) {
            Ok((session, greeting)) => {
                self.phase = Phase::Running(Box::new(session));
                self.results(greeting, out);
            }
            Err(e) => self.end(
                Ended::BadInput(RejectReason::Malformed, format!("session setup: {e:?}")),
                out,
            ),
        }
    }

    fn end(&mut self, ended: Ended, out: &mut Vec<Action>) {
        self.phase = Phase::Ended;
        self.held = None;
        out.push(Action::Close(ended));
    }

    fn ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    /// Bytes after the handshake: whole messages, then acted on.
    fn receive(&mut self, bytes: &[u8], out: &mut Vec<Action>) {
        let read = self.reader.read(bytes, &mut self.messages);
        if !self.partial.set(self.reader.buffered()) {
            return self.end(Ended::NodeBudget, out);
        }
        if let Err(violation) = read {
            return self.end(violation.into(), out);
        }
        self.unacked += bytes.len();
        if self.awaiting.is_some() {
            // Behind the request admission is deciding.
            self.waiting.extend(self.messages.drain(..));
            return;
        }
        self.act(out);
    }

    /// Acts on the messages read, in order, until they are done or one waits for
    /// admission (the rest then wait too); then acknowledges what the peer's window asks
    /// for.
    fn act(&mut self, out: &mut Vec<Action>) {
        let mut messages = std::mem::take(&mut self.messages);
        let mut read = messages.drain(..);
        for message in read.by_ref() {
            self.on_message(message, out);
            if self.awaiting.is_some() || self.ended() {
                break;
            }
        }
        if self.awaiting.is_some() {
            self.waiting.extend(read);
        } else {
            drop(read);
        }
        // A read of tiny messages (a 1-byte header each) may have grown the vector to
        // thousands of slots: keep only what ordinary reads need between reads.
        messages.shrink_to(KEPT_MESSAGE_SLOTS);
        self.messages = messages;
        self.acknowledge(out);
    }

    /// Acknowledges what the peer's window asks for, once every message received is acted
    /// on (a Window Acknowledgement Size among them applies to the bytes that brought it).
    fn acknowledge(&mut self, out: &mut Vec<Action>) {
        if self.awaiting.is_some() || self.ended() {
            return;
        }
        if let Some(total) = self.acks.received(std::mem::take(&mut self.unacked)) {
            out.push(Action::Write(chunks::acknowledgement(total)));
        }
    }

    /// After admission answered: what was held back, then the messages that followed.
    fn resume(&mut self, out: &mut Vec<Action>) {
        if let Some(mut held) = self.held.take() {
            self.drain_results(&mut held, out);
            if self.awaiting.is_some() || self.ended() {
                self.hold(held);
                return;
            }
        }
        while let Some(message) = self.waiting.pop_front() {
            self.on_message(message, out);
            if self.awaiting.is_some() || self.ended() {
                return;
            }
        }
        // Rarely used: not kept.
        self.waiting = VecDeque::new();
        self.acknowledge(out);
    }

    /// Acts on one whole message: media of a publisher becomes frames, chunk-level control
    /// stays here, the rest is rml_rtmp's.
    fn on_message(&mut self, message: Message, out: &mut Vec<Action>) {
        match message.type_id {
            TYPE_AUDIO | TYPE_VIDEO => {
                if !self.is_publishing() {
                    // As rml_rtmp did: media outside a publish is ignored.
                    out.push(Action::Ignored(Ignored::MediaNotPublishing));
                    return;
                }
                let tag =
                    if message.type_id == TYPE_AUDIO { TagType::Audio } else { TagType::Video };
                self.push(tag, message.timestamp, message.payload, out);
            }
            // Applied by the reader.
            TYPE_SET_CHUNK_SIZE | TYPE_ABORT => {}
            TYPE_WINDOW_ACK_SIZE => {
                if let Some(size) = message.payload.first_chunk::<4>() {
                    self.acks.window = u32::from_be_bytes(*size);
                }
            }
            _ => self.relay(message, out),
        }
    }

    /// Hands a command or data message to rml_rtmp.
    fn relay(&mut self, message: Message, out: &mut Vec<Action>) {
        if let Phase::Playing { stream_id } = self.phase {
            return self.player_message(stream_id, &message, out);
        }
        if is_create_stream(message.type_id, &message.payload) {
            self.streams_created += 1;
            if self.streams_created > MAX_CREATE_STREAM {
                let detail = format!("more than {MAX_CREATE_STREAM} createStream commands");
                return self.end(Ended::BadInput(RejectReason::Malformed, detail), out);
            }
        }
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(message.timestamp),
            type_id: message.type_id,
            message_stream_id: message.stream_id,
            data: message.payload,
        };
        let packet = match self.relay.serialize(&payload, true, false) {
            Ok(packet) => packet,
            Err(e) => return self.end(malformed(e), out),
        };
        let Phase::Running(session) = &mut self.phase else { return };
        match session.handle_input(&packet.bytes) {
            Ok(results) => self.results(results, out),
            Err(e) => self.end(malformed(e), out),
        }
    }

    /// A command or data message to a connection playing on `stream_id` (rml_rtmp's
    /// session is gone, see [`Phase::Playing`]): `closeStream`/`deleteStream` of that
    /// stream end the play, as rml_rtmp raised it; a request for another play or a
    /// publish is refused as busy, as before; anything else has nothing to answer.
    fn player_message(&mut self, stream_id: u32, message: &Message, out: &mut Vec<Action>) {
        const TYPE_ACKNOWLEDGEMENT: u8 = 3;
        const TYPE_USER_CONTROL: u8 = 4;
        let Some((name, argument)) = command_head(message.type_id, &message.payload) else {
            if !matches!(message.type_id, TYPE_ACKNOWLEDGEMENT | TYPE_USER_CONTROL) {
                out.push(Action::Ignored(Ignored::Message(message.type_id)));
            }
            return;
        };
        match name {
            "closeStream" | "deleteStream" => {
                // rml_rtmp's reading: the stream is the first argument (FFmpeg's, and
                // rml_rtmp's client's); a bare `closeStream` names its message stream.
                let closed = argument.map_or(message.stream_id, |id| id as u32);
                if closed == stream_id && self.is_playing() {
                    self.role = Role::Idle;
                    out.push(Action::PlayFinished);
                }
            }
            "play" | "publish" | "createStream" => {
                let (code, description) = match (name, self.is_playing()) {
                    ("publish", _) => (status::PUBLISH_BAD_NAME, "connection is already busy"),
                    (_, true) => (status::PLAY_FAILED, "connection is already busy"),
                    (_, false) => (status::PLAY_FAILED, "a connection plays once; reconnect"),
                };
                let refusal = chunks::status_message(message.stream_id, "error", code, description);
                out.push(Action::Write(refusal));
                self.end(Ended::Refused(description.to_owned()), out);
            }
            _ => out.push(Action::Ignored(Ignored::Command(name.to_owned()))),
        }
    }

    /// Acts on rml_rtmp's results, holding back those after a request that waits for
    /// admission.
    fn results(&mut self, results: Vec<ServerSessionResult>, out: &mut Vec<Action>) {
        let mut results = results.into_iter();
        self.drain_results(&mut results, out);
        if self.awaiting.is_some() && !self.ended() && results.len() > 0 {
            self.hold(results);
        }
    }

    fn drain_results(
        &mut self,
        results: &mut vec::IntoIter<ServerSessionResult>,
        out: &mut Vec<Action>,
    ) {
        while self.awaiting.is_none() && !self.ended() {
            let Some(result) = results.next() else { return };
            match result {
                ServerSessionResult::OutboundResponse(packet) => write(out, packet.bytes),
                ServerSessionResult::RaisedEvent(event) => self.on_event(event, out),
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    out.push(Action::Ignored(Ignored::Message(payload.type_id)));
                }
            }
        }
    }

    /// Keeps `results` for after admission, behind any held already. rml_rtmp raises each
    /// event alone in its result list and answers accepts with responses only, so in
    /// practice nothing is ever held; this keeps the order if it ever does.
    fn hold(&mut self, results: vec::IntoIter<ServerSessionResult>) {
        self.held = Some(match self.held.take() {
            None => results,
            Some(earlier) => earlier.chain(results).collect::<Vec<_>>().into_iter(),
        });
    }

    fn on_event(&mut self, event: ServerSessionEvent, out: &mut Vec<Action>) {
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                let (app, query) = token::split_query(&app_name);
                self.app = Some(app.to_owned());
                self.app_token = query.and_then(token::from_query);
                self.accept(request_id, out);
            }
            ServerSessionEvent::ReleaseStreamRequested { request_id, .. } => {
                self.accept(request_id, out);
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id, app_name, stream_key, ..
            } => self.on_publish(request_id, &app_name, &stream_key, out),
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                app_name,
                stream_key,
                stream_id,
                ..
            } => self.on_play(request_id, &app_name, &stream_key, stream_id, out),
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                self.push(TagType::Script, 0, encode_on_metadata(&metadata), out);
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                self.push(TagType::Video, timestamp.value, data, out);
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                self.push(TagType::Audio, timestamp.value, data, out);
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if self.is_publishing() {
                    self.role = Role::Idle;
                    out.push(Action::PublishFinished);
                }
            }
            ServerSessionEvent::PlayStreamFinished { .. } => {
                if self.is_playing() {
                    self.role = Role::Idle;
                    out.push(Action::PlayFinished);
                }
            }
            // The reader applies chunk size changes; rml_rtmp never sees them.
            ServerSessionEvent::ClientChunkSizeChanged { .. } => {}
            ServerSessionEvent::UnhandleableAmf0Command { command_name, .. } => {
                // FCPublish, FCUnpublish, getStreamLength...: nothing to answer.
                out.push(Action::Ignored(Ignored::Command(command_name)));
            }
            ServerSessionEvent::AcknowledgementReceived { .. }
            | ServerSessionEvent::PingResponseReceived { .. } => {}
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

    fn on_publish(
        &mut self,
        request_id: u32,
        app_name: &str,
        stream_key: &str,
        out: &mut Vec<Action>,
    ) {
        if !matches!(self.role, Role::Idle) {
            let busy = "connection is already busy".to_owned();
            return self.reject(request_id, status::PUBLISH_BAD_NAME, busy, out);
        }
        let key = match self.stream_key(app_name, stream_key) {
            Ok(key) => key,
            Err(reason) => return self.reject(request_id, status::PUBLISH_BAD_NAME, reason, out),
        };
        self.requested = Some(key.clone());
        let token = self.token(stream_key);
        self.awaiting = Some(Awaiting::Publish { request_id });
        out.push(Action::AdmitPublish { key, token });
    }

    fn on_play(
        &mut self,
        request_id: u32,
        app_name: &str,
        stream_key: &str,
        stream_id: u32,
        out: &mut Vec<Action>,
    ) {
        if !matches!(self.role, Role::Idle) {
            let busy = "connection is already busy".to_owned();
            return self.reject(request_id, status::PLAY_FAILED, busy, out);
        }
        let key = match self.stream_key(app_name, stream_key) {
            Ok(key) => key,
            Err(reason) => return self.reject(request_id, status::PLAY_NOT_FOUND, reason, out),
        };
        self.requested = Some(key.clone());
        let token = self.token(stream_key);
        self.awaiting = Some(Awaiting::Play { request_id, stream_id });
        out.push(Action::AdmitPlay { key, token });
    }

    /// Takes one FLV tag body from the publisher apart (the RTMP edge of the codec-neutral
    /// frame): a frame or the track's new configuration for the stream. A codec this node
    /// cannot serve ends the publish with the reason: HLS needs H.264 and AAC, so anything
    /// else is refused at once rather than half-served.
    fn push(&mut self, tag: TagType, timestamp: u32, body: Bytes, out: &mut Vec<Action>) {
        let Role::Publishing { frames, .. } = &mut self.role else {
            let detail = "media from a connection that is not publishing".to_owned();
            return self.end(Ended::BadInput(RejectReason::Malformed, detail), out);
        };
        match frames.push(tag, timestamp, body) {
            Ok(Ingested::Frame(frame)) => out.push(Action::Frame(frame)),
            Ok(Ingested::Config { config, changed }) => {
                if changed {
                    out.push(Action::Config(config));
                }
            }
            Ok(Ingested::Skipped(why)) => out.push(Action::Ignored(Ignored::MediaSkipped(why))),
            Err(reason) => {
                let status = chunks::status_message(
                    SHARED_STREAM_ID,
                    "error",
                    status::PUBLISH_REJECTED,
                    &reason.to_string(),
                );
                self.end(Ended::Unsupported { reason, status }, out);
            }
        }
    }

    fn accept(&mut self, request_id: u32, out: &mut Vec<Action>) {
        let Phase::Running(session) = &mut self.phase else { return };
        match session.accept_request(request_id) {
            Ok(results) => self.results(results, out),
            Err(e) => self.end(malformed(e), out),
        }
    }

    /// Accepts a play request. rml_rtmp's answer ends with two data messages stamped with
    /// the session's clock: `|RtmpSampleAccess` and an `onStatus` `NetStream.Data.Start`.
    /// FFmpeg (ffprobe, ffplay, `ffmpeg -i`) makes a subtitle stream of the first and a data
    /// stream of the second, which breaks `ffmpeg -i rtmp://… -c copy out.mp4`. They are the
    /// only messages rml_rtmp sends on its data chunk stream to a player, so dropping them
    /// leaves its header compression intact; `|RtmpSampleAccess` goes out at timestamp 0
    /// instead, as nginx-rtmp sends it.
    fn accept_play(&mut self, request_id: u32, stream_id: u32, out: &mut Vec<Action>) {
        let Phase::Running(session) = &mut self.phase else { return };
        let mut results = match session.accept_request(request_id) {
            Ok(results) => results,
            Err(e) => return self.end(malformed(e), out),
        };
        results.retain(|result| {
            !matches!(result, ServerSessionResult::OutboundResponse(packet)
                if packet.bytes.first().is_some_and(|b| b & 0x3f == RML_DATA_CSID))
        });
        self.results(results, out);
        if !self.ended() {
            out.push(Action::Write(chunks::sample_access(stream_id)));
        }
    }

    /// Refuses a request with `code`; the connection then closes (the description is the
    /// reason).
    fn reject(&mut self, request_id: u32, code: &str, description: String, out: &mut Vec<Action>) {
        let Phase::Running(session) = &mut self.phase else { return };
        match session.reject_request(request_id, code, &description) {
            Ok(results) => self.results(results, out),
            Err(e) => return self.end(malformed(e), out),
        }
        if !self.ended() {
            self.end(Ended::Refused(description), out);
        }
    }
}

/// Appends a write of `bytes`, unless there are none.
fn write(out: &mut Vec<Action>, bytes: Vec<u8>) {
    if !bytes.is_empty() {
        out.push(Action::Write(Bytes::from(bytes)));
    }
}
