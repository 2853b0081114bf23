//! Fan-out per viewer: what delivering one frame costs for each viewer of a stream, the
//! stream actor's broadcast excluded: the viewer's policy decision (`ViewerCore::admit`),
//! the frame's shared encoding (built once, then a reference-count bump), and the hand-off
//! to the connection's bounded queue. Throughput is viewers served per frame.
//! Run: `cargo bench -p zenlive-actors --bench fanout`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::sync::mpsc;
use zenlive_actors::{Encoding, FrameKind, MediaFrame, ViewerCore};

const VIEWERS: usize = 500;

fn fanout(c: &mut Criterion) {
    let mut body = vec![0x27, 1, 0, 0, 0];
    body.resize(10_000, 0x9a);
    let payload = Bytes::from(body);
    let mut viewers: Vec<(ViewerCore, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>)> = (0..VIEWERS)
        .map(|_| {
            let (tx, rx) = mpsc::channel(96);
            (ViewerCore::new(true, true, Duration::from_secs(10)), tx, rx)
        })
        .collect();
    // Start every viewer on a keyframe so inter frames are admitted.
    let mut key = vec![0x17, 1, 0, 0, 0];
    key.resize(10_000, 0x88);
    let keyframe = MediaFrame::new(FrameKind::Video, 0, Bytes::from(key));
    for (core, _, _) in &mut viewers {
        black_box(core.admit(&keyframe));
    }
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(VIEWERS as u64));
    let mut ts = 33;
    group.bench_function("one frame to 500 viewers", |b| {
        b.iter(|| {
            let frame = MediaFrame::new(FrameKind::Video, ts, payload.clone());
            ts += 33;
            for (core, tx, rx) in &mut viewers {
                black_box(core.admit(&frame));
                let encoded = frame.encoded(Encoding::RtmpChunks, |f| f.payload().clone());
                if let Ok(permit) = tx.try_reserve() {
                    core.delivered(encoded.len());
                    permit.send(encoded);
                }
                // The connection task's side, so the queue never fills.
                black_box(rx.try_recv().ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
