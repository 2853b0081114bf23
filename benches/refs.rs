//! A typed reference's local path against a plain `Addr::send`: the same actor, the same
//! message, sent 1,000 times in a row and awaited one by one. The ref first checks that this
//! node proves the name's lease (`LeaseBook::proven`) and finds the actor by name, then sends
//! the plain actix message (no serialization). Goal: within 10 % of `Addr::send`.
//!
//! Before criterion's groups, a paired measurement prints the overhead itself: rounds of
//! 1,000 sends by each path, back to back in alternating order, the ratio taken per round
//! and its median reported. Criterion's separate groups run seconds apart, so a change in the
//! machine's state between them (a CPU frequency step, another process waking) lands in one
//! path's figure only; paired rounds see it in both.
//! Run: `cargo bench -p zenlive --bench refs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{criterion_group, Criterion, Throughput};
use zenlive::refs::{ActorRef, Routes};
use zenlive_actors::{NamedActor, RemoteMessage};
use zenlive_registry::{
    ActorKey, ActorKind, LeaseBook, MemoryRegistry, NodeId, NodeInfo, ProofHandle, Registry,
};

const SENDS: u64 = 1_000;

/// Rounds of the paired measurement (each sends `SENDS` by both paths).
const PAIRED_ROUNDS: usize = 401;

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

/// The actor, a typed reference to it as its proven local owner, and the lease proof.
fn setup(system: &actix_rt::SystemRunner) -> (Addr<Counter>, ActorRef<Counter>, ProofHandle) {
    let node = NodeId::new("bench");
    system.block_on(async {
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
    })
}

/// Times `SENDS` awaited sends by `Addr::send` and by `ActorRef::send`, in the order asked.
fn timed_round(
    system: &actix_rt::SystemRunner,
    addr: &Addr<Counter>,
    target: &ActorRef<Counter>,
    plain_first: bool,
) -> (Duration, Duration) {
    system.block_on(async {
        let plain = async {
            let start = Instant::now();
            for _ in 0..SENDS {
                addr.send(Ping).await.expect("answer");
            }
            start.elapsed()
        };
        let by_ref = async {
            let start = Instant::now();
            for _ in 0..SENDS {
                target.send(Ping).await.expect("answer");
            }
            start.elapsed()
        };
        if plain_first {
            let a = plain.await;
            (a, by_ref.await)
        } else {
            let b = by_ref.await;
            (plain.await, b)
        }
    })
}

/// Prints the paired overhead of `ActorRef::send` over `Addr::send` (module docs).
fn paired() {
    let system = actix_rt::System::new();
    let (addr, target, _proof) = setup(&system);
    assert!(target.is_local());
    for round in 0..20 {
        timed_round(&system, &addr, &target, round % 2 == 0);
    }
    let mut ratios = Vec::with_capacity(PAIRED_ROUNDS);
    let (mut plain_total, mut ref_total) = (Duration::ZERO, Duration::ZERO);
    for round in 0..PAIRED_ROUNDS {
        let (plain, by_ref) = timed_round(&system, &addr, &target, round % 2 == 0);
        plain_total += plain;
        ref_total += by_ref;
        ratios.push(by_ref.as_secs_f64() / plain.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| (ratios[((ratios.len() - 1) as f64 * q) as usize] - 1.0) * 100.0;
    let per_send =
        |total: Duration| total.as_nanos() as f64 / (PAIRED_ROUNDS as f64 * SENDS as f64);
    println!(
        "refs/paired: Addr::send {:.0} ns, ActorRef::send {:.0} ns per send (means); \
         ActorRef overhead per round: median {:+.1} %, quartiles {:+.1} % / {:+.1} % \
         ({PAIRED_ROUNDS} rounds of {SENDS} sends each way, alternating order)",
        per_send(plain_total),
        per_send(ref_total),
        at(0.5),
        at(0.25),
        at(0.75),
    );
}

fn local_send(c: &mut Criterion) {
    let system = actix_rt::System::new();
    let (addr, target, proof) = setup(&system);
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

fn main() {
    paired();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
