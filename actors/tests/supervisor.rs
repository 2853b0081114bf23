//! The supervisor at actor level: a panic in a stream actor's handler is noticed, the
//! stream restarts with fresh state under a new epoch, and other streams carry on.
#![cfg(feature = "fault-injection")]

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use zenlive_actors::events::{NoEvents, NodeCounters};
use zenlive_actors::stream::{GetInfo, InjectPanic};
use zenlive_actors::{
    Directory, FrameKind, MediaFrame, Protocol, StreamKey, StreamPublisher, StreamSupervisor,
};
use zenlive_cluster::{ActorKey, ActorKind, MemoryRegistry, NodeId, NodeInfo, Registry};

fn video(ts: u32, key: bool) -> MediaFrame {
    MediaFrame::new(
        FrameKind::Video,
        ts,
        Bytes::from_static(if key { &[0x17, 1, 0, 0, 0] } else { &[0x27, 1, 0, 0, 0] }),
    )
}

#[actix_rt::test]
async fn panicking_stream_is_restarted_with_a_new_epoch() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let node = NodeId::new("n1");
    registry
        .register_node(
            NodeInfo {
                id: node.clone(),
                incarnation: 1,
                addresses: BTreeMap::new(),
                load: 0,
                draining: false,
            },
            Duration::from_secs(3600),
        )
        .await
        .expect("register");
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

    let a = StreamKey::parse("live/a").expect("key");
    let b = StreamKey::parse("live/b").expect("key");
    let (mut pub_a, _ca) = StreamPublisher::start(
        &supervisor,
        directory.clone(),
        a.clone(),
        Protocol::Internal,
        None,
        None,
    )
    .await
    .expect("a");
    let (mut pub_b, _cb) = StreamPublisher::start(
        &supervisor,
        directory.clone(),
        b.clone(),
        Protocol::Internal,
        None,
        None,
    )
    .await
    .expect("b");
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
