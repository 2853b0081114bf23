//! Identifiers shared by every layer: nodes, and actors named by kind and name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identity in the cluster: stable for the node's configuration (or random at
/// boot), distinct from its *incarnation*, which changes every time the process starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(String);

impl NodeId {
    /// A node id from a configured name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// A fresh random id (`node-` and 16 hex digits), for nodes that were given no name.
    pub fn random() -> Self {
        Self(format!("node-{:016x}", rand::random::<u64>()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fresh random incarnation number for a process start.
pub fn new_incarnation() -> u64 {
    rand::random()
}

/// The kinds of named actors the registry routes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ActorKind {
    /// A live stream (one per stream name).
    Stream,
    /// A chat room.
    ChatRoom,
    /// A recorder.
    Recorder,
}

impl ActorKind {
    /// The kind's name as used in registry keys (`stream`, `chat`, `recorder`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::ChatRoom => "chat",
            Self::Recorder => "recorder",
        }
    }
}

impl ActorKind {
    /// The kind named `name` (the inverse of [`ActorKind::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Stream, Self::ChatRoom, Self::Recorder].into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ActorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named actor: its kind and its name (for streams, `app/key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorKey {
    /// What kind of actor.
    pub kind: ActorKind,
    /// Its name, unique within the kind.
    pub name: String,
}

impl ActorKey {
    /// The key of the actor of `kind` named `name`.
    pub fn new(kind: ActorKind, name: impl Into<String>) -> Self {
        Self { kind, name: name.into() }
    }
}

impl ActorKey {
    /// The key written as `kind:name` (its `Display` form), if the kind is known.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, name) = text.split_once(':')?;
        Some(Self::new(ActorKind::parse(kind)?, name))
    }
}

impl fmt::Display for ActorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}
