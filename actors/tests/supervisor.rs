//! The supervisor at actor level: a panic in a stream actor's handler is noticed, the
//! stream restarts with fresh state under a new epoch, and other streams carry on; a stream
//! that ends, however its publisher went, ends its viewers.
#![cfg(feature = "fault-injection")]

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::mpsc;
use zenlive_actors::events::{NoEvents, NodeCounters};
use zenlive_actors::stream::{GetInfo, InjectPanic, PublisherCommand};
use zenlive_actors::{
    ArbiterPool, Codec, CodecConfig, Directory, FrameSink, MediaFrame, MediaTime, Offer, Output,
    OutputChoices, OutputStream, Outputs, Protocol, StreamKey, StreamPublisher, StreamSupervisor,
    ViewerSession,
};
use zenlive_registry::{ActorKey, ActorKind, MemoryRegistry, NodeId, NodeInfo, Registry};

fn video(ts: u32, key: bool) -> MediaFrame {
    let t = MediaTime::from_millis(i64::from(ts));
    MediaFrame::video(Codec::H264, t, t, key, Bytes::from_static(&[0, 0, 0, 1, 0x65]), None)
}

/// A supervisor on a fresh in-memory registry, with its directory and counters.
async fn supervisor() -> (Arc<dyn Registry>, Directory, Arc<NodeCounters>, Addr<StreamSupervisor>) {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let node = NodeId::new("n1");
    let info = NodeInfo {
        id: node.clone(),
        incarnation: 1,
        addresses: BTreeMap::new(),
        load: 0,
        draining: false,
    };
    registry.register_node(info, Duration::from_secs(3600)).await.expect("register");
    let directory = Directory::default();
    let counters = Arc::new(NodeCounters::default());
    let supervisor = StreamSupervisor::new(
        node,
        Arc::clone(&registry),
        directory.clone(),
        Arc::new(NoEvents),
        Arc::clone(&counters),
    )
    .start();
    (registry, directory, counters, supervisor)
}

/// Records what a viewer was given and why it ended.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<(usize, Option<String>)>>);

impl FrameSink for Recorder {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        self.0.lock().expect("lock").0 += 1;
        Offer::Accepted(frame.payload().len())
    }

    fn finish(&mut self, reason: &str) {
        self.0.lock().expect("lock").1 = Some(reason.to_owned());
    }
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..250 {
        if check() {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[actix_rt::test]
async fn an_ended_stream_ends_its_viewers_and_a_dropped_publisher_ends_its_stream() {
    let (_registry, directory, counters, supervisor) = supervisor().await;
    for how in ["finish", "drop"] {
        let (key, mut publisher, _commands) =
            publisher(&supervisor, &directory, &format!("live/{how}")).await;
        publisher.push(video(0, true)).await.expect("push");
        let recorder = Recorder::default();
        viewer(&key, &directory, &counters, recorder.clone()).start();
        wait_until("the viewer's first frame", || recorder.0.lock().expect("lock").0 >= 1).await;
        if how == "finish" {
            publisher.finish("done");
        } else {
            // A connection task that panicked drops its publisher without finishing.
            drop(publisher);
        }
        wait_until("the stream to end", || directory.get(&key).is_none()).await;
        wait_until("the viewer to end", || recorder.0.lock().expect("lock").1.is_some()).await;
        assert_eq!(recorder.0.lock().expect("lock").1.as_deref(), Some("stream ended"), "{how}");
    }
}

#[actix_rt::test]
async fn panicking_stream_is_restarted_with_a_new_epoch() {
    let (registry, directory, counters, supervisor) = supervisor().await;

    let (a, mut pub_a, _ca) = publisher(&supervisor, &directory, "live/a").await;
    let (b, mut pub_b, _cb) = publisher(&supervisor, &directory, "live/b").await;
    pub_a.push(video(0, true)).await.expect("push a");
    pub_b.push(video(0, true)).await.expect("push b");
    let epoch = |key: &StreamKey| {
        let registry = Arc::clone(&registry);
        let key = ActorKey::new(ActorKind::Stream, key.to_string());
        async move { registry.lookup(&key).await.expect("lookup").expect("owned").epoch }
    };
    let epoch_before = epoch(&a).await;

    let old = directory.get(&a).expect("a live");
    assert!(old.addr.send(InjectPanic).await.is_err(), "the handler panicked");
    for _ in 0..100 {
        if counters.stream_restarts.load(Ordering::Relaxed) == 1 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counters.stream_restarts.load(Ordering::Relaxed), 1);
    let new = directory.get(&a).expect("a restarted");
    assert_ne!(new.generation, old.generation);
    assert_eq!(new.lineage, old.lineage);

    // The publisher re-attaches on its next push; the fresh actor has fresh state.
    pub_a.push(video(40, false)).await.expect("re-attached");
    let info = new.addr.send(GetInfo).await.expect("info");
    assert!(info.publishing);
    assert!(info.ingest.frames <= 2, "fresh state, not the crashed instance's counters");
    for _ in 0..100 {
        if epoch(&a).await > epoch_before {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(epoch(&a).await > epoch_before, "re-claimed under a newer epoch");

    // The other stream never noticed.
    pub_b.push(video(40, false)).await.expect("b still accepts frames");
    let info_b = directory.get(&b).expect("b live").addr.send(GetInfo).await.expect("info");
    assert_eq!(info_b.ingest.frames, 2);
}

/// Starts a publisher of `name` on `supervisor`; keep its command receiver alive.
async fn publisher(
    supervisor: &Addr<StreamSupervisor>,
    directory: &Directory,
    name: &str,
) -> (StreamKey, StreamPublisher, mpsc::Receiver<PublisherCommand>) {
    let key = StreamKey::parse(name).expect("key");
    let (publisher, commands) = StreamPublisher::start(
        supervisor,
        directory.clone(),
        key.clone(),
        Protocol::Internal,
        None,
        None,
        OutputChoices::default(),
    )
    .await
    .expect("start");
    (key, publisher, commands)
}

fn viewer(
    key: &StreamKey,
    directory: &Directory,
    counters: &Arc<NodeCounters>,
    sink: impl FrameSink,
) -> ViewerSession {
    let entry = directory.get(key).expect("live");
    let counters = Arc::clone(counters);
    ViewerSession::new(
        key.clone(),
        Protocol::Rtmp,
        entry,
        directory.clone(),
        Box::new(sink),
        Arc::clone(&counters),
        Duration::from_secs(30),
    )
    .on_crash(move || counters.restarted("viewer"))
}

fn frames(recorder: &Recorder) -> usize {
    recorder.0.lock().expect("lock").0
}

fn restarts(counters: &NodeCounters, kind: &str) -> u64 {
    counters.restarts().into_iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| n)
}

#[actix_rt::test]
async fn a_poison_frame_restarts_the_stream_and_its_publisher_carries_on() {
    let (_registry, directory, counters, supervisor) = supervisor().await;
    let (key, mut publisher, _commands) = publisher(&supervisor, &directory, "live/poisoned").await;
    publisher.push(video(0, true)).await.expect("push");
    let recorder = Recorder::default();
    viewer(&key, &directory, &counters, recorder.clone()).start();
    wait_until("the viewer's first frame", || frames(&recorder) >= 1).await;
    let before = directory.get(&key).expect("live");

    let poison = MediaFrame::data(
        MediaTime::ZERO,
        Bytes::from_static(zenlive_actors::faults::POISON.as_bytes()),
    );
    publisher.push(poison).await.expect("the publisher carries on into the restarted stream");
    assert_eq!(counters.stream_restarts.load(Ordering::Relaxed), 1, "counted once");
    let after = directory.get(&key).expect("restarted");
    assert_ne!(after.generation, before.generation, "a new instance");
    assert_eq!(after.lineage, before.lineage, "the same stream");

    // The publisher's next frames reach the new instance and the viewer, which followed it.
    let seen = frames(&recorder);
    for i in 1..=3 {
        publisher.push(video(40 * i, i == 1)).await.expect("push after the restart");
    }
    wait_until("frames after the restart", || frames(&recorder) > seen).await;
    let info = after.addr.send(GetInfo).await.expect("info");
    assert!(info.publishing && info.ingest.frames >= 3);
}

/// Offers pass until the `n`th, which panics.
struct PanicsAt(usize, Recorder);

impl FrameSink for PanicsAt {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        if self.1 .0.lock().expect("lock").0 + 1 == self.0 {
            panic!("a sink bug");
        }
        self.1.offer(frame)
    }
}

#[actix_rt::test]
async fn a_panicking_viewer_session_ends_alone_and_is_counted() {
    let (_registry, directory, counters, supervisor) = supervisor().await;
    let (key, mut publisher, _commands) = publisher(&supervisor, &directory, "live/viewers").await;
    publisher.push(video(0, true)).await.expect("push");
    let (doomed, healthy) = (Recorder::default(), Recorder::default());
    viewer(&key, &directory, &counters, PanicsAt(3, doomed.clone())).start();
    viewer(&key, &directory, &counters, healthy.clone()).start();
    for i in 1..=5 {
        publisher.push(video(40 * i, false)).await.expect("push");
    }
    wait_until("the crash to be counted", || restarts(&counters, "viewer") == 1).await;
    wait_until("the healthy viewer's frames", || frames(&healthy) == 6).await;
    assert_eq!(frames(&doomed), 2, "the crashed session took no more frames");
    assert_eq!(counters.stream_restarts.load(Ordering::Relaxed), 0, "the stream never noticed");
    publisher.push(video(400, false)).await.expect("the stream goes on");
    wait_until("the healthy viewer's next frame", || frames(&healthy) == 7).await;
}

/// An output whose first sink for each stream panics at its third frame.
struct FlakyOutput {
    opened: Arc<Mutex<Vec<u32>>>,
    first: Recorder,
    seen: Recorder,
}

impl Output for FlakyOutput {
    fn name(&self) -> &'static str {
        "flaky"
    }

    fn open(&self, stream: &OutputStream) -> Option<Box<dyn FrameSink>> {
        self.opened.lock().expect("lock").push(stream.restarts);
        if stream.restarts == 0 {
            Some(Box::new(PanicsAt(3, self.first.clone())))
        } else {
            Some(Box::new(self.seen.clone()))
        }
    }
}

#[actix_rt::test]
async fn a_panicking_output_restarts_with_fresh_state_and_nothing_else_notices() {
    let (registry, directory, counters, _) = supervisor().await;
    let opened = Arc::new(Mutex::new(Vec::new()));
    let (first, seen) = (Recorder::default(), Recorder::default());
    let output =
        FlakyOutput { opened: Arc::clone(&opened), first: first.clone(), seen: seen.clone() };
    let outputs = Outputs::new(
        vec![Arc::new(output)],
        ArbiterPool::start(1),
        directory.clone(),
        Arc::clone(&counters),
        Duration::from_secs(30),
    );
    let supervisor = StreamSupervisor::new(
        NodeId::new("n1"),
        registry,
        directory.clone(),
        Arc::new(NoEvents),
        Arc::clone(&counters),
    )
    .with_outputs(outputs)
    .start();
    let (key, mut publisher, _commands) = publisher(&supervisor, &directory, "live/outputs").await;
    let healthy = Recorder::default();
    publisher.push(video(0, true)).await.expect("push");
    viewer(&key, &directory, &counters, healthy.clone()).start();
    wait_until("the output's first frame", || frames(&first) == 1).await;
    // Both subscribed before the next frames, so each sees every one of them.
    wait_until("the viewer's first frame", || frames(&healthy) == 1).await;
    for i in 1..=4 {
        publisher.push(video(40 * i, i == 3)).await.expect("push");
    }
    wait_until("the output's restart", || restarts(&counters, "flaky") == 1).await;
    assert_eq!(*opened.lock().expect("lock"), vec![0, 1], "opened again, told it restarted");
    publisher.push(video(400, true)).await.expect("push");
    wait_until("the restarted output's frames", || frames(&seen) >= 1).await;
    wait_until("the viewer's frames", || frames(&healthy) == 6).await;
    assert_eq!(counters.stream_restarts.load(Ordering::Relaxed), 0, "the stream never noticed");
    assert_eq!(restarts(&counters, "viewer"), 0);
}

/// Records what it takes, in order; its first configuration offer finds the queue full.
#[derive(Clone, Default)]
struct FullOnce(Arc<Mutex<(bool, Vec<&'static str>)>>);

impl FrameSink for FullOnce {
    fn offer(&mut self, _frame: &MediaFrame) -> Offer {
        self.0.lock().expect("lock").1.push("frame");
        Offer::Accepted(1)
    }

    fn offer_config(&mut self, _config: &CodecConfig) -> Offer {
        let mut seen = self.0.lock().expect("lock");
        if !std::mem::replace(&mut seen.0, true) {
            return Offer::Full;
        }
        seen.1.push("config");
        Offer::Accepted(1)
    }
}

#[actix_rt::test]
async fn a_frame_never_goes_out_before_its_configuration() {
    let (_registry, directory, counters, supervisor) = supervisor().await;
    let (key, mut publisher, _commands) = publisher(&supervisor, &directory, "live/audio").await;
    let config = CodecConfig::new(Codec::Aac, Bytes::from_static(&[0x12, 0x10]), MediaTime::ZERO);
    let audio = |ms: i64| {
        let t = MediaTime::from_millis(ms);
        MediaFrame::audio(Codec::Aac, t, Bytes::from_static(&[1]), Some(config.clone()))
    };
    // The viewer joins before any frame: the configuration comes with the first one, and
    // the queue is full for it.
    let sink = FullOnce::default();
    viewer(&key, &directory, &counters, sink.clone()).start();
    let entry = directory.get(&key).expect("live");
    wait_until("the viewer to subscribe", || entry.stats.snapshot().viewers_now() == 1).await;
    for i in 0..=5 {
        publisher.push(audio(23 * i)).await.expect("push");
    }
    wait_until("frames after the configuration", || sink.0.lock().expect("lock").1.len() >= 3)
        .await;
    let taken = sink.0.lock().expect("lock").1.clone();
    assert_eq!(taken.first(), Some(&"config"), "the configuration first: {taken:?}");
    assert_eq!(taken.iter().filter(|t| **t == "config").count(), 1, "{taken:?}");
}
