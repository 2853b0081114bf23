//! RTMP hot paths: the chunk reader every byte from a publisher passes through, and the
//! chunking of one frame for RTMP players (done once per frame, shared by all of them).
//! One iteration of the reader is one second of a 30 fps, ~2.5 Mbit/s stream in 4 KiB chunks.
//! Run: `cargo bench --bench rtmp`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rml_rtmp::chunk_io::ChunkDeserializer;
use zenlive::rtmp::chunks::encode_frame;
use zenlive::rtmp::reader::ChunkReader;
use zenlive_actors::{Codec, MediaFrame, MediaTime};

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

criterion_group!(benches, reader);
criterion_main!(benches);
