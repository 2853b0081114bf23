//! Links between nodes: the listener that other nodes connect to, the handshake both sides
//! run, the origin side of a relay (serve a stream as FLV), and calls to named actors
//! ([`Peers`]: one multiplexed link per remote node, ordered per sender).
//!
//! The protocol is in [`super::wire`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use zenlive_actors::events::ConnectionKind;
use zenlive_actors::{Protocol, StreamKey, ViewerSession};
use zenlive_cluster::{ActorKey, ActorKind, NodeId};
use zenlive_media::flv::flv_file_header;

use super::wire::{self, Call, Codec, Message, RemoteError, VERSION};
use super::Cluster;
use crate::config::secs;
use crate::http_flv::FlvSink;
use crate::node::NodeContext;

/// How long a handshake or a connection attempt may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a call waits for its reply.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Frames queued for an edge before it counts as behind.
const RELAY_QUEUE_FRAMES: usize = 512;
/// Calls queued for one peer before callers wait.
const CALL_QUEUE: usize = 1024;
/// Calls sent to one peer and not answered yet; beyond it new calls fail at once.
const MAX_IN_FLIGHT: usize = 4096;

/// A framed link.
pub type Link = Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>;

/// Why a link could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The TCP connection failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a message.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// The peer said no.
    #[error("refused ({code}): {reason}")]
    Refused {
        /// The stable code.
        code: String,
        /// The peer's reason.
        reason: String,
    },
    /// The peer sent something out of turn, or nothing in time.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Sends one message.
pub async fn send(link: &mut Link, codec: &dyn Codec, message: &Message) -> Result<(), LinkError> {
    link.send(Bytes::from(codec.encode(message)?)).await?;
    Ok(())
}

/// Receives one message; `None` at a clean end.
pub async fn recv(link: &mut Link, codec: &dyn Codec) -> Result<Option<Message>, LinkError> {
    match link.next().await {
        Some(Ok(bytes)) => Ok(Some(codec.decode(&bytes)?)),
        Some(Err(error)) => Err(error.into()),
        None => Ok(None),
    }
}

async fn recv_within(link: &mut Link, codec: &dyn Codec) -> Result<Message, LinkError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, recv(link, codec)).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(LinkError::Protocol("closed during handshake".into())),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(LinkError::Protocol("no answer in time".into())),
    }
}

async fn refuse(link: &mut Link, codec: &dyn Codec, code: &str, reason: String) -> LinkError {
    let message = Message::Refused { code: code.to_owned(), reason: reason.clone() };
    let _ = send(link, codec, &message).await;
    LinkError::Refused { code: code.to_owned(), reason }
}

/// Connects to the node at `addr` and runs the connector's side of the handshake.
pub async fn connect(cluster: &Cluster, addr: &str) -> Result<Link, LinkError> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| LinkError::Protocol(format!("connecting to {addr} timed out")))??;
    stream.set_nodelay(true)?;
    let mut link = Framed::new(stream, wire::framing());
    let codec = cluster.codec.as_ref();
    let nonce = match recv_within(&mut link, codec).await? {
        Message::Challenge { version: VERSION, nonce } => nonce,
        Message::Challenge { version, .. } => {
            return Err(LinkError::Protocol(format!("peer speaks version {version}")))
        }
        other => return Err(LinkError::Protocol(format!("expected a challenge, got {other:?}"))),
    };
    let node = cluster.node.as_str().to_owned();
    let proof = wire::proof(&cluster.secret, &nonce, &node);
    send(&mut link, codec, &Message::Hello { version: VERSION, node, proof }).await?;
    match recv_within(&mut link, codec).await? {
        Message::Welcome { .. } => Ok(link),
        Message::Refused { code, reason } => Err(LinkError::Refused { code, reason }),
        other => Err(LinkError::Protocol(format!("expected welcome, got {other:?}"))),
    }
}

/// The acceptor's side of the handshake; answers the connector's node id.
async fn accept(cluster: &Cluster, link: &mut Link) -> Result<String, LinkError> {
    let codec = cluster.codec.as_ref();
    let nonce: [u8; 16] = rand::random();
    send(link, codec, &Message::Challenge { version: VERSION, nonce }).await?;
    let (node, proof) = match recv_within(link, codec).await? {
        Message::Hello { version: VERSION, node, proof } => (node, proof),
        Message::Hello { version, .. } => {
            return Err(refuse(link, codec, "bad_version", format!("version {version}")).await)
        }
        _ => return Err(refuse(link, codec, "protocol", "expected hello".into()).await),
    };
    if !wire::verify_proof(&cluster.secret, &nonce, &node, &proof) {
        return Err(refuse(link, codec, "bad_proof", "cluster.secret differs".into()).await);
    }
    send(link, codec, &Message::Welcome { node: cluster.node.as_str().to_owned() }).await?;
    Ok(node)
}

/// Most links open at once (relays and call links from every other node); beyond it new
/// connections are closed at once.
const MAX_LINKS: usize = 4096;

/// Accepts links from other nodes until the task is dropped.
pub async fn listen(listener: TcpListener, node: Arc<NodeContext>) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "cluster accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_LINKS {
            tracing::warn!(%peer, "cluster link refused: too many links");
            continue;
        }
        let Ok(std_stream) = stream.into_std() else { continue };
        let (node, open) = (Arc::clone(&node), Arc::clone(&open));
        open.fetch_add(1, Ordering::Relaxed);
        node.pool.next().spawn(async move {
            if let Ok(stream) = TcpStream::from_std(std_stream) {
                let _gauge = node.counters.connection(ConnectionKind::Cluster);
                if let Err(error) = serve(stream, &node).await {
                    tracing::warn!(%peer, %error, "cluster link ended");
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve(stream: TcpStream, node: &Arc<NodeContext>) -> Result<(), LinkError> {
    let Some(cluster) = node.cluster.as_ref() else { return Ok(()) };
    stream.set_nodelay(true)?;
    let mut link = Framed::new(stream, wire::framing());
    let peer = accept(cluster, &mut link).await?;
    let codec = Arc::clone(&cluster.codec);
    let Some(first) = recv(&mut link, codec.as_ref()).await? else { return Ok(()) };
    match first {
        Message::Pull { stream } => serve_pull(node, cluster, link, &peer, &stream).await,
        Message::Call(call) => serve_calls(cluster, link, call).await,
        other => {
            Err(refuse(&mut link, codec.as_ref(), "protocol", format!("unexpected {other:?}"))
                .await)
        }
    }
}

/// The origin's side of a relay: one viewer session whose frames go out as FLV.
async fn serve_pull(
    node: &Arc<NodeContext>,
    cluster: &Cluster,
    mut link: Link,
    peer: &str,
    stream: &str,
) -> Result<(), LinkError> {
    let codec = Arc::clone(&cluster.codec);
    let Ok(key) = StreamKey::parse(stream) else {
        return Err(
            refuse(&mut link, codec.as_ref(), "bad_request", "bad stream name".into()).await
        );
    };
    let actor = ActorKey::new(ActorKind::Stream, key.to_string());
    let owner = cluster.registry.lookup(&actor).await.ok().flatten();
    let entry = node.directory.get(&key);
    let (Some(owner), Some(entry)) = (owner, entry) else {
        let reason = format!("stream {key} is not live here");
        return Err(refuse(&mut link, codec.as_ref(), "not_owner", reason).await);
    };
    if owner.node != cluster.node {
        let reason = format!("stream {key} is owned by {}", owner.node);
        return Err(refuse(&mut link, codec.as_ref(), "not_owner", reason).await);
    }
    send(&mut link, codec.as_ref(), &Message::Pulling { epoch: owner.epoch }).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(RELAY_QUEUE_FRAMES);
    let session = ViewerSession::new(
        key.clone(),
        Protocol::Relay,
        entry,
        node.directory.clone(),
        Box::new(FlvSink::new(tx)),
        Arc::clone(&node.counters),
        secs(node.config.rtmp.max_viewer_lag),
    );
    session.start();
    tracing::info!(stream = %key, edge = %peer, "relaying to an edge");
    let mut socket = link.into_inner();
    socket.write_all(&flv_file_header(true, true)).await?;
    while let Some(tag) = rx.recv().await {
        socket.write_all(&tag).await?;
    }
    tracing::info!(stream = %key, edge = %peer, "relay to the edge ended");
    Ok(())
}

/// Handles calls in arrival order and answers each.
async fn serve_calls(cluster: &Cluster, mut link: Link, first: Call) -> Result<(), LinkError> {
    let codec = Arc::clone(&cluster.codec);
    let mut next = Some(first);
    loop {
        let call = match next.take() {
            Some(call) => call,
            None => match recv(&mut link, codec.as_ref()).await? {
                Some(Message::Call(call)) => call,
                Some(other) => {
                    let reason = format!("unexpected {other:?}");
                    return Err(refuse(&mut link, codec.as_ref(), "protocol", reason).await);
                }
                None => return Ok(()),
            },
        };
        cluster.counters.remote_in.inc();
        let correlation = call.correlation;
        let result = cluster.handle_call(call).await;
        send(&mut link, codec.as_ref(), &Message::Reply { correlation, result }).await?;
    }
}

/// Where a call's answer goes.
type Answer = oneshot::Sender<Result<Vec<u8>, RemoteError>>;
/// Calls sent and not answered yet, by correlation id.
type Pending = Arc<Mutex<HashMap<u64, Answer>>>;
/// A call waiting to be written, with where its answer goes.
type Queued = (Call, Answer);

/// An open call link to one peer: calls go out in the order they were made.
struct PeerLink {
    calls: mpsc::Sender<Queued>,
}

/// Call links to other nodes, opened on first use and re-opened after a failure.
#[derive(Default)]
pub struct Peers {
    links: Mutex<HashMap<NodeId, PeerLink>>,
    correlation: AtomicU64,
}

impl Peers {
    /// Sends `call` to `peer` at `addr` and waits for the answer, bounded by
    /// [`CALL_TIMEOUT`].
    pub async fn call(
        &self,
        cluster: &Arc<Cluster>,
        peer: &NodeId,
        addr: &str,
        mut call: Call,
    ) -> Result<Vec<u8>, RemoteError> {
        call.correlation = self.correlation.fetch_add(1, Ordering::Relaxed);
        call.seq = call.correlation;
        let (reply, answer) = oneshot::channel();
        let sender = {
            let mut links = self.links.lock();
            let link = links.entry(peer.clone()).or_insert_with(|| {
                let (calls, queue) = mpsc::channel(CALL_QUEUE);
                actix_rt::spawn(run_peer_link(Arc::clone(cluster), addr.to_owned(), queue));
                PeerLink { calls }
            });
            link.calls.clone()
        };
        if sender.send((call, reply)).await.is_err() {
            self.links.lock().remove(peer);
            return Err(RemoteError::Link("link closed".into()));
        }
        cluster.counters.remote_out.inc();
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => {
                // The link task ended: forget it so the next call reconnects.
                let mut links = self.links.lock();
                if links.get(peer).is_some_and(|l| l.calls.same_channel(&sender)) {
                    links.remove(peer);
                }
                Err(RemoteError::Link("link closed".into()))
            }
            Err(_) => Err(RemoteError::Timeout),
        }
    }
}

/// Owns one call link: connects, writes queued calls in order, routes replies back.
async fn run_peer_link(cluster: Arc<Cluster>, addr: String, mut queue: mpsc::Receiver<Queued>) {
    let link = match connect(&cluster, &addr).await {
        Ok(link) => link,
        Err(error) => {
            tracing::warn!(%addr, %error, "cannot open a cluster link");
            return;
        }
    };
    let (mut sink, mut stream) = link.split();
    let pending: Pending = Arc::default();
    let codec = Arc::clone(&cluster.codec);
    let reader_pending = Arc::clone(&pending);
    let reader_codec = Arc::clone(&codec);
    let reader = async move {
        while let Some(Ok(bytes)) = stream.next().await {
            match reader_codec.decode(&bytes) {
                Ok(Message::Reply { correlation, result }) => {
                    if let Some(waiter) = reader_pending.lock().remove(&correlation) {
                        let _ = waiter.send(result);
                    }
                }
                Ok(other) => {
                    tracing::warn!(?other, "unexpected message on a call link");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "bad message on a call link");
                    break;
                }
            }
        }
    };
    let writer = async {
        while let Some((call, reply)) = queue.recv().await {
            let correlation = call.correlation;
            let Ok(bytes) = codec.encode(&Message::Call(call)) else {
                let _ = reply.send(Err(RemoteError::BadRequest("unencodable".into())));
                continue;
            };
            {
                let mut pending = pending.lock();
                if pending.len() >= MAX_IN_FLIGHT {
                    // Callers that timed out left their entries; the peer may never answer.
                    pending.retain(|_, waiter| !waiter.is_closed());
                }
                if pending.len() >= MAX_IN_FLIGHT {
                    let _ = reply.send(Err(RemoteError::Link("too many calls in flight".into())));
                    continue;
                }
                pending.insert(correlation, reply);
            }
            if sink.send(Bytes::from(bytes)).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
    // Waiters see their reply channel close and report a link failure.
    pending.lock().clear();
}
