//! [`Placement`]: where this node's rooms are registered, and which node a room without a
//! home goes to.
//!
//! On a single node a room is simply claimed here. In a cluster, a room nobody holds is
//! placed on the least-loaded node ([`RoomTransport::choose_home`]); if that is another
//! node, it is asked to host the room, and this node's claim then finds that home.

use std::sync::Arc;

use zenlive_registry::{ActorKey, NodeId, Registry};

use super::remote::RoomTransport;

/// Where rooms are registered: the node's registry and id, and (in a cluster) how rooms
/// reach their home or satellites on other nodes.
#[derive(Clone)]
pub struct Placement {
    /// The registry of actor names.
    pub registry: Arc<dyn Registry>,
    /// This node.
    pub node: NodeId,
    /// Links to other nodes' rooms; `None` on a single node.
    pub transport: Option<Arc<dyn RoomTransport>>,
}

impl Placement {
    /// A room (`key`, named `room`) without a home goes to the least-loaded node; if that is
    /// another node, it starts the room there (and the claim then finds that home). Any
    /// failure leaves the room to be claimed here.
    pub(super) async fn place(&self, key: &ActorKey, room: &str) {
        let Some(transport) = &self.transport else { return };
        if !matches!(self.registry.lookup(key).await, Ok(None)) {
            return;
        }
        match transport.choose_home() {
            Some(home) if home != self.node => {
                if let Err(error) = transport.host(&home, room).await {
                    tracing::warn!(%room, %home, %error, "could not place the chat room; hosting it here");
                }
            }
            _ => {}
        }
    }
}
