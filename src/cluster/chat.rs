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
use zenlive_cluster::{BoxFuture, NodeId};

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

    fn send(
        &self,
        node: &NodeId,
        room: &str,
        body: &ChatCall,
    ) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
        let cluster = Arc::clone(&self.cluster);
        let node = node.clone();
        let body = serde_json::to_vec(body);
        let room = room.to_owned();
        Box::pin(async move {
            let body = body.map_err(|e| RemoteRoomError::Unreachable(e.to_string()))?;
            let call = cluster.new_call(KIND, &room, None, body);
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

impl RoomTransport for ClusterRooms {
    fn to_home(
        &self,
        home: &NodeId,
        room: &str,
        request: RoomRequest,
    ) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
        let from = self.cluster.node.as_str().to_owned();
        self.send(home, room, &ChatCall::ToHome { from, request })
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
        self.send(node, room, &ChatCall::Host)
    }

    fn to_satellite(
        &self,
        node: &NodeId,
        room: &str,
        delivery: Delivery,
    ) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
        self.send(node, room, &ChatCall::ToSatellite(delivery))
    }
}

/// Answers `chat` calls from other nodes with this node's `rooms`, started on `pool`'s
/// arbiters when another node places a room here.
pub fn serve(cluster: &Cluster, rooms: ChatRooms, pool: ArbiterPool, draining: Arc<AtomicBool>) {
    cluster.on_call(KIND, move |room, body| {
        let (rooms, pool, draining) = (rooms.clone(), pool.clone(), Arc::clone(&draining));
        async move {
            let call: ChatCall = serde_json::from_slice(&body)
                .map_err(|e| RemoteError::BadRequest(e.to_string()))?;
            let answer = match call {
                ChatCall::Host => {
                    if draining.load(Ordering::Acquire) || StreamKey::parse(&room).is_err() {
                        return Err(RemoteError::NotOwner);
                    }
                    let addr = rooms.get_or_start(&room, &pool.next());
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
