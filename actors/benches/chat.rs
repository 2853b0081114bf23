//! Chat broadcast: serializing one message event and queuing it for every member of a
//! 2,000-member room, as `ChatRoom` does (serialize once, share the `Arc<str>`), next to
//! serializing it once per member (what the room avoids). Throughput is members served.
//! Run: `cargo bench -p zenlive-actors --bench chat`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::sync::mpsc;
use zenlive_actors::chat_protocol::{ChatMessage, ChatUser, ServerEvent};

const MEMBERS: usize = 2000;

fn broadcast(c: &mut Criterion) {
    let event = ServerEvent::Message(ChatMessage {
        id: 42,
        text: "a chat message of ordinary length, with a few words in it".into(),
        user: Some(ChatUser {
            id: "u-123".into(),
            name: "Ann".into(),
            roles: vec!["viewer".into()],
        }),
        ts: 1_795_520_585_930,
    });
    let mut queues: Vec<_> = (0..MEMBERS).map(|_| mpsc::channel::<Arc<str>>(256)).collect();
    let mut group = c.benchmark_group("chat");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    group.bench_function("broadcast to 2,000 members, serialized once", |b| {
        b.iter(|| {
            let frame: Arc<str> = Arc::from(event.to_json());
            for (tx, rx) in &mut queues {
                let _ = tx.try_send(Arc::clone(&frame));
                black_box(rx.try_recv().ok());
            }
        })
    });
    group.bench_function("broadcast to 2,000 members, serialized per member", |b| {
        b.iter(|| {
            for (tx, rx) in &mut queues {
                let _ = tx.try_send(Arc::from(event.to_json()));
                black_box(rx.try_recv().ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, broadcast);
criterion_main!(benches);
