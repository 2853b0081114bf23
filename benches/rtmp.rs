//! RTMP hot paths: the chunk reader every byte from a publisher passes through, the
//! publisher's session around it (reader, frames, acknowledgements, actions), and the
//! chunking of one frame for RTMP players (done once per frame, shared by all of them).
//! One iteration of the reader is one second of a 30 fps, ~2.5 Mbit/s stream in 4 KiB chunks.
//! Run: `cargo bench --bench rtmp`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionResult, PublishRequestType,
};
use zenlive::rtmp::budget::PartialBudget;
use zenlive::rtmp::chunks::encode_frame;
use zenlive::rtmp::reader::ChunkReader;
use zenlive::rtmp::session::{Action, Session};
use zenlive_actors::{Codec, MediaFrame, MediaTime};
use zenlive_media::flv::TagType;
use zenlive_media::flv_frames::{FlvToFrames, Ingested};

/// A frame whose RTMP message body is `len` bytes (the codec's FLV header included).
fn frame(codec: Codec, ts: u32, len: usize) -> MediaFrame {
    let t = MediaTime::from_millis(i64::from(ts));
    match codec {
        Codec::H264 => {
            let payload = Bytes::from(vec![0x5a; len - 5]);
            MediaFrame::video(codec, t, t, false, payload, None)
        }
        _ => MediaFrame::audio(codec, t, Bytes::from(vec![0x5a; len - 2]), None),
    }
}

/// A Set Chunk Size message (type 1) on chunk stream 2.
fn set_chunk_size(size: u32) -> Vec<u8> {
    let mut message = vec![2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
    message.extend_from_slice(&size.to_be_bytes());
    message
}

fn one_second_of_chunks() -> Bytes {
    let mut out = BytesMut::new();
    for i in 0..30u32 {
        let video = frame(Codec::H264, i * 33, 10_000);
        out.extend_from_slice(&encode_frame(&video, 1, 4096).expect("H.264"));
        for a in 0..2 {
            let audio = frame(Codec::Aac, i * 33 + a * 16, 372);
            out.extend_from_slice(&encode_frame(&audio, 1, 4096).expect("AAC"));
        }
    }
    out.freeze()
}

fn reader(c: &mut Criterion) {
    let input = one_second_of_chunks();
    let mut group = c.benchmark_group("rtmp");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("chunk reader, 1 s of media in 4 KiB chunks", |b| {
        b.iter_batched(
            || {
                let mut reader = ChunkReader::new();
                let mut out = Vec::new();
                reader.read(&set_chunk_size(4096), &mut out).expect("valid chunk size");
                (reader, Vec::with_capacity(128))
            },
            |(mut reader, mut out)| {
                // Reads arrive in pieces; 16 KiB is a typical socket read. Messages are
                // dropped as they are used, as the server does (and as the rml_rtmp case
                // below does): keeping them would time page faults, not parsing.
                let mut messages = 0;
                for piece in input.chunks(16 * 1024) {
                    reader.read(piece, &mut out).expect("valid input");
                    messages += out.len();
                    for message in out.drain(..) {
                        black_box(message);
                    }
                }
                assert_eq!(messages, 90);
                reader
            },
            BatchSize::SmallInput,
        )
    });
    // The same input through rml_rtmp's deserializer, which this reader replaced for media.
    group.bench_function("rml_rtmp ChunkDeserializer, 1 s of media in 4 KiB chunks", |b| {
        b.iter_batched(
            || {
                let mut deserializer = ChunkDeserializer::new();
                deserializer.set_max_chunk_size(4096).expect("valid chunk size");
                deserializer
            },
            |mut deserializer| {
                let mut messages = 0;
                for piece in input.chunks(16 * 1024) {
                    let mut next = piece;
                    while let Some(message) =
                        deserializer.get_next_message(next).expect("valid input")
                    {
                        black_box(message);
                        messages += 1;
                        next = &[];
                    }
                }
                assert_eq!(messages, 90);
                deserializer
            },
            BatchSize::SmallInput,
        )
    });
    let video = frame(Codec::H264, 0, 10_000);
    group.throughput(Throughput::Bytes(10_000));
    group.bench_function("encode one 10 KB frame as RTMP chunks", |b| {
        b.iter(|| black_box(encode_frame(black_box(&video), 1, 4096)))
    });
    group.finish();
}

/// A session that completed the handshake, `connect` and `publish live/bench` with
/// rml_rtmp's client (which set the chunk size to 4096).
fn publishing_session() -> Session {
    let mut session = Session::new(PartialBudget::new(u64::MAX).share());
    let mut out = Vec::new();
    let mut handshake = Handshake::new(PeerType::Client);
    session.handle_input(&handshake.generate_outbound_p0_and_p1().expect("c0 c1"), &mut out);
    let Some(Action::Write(s0_s1_s2)) = out.pop() else { panic!("s0 s1 s2") };
    let Ok(HandshakeProcessResult::Completed { response_bytes: c2, .. }) =
        handshake.process_bytes(&s0_s1_s2)
    else {
        panic!("handshake");
    };
    let (mut client, _) = ClientSession::new(ClientSessionConfig::new()).expect("client");
    let connect = client.request_connection("live".into()).expect("connect");
    let publish = |client: &mut ClientSession| {
        client.request_publishing("bench".into(), PublishRequestType::Live).expect("publish")
    };
    let mut to_server = vec![c2];
    let mut requests = vec![connect];
    loop {
        for result in requests.drain(..) {
            if let ClientSessionResult::OutboundResponse(packet) = result {
                to_server.push(packet.bytes);
            }
        }
        for bytes in to_server.drain(..) {
            session.handle_input(&bytes, &mut out);
        }
        for action in std::mem::take(&mut out) {
            match action {
                Action::Write(bytes) => {
                    requests.extend(client.handle_input(&bytes).expect("server output"));
                }
                Action::AdmitPublish { key, .. } => {
                    session.publish_admitted(key, &mut out);
                    for action in out.drain(..) {
                        if let Action::Write(bytes) = action {
                            client.handle_input(&bytes).expect("server output");
                        }
                    }
                    assert!(session.is_publishing());
                    return session;
                }
                _ => {}
            }
        }
        if requests.is_empty() && to_server.is_empty() {
            requests.push(publish(&mut client));
        }
    }
}

fn session(c: &mut Criterion) {
    let input = one_second_of_chunks();
    let mut group = c.benchmark_group("rtmp");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("publisher session, 1 s of media in 4 KiB chunks", |b| {
        b.iter_batched(
            || (publishing_session(), Vec::with_capacity(128)),
            |(mut session, mut actions)| {
                let mut frames = 0;
                for piece in input.chunks(16 * 1024) {
                    session.handle_input(piece, &mut actions);
                    for action in actions.drain(..) {
                        frames += usize::from(matches!(action, Action::Frame(_)));
                        black_box(action);
                    }
                }
                assert_eq!(frames, 90);
                session
            },
            BatchSize::SmallInput,
        )
    });
    // What the session does per message, without it: the reader and the frame converter
    // called directly (the connection's own loop before the session was split out).
    group.bench_function("reader and FlvToFrames alone, 1 s of media in 4 KiB chunks", |b| {
        b.iter_batched(
            || {
                let mut reader = ChunkReader::new();
                let mut out = Vec::new();
                reader.read(&set_chunk_size(4096), &mut out).expect("valid chunk size");
                (reader, FlvToFrames::new(), Vec::with_capacity(128))
            },
            |(mut reader, mut converter, mut out)| {
                let mut frames = 0;
                for piece in input.chunks(16 * 1024) {
                    reader.read(piece, &mut out).expect("valid input");
                    for message in out.drain(..) {
                        let tag =
                            if message.type_id == 8 { TagType::Audio } else { TagType::Video };
                        let ingested = converter.push(tag, message.timestamp, message.payload);
                        frames += usize::from(matches!(ingested, Ok(Ingested::Frame(_))));
                        black_box(ingested).ok();
                    }
                }
                assert_eq!(frames, 90);
                reader
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, reader, session);
criterion_main!(benches);
