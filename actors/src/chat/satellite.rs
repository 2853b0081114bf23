//! A *satellite*: this node's instance of a room whose home is on another node. It keeps
//! only its members' queues: it forwards their joins, commands and leaves (and the
//! application's messages) to the home, and fans out the frames the home sends back, so a
//! broadcast crosses each node link once. It checks on every lease-renewal interval that its
//! home still owns the room, and stops when not (or when the home cannot be reached): its
//! members reconnect and find the room's new home.
//!
//! Plain data and futures, no actix: [`Satellite`] says where the home is and builds the
//! calls to it; the room's actor runs them and acts on their answers.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use zenlive_registry::{ActorKey, ActorKind, Owner, Registry};

use super::remote::{RemoteRoomError, RoomRequest, RoomTransport};
use crate::chat_core::{ChatError, MemberId};
use crate::chat_protocol::ChatUser;

/// What only a satellite has: its home, and the way there.
pub(super) struct Satellite {
    /// The home's node and lease epoch, as the claim found them.
    pub(super) home: Owner,
    /// The link to the home.
    pub(super) transport: Arc<dyn RoomTransport>,
}

impl Satellite {
    /// Sends `request` to the home of room `room`; resolves to the home's answer. A home
    /// that cannot be reached ([`RemoteRoomError::Unreachable`]) stops the satellite, since
    /// its members can no longer reach the room.
    pub(super) fn to_home(
        &self,
        room: &str,
        request: RoomRequest,
    ) -> BoxFuture<'static, Result<(), RemoteRoomError>> {
        self.transport.to_home(&self.home.node, room, request)
    }

    /// Asks the home of room `room` to let the local `member` join; resolves to the home's
    /// answer as the member is told it (an unreachable home: [`ChatError::Unavailable`]).
    pub(super) fn join(
        &self,
        room: &str,
        member: MemberId,
        user: Option<ChatUser>,
    ) -> impl Future<Output = Result<(), ChatError>> + 'static {
        let joined = self.to_home(room, RoomRequest::Join { member, user });
        async move {
            joined.await.map_err(|error| match error {
                RemoteRoomError::Chat(error) => error,
                RemoteRoomError::Unreachable(why) => ChatError::Unavailable(why),
            })
        }
    }

    /// Whether the home still owns room `room` in `registry`: resolves to `false` when the
    /// registry names another owner or none (its node died or the room moved). A registry
    /// that cannot answer keeps the home.
    pub(super) fn home_stays(
        &self,
        registry: Arc<dyn Registry>,
        room: &str,
    ) -> impl Future<Output = bool> + 'static {
        let home = self.home.clone();
        let key = ActorKey::new(ActorKind::ChatRoom, room);
        async move {
            match registry.lookup(&key).await {
                Ok(Some(owner)) => owner == home,
                Err(_) => true,
                Ok(None) => false,
            }
        }
    }
}
