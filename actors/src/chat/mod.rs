//! Chat rooms: [`ChatRoom`], one room's actor, and [`ChatRooms`], which finds or starts a
//! room by name. A room's decisions (history, validation, rate limits, moderation) are in
//! [`crate::chat_core`], the wire types in [`crate::chat_protocol`].
//!
//! # Where it sits
//! A member's WebSocket session (`src/chat_ws.rs`) joins its room with a bounded queue of
//! JSON frames and sends it commands; the room answers on the member's queue. The room
//! claims its name in the registry (`chat/{name}`) like a stream, so that in a cluster one
//! node is the room's *home* and every other node with members runs a *satellite* of it.
//!
//! # Layout
//! In dependency order, bottom to top: a module imports only modules listed before it.
//! Only [`room`] is an actor; everything below it is plain Rust that it carries out.
//! - [`hooks`]: the application's decider and listeners.
//! - [`remote`]: what a home and its satellites say to each other, and the
//!   [`RoomTransport`](remote::RoomTransport) the cluster layer implements.
//! - [`messages`]: what a room is sent, and a member's queue ([`Outbound`]).
//! - `tenure`: a room instance's hold on its name on this node, which the next instance
//!   waits for.
//! - `placement`: [`Placement`], where rooms are registered and which node a new room goes
//!   to.
//! - `pending`: what arrives while the role is pending, queued in order and bounded.
//! - `home` / `satellite`: what only the home has (its lease, the members on satellites
//!   and what satellites ask) and what only a satellite has (its home, and the calls there).
//! - `role`: the role, decided once when the room's claim resolves (pending, home or
//!   satellite), and the claim itself.
//! - `members`: the room's members here and the core; frames to members (serialized once,
//!   full queues evicted) and members leaving, whatever the role.
//! - [`room`]: the [`ChatRoom`] actor: its state and handlers, which dispatch on the
//!   room's role, and the calls, decider questions and timers it runs.
//! - [`directory`]: [`ChatRooms`], which starts rooms and hands a name from one instance
//!   to the next.

pub mod directory;
mod home;
pub mod hooks;
mod members;
pub mod messages;
mod pending;
mod placement;
pub mod remote;
mod role;
pub mod room;
mod satellite;
mod tenure;

pub use directory::ChatRooms;
pub use hooks::{
    ChatDecider, ChatDecision, ChatHooks, ChatListener, ChatMessageRequest, DeliveredMessage,
};
pub use messages::{
    next_member_id, Command, Deliver, HandOff, Join, Leave, Members, Moderate, Outbound,
    RemoteRequest, SetLimits, SystemMessage,
};
pub use placement::Placement;
pub use room::{ChatRoom, ROOM_IDLE};
