//! [`StreamKey`]: the one name of a stream, whatever protocol published or plays it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted app or stream name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// A stream's name: an application (`live`) and a key (`test`), written `live/test`.
///
/// Both parts are 1 to [`MAX_NAME_BYTES`] characters from `[A-Za-z0-9._-]` and do not start
/// with a dot, so a key is always safe in a URL, a file name and a registry key.
/// It serializes as the string `app/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct StreamKey {
    app: String,
    name: String,
}

/// Why a stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream name {given:?}: {reason}")]
pub struct InvalidStreamKey {
    /// What was given (truncated to a loggable length).
    pub given: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Whether `text` holds what looks like a JWT (its base64url header starts `eyJ`, which is
/// `{"`): such a name must never reach a log or an error.
fn holds_token(text: &str) -> bool {
    text.contains("eyJ")
}

fn check_part(part: &str, whole: &str) -> Result<(), InvalidStreamKey> {
    let fail = |reason| {
        if holds_token(whole) {
            return Err(InvalidStreamKey {
                given: format!("<{} bytes holding a token>", whole.len()),
                reason: "a token goes after `?token=` in the stream key (name?token=...), never in the name itself",
            });
        }
        let given: String = whole.chars().take(80).collect();
        Err(InvalidStreamKey { given, reason })
    };
    if part.is_empty() {
        return fail("empty app or stream name");
    }
    if part.len() > MAX_NAME_BYTES {
        return fail("app or stream name longer than 128 bytes");
    }
    if part.starts_with('.') {
        return fail("app or stream name starts with a dot");
    }
    if !part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return fail("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

impl From<StreamKey> for String {
    fn from(key: StreamKey) -> Self {
        key.to_string()
    }
}

impl TryFrom<String> for StreamKey {
    type Error = InvalidStreamKey;

    fn try_from(path: String) -> Result<Self, Self::Error> {
        Self::parse(&path)
    }
}

impl StreamKey {
    /// A key from its two parts.
    pub fn new(app: &str, name: &str) -> Result<Self, InvalidStreamKey> {
        let whole = format!("{app}/{name}");
        check_part(app, &whole)?;
        check_part(name, &whole)?;
        Ok(Self { app: app.to_owned(), name: name.to_owned() })
    }

    /// Parses `app/name`.
    pub fn parse(path: &str) -> Result<Self, InvalidStreamKey> {
        match path.split_once('/') {
            Some((app, name)) => Self::new(app, name),
            None => Err(InvalidStreamKey {
                given: path.chars().take(80).collect(),
                reason: "expected app/name",
            }),
        }
    }

    /// The application part (`live`).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The stream part (`test`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        let key = StreamKey::parse("live/test-1_a.b").expect("valid");
        assert_eq!(key.app(), "live");
        assert_eq!(key.name(), "test-1_a.b");
        assert_eq!(key.to_string(), "live/test-1_a.b");
    }

    #[test]
    fn a_token_pasted_into_the_name_is_never_echoed() {
        let token = format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.{}", "s".repeat(120));
        let error = StreamKey::new("live", &token).expect_err("too long to be a name");
        assert!(!error.to_string().contains("eyJ"), "{error}");
        assert!(error.to_string().contains("?token="), "{error}");
    }

    #[test]
    fn refuses_hostile_names() {
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        for bad in [
            "",
            "live",
            "live/",
            "/x",
            "live/../etc",
            "live/a/b",
            "live/a b",
            "live/é",
            &format!("live/{long}"),
        ] {
            assert!(StreamKey::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
