//! Edge relays: a viewer on this node of a stream published on another node makes this
//! node pull the stream once from its owner (the origin) and publish a local copy (a
//! replica), which every local viewer (RTMP, HTTP-FLV, the HLS packager) watches like any
//! stream. N viewers here cost the origin one outgoing stream.
//!
//! When the origin goes away, the relay looks for the stream's owner again for
//! `cluster.relay_grace`: a publisher that reconnected to another node is followed there
//! without disturbing local viewers (timestamps are rebased so they keep growing). A relay
//! that nobody here watched for `cluster.relay_idle` ends.
//!
//! A keyframe request from a viewer here (a WHEP viewer's PLI) goes on to the origin's
//! stream (`stream.keyframe`, at most one per [`KEYFRAME_FORWARD_INTERVAL`] per relay),
//! whose WHIP publisher can act on it.
//!
//! A stream *kicked* at its origin (by the SDK or the admin API, from any node) is not
//! followed: the origin tells every other node ([`announce_kicked`], a `relay.end` call) and
//! each edge ends its copy at once ([`serve_relay_ends`]), so its viewers end with the
//! publisher instead of waiting out the grace.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, mpsc, watch};
use zenlive_actors::directory::StreamEntry;
use zenlive_actors::publisher::Rebase;
use zenlive_actors::stream::{Kick, PublisherCommand, RequestKeyframe, StreamActor};
use zenlive_actors::Directory;
use zenlive_actors::{StreamKey, StreamPublisher};
use zenlive_media::flv::{FlvDemuxer, TagType};
use zenlive_media::flv_frames::{FlvToFrames, Ingested};
use zenlive_registry::{ActorKey, ActorKind, ClaimHints, LeaseBook, Owner};

use super::link::{self, LinkError};
use super::relay::{Relay, NOT_LIVE_FOR, NOT_LIVE_MAX};
use super::wire::Message;
use super::Cluster;
use crate::context::NodeContext;
use crate::refs::ActorRef;

/// How long a viewer waits for a relay to deliver its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between looks for a stream's new owner, and before pulling again from an origin
/// that failed.
const RESOLVE_PAUSE: Duration = Duration::from_millis(250);
/// Pause between looks for a stream's new owner when the registry hints at claims (the
/// look-ups only catch a missed hint).
const HINTED_RESOLVE_PAUSE: Duration = Duration::from_secs(2);
/// How often an idle relay is noticed.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Least time between two keyframe requests a relay passes on to the origin.
pub const KEYFRAME_FORWARD_INTERVAL: Duration = Duration::from_millis(500);

/// The live stream `key` on this node: local, or, in a cluster, relayed from the node that
/// owns it (started on demand). `None` when no node has it live.
pub async fn live_stream(node: &Arc<NodeContext>, key: &StreamKey) -> Option<StreamEntry> {
    let cluster = node.cluster.as_ref();
    if let Some(entry) = node.directory.get(key) {
        if let Some(cluster) = cluster {
            cluster.relays.touch(key);
        }
        return Some(entry);
    }
    let cluster = cluster?;
    if cluster.relays.not_live.lock().get(key).is_some_and(|at| at.elapsed() < NOT_LIVE_FOR) {
        return None;
    }
    let actor = ActorKey::new(ActorKind::Stream, key.to_string());
    let owner = match cluster.registry.lookup(&actor).await {
        Ok(Some(owner)) if owner.node != cluster.node => owner,
        Ok(_) => {
            let mut not_live = cluster.relays.not_live.lock();
            if not_live.len() >= NOT_LIVE_MAX {
                not_live.clear();
            }
            not_live.insert(key.clone(), Instant::now());
            return None;
        }
        Err(error) => {
            tracing::warn!(stream = %key, %error, "cannot look up a stream's owner");
            return None;
        }
    };
    let (relay, fresh) = {
        let mut active = cluster.relays.active.lock();
        match active.get(key) {
            Some(relay) => (Arc::clone(relay), false),
            None => {
                let relay = Arc::new(Relay {
                    last_demand: Mutex::new(Instant::now()),
                    live: watch::channel(false).0,
                });
                active.insert(key.clone(), Arc::clone(&relay));
                (relay, true)
            }
        }
    };
    *relay.last_demand.lock() = Instant::now();
    let mut live = relay.live.subscribe();
    if fresh {
        let node = Arc::clone(node);
        let key = key.clone();
        node.pool.next().spawn(async move {
            node.until_shutdown(run(&node, &key, owner, &relay)).await;
            if let Some(cluster) = node.cluster.as_ref() {
                let mut active = cluster.relays.active.lock();
                if active.get(&key).is_some_and(|r| Arc::ptr_eq(r, &relay)) {
                    active.remove(&key);
                }
            }
        });
    }
    // Wait for the replica's first frame (or the relay's end, which drops the sender).
    let _ = tokio::time::timeout(FIRST_FRAME_TIMEOUT, live.wait_for(|live| *live)).await;
    node.directory.get(key)
}

/// How one pull from an origin ended.
enum PullEnd {
    /// The origin's link ended or failed: look for the owner again.
    Lost(String),
    /// The relay should stop (idle, kicked, or the local stream failed).
    Stop(String),
}

/// The local copy a relay publishes, started on the first relayed frame.
struct Replica {
    key: StreamKey,
    publisher: Option<StreamPublisher>,
    commands: Option<mpsc::Receiver<PublisherCommand>>,
    rebase: Rebase,
    /// The current origin's tags as frames (its clock and codec configurations).
    frames: FlvToFrames,
    /// The stream's owner, wherever it is, for keyframe requests.
    owner: ActorRef<StreamActor>,
    /// When the last keyframe request went to the owner.
    last_keyframe_request: Option<Instant>,
}

impl Replica {
    fn new(key: StreamKey, owner: ActorRef<StreamActor>) -> Self {
        Self {
            key,
            publisher: None,
            commands: None,
            rebase: Rebase::default(),
            frames: FlvToFrames::new(),
            owner,
            last_keyframe_request: None,
        }
    }

    /// The next tags come from another origin.
    fn new_source(&mut self) {
        self.rebase.new_source();
        self.frames = FlvToFrames::new();
    }

    /// Pushes one relayed tag (timestamps rebased), starting the replica on the first.
    async fn push(
        &mut self,
        node: &NodeContext,
        relay: &Relay,
        tag: TagType,
        timestamp: u32,
        body: bytes::Bytes,
    ) -> Result<(), String> {
        // The origin checked the codecs when its publisher started.
        let ingested = self.frames.push(tag, timestamp, body).map_err(|e| e.to_string())?;
        if self.publisher.is_none() {
            let directory = node.directory.clone();
            let key = self.key.clone();
            let (publisher, commands) =
                StreamPublisher::start_replica(&node.supervisor, directory, key, None)
                    .await
                    .map_err(|error| format!("cannot start the replica: {error}"))?;
            self.publisher = Some(publisher);
            self.commands = Some(commands);
            relay.live.send_replace(true);
        }
        let Some(publisher) = self.publisher.as_mut() else { return Ok(()) };
        match ingested {
            Ingested::Frame(frame) => {
                publisher.push(self.rebase.apply(frame)).await.map_err(|error| error.to_string())
            }
            Ingested::Config { config, changed: true } => {
                publisher.set_config(&config);
                Ok(())
            }
            Ingested::Config { .. } | Ingested::Skipped(_) => Ok(()),
        }
    }

    /// The next command for the replica's publisher (a kick); pending until it has one.
    /// Keyframe requests are passed on to the stream's owner on the way (rate-limited; the
    /// answer is not awaited).
    async fn command(&mut self) -> Option<PublisherCommand> {
        let Some(rx) = &mut self.commands else { return std::future::pending().await };
        loop {
            match rx.recv().await {
                Some(PublisherCommand::KeyframeRequest) => {
                    let recent = self.last_keyframe_request;
                    if recent.is_some_and(|at| at.elapsed() < KEYFRAME_FORWARD_INTERVAL) {
                        continue;
                    }
                    self.last_keyframe_request = Some(Instant::now());
                    let owner = self.owner.clone();
                    let key = self.key.clone();
                    actix_rt::spawn(async move {
                        if let Err(error) = owner.send(RequestKeyframe).await {
                            tracing::debug!(stream = %key, %error, "keyframe request not passed to the origin");
                        }
                    });
                }
                other => return other,
            }
        }
    }

    fn finish(self, reason: String) {
        if let Some(publisher) = self.publisher {
            publisher.finish(reason);
        }
    }
}

async fn run(node: &Arc<NodeContext>, key: &StreamKey, first_owner: Owner, relay: &Relay) {
    let Some(cluster) = node.cluster.as_ref() else { return };
    cluster.counters.relays_started.inc();
    let mut replica = Replica::new(key.clone(), node.stream_routes.get(&key.to_string()));
    let mut owner = Some(first_owner);
    let grace = node.live().cluster.relay_grace;
    // The last origin that failed, so a dead one (whose lease has not expired yet) is
    // retried quietly, a pause apart, until its lease goes or grace runs out.
    let mut failed: Option<Owner> = None;
    let reason = loop {
        let Some(current) = owner.take() else {
            // A publisher that reconnects to this node takes the copy over (its stream
            // closes the relay's publisher): stop looking then.
            tokio::select! {
                next = find_owner(cluster, key, grace) => match next {
                    Some(next) => {
                        owner = Some(next);
                        continue;
                    }
                    None => break "the stream has no owner any more".to_owned(),
                },
                command = replica.command() => {
                    break command.map_or("the replica ended".to_owned(), |c| format!("{c:?}"));
                }
            }
        };
        replica.new_source();
        match pull(node, cluster, &current, relay, &mut replica).await {
            PullEnd::Lost(why) => {
                if failed.as_ref() != Some(&current) {
                    tracing::info!(stream = %key, origin = %current.node, why, "relay lost its origin; looking for the owner");
                }
                failed = Some(current);
                tokio::time::sleep(RESOLVE_PAUSE).await;
            }
            PullEnd::Stop(why) => break why,
        }
    };
    tracing::info!(stream = %key, reason, "relay ended");
    replica.finish(reason);
}

/// Looks up the stream's owner until one (other than this node) appears or `grace` passes:
/// at once when the registry hints that the name was claimed, and on a timer besides
/// (hints are best effort; without them, every [`RESOLVE_PAUSE`]).
async fn find_owner(cluster: &Cluster, key: &StreamKey, grace: Duration) -> Option<Owner> {
    let actor = ActorKey::new(ActorKind::Stream, key.to_string());
    let deadline = tokio::time::Instant::now() + grace;
    // Subscribed before the first look, so a claim between the two is not missed.
    let mut hints = cluster.registry.claim_hints();
    let pause = if hints.is_some() { HINTED_RESOLVE_PAUSE } else { RESOLVE_PAUSE };
    loop {
        if let Ok(Some(owner)) = cluster.registry.lookup(&actor).await {
            if owner.node != cluster.node {
                return Some(owner);
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        let wake = (now + pause).min(deadline);
        match hints.as_mut() {
            Some(hints) => hinted(hints, &actor, wake).await,
            None => tokio::time::sleep_until(wake).await,
        }
    }
}

/// Waits until `hints` names `actor` (or may have: it lagged), or until `wake`.
async fn hinted(hints: &mut ClaimHints, actor: &ActorKey, wake: tokio::time::Instant) {
    let heard = async {
        loop {
            match hints.recv().await {
                Ok(hint) if hint == *actor => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    };
    let _ = tokio::time::timeout_at(wake, heard).await;
}

/// Pulls the stream from `owner` into `replica` until the link ends or the relay should
/// stop.
async fn pull(
    node: &Arc<NodeContext>,
    cluster: &Cluster,
    owner: &Owner,
    relay: &Relay,
    replica: &mut Replica,
) -> PullEnd {
    let key = replica.key.clone();
    let Some(addr) = cluster.address_of(&owner.node, "cluster").await else {
        return PullEnd::Lost(format!("node {} has no cluster address", owner.node));
    };
    let mut link = match link::connect(cluster, &addr).await {
        Ok(link) => link,
        Err(error) => return PullEnd::Lost(error.to_string()),
    };
    let codec = Arc::clone(&cluster.codec);
    let request = Message::Pull { stream: key.to_string() };
    let accepted = async {
        link::send(&mut link, codec.as_ref(), &request).await?;
        match link::recv(&mut link, codec.as_ref()).await? {
            Some(Message::Pulling { epoch }) => Ok(epoch),
            Some(Message::Refused { code, reason }) => Err(LinkError::Refused { code, reason }),
            other => Err(LinkError::Protocol(format!("expected pulling, got {other:?}"))),
        }
    };
    let epoch = match tokio::time::timeout(link::HANDSHAKE_TIMEOUT, accepted).await {
        Ok(Ok(epoch)) => epoch,
        Ok(Err(error)) => return PullEnd::Lost(error.to_string()),
        Err(_) => return PullEnd::Lost("origin did not accept the pull in time".into()),
    };
    tracing::info!(stream = %key, origin = %owner.node, epoch, "relay pulling");
    let parts = link.into_parts();
    let mut socket = parts.io;
    let mut demuxer = FlvDemuxer::new();
    demuxer.push(&parts.read_buf);
    let mut buf = vec![0u8; 64 * 1024];
    let mut idle_check = tokio::time::interval(IDLE_CHECK);
    let idle_limit = node.live().cluster.relay_idle;
    loop {
        while let Some(tag) = demuxer.next_tag() {
            let tag = match tag {
                Ok(tag) => tag,
                Err(error) => return PullEnd::Lost(format!("bad FLV from the origin: {error}")),
            };
            let (kind, ts) = (tag.tag_type, tag.timestamp_ms);
            if let Err(why) = replica.push(node, relay, kind, ts, tag.body).await {
                return PullEnd::Stop(why);
            }
        }
        tokio::select! {
            read = socket.read(&mut buf) => match read {
                Ok(0) => return PullEnd::Lost("the origin closed the relay".into()),
                Ok(n) => demuxer.push(&buf[..n]),
                Err(error) => return PullEnd::Lost(error.to_string()),
            },
            command = replica.command() => {
                let why = command.map_or("the replica ended".to_owned(), |c| format!("{c:?}"));
                return PullEnd::Stop(why);
            }
            _ = idle_check.tick() => {
                let watched = node.directory.get(&key).is_some_and(|e| e.stats.snapshot().viewers_now() > 0);
                if watched {
                    *relay.last_demand.lock() = Instant::now();
                } else if relay.last_demand.lock().elapsed() > idle_limit {
                    return PullEnd::Stop("nobody watches".into());
                }
            }
        }
    }
}

/// The call kind by which an origin tells the other nodes that a stream it owned was
/// kicked, so their relayed copies end too.
pub const RELAY_END: &str = "relay.end";

/// The reason an edge's copy ends with when its origin's stream was kicked.
pub const KICKED_AT_ORIGIN: &str = "kicked at the origin";

/// Kick reasons of the node's own (self-fencing, shutdown): after those the publisher may
/// come back on another node, and edges follow it there.
const FOLLOWED_KICKS: [&str; 3] = ["lease lost", "node shutting down", KICKED_AT_ORIGIN];

/// Whether a stream that ended for `reason` (`StreamEvent::Ended`) was kicked by the
/// application or an admin: then its edges end their copies at once.
pub fn kicked_by_name(reason: &str) -> bool {
    reason.strip_prefix("kicked: ").is_some_and(|why| !FOLLOWED_KICKS.contains(&why))
}

/// Tells every other node that `key`, owned here, was kicked (best effort: a node that does
/// not hear it ends its copy after `cluster.relay_grace`, as for any origin that went away).
/// Needs an actix arbiter (a stream-end hook runs on one).
pub fn announce_kicked(cluster: &Arc<Cluster>, key: &StreamKey) {
    for member in cluster.members() {
        if member.id == cluster.node {
            continue;
        }
        let cluster = Arc::clone(cluster);
        let call = cluster.new_call(RELAY_END, &key.to_string(), None, Vec::new());
        actix_rt::spawn(async move {
            if let Err(error) = cluster.call_node(&member.id, call).await {
                tracing::debug!(node = %member.id, %error, "could not tell a node that a stream was kicked");
            }
        });
    }
}

/// Answers [`RELAY_END`] calls: ends this node's relayed copy of the stream, if it has one
/// (never a stream this node owns: a lease it proves in `book`).
pub fn serve_relay_ends(cluster: &Cluster, directory: Directory, book: LeaseBook) {
    cluster.on_call(RELAY_END, move |name, _epoch, _body| {
        let (directory, book) = (directory.clone(), book.clone());
        async move {
            let key = StreamKey::parse(&name)
                .map_err(|e| super::wire::RemoteError::BadRequest(e.to_string()))?;
            let owned = book.proven(&ActorKey::new(ActorKind::Stream, name)).is_some();
            if let Some(entry) = directory.get(&key).filter(|_| !owned) {
                tracing::info!(stream = %key, "the origin's stream was kicked; ending the relayed copy");
                let _ = entry.addr.send(Kick { reason: KICKED_AT_ORIGIN.to_owned() }).await;
            }
            Ok(Vec::new())
        }
    });
}
