//! HLS session tokens: when play needs a token, the playlist (fetched with the viewer's
//! JWT) lists segment URLs carrying `?s=<session>` instead of the JWT. A session never
//! outlives the JWT it was issued for. A session is
//! `<expiry>.<id>.<mac>`: an HMAC-SHA256 over the stream, the expiry and a session id, with
//! a key random to this node (in a cluster with `cluster.secret`, a key derived from the
//! secret, so a session issued by one node is good on all). It is short-lived (players fetch the playlist again every
//! target duration and get fresh ones) and good for one stream only, so a leaked segment
//! URL is worth little, and the JWT stays out of segment request logs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zenlive_actors::StreamKey;

use super::AuthError;

type HmacSha256 = Hmac<Sha256>;

/// Longest session token accepted.
const MAX_SESSION_BYTES: usize = 128;

/// Issues and checks session tokens. See the module docs.
#[derive(Clone)]
pub struct Sessions {
    key: [u8; 32],
    ttl: u64,
}

impl Sessions {
    /// Sessions valid for `ttl` seconds, under a fresh random key.
    pub fn new(ttl: u64) -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self { key, ttl: ttl.max(1) }
    }

    /// Sessions valid for `ttl` seconds under a key derived from `secret`: every node with
    /// the same secret accepts the others' sessions (behind a load balancer).
    pub fn shared(ttl: u64, secret: &str) -> Self {
        let mut mac =
            HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(b"zenlive hls sessions v1");
        Self { key: mac.finalize().into_bytes().into(), ttl: ttl.max(1) }
    }

    /// How long a session lives, in seconds.
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// The same key with another TTL.
    pub fn with_ttl(&self, ttl: u64) -> Self {
        Self { key: self.key, ttl: ttl.max(1) }
    }

    fn mac(&self, stream: &StreamKey, expires: u64, id: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(stream.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(id.as_bytes());
        mac
    }

    /// A stable session id for a viewer, derived from what identifies them (their token).
    pub fn id_for(&self, viewer: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"session-id\n");
        mac.update(viewer.as_bytes());
        let digest = mac.finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(digest.get(..9).unwrap_or_default())
    }

    /// A session for `id` on `stream`, valid from `now` for the TTL but not past
    /// `not_after` (the expiry of the token it was issued for).
    pub fn issue(&self, stream: &StreamKey, id: &str, now: u64, not_after: u64) -> String {
        let expires = now.saturating_add(self.ttl).min(not_after);
        let mac = self.mac(stream, expires, id).finalize().into_bytes();
        format!("{expires}.{id}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// Checks a session for `stream` at `now`; answers its id.
    pub fn verify(&self, token: &str, stream: &StreamKey, now: u64) -> Result<String, AuthError> {
        if token.len() > MAX_SESSION_BYTES {
            return Err(AuthError::Session);
        }
        let mut parts = token.splitn(3, '.');
        let (Some(expires), Some(id), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Session);
        };
        let expires: u64 = expires.parse().map_err(|_| AuthError::Session)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| AuthError::Session)?;
        // Constant-time comparison.
        self.mac(stream, expires, id).verify_slice(&mac).map_err(|_| AuthError::Session)?;
        if now > expires {
            return Err(AuthError::SessionExpired);
        }
        Ok(id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(s: &str) -> StreamKey {
        StreamKey::parse(s).expect("valid key")
    }

    #[test]
    fn a_session_is_good_for_its_stream_until_it_expires() {
        let sessions = Sessions::new(60);
        let id = sessions.id_for("token-of-alice");
        assert_eq!(id, sessions.id_for("token-of-alice"), "stable per viewer");
        let s = sessions.issue(&key("live/a"), &id, 1000, u64::MAX);
        assert_eq!(sessions.verify(&s, &key("live/a"), 1059), Ok(id.clone()));
        assert_eq!(sessions.verify(&s, &key("live/a"), 1061), Err(AuthError::SessionExpired));
        assert_eq!(sessions.verify(&s, &key("live/b"), 1000), Err(AuthError::Session));
        let forged = s.replacen("1060", "9999", 1);
        assert_eq!(sessions.verify(&forged, &key("live/a"), 1000), Err(AuthError::Session));
        let shared = (Sessions::shared(60, "s3cret"), Sessions::shared(60, "s3cret"));
        let session = shared.0.issue(&key("live/a"), "viewer", 1000, u64::MAX);
        assert_eq!(
            shared.1.verify(&session, &key("live/a"), 1001),
            Ok("viewer".to_owned()),
            "nodes sharing a secret accept each other's sessions"
        );
        assert!(Sessions::shared(60, "other").verify(&session, &key("live/a"), 1001).is_err());
        let other_node = Sessions::new(60);
        assert_eq!(other_node.verify(&s, &key("live/a"), 1000), Err(AuthError::Session));
    }

    #[test]
    fn a_session_ends_with_the_token_it_was_issued_for() {
        let sessions = Sessions::new(300);
        let s = sessions.issue(&key("live/a"), "viewer", 1000, 1010);
        assert!(sessions.verify(&s, &key("live/a"), 1010).is_ok());
        assert_eq!(sessions.verify(&s, &key("live/a"), 1011), Err(AuthError::SessionExpired));
    }

    proptest! {
        #[test]
        fn garbage_sessions_are_refused_without_panic(token in ".{0,200}") {
            let sessions = Sessions::new(60);
            prop_assert!(sessions.verify(&token, &key("live/a"), 0).is_err());
        }
    }
}
