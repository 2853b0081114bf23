//! [`Pending`]: what reaches a room while its claim is in flight, kept in arrival order until
//! the room knows its role (home or satellite), then handled as if it had just arrived.
//!
//! The room's mailbox keeps flowing meanwhile (a claim can take seconds: see
//! [`super::role::claim`]); this queue is what waits. It is bounded: past
//! [`PENDING_LIMIT`] a join is refused (`unavailable`: the client reconnects), a member's
//! command gets the same `busy` error the WebSocket session gives when the room's mailbox is
//! full, and calls from other nodes are refused as unreachable. The node's own questions
//! ([`HandOff`], [`Members`]) are always queued: they are few and come from this node.
//!
//! Plain data: no actix. Answers go back through oneshot channels the room completes.

use std::collections::VecDeque;
use std::future::Future;

use tokio::sync::oneshot;

use super::messages::{Command, HandOff, Join, Members, Moderate, RemoteRequest, SystemMessage};
use super::remote::{Delivery, RemoteRoomError};
use crate::chat_core::{ChatError, MemberId};
use crate::chat_protocol::ServerEvent;

/// How much a pending room holds: as many messages as its mailbox would.
pub(super) const PENDING_LIMIT: usize = 4096;

/// One thing that arrived while the room's role was pending, with where its answer goes.
pub(super) enum Queued {
    /// A member joins; the answer is the join's.
    Join(Join, oneshot::Sender<Result<(), ChatError>>),
    /// A member's command.
    Command(Command),
    /// A system message from the application.
    System(SystemMessage),
    /// A moderation command from the application.
    Moderate(Moderate),
    /// A satellite's request (this room had better be the home).
    Remote(RemoteRequest, oneshot::Sender<Result<(), RemoteRoomError>>),
    /// The home's frames (this room had better be a satellite).
    Deliver(Delivery, oneshot::Sender<Result<(), RemoteRoomError>>),
    /// The node is draining.
    HandOff(HandOff),
    /// How many members, once the role is known.
    Members(Members, oneshot::Sender<usize>),
}

impl Queued {
    /// The local member this belongs to, if any.
    fn member(&self) -> Option<MemberId> {
        match self {
            Self::Join(join, _) => Some(join.member),
            Self::Command(command) => Some(command.member),
            _ => None,
        }
    }
}

/// The queue of a room whose role is pending. See the module docs.
pub(super) struct Pending {
    items: VecDeque<Queued>,
    limit: usize,
}

impl Pending {
    /// An empty queue holding at most `limit` messages from members and other nodes.
    pub(super) fn new(limit: usize) -> Self {
        Self { items: VecDeque::new(), limit }
    }

    /// How many messages wait.
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    fn full(&self) -> bool {
        self.items.len() >= self.limit
    }

    /// Queues a join; resolves to the join's answer once the room handled it, at once to
    /// [`ChatError::Unavailable`] when the queue is full.
    pub(super) fn join(
        &mut self,
        join: Join,
    ) -> impl Future<Output = Result<(), ChatError>> + 'static {
        let (answer, answered) = oneshot::channel();
        let queued = !self.full();
        if queued {
            self.items.push_back(Queued::Join(join, answer));
        }
        async move {
            if !queued {
                return Err(ChatError::Unavailable("the room is starting; try again".into()));
            }
            answered.await.unwrap_or_else(|_| {
                Err(ChatError::Unavailable("the room stopped before it started".into()))
            })
        }
    }

    /// Queues a member's command; when the queue is full, the member (if its join waits
    /// here) is told the room is busy instead.
    pub(super) fn command(&mut self, command: Command) {
        if !self.full() {
            return self.items.push_back(Queued::Command(command));
        }
        let outbound = self.items.iter().find_map(|item| match item {
            Queued::Join(join, _) if join.member == command.member => Some(&join.outbound),
            _ => None,
        });
        if let Some(outbound) = outbound {
            let busy = ServerEvent::Error {
                code: "busy",
                reason: "the room is busy; try again".into(),
                client_id: None,
            };
            // A member whose queue is full already will be dropped once it joins.
            let _ = outbound.try_send(busy.to_json().into());
        }
    }

    /// Queues an application message; `false` when the queue is full and it was dropped.
    pub(super) fn system(&mut self, message: SystemMessage) -> bool {
        self.push(Queued::System(message))
    }

    /// Queues an application moderation command; `false` when it was dropped.
    pub(super) fn moderate(&mut self, command: Moderate) -> bool {
        self.push(Queued::Moderate(command))
    }

    fn push(&mut self, item: Queued) -> bool {
        let room = !self.full();
        if room {
            self.items.push_back(item);
        }
        room
    }

    /// Queues a satellite's request; resolves to the room's answer.
    pub(super) fn remote(
        &mut self,
        request: RemoteRequest,
    ) -> impl Future<Output = Result<(), RemoteRoomError>> + 'static {
        self.call(|answer| Queued::Remote(request, answer))
    }

    /// Queues the home's delivery; resolves to the room's answer.
    pub(super) fn deliver(
        &mut self,
        delivery: Delivery,
    ) -> impl Future<Output = Result<(), RemoteRoomError>> + 'static {
        self.call(|answer| Queued::Deliver(delivery, answer))
    }

    fn call(
        &mut self,
        item: impl FnOnce(oneshot::Sender<Result<(), RemoteRoomError>>) -> Queued,
    ) -> impl Future<Output = Result<(), RemoteRoomError>> + 'static {
        let (answer, answered) = oneshot::channel();
        let queued = self.push(item(answer));
        async move {
            if !queued {
                return Err(RemoteRoomError::Unreachable("the room is starting; try again".into()));
            }
            answered.await.unwrap_or_else(|_| {
                Err(RemoteRoomError::Unreachable("the room stopped before it started".into()))
            })
        }
    }

    /// Queues a hand-off (never refused).
    pub(super) fn hand_off(&mut self, hand_off: HandOff) {
        self.items.push_back(Queued::HandOff(hand_off));
    }

    /// Queues a member count (never refused); resolves once the room answered it.
    pub(super) fn members(&mut self, members: Members) -> impl Future<Output = usize> + 'static {
        let (answer, answered) = oneshot::channel();
        self.items.push_back(Queued::Members(members, answer));
        async move { answered.await.unwrap_or(0) }
    }

    /// Forgets what `member` queued: it left before the room knew its role.
    pub(super) fn forget(&mut self, member: MemberId) {
        self.items.retain(|item| item.member() != Some(member));
    }

    /// Takes the first message waiting.
    pub(super) fn pop(&mut self) -> Option<Queued> {
        self.items.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;
    use crate::chat_protocol::ClientCommand;

    fn join(member: MemberId) -> (Join, mpsc::Receiver<Arc<str>>) {
        let (outbound, frames) = mpsc::channel(4);
        (Join { member, user: None, outbound }, frames)
    }

    fn say(member: MemberId, text: &str) -> Command {
        let command = ClientCommand::Message { text: text.into(), client_id: None };
        Command { member, command }
    }

    fn kinds(pending: &mut Pending) -> Vec<String> {
        std::iter::from_fn(|| pending.pop())
            .map(|item| match item {
                Queued::Join(join, _) => format!("join {}", join.member),
                Queued::Command(command) => format!("command {}", command.member),
                Queued::System(message) => format!("system {}", message.text),
                Queued::Moderate(_) => "moderate".into(),
                Queued::Remote(..) => "remote".into(),
                Queued::Deliver(..) => "deliver".into(),
                Queued::HandOff(_) => "hand-off".into(),
                Queued::Members(..) => "members".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn messages_wait_in_arrival_order_and_joins_get_the_rooms_answer() {
        let mut pending = Pending::new(PENDING_LIMIT);
        let (first, _frames) = join(1);
        let joined = pending.join(first);
        pending.command(say(1, "hi"));
        assert!(pending.system(SystemMessage { text: "welcome".into() }));
        let counted = pending.members(Members);
        pending.hand_off(HandOff);
        assert_eq!(pending.len(), 5);
        let Some(Queued::Join(_, answer)) = pending.pop() else { panic!("the join first") };
        answer.send(Err(ChatError::RoomFull)).expect("the joiner waits");
        assert_eq!(joined.await, Err(ChatError::RoomFull));
        assert_eq!(kinds(&mut pending), ["command 1", "system welcome", "members", "hand-off"]);
        assert_eq!(counted.await, 0, "an unanswered count is zero");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_members_and_other_nodes_but_not_this_node() {
        let mut pending = Pending::new(2);
        let (first, mut frames) = join(1);
        let _joined = pending.join(first);
        pending.command(say(1, "one"));
        // Full from here on.
        let (second, _) = join(2);
        assert!(matches!(pending.join(second).await, Err(ChatError::Unavailable(_))));
        pending.command(say(1, "two"));
        let busy = frames.try_recv().expect("the member whose join waits hears it is busy");
        assert!(busy.contains(r#""code":"busy""#), "{busy}");
        assert!(!pending.system(SystemMessage { text: "dropped".into() }));
        let request = RemoteRequest {
            from: zenlive_registry::NodeId::new("n2"),
            request: super::super::remote::RoomRequest::Leave { member: 1 },
        };
        assert!(matches!(pending.remote(request).await, Err(RemoteRoomError::Unreachable(_))));
        pending.hand_off(HandOff);
        let _counted = pending.members(Members);
        assert_eq!(kinds(&mut pending), ["join 1", "command 1", "hand-off", "members"]);
    }

    #[tokio::test]
    async fn a_member_that_leaves_while_pending_is_forgotten() {
        let mut pending = Pending::new(PENDING_LIMIT);
        let (first, _) = join(1);
        let (second, _) = join(2);
        let left = pending.join(first);
        let _stays = pending.join(second);
        pending.command(say(1, "bye"));
        pending.command(say(2, "hi"));
        pending.forget(1);
        assert!(matches!(left.await, Err(ChatError::Unavailable(_))), "its join is dropped");
        assert_eq!(kinds(&mut pending), ["join 2", "command 2"]);
    }
}
