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
use zenlive_actors::{Codec, EncodingSlot, MediaFrame, MediaTime, ViewerCore};

const VIEWERS: usize = 500;

fn fanout(c: &mut Criterion) {
    let payload = Bytes::from(vec![0x9a; 9_995]);
    let slot = EncodingSlot::register();
    let mut viewers: Vec<(ViewerCore, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>)> = (0..VIEWERS)
        .map(|_| {
            let (tx, rx) = mpsc::channel(96);
            (ViewerCore::new(true, true, Duration::from_secs(10)), tx, rx)
        })
        .collect();
    // Start every viewer on a keyframe so inter frames are admitted.
    let key = Bytes::from(vec![0x88; 9_995]);
    let keyframe =
        MediaFrame::video(Codec::H264, MediaTime::ZERO, MediaTime::ZERO, true, key, None);
    for (core, _, _) in &mut viewers {
        black_box(core.admit(&keyframe));
    }
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(VIEWERS as u64));
    let mut ts = 33;
    group.bench_function("one frame to 500 viewers", |b| {
        b.iter(|| {
            let t = MediaTime::from_millis(ts);
            let frame = MediaFrame::video(Codec::H264, t, t, false, payload.clone(), None);
            ts += 33;
            for (core, tx, rx) in &mut viewers {
                black_box(core.admit(&frame));
                let encoded = frame.encoded(slot, |f| f.payload().clone());
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
