//! The session driven by rml_rtmp's client, byte for byte, without a socket: what it asks
//! of admission, what it gives the stream, what the client is told.

use std::collections::VecDeque;

use proptest::prelude::*;
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use zenlive_actors::publisher::PublishError;
use zenlive_media::{Codec, FrameKind, MediaTime};

use super::*;
use crate::auth::AuthError;
use crate::rtmp::budget::PartialBudget;

/// An AVC sequence header (an FLV video tag body) and a keyframe with a composition
/// offset of 80 ms.
const AVC_CONFIG: &[u8] = &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f];
const AVC_KEYFRAME: &[u8] = &[0x17, 1, 0, 0, 80, 0, 0, 0, 1, 0x65];
/// An AAC sequence header and one AAC frame.
const AAC_CONFIG: &[u8] = &[0xaf, 0, 0x12, 0x10];
const AAC_FRAME: &[u8] = &[0xaf, 1, 0x21, 0x22];

/// The status objects the server sent (`onStatus`, or rml_rtmp's `_error` answer to a
/// rejected request): (code, description).
struct Statuses {
    reader: ChunkDeserializer,
    seen: Vec<(String, String)>,
}

impl Statuses {
    fn new() -> Self {
        Self { reader: ChunkDeserializer::new(), seen: Vec::new() }
    }

    fn read(&mut self, mut bytes: &[u8]) {
        while let Some(payload) = self.reader.get_next_message(bytes).expect("valid chunks") {
            bytes = &[];
            match payload.to_rtmp_message().expect("a valid message") {
                RtmpMessage::SetChunkSize { size } => {
                    self.reader.set_max_chunk_size(size as usize).expect("valid chunk size");
                }
                RtmpMessage::Amf0Command { command_name, additional_arguments, .. }
                    if command_name == "onStatus" || command_name == "_error" =>
                {
                    let Some(Amf0Value::Object(info)) = additional_arguments.first() else {
                        panic!("onStatus without its information object");
                    };
                    let text = |key: &str| match info.get(key) {
                        Some(Amf0Value::Utf8String(s)) => s.clone(),
                        other => panic!("{key}: {other:?}"),
                    };
                    self.seen.push((text("code"), text("description")));
                }
                _ => {}
            }
        }
    }
}

/// A server session and the rml_rtmp client talking to it.
struct Peer {
    session: Session,
    client: ClientSession,
    /// The client's events, in order.
    events: Vec<ClientSessionEvent>,
    /// The session's actions other than writes, in order.
    actions: Vec<Action>,
    /// Every write of the session, in order.
    writes: Vec<Bytes>,
    statuses: Statuses,
    /// Bytes to send in the same read as the client's next answer.
    behind: Vec<u8>,
}

impl Peer {
    /// A session with the handshake done, within a node budget of `budget` bytes.
    fn handshaken(budget: u64) -> Self {
        let (client, greeting) =
            ClientSession::new(ClientSessionConfig::new()).expect("client session");
        assert!(greeting.is_empty());
        let mut peer = Peer {
            session: Session::new(PartialBudget::new(budget).share()),
            client,
            events: Vec::new(),
            actions: Vec::new(),
            writes: Vec::new(),
            statuses: Statuses::new(),
            behind: Vec::new(),
        };
        let mut handshake = Handshake::new(PeerType::Client);
        let c0_c1 = handshake.generate_outbound_p0_and_p1().expect("c0 and c1");
        let mut out = Vec::new();
        peer.session.handle_input(&c0_c1, &mut out);
        assert!(peer.session.handshaking());
        let [Action::Write(s0_s1_s2)] = &out[..] else { panic!("{out:?}") };
        let Ok(HandshakeProcessResult::Completed { response_bytes: c2, remaining_bytes }) =
            handshake.process_bytes(s0_s1_s2)
        else {
            panic!("the client completes the handshake");
        };
        assert!(remaining_bytes.is_empty());
        peer.send(&c2);
        assert!(!peer.session.handshaking());
        peer
    }

    /// A session whose client connected to `app`.
    fn connected(app: &str) -> Self {
        let mut peer = Self::handshaken(u64::MAX);
        let request = peer.client.request_connection(app.to_owned()).expect("connect");
        peer.send_result(request);
        assert!(
            matches!(peer.events.last(), Some(ClientSessionEvent::ConnectionRequestAccepted)),
            "{:?}",
            peer.events
        );
        peer
    }

    /// A session publishing `live/cam`.
    fn publishing() -> Self {
        let mut peer = Self::connected("live");
        peer.request_publishing("cam");
        let Some(Action::AdmitPublish { key, .. }) = peer.actions.pop() else { panic!() };
        peer.answer(|session, out| session.publish_admitted(key, out));
        assert!(matches!(peer.events.last(), Some(ClientSessionEvent::PublishRequestAccepted)));
        peer
    }

    fn request_publishing(&mut self, name: &str) {
        let request =
            self.client.request_publishing(name.to_owned(), PublishRequestType::Live).expect("ok");
        self.send_result(request);
    }

    fn request_playback(&mut self, name: &str) {
        let request = self.client.request_playback(name.to_owned()).expect("play");
        self.send_result(request);
    }

    fn send_result(&mut self, result: ClientSessionResult) {
        let ClientSessionResult::OutboundResponse(packet) = result else { panic!("{result:?}") };
        self.send(&packet.bytes);
    }

    /// Feeds bytes from the client to the session, and the client's answers too.
    fn send(&mut self, bytes: &[u8]) {
        let mut queue = VecDeque::from([bytes.to_vec()]);
        while let Some(input) = queue.pop_front() {
            let mut out = Vec::new();
            self.session.handle_input(&input, &mut out);
            self.take(out, &mut queue);
        }
    }

    /// Answers an admission question with `answer`.
    fn answer(&mut self, answer: impl FnOnce(&mut Session, &mut Vec<Action>)) {
        let mut out = Vec::new();
        answer(&mut self.session, &mut out);
        let mut queue = VecDeque::new();
        self.take(out, &mut queue);
        while let Some(input) = queue.pop_front() {
            let mut out = Vec::new();
            self.session.handle_input(&input, &mut out);
            self.take(out, &mut queue);
        }
    }

    /// Hands the session's writes to the client (queueing its answers in `queue`) and
    /// keeps the other actions.
    fn take(&mut self, out: Vec<Action>, queue: &mut VecDeque<Vec<u8>>) {
        for action in out {
            let Action::Write(bytes) = action else {
                self.actions.push(action);
                continue;
            };
            self.statuses.read(&bytes);
            self.writes.push(bytes.clone());
            for result in self.client.handle_input(&bytes).expect("the client reads the server") {
                match result {
                    ClientSessionResult::OutboundResponse(mut packet) => {
                        packet.bytes.append(&mut self.behind);
                        queue.push_back(packet.bytes);
                    }
                    ClientSessionResult::RaisedEvent(event) => self.events.push(event),
                    ClientSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
        }
    }

    fn video(&mut self, body: &'static [u8], timestamp: u32) {
        let data = Bytes::from_static(body);
        let result = self.client.publish_video_data(data, RtmpTimestamp::new(timestamp), false);
        self.send_result(result.expect("publishing"));
    }

    fn audio(&mut self, body: &'static [u8], timestamp: u32) {
        let data = Bytes::from_static(body);
        let result = self.client.publish_audio_data(data, RtmpTimestamp::new(timestamp), false);
        self.send_result(result.expect("publishing"));
    }

    /// The action that closed the session.
    fn ended(&self) -> Option<&Ended> {
        match self.actions.last() {
            Some(Action::Close(ended)) => Some(ended),
            _ => None,
        }
    }

    /// The last `onStatus` the client got.
    fn last_status(&self) -> (&str, &str) {
        let (code, description) = self.statuses.seen.last().expect("an onStatus");
        (code, description)
    }
}

/// One message with a full header, as a client that shares no header state with ours would
/// send it (chunk size 4096, as the rml_rtmp client announces).
fn raw(message: RtmpMessage, stream_id: u32, timestamp: u32) -> Vec<u8> {
    let mut serializer = ChunkSerializer::new();
    // (The Set Chunk Size message this makes is not sent: the client sent its own.)
    serializer.set_max_chunk_size(4096, RtmpTimestamp::new(0)).expect("chunk size");
    let payload =
        message.into_message_payload(RtmpTimestamp::new(timestamp), stream_id).expect("payload");
    // One chunk: a full header. Longer: a full header, then type 3 chunks (rml_rtmp's
    // "uncompressed" would repeat the full header on each chunk, starting a new message).
    let one_chunk = payload.data.len() <= 4096;
    serializer.serialize(&payload, one_chunk, false).expect("serialize").bytes
}

fn command(name: &str, transaction_id: f64, arguments: Vec<Amf0Value>) -> RtmpMessage {
    RtmpMessage::Amf0Command {
        command_name: name.to_owned(),
        transaction_id,
        command_object: Amf0Value::Null,
        additional_arguments: arguments,
    }
}

fn text(s: &str) -> Amf0Value {
    Amf0Value::Utf8String(s.to_owned())
}

fn key(name: &str) -> StreamKey {
    StreamKey::new("live", name).expect("a valid key")
}

#[test]
fn publish_asks_admission_then_gives_configs_and_frames_in_order() {
    let mut peer = Peer::connected("live?token=app-token");
    peer.request_publishing("cam?token=cam-token");
    let Some(Action::AdmitPublish { key: asked, token }) = peer.actions.pop() else {
        panic!("{:?}", peer.actions);
    };
    assert_eq!((asked.clone(), token.as_deref()), (key("cam"), Some("cam-token")));
    assert!(!peer.session.is_publishing(), "not before admission says so");
    assert_eq!(peer.session.stream(), Some(&key("cam")));

    peer.answer(|session, out| session.publish_admitted(asked, out));
    assert!(matches!(peer.events.last(), Some(ClientSessionEvent::PublishRequestAccepted)));
    assert!(peer.session.is_publishing());
    peer.actions.clear();

    peer.video(AVC_CONFIG, 0);
    peer.audio(AAC_CONFIG, 0);
    peer.audio(AAC_FRAME, 23);
    peer.video(AVC_KEYFRAME, 40);
    peer.video(AVC_CONFIG, 80); // the same configuration: nothing for the stream
    let metadata = StreamMetadata { video_width: Some(1280), ..StreamMetadata::new() };
    let result = peer.client.publish_metadata(&metadata).expect("metadata");
    peer.send_result(result);

    let [Action::Config(video), Action::Config(audio), Action::Frame(aac), Action::Frame(avc), Action::Frame(data)] =
        &peer.actions[..]
    else {
        panic!("{:?}", peer.actions);
    };
    assert_eq!((video.codec(), &video.record()[..]), (Codec::H264, &AVC_CONFIG[5..]));
    assert_eq!((audio.codec(), &audio.record()[..]), (Codec::Aac, &AAC_CONFIG[2..]));
    assert_eq!(
        (aac.codec(), aac.dts(), &aac.payload()[..]),
        (Codec::Aac, MediaTime::from_millis(23), &AAC_FRAME[2..])
    );
    assert_eq!((avc.dts(), avc.pts()), (MediaTime::from_millis(40), MediaTime::from_millis(120)));
    assert!(avc.keyframe() && avc.config().is_some_and(|c| c.same(video)));
    assert_eq!(&avc.payload()[..], &AVC_KEYFRAME[5..]);
    assert_eq!(data.kind(), FrameKind::Data);
}

#[test]
fn nothing_is_acted_on_while_admission_decides() {
    let mut peer = Peer::connected("live");
    // A publisher that sends media right behind its publish, in the same read...
    let video = RtmpMessage::VideoData { data: Bytes::from_static(AVC_CONFIG) };
    peer.behind = raw(video, 1, 0);
    peer.request_publishing("cam");
    assert!(peer.behind.is_empty(), "sent with the publish command");
    assert!(matches!(&peer.actions[..], [Action::AdmitPublish { .. }]), "{:?}", peer.actions);
    peer.actions.clear();
    // ...and in the next.
    let audio = RtmpMessage::AudioData { data: Bytes::from_static(AAC_CONFIG) };
    peer.send(&raw(audio, 1, 0));
    assert!(peer.actions.is_empty(), "{:?}", peer.actions);
    peer.answer(|session, out| session.publish_admitted(key("cam"), out));
    assert!(
        matches!(&peer.actions[..], [Action::Config(video), Action::Config(audio)]
            if video.codec() == Codec::H264 && audio.codec() == Codec::Aac),
        "{:?}",
        peer.actions
    );
    assert!(matches!(peer.events.last(), Some(ClientSessionEvent::PublishRequestAccepted)));
}

#[test]
fn play_asks_admission_then_starts_on_its_stream() {
    let mut peer = Peer::connected("live");
    peer.request_playback("show");
    let Some(Action::AdmitPlay { key: asked, token: None }) = peer.actions.pop() else {
        panic!("{:?}", peer.actions);
    };
    assert_eq!(asked, key("show"));
    let before = peer.writes.len();
    peer.answer(|session, out| session.play_admitted(asked, out));
    assert!(matches!(peer.events.last(), Some(ClientSessionEvent::PlaybackRequestAccepted)));
    assert!(matches!(&peer.actions[..], [Action::Play { stream_id: 1 }]), "{:?}", peer.actions);
    assert!(peer.session.is_playing());
    let accepted = &peer.writes[before..];
    assert_eq!(accepted.last(), Some(&chunks::sample_access(1)), "|RtmpSampleAccess at 0");
    assert!(
        accepted.iter().all(|w| w.first().is_some_and(|b| b & 0x3f != RML_DATA_CSID)),
        "rml_rtmp's data messages are dropped"
    );
    // The client stops: the connection stays, idle.
    let stop = peer.client.stop_playback().expect("stop");
    for result in stop {
        peer.send_result(result);
    }
    assert!(matches!(peer.actions.last(), Some(Action::PlayFinished)), "{:?}", peer.actions);
    assert!(!peer.session.is_playing());
}

/// A player admitted on stream 1, its actions cleared.
fn playing() -> Peer {
    let mut peer = Peer::connected("live");
    peer.request_playback("show");
    assert!(matches!(peer.actions.pop(), Some(Action::AdmitPlay { .. })));
    peer.answer(|session, out| session.play_admitted(key("show"), out));
    assert!(peer.session.is_playing());
    peer.actions.clear();
    peer
}

#[test]
fn a_player_without_rml_rtmp_still_hears_what_a_player_sends() {
    // Once playing, the session reads a player's messages itself (rml_rtmp's session is
    // dropped for memory): deleteStream as FFmpeg sends it ends the play...
    let mut peer = playing();
    let ping = RtmpMessage::UserControl {
        event_type: rml_rtmp::messages::UserControlEventType::SetBufferLength,
        stream_id: Some(1),
        buffer_length: Some(3000),
        timestamp: None,
    };
    peer.send(&raw(ping, 0, 0));
    peer.send(&raw(command("pause", 11.0, vec![Amf0Value::Boolean(true)]), 1, 0));
    assert!(
        matches!(&peer.actions[..], [Action::Ignored(Ignored::Command(c))] if c == "pause"),
        "{:?}",
        peer.actions
    );
    peer.send(&raw(command("deleteStream", 12.0, vec![Amf0Value::Number(2.0)]), 0, 0));
    assert!(peer.session.is_playing(), "another stream's delete");
    peer.send(&raw(command("deleteStream", 13.0, vec![Amf0Value::Number(1.0)]), 0, 0));
    assert!(matches!(peer.actions.last(), Some(Action::PlayFinished)), "{:?}", peer.actions);
    assert!(!peer.session.is_playing());
    // ...and a second play on the same connection is refused with a reason.
    peer.send(&raw(command("play", 14.0, vec![text("other")]), 1, 0));
    assert_eq!(peer.last_status(), ("NetStream.Play.Failed", "a connection plays once; reconnect"));
    assert!(matches!(peer.ended(), Some(Ended::Refused(_))));
}

#[test]
fn a_player_cannot_publish_or_play_again() {
    for (second, code) in
        [("publish", "NetStream.Publish.BadName"), ("play", "NetStream.Play.Failed")]
    {
        let mut peer = playing();
        peer.send(&raw(command(second, 0.0, vec![text("other"), text("live")]), 1, 0));
        assert_eq!(peer.last_status(), (code, "connection is already busy"), "{second}");
        assert_eq!(peer.ended(), Some(&Ended::Refused("connection is already busy".into())));
        assert!(!peer
            .actions
            .iter()
            .any(|a| matches!(a, Action::AdmitPublish { .. } | Action::AdmitPlay { .. })));
    }
}

#[test]
fn a_publisher_that_stops_leaves_the_connection_idle() {
    let mut peer = Peer::publishing();
    for result in peer.client.stop_publishing().expect("stop") {
        peer.send_result(result);
    }
    assert!(matches!(peer.actions.last(), Some(Action::PublishFinished)), "{:?}", peer.actions);
    assert!(!peer.session.is_publishing());
}

fn refusals() -> Vec<Refusal> {
    vec![
        Refusal::Auth(AuthError::Missing),
        Refusal::Draining,
        Refusal::Denied("not today".into()),
        Refusal::NotLive(key("gone")),
        Refusal::Start(PublishError::StreamGone { key: key("cam") }),
    ]
}

#[test]
fn refused_publishes_get_the_onstatus_code_of_their_refusal() {
    let codes = [
        "NetStream.Publish.Unauthorized",
        "NetStream.Publish.Rejected",
        "NetStream.Publish.Rejected",
        "NetStream.Publish.BadName",
        "NetStream.Publish.BadName",
    ];
    for (refusal, code) in refusals().into_iter().zip(codes) {
        let mut peer = Peer::connected("live");
        peer.request_publishing("cam");
        assert!(matches!(peer.actions.pop(), Some(Action::AdmitPublish { .. })));
        peer.answer(|session, out| session.publish_refused(&refusal, out));
        let description = refusal.to_string();
        assert_eq!(peer.last_status(), (code, description.as_str()), "{refusal:?}");
        assert_eq!(peer.ended(), Some(&Ended::Refused(description)));
        assert!(!peer.session.is_publishing());
        assert_eq!(peer.session.stream(), Some(&key("cam")), "for the close line");
    }
}

#[test]
fn refused_plays_get_the_onstatus_code_of_their_refusal() {
    let codes = [
        "NetStream.Play.Unauthorized",
        "NetStream.Play.Failed",
        "NetStream.Play.Failed",
        "NetStream.Play.StreamNotFound",
        "NetStream.Play.Failed",
    ];
    for (refusal, code) in refusals().into_iter().zip(codes) {
        let mut peer = Peer::connected("live");
        peer.request_playback("show");
        assert!(matches!(peer.actions.pop(), Some(Action::AdmitPlay { .. })));
        peer.answer(|session, out| session.play_refused(&refusal, out));
        let description = refusal.to_string();
        assert_eq!(peer.last_status(), (code, description.as_str()), "{refusal:?}");
        assert_eq!(peer.ended(), Some(&Ended::Refused(description)));
        assert!(!peer.session.is_playing());
    }
}

#[test]
fn a_busy_connection_cannot_publish_or_play_again() {
    for (second, code) in
        [("publish", "NetStream.Publish.BadName"), ("play", "NetStream.Play.Failed")]
    {
        let mut peer = Peer::publishing();
        peer.actions.clear();
        peer.send(&raw(command("createStream", 10.0, vec![]), 0, 0));
        peer.send(&raw(command(second, 0.0, vec![text("other"), text("live")]), 2, 0));
        assert_eq!(
            peer.last_status(),
            (code, "connection is already busy"),
            "{second} while publishing"
        );
        assert_eq!(
            peer.ended(),
            Some(&Ended::Refused("connection is already busy".into())),
            "{:?}",
            peer.actions
        );
        assert!(!peer
            .actions
            .iter()
            .any(|a| matches!(a, Action::AdmitPublish { .. } | Action::AdmitPlay { .. })));
        assert_eq!(peer.session.stream(), Some(&key("cam")), "still the stream published");
    }
}

#[test]
fn bad_stream_names_are_refused_without_asking_admission() {
    let mut peer = Peer::connected("live");
    peer.request_publishing("a/b");
    assert_eq!(peer.last_status().0, "NetStream.Publish.BadName");
    assert!(matches!(peer.ended(), Some(Ended::Refused(_))), "{:?}", peer.actions);
    let mut peer = Peer::connected("live");
    peer.request_playback("a/b");
    assert_eq!(peer.last_status().0, "NetStream.Play.StreamNotFound");
    assert!(matches!(peer.ended(), Some(Ended::Refused(_))), "{:?}", peer.actions);
}

#[test]
fn create_stream_is_bounded_per_connection() {
    let mut peer = Peer::connected("live");
    for transaction in 0..MAX_CREATE_STREAM {
        peer.send(&raw(command("createStream", f64::from(10 + transaction), vec![]), 0, 0));
        assert_eq!(peer.ended(), None);
    }
    peer.send(&raw(command("createStream", 99.0, vec![]), 0, 0));
    assert_eq!(
        peer.ended(),
        Some(&Ended::BadInput(
            RejectReason::Malformed,
            format!("more than {MAX_CREATE_STREAM} createStream commands")
        ))
    );
    // Closed: what comes after is not read.
    let mut out = Vec::new();
    peer.session.handle_input(&raw(command("createStream", 100.0, vec![]), 0, 0), &mut out);
    assert!(out.is_empty());
}

#[test]
fn acknowledgements_follow_the_peers_window() {
    let ack_message = || raw(RtmpMessage::Acknowledgement { sequence_number: 1 }, 0, 0);
    let acks = |peer: &Peer| -> Vec<Bytes> {
        let ack_type = |w: &Bytes| w.get(7) == Some(&3) && w.len() == 16;
        peer.writes.iter().filter(|w| ack_type(w)).cloned().collect()
    };
    // No window announced: nothing acknowledged.
    let mut peer = Peer::handshaken(u64::MAX);
    for _ in 0..100 {
        peer.send(&ack_message());
    }
    assert!(acks(&peer).is_empty());

    // A window applies to the read that announced it, and the count restarts after each.
    let mut peer = Peer::handshaken(u64::MAX);
    let window = raw(RtmpMessage::WindowAcknowledgement { size: 40 }, 0, 0);
    let len = window.len() as u32;
    assert_eq!(len, 16);
    peer.send(&window);
    assert!(acks(&peer).is_empty(), "16 bytes are below the window");
    peer.send(&ack_message());
    assert!(acks(&peer).is_empty());
    peer.send(&ack_message());
    assert_eq!(acks(&peer), [chunks::acknowledgement(48)]);
    for _ in 0..3 {
        peer.send(&ack_message());
    }
    assert_eq!(acks(&peer), [chunks::acknowledgement(48), chunks::acknowledgement(96)]);

    let mut peer = Peer::handshaken(u64::MAX);
    peer.send(&raw(RtmpMessage::WindowAcknowledgement { size: 16 }, 0, 0));
    assert_eq!(acks(&peer), [chunks::acknowledgement(16)], "the window's own read counts");
}

#[test]
fn unsupported_codecs_are_rejected_with_the_reason() {
    let cases: [(bool, &'static [u8], Unsupported); 3] = [
        (true, &[0x14, 0], Unsupported::VideoCodec(4)),
        (true, b"\x90vvc1\x01", Unsupported::EnhancedCodec("vvc1".into())),
        (false, &[0x2f, 0], Unsupported::AudioFormat(2)),
    ];
    for (video, body, expected) in cases {
        let mut peer = Peer::publishing();
        peer.actions.clear();
        if video {
            peer.video(body, 0);
        } else {
            peer.audio(body, 0);
        }
        let Some(Ended::Unsupported { reason, status }) = peer.ended().cloned() else {
            panic!("{:?}", peer.actions);
        };
        assert_eq!(reason, expected);
        peer.statuses.read(&status);
        let description = expected.to_string();
        assert_eq!(peer.last_status(), ("NetStream.Publish.Rejected", description.as_str()));
        assert_eq!(peer.session.stream(), Some(&key("cam")));
    }
}

#[test]
fn media_outside_a_publish_is_ignored() {
    let mut peer = Peer::connected("live");
    let video = RtmpMessage::VideoData { data: Bytes::from_static(AVC_KEYFRAME) };
    peer.send(&raw(video, 1, 0));
    assert_eq!(peer.ended(), None);
    assert!(matches!(peer.actions.last(), Some(Action::Ignored(Ignored::MediaNotPublishing))));
}

#[test]
fn protocol_violations_close_with_their_reason() {
    let mut peer = Peer::handshaken(u64::MAX);
    // A full header for message type 99, which RTMP does not define.
    peer.send(&[3, 0, 0, 0, 0, 0, 4, 99, 0, 0, 0, 0, 1, 2, 3, 4]);
    assert!(matches!(peer.ended(), Some(Ended::BadInput(RejectReason::UnknownMessageType, _))));
    let mut out = Vec::new();
    let mut session = Session::new(PartialBudget::new(u64::MAX).share());
    session.handle_input(&[9; 1537], &mut out);
    assert!(
        matches!(out.last(), Some(Action::Close(Ended::BadInput(RejectReason::Handshake, _)))),
        "{out:?}"
    );
}

#[test]
fn the_nodes_budget_of_partial_messages_is_enforced() {
    let mut peer = Peer::handshaken(10_000);
    let request = peer.client.request_connection("live".into()).expect("connect");
    peer.send_result(request);
    peer.request_publishing("cam");
    let Some(Action::AdmitPublish { key, .. }) = peer.actions.pop() else { panic!() };
    peer.answer(|session, out| session.publish_admitted(key, out));
    // Half of a 1 MB video message (chunks of 4096 bytes): over the node's 10 kB.
    let video = RtmpMessage::VideoData { data: Bytes::from(vec![0x17; 1 << 20]) };
    let bytes = raw(video, 1, 0);
    peer.send(&bytes[..20_000]);
    assert_eq!(peer.ended(), Some(&Ended::NodeBudget));
}

proptest! {
    #[test]
    fn hostile_bytes_never_panic(
        stage in 0u8..3,
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        split in 0usize..3000,
    ) {
        let mut session = match stage {
            0 => Session::new(PartialBudget::new(u64::MAX).share()),
            1 => Peer::connected("live").session,
            _ => Peer::publishing().session,
        };
        let split = split.min(data.len());
        let mut out = Vec::new();
        session.handle_input(&data[..split], &mut out);
        session.handle_input(&data[split..], &mut out);
        // Answer whatever is asked, as the connection would.
        match out.last() {
            Some(Action::AdmitPublish { key, .. }) => {
                let key = key.clone();
                session.publish_admitted(key, &mut out);
            }
            Some(Action::AdmitPlay { key, .. }) => {
                let key = key.clone();
                session.play_admitted(key, &mut out);
            }
            _ => {}
        }
        let close = out.iter().position(|a| matches!(a, Action::Close(_)));
        prop_assert!(close.is_none_or(|at| at == out.len() - 1), "a close is the last action");
    }
}
