//! Links between nodes: the handshake both sides run, and calls to named actors
//! ([`Peers`]: one multiplexed link per remote node, ordered per sender). The listener
//! other nodes connect to, and what it serves, is [`super::listen`].
//!
//! The protocol is in [`super::wire`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use zenlive_registry::NodeId;

use super::wire::{self, Call, Codec, Message, RemoteError, VERSION};
use super::Cluster;

/// How long a handshake or a connection attempt may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a call waits for its reply.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Calls queued for one peer before callers wait.
const CALL_QUEUE: usize = 1024;
/// Calls sent to one peer and not answered yet; beyond it new calls fail at once.
const MAX_IN_FLIGHT: usize = 4096;
/// Most calls written to a link before it is flushed (more wait for the next write).
const MAX_BATCH: usize = 128;
/// Largest message during the handshake (a challenge or a hello is under 300 bytes): a
/// stranger cannot make the node buffer megabytes before proving the secret.
const MAX_HANDSHAKE_BYTES: usize = 1024;

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

pub(crate) async fn refuse(
    link: &mut Link,
    codec: &dyn Codec,
    code: &str,
    reason: String,
) -> LinkError {
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
pub(crate) async fn accept(cluster: &Cluster, link: &mut Link) -> Result<String, LinkError> {
    let codec = cluster.codec.as_ref();
    link.codec_mut().set_max_frame_length(MAX_HANDSHAKE_BYTES);
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
    link.codec_mut().set_max_frame_length(wire::MAX_MESSAGE_BYTES);
    Ok(node)
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
        let mut queued = (call, reply);
        // A link that closed because it was idle refuses the call: it is sent once more, on
        // a new link.
        let mut tries = 0;
        let sender = loop {
            let sender = self.link_to(cluster, peer, addr);
            match sender.send(queued).await {
                Ok(()) => break sender,
                Err(mpsc::error::SendError(back)) => {
                    self.forget(peer, &sender);
                    tries += 1;
                    if tries == 2 {
                        // Never queued on a live link: not sent.
                        return Err(RemoteError::NotSent("link closed".into()));
                    }
                    queued = back;
                }
            }
        };
        cluster.counters.remote_out.inc();
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => {
                // The link task ended: forget it so the next call reconnects.
                self.forget(peer, &sender);
                Err(RemoteError::Link("link closed".into()))
            }
            Err(_) => Err(RemoteError::Timeout),
        }
    }
}

impl Peers {
    /// The queue of the link to `peer`, opened if there is none.
    fn link_to(&self, cluster: &Arc<Cluster>, peer: &NodeId, addr: &str) -> mpsc::Sender<Queued> {
        let mut links = self.links.lock();
        let link = links.entry(peer.clone()).or_insert_with(|| {
            let (calls, queue) = mpsc::channel(CALL_QUEUE);
            actix_rt::spawn(run_peer_link(Arc::clone(cluster), addr.to_owned(), queue));
            PeerLink { calls }
        });
        link.calls.clone()
    }

    /// Forgets the link to `peer` if `sender` is still its queue.
    fn forget(&self, peer: &NodeId, sender: &mpsc::Sender<Queued>) {
        let mut links = self.links.lock();
        if links.get(peer).is_some_and(|l| l.calls.same_channel(sender)) {
            links.remove(peer);
        }
    }
}

/// Owns one call link: connects, writes queued calls in order (those queued together with
/// one flush), routes replies back. A link that carried no call for a quarter to a half of
/// `cluster.link_idle_timeout` (well within the other side's timeout) closes its queue,
/// writes what was queued meanwhile, waits for the answers (each bounded by
/// [`CALL_TIMEOUT`]) and ends.
async fn run_peer_link(cluster: Arc<Cluster>, addr: String, mut queue: mpsc::Receiver<Queued>) {
    let link = match connect(&cluster, &addr).await {
        Ok(link) => link,
        Err(error) => {
            tracing::warn!(%addr, %error, "cannot open a cluster link");
            // Nothing was written: the calls queued meanwhile were never sent, and their
            // callers may send them again (`RemoteError::NotSent`). Calls made after the
            // close find the queue closed and open another link.
            queue.close();
            let reason = format!("cannot connect to {addr}: {error}");
            while let Some((_, reply)) = queue.recv().await {
                let _ = reply.send(Err(RemoteError::NotSent(reason.clone())));
            }
            return;
        }
    };
    let (mut sink, mut stream) = link.split();
    let pending: Pending = Arc::default();
    let codec = Arc::clone(&cluster.codec);
    let reader_pending = Arc::clone(&pending);
    let answered = Arc::new(tokio::sync::Notify::new());
    let reader_answered = Arc::clone(&answered);
    let reader_codec = Arc::clone(&codec);
    let reader = async move {
        while let Some(Ok(bytes)) = stream.next().await {
            match reader_codec.decode(&bytes) {
                Ok(Message::Reply { correlation, mut result }) => {
                    if let Err(RemoteError::NotSent(_)) = result {
                        // Only this node can know a call was not sent; from a peer it
                        // would make the caller send it twice.
                        result = Err(RemoteError::Link("the peer answered not sent".into()));
                    }
                    if let Some(waiter) = reader_pending.lock().remove(&correlation) {
                        let _ = waiter.send(result);
                    }
                    reader_answered.notify_one();
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
        // Idleness is checked on a timer rather than with a timeout per wait (a timer armed
        // and disarmed per call costs): a link that carried no call for a whole quarter of
        // `link_idle` and owes no answer closes, so within half of it, well inside the
        // other side's timeout (one to two `link_idle`).
        let mut idle_check = tokio::time::interval(cluster.link_idle / 4);
        // Ticks missed while busy are not made up in a burst (two at once would close a
        // link that just carried a call).
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        idle_check.tick().await;
        let mut active = true;
        loop {
            let first = tokio::select! {
                biased;
                queued = queue.recv() => match queued {
                    Some(queued) => queued,
                    None => break,
                },
                _ = idle_check.tick() => {
                    if !std::mem::take(&mut active) && pending.lock().is_empty() {
                        // New calls go to a new link; those already queued are still
                        // written (`recv` hands them out, then ends).
                        queue.close();
                    }
                    continue;
                }
            };
            active = true;
            // This call and those queued meanwhile (up to a batch) go out with one flush: one
            // write to the socket for many callers' calls.
            let mut next = Some(first);
            let mut batch = 0;
            while let Some((call, reply)) = next.take() {
                let correlation = call.correlation;
                let Ok(bytes) = codec.encode(&Message::Call(call)) else {
                    let _ = reply.send(Err(RemoteError::BadRequest("unencodable".into())));
                    next = queue.try_recv().ok();
                    continue;
                };
                {
                    let mut pending = pending.lock();
                    if pending.len() >= MAX_IN_FLIGHT {
                        // Callers that timed out left their entries; the peer may never
                        // answer.
                        pending.retain(|_, waiter| !waiter.is_closed());
                    }
                    if pending.len() >= MAX_IN_FLIGHT {
                        let _ =
                            reply.send(Err(RemoteError::Link("too many calls in flight".into())));
                        next = queue.try_recv().ok();
                        continue;
                    }
                    pending.insert(correlation, reply);
                }
                // `feed` writes to the socket only when its buffer is full.
                if sink.feed(Bytes::from(bytes)).await.is_err() {
                    return;
                }
                batch += 1;
                if batch < MAX_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        // Closed for idleness: the answers still owed arrive before the link ends.
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        while !pending.lock().is_empty() {
            if tokio::time::timeout_at(deadline, answered.notified()).await.is_err() {
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

#[cfg(test)]
mod tests {
    use zenlive_registry::MemoryRegistry;

    use super::*;
    use crate::config::ClusterConfig;

    fn cluster(node: &str) -> Arc<Cluster> {
        let config = ClusterConfig { secret: "a-secret-of-the-tests".into(), ..Default::default() };
        Arc::new(Cluster::new(NodeId::new(node), Arc::new(MemoryRegistry::new()), &config))
    }

    /// A loopback address nothing listens on (bound, then closed).
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    }

    #[actix_rt::test]
    async fn a_call_to_a_node_that_refuses_the_connection_was_not_sent() {
        let caller = cluster("a");
        let call = caller.new_call("ref.stream", "live/x", Some(1), vec![1, 2, 3]);
        let result = caller.peers.call(&caller, &NodeId::new("b"), &closed_port(), call).await;
        assert!(matches!(result, Err(RemoteError::NotSent(_))), "{result:?}");
        // The closed link is replaced: the next call is not sent either, and says so.
        let call = caller.new_call("ref.stream", "live/x", Some(1), vec![]);
        let result = caller.peers.call(&caller, &NodeId::new("b"), &closed_port(), call).await;
        assert!(matches!(result, Err(RemoteError::NotSent(_))), "{result:?}");
    }

    #[actix_rt::test]
    async fn a_call_to_a_node_that_is_not_registered_was_not_sent() {
        let caller = cluster("a");
        let call = caller.new_call("ref.stream", "live/x", Some(1), vec![]);
        let result = caller.call_node(&NodeId::new("gone"), call).await;
        assert!(matches!(result, Err(RemoteError::NotSent(_))), "{result:?}");
    }

    #[actix_rt::test]
    async fn a_peer_cannot_claim_a_call_was_not_sent() {
        let (caller, peer) = (cluster("a"), cluster("b"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut link = Framed::new(stream, wire::framing());
            accept(&peer, &mut link).await.expect("handshake");
            let Some(Message::Call(call)) = recv(&mut link, &*peer.codec).await.expect("call")
            else {
                panic!("expected a call");
            };
            let result = Err(RemoteError::NotSent("a lie".into()));
            let reply = Message::Reply { correlation: call.correlation, result };
            send(&mut link, &*peer.codec, &reply).await.expect("reply");
            // Open until the caller has the answer.
            let _ = recv(&mut link, &*peer.codec).await;
        };
        let server = actix_rt::spawn(server);
        let call = caller.new_call("ref.stream", "live/x", Some(1), vec![]);
        let result = caller.peers.call(&caller, &NodeId::new("b"), &addr, call).await;
        assert!(matches!(result, Err(RemoteError::Link(_))), "{result:?}");
        server.abort();
    }
}
