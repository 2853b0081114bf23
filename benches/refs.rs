//! A typed reference's local path against a plain `Addr::send`: the same actor, the same
//! message, sent 1,000 times in a row and awaited one by one. The ref first checks that this
//! node proves the name's lease (`LeaseBook::proven`) and finds the actor by name, then sends
//! the plain actix message (no serialization). Goal: within 10 % of `Addr::send`.
//! Run: `cargo bench -p zenlive --bench refs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zenlive::refs::Routes;
use zenlive_actors::{NamedActor, RemoteMessage};
use zenlive_registry::{
    ActorKey, ActorKind, LeaseBook, MemoryRegistry, NodeId, NodeInfo, Registry,
};

const SENDS: u64 = 1_000;

/// An actor that counts what it is sent.
struct Counter(u64);

impl Actor for Counter {
    type Context = Context<Self>;
}

impl NamedActor for Counter {
    const KIND: ActorKind = ActorKind::Recorder;
}

#[derive(Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "u64")]
struct Ping;

impl RemoteMessage for Ping {
    const NAME: &'static str = "bench.ping";
}

impl Handler<Ping> for Counter {
    type Result = u64;

    fn handle(&mut self, _msg: Ping, _ctx: &mut Self::Context) -> u64 {
        self.0 += 1;
        self.0
    }
}

fn local_send(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let node = NodeId::new("bench");
    let (addr, target, proof) = system.block_on(async {
        let memory: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
        let info = NodeInfo {
            id: node.clone(),
            incarnation: 1,
            addresses: BTreeMap::new(),
            load: 0,
            draining: false,
        };
        let book = LeaseBook::new(memory, node.clone());
        book.register_node(info, Duration::from_secs(3600)).await.expect("register");
        let key = ActorKey::new(ActorKind::Recorder, "counter");
        book.claim(&key, &node, Duration::from_secs(3600)).await.expect("claim");
        let addr = Counter(0).start();
        let found = addr.clone();
        let locate = Arc::new(move |name: &str| (name == "counter").then(|| found.clone()));
        let proof = book.handle(&key);
        let routes = Arc::new(Routes::new(node.clone(), book, None, locate).message::<Ping>());
        (addr, routes.get("counter"), proof)
    });
    assert!(target.is_local());
    let mut group = c.benchmark_group("refs");
    group.throughput(Throughput::Elements(SENDS));
    group.bench_function("Addr::send, 1,000 in a row", |b| {
        b.iter(|| {
            system.block_on(async {
                for _ in 0..SENDS {
                    addr.send(Ping).await.expect("answer");
                }
            })
        })
    });
    group.bench_function("ActorRef::send to a local owner, 1,000 in a row", |b| {
        b.iter(|| {
            system.block_on(async {
                for _ in 0..SENDS {
                    target.send(Ping).await.expect("answer");
                }
            })
        })
    });
    group.bench_function("the local check alone (ProofHandle::proven), 1,000 in a row", |b| {
        b.iter(|| {
            for _ in 0..SENDS {
                std::hint::black_box(proof.proven());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, local_send);
criterion_main!(benches);
