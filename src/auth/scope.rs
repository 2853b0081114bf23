//! The stream scope a token may carry: `live/alice` (that stream), `live/*` (every stream
//! of app `live`), `live/alice-*` (a prefix), `*` (everything).

use zenlive_actors::StreamKey;

/// A parsed scope. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Streams whose `app/key` starts with this.
    Prefix(&'a str),
    /// Exactly this `app/key`.
    Exact(&'a str),
}

impl<'a> Scope<'a> {
    /// Parses a scope claim. A `*` anywhere but at the end is taken literally (no match
    /// but the exact text), so a sloppy claim grants less, never more.
    pub fn parse(pattern: &'a str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix),
            None => Self::Exact(pattern),
        }
    }

    /// Whether `stream` is in scope.
    pub fn covers(&self, stream: &StreamKey) -> bool {
        let name = stream.to_string();
        match self {
            Self::Prefix(prefix) => name.starts_with(prefix),
            Self::Exact(exact) => name == *exact,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> StreamKey {
        StreamKey::parse(s).expect("valid key")
    }

    #[test]
    fn exact_prefix_and_everything() {
        assert!(Scope::parse("live/alice").covers(&key("live/alice")));
        assert!(!Scope::parse("live/alice").covers(&key("live/alice2")));
        assert!(Scope::parse("live/*").covers(&key("live/bob")));
        assert!(!Scope::parse("live/*").covers(&key("other/bob")));
        assert!(Scope::parse("live/alice-*").covers(&key("live/alice-2")));
        assert!(Scope::parse("*").covers(&key("any/thing")));
        assert!(!Scope::parse("li*e/x").covers(&key("live/x")));
        assert!(!Scope::parse("").covers(&key("live/x")));
    }
}
