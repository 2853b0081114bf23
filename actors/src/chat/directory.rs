//! [`ChatRooms`]: this node's chat rooms by name. Finds a live room or starts one, caps how
//! many clients may open, and hands a name from one instance of a room to the next.
//!
//! One instance of a room runs per name on this node. When a room stops (idle, handed off,
//! crashed) and the name is wanted again, the new instance is given the old one's tenure
//! to wait for (see `tenure`) before it claims the name. The top of the chat modules: it
//! starts [`ChatRoom`]s, and a room knows the directory only as what to do once it stopped.
//!
//! The map is shared by every arbiter (rooms are started from connection threads), behind a
//! mutex held for a lookup or an insert and never across an `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use parking_lot::{Mutex, RwLock};

use super::hooks::ChatHooks;
use super::messages::{HandOff, SetLimits};
use super::placement::Placement;
use super::room::{ChatRoom, OnStopped, RoomStart};
use super::tenure::{tenure, Predecessor};
use crate::chat_core::ChatLimits;
use crate::events::NodeCounters;
use crate::quota::Slot;

/// A live room: its generation (so a stopping room removes only itself), its address, and
/// its tenure, which the next instance of the name waits for.
struct LiveRoom {
    generation: u64,
    addr: Addr<ChatRoom>,
    tenure: Predecessor,
}

#[derive(Default)]
struct Rooms {
    live: HashMap<String, LiveRoom>,
    /// Rooms that stopped and may still hold their name, by name, until a new instance
    /// takes over (or they let go: pruned whenever a room stops).
    ending: HashMap<String, Predecessor>,
}

/// This node's chat rooms by name: finds a live room or starts one. A room that crashed
/// (its address no longer connected) is started again with fresh state; its members'
/// queues closed with it, so they reconnect.
#[derive(Clone)]
pub struct ChatRooms {
    rooms: Arc<Mutex<Rooms>>,
    /// The limits of new rooms; a reload changes them (and live rooms').
    limits: Arc<RwLock<ChatLimits>>,
    counters: Arc<NodeCounters>,
    hooks: ChatHooks,
    placement: Placement,
    next_generation: Arc<AtomicU64>,
}

impl ChatRooms {
    /// Rooms with `limits` and the application's `hooks`, counting into `counters`,
    /// registered under `placement`.
    pub fn new(
        limits: ChatLimits,
        counters: Arc<NodeCounters>,
        hooks: ChatHooks,
        placement: Placement,
    ) -> Self {
        Self {
            rooms: Arc::default(),
            limits: Arc::new(RwLock::new(limits)),
            counters,
            hooks,
            placement,
            next_generation: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The live room `name`, if any.
    pub fn get(&self, name: &str) -> Option<Addr<ChatRoom>> {
        self.rooms.lock().live.get(name).filter(|r| r.addr.connected()).map(|r| r.addr.clone())
    }

    /// The room `name`, started on `arbiter` if it is not live (application code: no cap).
    pub fn get_or_start(&self, name: &str, arbiter: &ArbiterHandle) -> Addr<ChatRoom> {
        self.get_or_start_within(name, arbiter, usize::MAX, None)
            .expect("no cap on the number of rooms, so a room is always started")
    }

    /// The room `name`, started on `arbiter` if it is not live and fewer than `max_rooms`
    /// rooms are; `None` when that cap is reached (rooms are named by clients, so the map
    /// must not grow without bound). A room started here holds `opener` (the opening
    /// client's place under a per-address cap) until it stops; an existing room drops it.
    pub fn get_or_start_within(
        &self,
        name: &str,
        arbiter: &ArbiterHandle,
        max_rooms: usize,
        opener: Option<Slot>,
    ) -> Option<Addr<ChatRoom>> {
        let mut rooms = self.rooms.lock();
        if let Some(room) = rooms.live.get(name).filter(|r| r.addr.connected()) {
            return Some(room.addr.clone());
        }
        if rooms.live.len() >= max_rooms {
            return None;
        }
        // The instance before this one, crashed (still in the map) or stopped (ending).
        let predecessor = match rooms.live.remove(name) {
            Some(crashed) => Some(crashed.tenure),
            None => rooms.ending.remove(name),
        };
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let (hold, tenure) = tenure();
        let on_stopped: OnStopped = {
            let (directory, name) = (self.clone(), name.to_owned());
            Box::new(move || directory.remove(&name, generation))
        };
        let start = RoomStart {
            name: name.to_owned(),
            limits: self.limits.read().clone(),
            counters: Arc::clone(&self.counters),
            hooks: self.hooks.clone(),
            placement: self.placement.clone(),
            opener,
            tenure: hold,
            predecessor,
            on_stopped,
        };
        let addr = ChatRoom::start_in_arbiter(arbiter, move |_| ChatRoom::new(start));
        rooms.live.insert(name.to_owned(), LiveRoom { generation, addr: addr.clone(), tenure });
        Some(addr)
    }

    /// New limits for new rooms and for every live room (a configuration reload).
    pub fn set_limits(&self, limits: ChatLimits) {
        *self.limits.write() = limits.clone();
        for room in self.rooms.lock().live.values() {
            room.addr.do_send(SetLimits { limits: limits.clone() });
        }
    }

    /// Hands off every room whose home is this node (see [`HandOff`]).
    pub fn hand_off(&self) {
        for room in self.rooms.lock().live.values() {
            room.addr.do_send(HandOff);
        }
    }

    /// How many rooms are live.
    pub fn len(&self) -> usize {
        self.rooms.lock().live.len()
    }

    /// Whether no room is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Room `name`'s instance `generation` stopped: forgets it, keeping its tenure for the
    /// next instance of the name.
    fn remove(&self, name: &str, generation: u64) {
        let mut rooms = self.rooms.lock();
        if rooms.live.get(name).is_none_or(|r| r.generation != generation) {
            return;
        }
        let Some(stopped) = rooms.live.remove(name) else { return };
        rooms.ending.retain(|_, tenure| !tenure.is_done());
        rooms.ending.insert(name.to_owned(), stopped.tenure);
    }
}
