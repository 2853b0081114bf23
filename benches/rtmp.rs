//! RTMP hot paths: the chunk guard every byte from a publisher passes through, and the
//! chunking of one frame for RTMP players (done once per frame, shared by all of them).
//! One iteration of the guard is one second of a 30 fps, ~2.5 Mbit/s stream in 4 KiB chunks.
//! Run: `cargo bench --bench rtmp`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use zenlive::rtmp::chunks::encode_frame;
use zenlive::rtmp::guard::ChunkGuard;
use zenlive_actors::{FrameKind, MediaFrame};

fn frame(kind: FrameKind, ts: u32, first: u8, len: usize) -> MediaFrame {
    let mut body = vec![first, 1, 0, 0, 0];
    body.resize(len, 0x5a);
    MediaFrame::new(kind, ts, Bytes::from(body))
}

fn one_second_of_chunks() -> Bytes {
    let mut out = BytesMut::new();
    for i in 0..30u32 {
        out.extend_from_slice(&encode_frame(
            &frame(FrameKind::Video, i * 33, 0x27, 10_000),
            1,
            4096,
        ));
        for a in 0..2 {
            out.extend_from_slice(&encode_frame(
                &frame(FrameKind::Audio, i * 33 + a * 16, 0xaf, 372),
                1,
                4096,
            ));
        }
    }
    out.freeze()
}

fn guard(c: &mut Criterion) {
    let input = one_second_of_chunks();
    let mut group = c.benchmark_group("rtmp");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("chunk guard, 1 s of media in 4 KiB chunks", |b| {
        b.iter_batched(
            || {
                let mut guard = ChunkGuard::new();
                guard.set_chunk_size(4096).expect("valid chunk size");
                guard
            },
            |mut guard| {
                // Reads arrive in pieces; 16 KiB is a typical socket read.
                for piece in input.chunks(16 * 1024) {
                    guard.check(piece).expect("valid input");
                }
                guard
            },
            BatchSize::SmallInput,
        )
    });
    let video = frame(FrameKind::Video, 0, 0x27, 10_000);
    group.throughput(Throughput::Bytes(10_000));
    group.bench_function("encode one 10 KB frame as RTMP chunks", |b| {
        b.iter(|| black_box(encode_frame(black_box(&video), 1, 4096)))
    });
    group.finish();
}

criterion_group!(benches, guard);
criterion_main!(benches);
