//! Identifiers shared by every layer: nodes, and actors named by kind and name.

use std::borrow::Cow;
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

/// The kinds of named actors the registry routes to: the built-in ones, and the kinds an
/// embedding application registers ([`ActorKind::App`]).
///
/// # On the wire and in the registry
/// Its text form ([`ActorKind::as_str`], used in registry keys, claim hints, call kinds and
/// metric labels) is `stream`, `chat`, `recorder`, and `app.{name}` for an application's
/// kind: the `app.` prefix keeps application names apart from built-in kinds added later.
/// Its serde form is an externally tagged enum whose variants keep their order (bincode
/// numbers them): `App` was added last, so the built-in kinds encode as they always did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ActorKind {
    /// A live stream (one per stream name).
    Stream,
    /// A chat room.
    ChatRoom,
    /// A recorder.
    Recorder,
    /// An application's own kind, registered by the embedder (`NodeBuilder::actor_kind`).
    App(AppKind),
}

impl ActorKind {
    /// The built-in kinds.
    pub const BUILT_IN: [ActorKind; 3] = [Self::Stream, Self::ChatRoom, Self::Recorder];

    /// The kind's name as used in registry keys (`stream`, `chat`, `recorder`, `app.poll`).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stream => "stream",
            Self::ChatRoom => "chat",
            Self::Recorder => "recorder",
            Self::App(kind) => kind.qualified(),
        }
    }

    /// The kind named `name` (the inverse of [`ActorKind::as_str`]); `None` for a name that
    /// is neither built in nor a valid `app.{name}`.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(app) = name.strip_prefix(AppKind::PREFIX) {
            return AppKind::parse(app).ok().map(Self::App);
        }
        Self::BUILT_IN.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ActorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of an application's actor, as a constant: `app_kind!("poll")` is
/// `ActorKind::App` named `poll` (text form `app.poll`), its name checked at compile time.
///
/// ```
/// use zenlive_registry::{app_kind, ActorKind};
/// const POLL: ActorKind = app_kind!("poll");
/// assert_eq!(POLL.as_str(), "app.poll");
/// ```
///
/// A name that is not valid ([`AppKind`]) does not compile:
/// ```compile_fail
/// const BAD: zenlive_registry::ActorKind = zenlive_registry::app_kind!("Not Valid");
/// ```
#[macro_export]
macro_rules! app_kind {
    ($name:literal) => {
        $crate::ActorKind::App($crate::AppKind::from_qualified(concat!("app.", $name)))
    };
}

/// The name of an application's actor kind: 1 to [`AppKind::MAX_LEN`] characters among
/// `a-z`, `0-9`, `_` and `-`, starting with a letter. Stored with its `app.` prefix, so its
/// text form is borrowed, not built, on every use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKind(Cow<'static, str>);

/// Why a name is not a valid [`AppKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid application actor kind {name:?}: 1 to {} characters among a-z, 0-9, _ and -, starting with a letter", AppKind::MAX_LEN)]
pub struct InvalidKind {
    /// The name refused.
    pub name: String,
}

impl AppKind {
    /// The longest kind name.
    pub const MAX_LEN: usize = 48;
    /// What an application kind's text form starts with.
    pub const PREFIX: &'static str = "app.";

    /// The kind whose text form is `qualified` (`app.poll`): what [`app_kind!`](crate::app_kind)
    /// expands to, so that kinds are constants. Write `app_kind!("poll")` instead.
    ///
    /// # Panics
    /// When `qualified` is not `app.` and a valid name (see the type's docs); in a `const`
    /// that is a compile-time error, which is where kinds are meant to be written.
    #[doc(hidden)]
    pub const fn from_qualified(qualified: &'static str) -> Self {
        let bytes = qualified.as_bytes();
        let prefix = Self::PREFIX.as_bytes();
        assert!(bytes.len() > prefix.len(), "an application actor kind needs a name");
        let mut i = 0;
        while i < prefix.len() {
            assert!(bytes[i] == prefix[i], "an application actor kind starts with `app.`");
            i += 1;
        }
        let (_, name) = bytes.split_at(prefix.len());
        assert!(Self::valid(name), "invalid application actor kind name");
        Self(Cow::Borrowed(qualified))
    }

    /// The kind named `name` (without its prefix), checked: what a kind read from the
    /// network or from Redis goes through.
    pub fn parse(name: &str) -> Result<Self, InvalidKind> {
        if Self::valid(name.as_bytes()) {
            Ok(Self(Cow::Owned(format!("{}{name}", Self::PREFIX))))
        } else {
            Err(InvalidKind { name: name.chars().take(Self::MAX_LEN + 8).collect() })
        }
    }

    /// The kind's own name (`poll`).
    pub fn name(&self) -> &str {
        &self.0[Self::PREFIX.len()..]
    }

    /// The kind's text form with its prefix (`app.poll`).
    pub fn qualified(&self) -> &str {
        &self.0
    }

    const fn valid(name: &[u8]) -> bool {
        if name.is_empty() || name.len() > Self::MAX_LEN || !name[0].is_ascii_lowercase() {
            return false;
        }
        let mut i = 0;
        while i < name.len() {
            let c = name[i];
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-') {
                return false;
            }
            i += 1;
        }
        true
    }
}

impl fmt::Display for AppKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for AppKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for AppKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
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
