//! Chat rooms across nodes: the [`RoomTransport`] that carries a room's requests to its
//! home node and deliveries to its satellites, over cluster calls of kind `chat` whose
//! bodies are JSON (`ChatCall`), and the handler that answers them on this node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zenlive_actors::chat::{ChatRooms, Deliver, Members, RemoteRequest};
use zenlive_actors::chat_core::ChatError;
use zenlive_actors::chat_remote::{Delivery, RemoteRoomError, RoomRequest, RoomTransport};
use zenlive_actors::{ArbiterPool, StreamKey};
use zenlive_registry::{BoxFuture, NodeId};

use super::wire::RemoteError;
use super::Cluster;

/// The body of a `chat` call.
#[derive(Debug, Serialize, Deserialize)]
enum ChatCall {
    /// Satellite → home.
    ToHome {
        /// The satellite's node.
        from: String,
        /// What happened there.
        request: RoomRequest,
    },
    /// Home → satellite.
    ToSatellite(Delivery),
    /// Start the room here as its home (placement).
    Host,
}

/// [`ChatCall::ToSatellite`] encoded from a borrowed delivery (the same JSON), so a
/// broadcast is encoded once for every satellite without copying its frames first.
#[derive(Serialize)]
#[serde(rename = "ChatCall")]
enum DeliveryCall<'a> {
    ToSatellite(&'a Delivery),
}

/// The actor kind of chat calls.
const KIND: &str = "chat";

/// Rooms' links to other nodes, through the cluster.
pub struct ClusterRooms {
    cluster: Arc<Cluster>,
}

impl ClusterRooms {
    /// A transport over `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    /// Sends an encoded chat call `body` for `room` to `node`; answers the room's verdict.
    fn send(
        &self,
        node: &NodeId,
        room: &str,
        body: Result<Arc<[u8]>, String>,
    ) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
        let cluster = Arc::clone(&self.cluster);
        let node = node.clone();
        let room = room.to_owned();
        Box::pin(async move {
            let body = body.map_err(RemoteRoomError::Unreachable)?;
            let call = cluster.new_call(KIND, &room, None, body.to_vec());
            let reply = cluster
                .call_node(&node, call)
                .await
                .map_err(|e| RemoteRoomError::Unreachable(e.to_string()))?;
            match serde_json::from_slice::<Result<(), ChatError>>(&reply) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(RemoteRoomError::Chat(error)),
                Err(error) => Err(RemoteRoomError::Unreachable(format!("bad answer: {error}"))),
            }
        })
    }
}

/// A chat call's body.
fn encode(call: &ChatCall) -> Result<Arc<[u8]>, String> {
    serde_json::to_vec(call).map(Arc::from).map_err(|e| e.to_string())
}

impl RoomTransport for ClusterRooms {
    fn to_home(
        &self,
        home: &NodeId,
        room: &str,
        request: RoomRequest,
    ) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
        let from = self.cluster.node.as_str().to_owned();
        self.send(home, room, encode(&ChatCall::ToHome { from, request }))
    }

    fn choose_home(&self) -> Option<NodeId> {
        let members = self.cluster.members();
        let candidates = members.iter().filter(|n| !n.draining);
        let least = candidates.clone().map(|n| n.load).min()?;
        // This node when it is among the least loaded: no extra hop for its members.
        let mine = candidates.clone().find(|n| n.id == self.cluster.node && n.load == least);
        mine.or_else(|| candidates.clone().find(|n| n.load == least)).map(|n| n.id.clone())
    }

    fn host(&self, node: &NodeId, room: &str) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
        self.send(node, room, encode(&ChatCall::Host))
    }

    fn to_satellites(
        &self,
        nodes: &[NodeId],
        room: &str,
        delivery: &Delivery,
    ) -> Vec<BoxFuture<'static, Result<(), RemoteRoomError>>> {
        let body = serde_json::to_vec(&DeliveryCall::ToSatellite(delivery))
            .map(Arc::from)
            .map_err(|e| e.to_string());
        nodes.iter().map(|node| self.send(node, room, body.clone())).collect()
    }
}

/// Answers `chat` calls from other nodes with this node's `rooms`, started on `pool`'s
/// arbiters when another node places a room here (at most `max_rooms` rooms, as for
/// clients).
pub fn serve(
    cluster: &Cluster,
    rooms: ChatRooms,
    pool: ArbiterPool,
    draining: Arc<AtomicBool>,
    max_rooms: usize,
) {
    cluster.on_call(KIND, move |room, _epoch, body| {
        let (rooms, pool, draining) = (rooms.clone(), pool.clone(), Arc::clone(&draining));
        async move {
            let call: ChatCall = serde_json::from_slice(&body)
                .map_err(|e| RemoteError::BadRequest(e.to_string()))?;
            let answer = match call {
                ChatCall::Host => {
                    if draining.load(Ordering::Acquire) || StreamKey::parse(&room).is_err() {
                        return Err(RemoteError::NotOwner);
                    }
                    let addr = rooms
                        .get_or_start_within(&room, &pool.next(), max_rooms, None)
                        .ok_or(RemoteError::NotOwner)?;
                    // Answered once the room's claim resolved.
                    addr.send(Members).await.map(|_| Ok(()))
                }
                ChatCall::ToHome { from, request } => {
                    let addr = rooms.get(&room).ok_or(RemoteError::NotOwner)?;
                    addr.send(RemoteRequest { from: NodeId::new(from), request }).await
                }
                ChatCall::ToSatellite(delivery) => {
                    let addr = rooms.get(&room).ok_or(RemoteError::NotOwner)?;
                    addr.send(Deliver(delivery)).await
                }
            };
            let answer: Result<(), ChatError> = match answer {
                Ok(Ok(())) => Ok(()),
                Ok(Err(RemoteRoomError::Chat(error))) => Err(error),
                Ok(Err(RemoteRoomError::Unreachable(_))) | Err(_) => {
                    return Err(RemoteError::NotOwner)
                }
            };
            serde_json::to_vec(&answer).map_err(|e| RemoteError::BadRequest(e.to_string()))
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_delivery_encodes_like_an_owned_one() {
        let delivery =
            Delivery { frames: vec!["{\"type\":\"system\"}".into()], to: Some(3), evict: vec![] };
        let borrowed = serde_json::to_vec(&DeliveryCall::ToSatellite(&delivery)).unwrap();
        let decoded: ChatCall = serde_json::from_slice(&borrowed).expect("decodes as a ChatCall");
        assert!(matches!(decoded, ChatCall::ToSatellite(d) if d == delivery));
    }
}
