//! The listener other nodes connect to: it runs the acceptor's side of the handshake
//! ([`super::link`]) and then serves what the link asks for: a stream pulled by an edge (the
//! origin side of a relay: one viewer session whose frames go out as FLV, admitted by
//! [`crate::admission::admit_edge`]), or calls to this node's named actors.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use std::task::Poll;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use zenlive_actors::events::ConnectionKind;
use zenlive_actors::quota::{PerAddress, Slot};
use zenlive_actors::StreamKey;
use zenlive_media::flv::flv_file_header;
use zenlive_registry::{ActorKey, ActorKind};

use super::link::{accept, recv, refuse, send, Link, LinkError};
use super::wire::{self, Call, Message};
use super::Cluster;
use crate::admission;
use crate::context::NodeContext;
use crate::flv_out::FlvSink;
use crate::refusals::Limit;

/// Most links from one address still in their handshake.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 16;
/// How long one write to an edge may take before the relay is dropped.
const RELAY_WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// Frames queued for an edge before it counts as behind.
const RELAY_QUEUE_FRAMES: usize = 512;
/// Most links open at once (relays and call links from every other node); beyond it new
/// connections are closed at once.
const MAX_LINKS: usize = 4096;

/// Accepts links from other nodes until the task is dropped. Links beyond `MAX_LINKS`,
/// or beyond `MAX_HANDSHAKES_PER_ADDRESS` handshaking from one address, are closed at
/// once; failed handshakes are counted and logged once a minute per address.
pub async fn listen(listener: TcpListener, node: Arc<NodeContext>) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handshaking = PerAddress::new(MAX_HANDSHAKES_PER_ADDRESS);
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
            let detail = format!("{MAX_LINKS} cluster links are open");
            node.refusals.refuse(Some(peer.ip()), Limit::ClusterLinks, detail);
            continue;
        }
        let Some(slot) = handshaking.take(peer.ip()) else {
            let detail = format!(
                "{MAX_HANDSHAKES_PER_ADDRESS} cluster handshakes from this address are under way"
            );
            node.refusals.refuse(Some(peer.ip()), Limit::ClusterHandshake, detail);
            continue;
        };
        let Ok(std_stream) = stream.into_std() else { continue };
        let (node, open) = (Arc::clone(&node), Arc::clone(&open));
        open.fetch_add(1, Ordering::Relaxed);
        node.pool.next().spawn(async move {
            if let Ok(stream) = TcpStream::from_std(std_stream) {
                let _gauge = node.counters.connection(ConnectionKind::Cluster);
                if let Some(Err(error)) =
                    node.until_shutdown(serve(stream, peer, &node, slot)).await
                {
                    tracing::warn!(%peer, %error, "cluster link ended");
                }
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve(
    stream: TcpStream,
    addr: SocketAddr,
    node: &Arc<NodeContext>,
    handshaking: Slot,
) -> Result<(), LinkError> {
    let Some(cluster) = node.cluster.as_ref() else { return Ok(()) };
    stream.set_nodelay(true)?;
    let mut link = Framed::new(stream, wire::framing());
    let peer = match accept(cluster, &mut link).await {
        Ok(peer) => peer,
        Err(error) => {
            let detail = format!("cluster handshake failed: {error}");
            node.refusals.refuse(Some(addr.ip()), Limit::ClusterHandshake, detail);
            return Ok(());
        }
    };
    drop(handshaking);
    let codec = Arc::clone(&cluster.codec);
    let first = match tokio::time::timeout(cluster.link_idle, recv(&mut link, codec.as_ref())).await
    {
        Ok(Ok(first)) => first,
        Ok(Err(error)) => {
            cluster.counters.refuse("bad_frame");
            return Err(error);
        }
        Err(_) => return Err(LinkError::Protocol("no request after the handshake".into())),
    };
    let Some(first) = first else { return Ok(()) };
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
    let ticket = admission::admit_edge(node, key.clone());
    let (Some(owner), Ok(ticket)) = (owner, ticket) else {
        let reason = format!("stream {key} is not live here");
        return Err(refuse(&mut link, codec.as_ref(), "not_owner", reason).await);
    };
    if owner.node != cluster.node {
        let reason = format!("stream {key} is owned by {}", owner.node);
        return Err(refuse(&mut link, codec.as_ref(), "not_owner", reason).await);
    }
    send(&mut link, codec.as_ref(), &Message::Pulling { epoch: owner.epoch }).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(RELAY_QUEUE_FRAMES);
    ticket.watch(Box::new(FlvSink::new(tx)));
    tracing::info!(stream = %key, edge = %peer, "relaying to an edge");
    let mut socket = link.into_inner();
    write_to_edge(&mut socket, &flv_file_header(true, true)).await?;
    while let Some(tag) = rx.recv().await {
        write_to_edge(&mut socket, &tag).await?;
    }
    tracing::info!(stream = %key, edge = %peer, "relay to the edge ended");
    Ok(())
}

/// Writes `bytes` to an edge, which must read them within [`RELAY_WRITE_TIMEOUT`].
async fn write_to_edge(socket: &mut TcpStream, bytes: &[u8]) -> Result<(), LinkError> {
    match tokio::time::timeout(RELAY_WRITE_TIMEOUT, socket.write_all(bytes)).await {
        Ok(written) => Ok(written?),
        Err(_) => Err(LinkError::Protocol("the edge stopped reading".into())),
    }
}

/// Calls from one link being handled at once; beyond it the link is not read until one is
/// answered (back-pressure on the sender).
const MAX_CALLS_IN_FLIGHT: usize = 1024;

/// Answers written to a link before it is flushed even though more are ready (the rest
/// wait for the next write; bounds how long a busy link holds answers back).
const MAX_UNFLUSHED: usize = 64;

/// Handles the calls of one link and answers each as it completes. Every call is polled
/// once as soon as it arrives, before the next one is read, so the synchronous part of each
/// (decoding, the fencing check, the message entering the actor's mailbox) runs in arrival
/// order: calls from one sender reach an actor in the order sent, while their answers,
/// matched by correlation id, may go back in any order and many are awaited at once.
/// Answers are written to the link's buffer as they come and flushed when nothing else is
/// ready (or after [`MAX_UNFLUSHED`]): one write to the socket for a burst of answers.
async fn serve_calls(cluster: &Cluster, link: Link, first: Call) -> Result<(), LinkError> {
    let codec = Arc::clone(&cluster.codec);
    let (mut sink, mut stream) = link.split();
    let mut in_flight = FuturesUnordered::new();
    let mut next = Some(first);
    // Answers written to the sink's buffer and not flushed yet.
    let mut unflushed = 0;
    // Idleness is checked on a timer rather than with a timeout per read (a timer armed
    // and disarmed per call was a measurable part of a call's cost): a link that carried
    // nothing for a whole period and owes no answer is closed after one to two periods.
    let mut idle_check = tokio::time::interval(cluster.link_idle);
    // Ticks missed while busy are not made up in a burst (two at once would close a link
    // that just carried a call).
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    idle_check.tick().await;
    let mut active = true;
    loop {
        if let Some(call) = next.take() {
            active = true;
            cluster.counters.remote_in.inc();
            let correlation = call.correlation;
            let mut answer = Box::pin(cluster.handle_call(call));
            match futures_util::poll!(answer.as_mut()) {
                Poll::Ready(result) => {
                    let reply = codec.encode(&Message::Reply { correlation, result })?;
                    sink.feed(Bytes::from(reply)).await?;
                    unflushed += 1;
                }
                Poll::Pending => in_flight.push(answer.map(move |result| (correlation, result))),
            }
        }
        if unflushed >= MAX_UNFLUSHED {
            sink.flush().await?;
            unflushed = 0;
        }
        let reading = in_flight.len() < MAX_CALLS_IN_FLIGHT;
        // In this order: answers ready, calls ready, then (nothing else ready) the flush.
        tokio::select! {
            biased;
            Some((correlation, result)) = in_flight.next(), if !in_flight.is_empty() => {
                let reply = codec.encode(&Message::Reply { correlation, result })?;
                sink.feed(Bytes::from(reply)).await?;
                unflushed += 1;
            }
            received = stream.next(), if reading => {
                match received {
                    None => {
                        let _ = sink.flush().await;
                        return Ok(());
                    }
                    Some(Ok(bytes)) => match codec.decode(&bytes) {
                        Ok(Message::Call(call)) => next = Some(call),
                        Ok(other) => {
                            cluster.counters.refuse("bad_frame");
                            let reason = format!("unexpected {other:?}");
                            let refused = Message::Refused { code: "protocol".into(), reason: reason.clone() };
                            if let Ok(bytes) = codec.encode(&refused) {
                                let _ = sink.send(Bytes::from(bytes)).await;
                            }
                            return Err(LinkError::Refused { code: "protocol".into(), reason });
                        }
                        Err(error) => {
                            cluster.counters.refuse("bad_frame");
                            let _ = sink.flush().await;
                            return Err(error.into());
                        }
                    },
                    // A length prefix over the limit, or the connection failed: the link
                    // is closed, nothing else is touched.
                    Some(Err(error)) => {
                        cluster.counters.refuse("bad_frame");
                        let _ = sink.flush().await;
                        return Err(error.into());
                    }
                }
            }
            flushed = sink.flush(), if unflushed > 0 => {
                flushed?;
                unflushed = 0;
            }
            _ = idle_check.tick() => {
                if !std::mem::take(&mut active) && in_flight.is_empty() {
                    sink.flush().await?;
                    tracing::debug!("idle cluster call link closed");
                    return Ok(());
                }
            }
        }
    }
}
