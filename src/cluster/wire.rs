//! What nodes say to each other on a cluster link: versioned serde messages, bincode 2 on
//! the wire, each frame a 4-byte big-endian length and the encoded message ([`framing`]).
//!
//! A link opens with a handshake: the accepting node sends a [`Message::Challenge`] with a
//! random nonce, the connecting node answers [`Message::Hello`] with its id and an HMAC of
//! the nonce under `cluster.secret`, and the acceptor answers [`Message::Welcome`] or
//! [`Message::Refused`]. Then either:
//! - [`Message::Pull`]: the link carries one stream's media from the origin as an FLV
//!   stream (the same bytes HTTP-FLV sends; parsed with the bounded FLV demuxer), or
//! - [`Message::Call`]/[`Message::Reply`]: requests to named actors, multiplexed by
//!   correlation id, answered in any order. A typed message (`zenlive::refs`) travels as an
//!   [`Envelope`] (its wire name and its bincode payload) in the call's body.
//!
//! The codec sits behind [`Codec`] so the format can change without touching the link:
//! bincode 2 is no longer maintained upstream.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The protocol version this node speaks; a link with another version is refused.
pub const VERSION: u16 = 1;

/// Largest message accepted on a link (media travels as FLV, whose tags are bounded
/// separately).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A message between nodes. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Acceptor → connector: prove you know the secret.
    Challenge {
        /// The acceptor's protocol version.
        version: u16,
        /// Random bytes to sign.
        nonce: [u8; 16],
    },
    /// Connector → acceptor: who I am, and the proof.
    Hello {
        /// The connector's protocol version.
        version: u16,
        /// The connector's node id.
        node: String,
        /// HMAC-SHA256 of the nonce and node id under the cluster secret.
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
    /// The handshake succeeded.
    Welcome {
        /// The acceptor's node id.
        node: String,
    },
    /// The request was refused; the link closes after this.
    Refused {
        /// A stable code (`bad_version`, `bad_proof`, `not_owner`, `not_live`, ...).
        code: String,
        /// For the log.
        reason: String,
    },
    /// Connector → acceptor: send me stream `stream` (`app/key`) as FLV from now on.
    Pull {
        /// The stream.
        stream: String,
    },
    /// The pull is accepted; FLV follows on the link.
    Pulling {
        /// The origin's fencing epoch for the stream.
        epoch: u64,
    },
    /// A request to a named actor.
    Call(Call),
    /// The answer to a [`Message::Call`].
    Reply {
        /// The call's correlation id.
        correlation: u64,
        /// The answer, or why there is none.
        result: Result<Vec<u8>, RemoteError>,
    },
}

/// A request to a named actor on another node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The actor's kind (`chat`, `stream`).
    pub kind: String,
    /// The actor's name.
    pub name: String,
    /// The sender's node id.
    pub from: String,
    /// The owner's epoch the sender believes current, if it knows one.
    pub epoch: Option<u64>,
    /// Per sender and link: calls are handled in this order.
    pub seq: u64,
    /// Matches the reply to the call.
    pub correlation: u64,
    /// The request, encoded by the actor kind's own message type.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Why a remote call has no answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The node does not own the actor (any more): look the owner up again.
    #[error("node does not own the actor")]
    NotOwner,
    /// The actor kind has no remote handler on that node.
    #[error("no handler for this actor kind")]
    NoHandler,
    /// The request could not be decoded or handled.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No answer within the timeout (set by the caller, never sent).
    #[error("timed out")]
    Timeout,
    /// The link failed (set by the caller, never sent).
    #[error("link failed: {0}")]
    Link(String),
    /// The actor kind does not know the message's name ([`Envelope::message`]).
    #[error("unknown message")]
    UnknownMessage,
    /// The actor stopped (it ended, or a handler panicked) before it answered.
    #[error("the actor stopped before answering")]
    Stopped,
    /// The call never left this node, so it was not handled: the node has no address in
    /// the cluster's view (it is not registered), or no link to it could be opened
    /// (connection refused, failed handshake). Unlike [`RemoteError::Link`] and
    /// [`RemoteError::Timeout`], it is safe to send again. Set by the caller, never sent; a
    /// peer's reply claiming it is taken as a broken link.
    #[error("not sent: {0}")]
    NotSent(String),
}

/// The body of a typed call (`zenlive::refs`): which message, and the message itself,
/// encoded with [`encode_payload`]. The target (kind, name) and the owner's epoch the
/// sender saw are the [`Call`]'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The message's wire name (`RemoteMessage::NAME`, e.g. `stream.kick`).
    pub message: String,
    /// The message.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Encodes a typed message, its result or an [`Envelope`]: bincode 2 in the same
/// configuration as [`Bincode`] (the one other place the format is chosen; a new codec
/// changes both).
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| WireError::Decode(e.to_string()))
}

/// Decodes what [`encode_payload`] wrote; never panics, whatever the bytes, and refuses
/// trailing bytes.
pub fn decode_payload<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|error| WireError::Decode(error.to_string()))?;
    if used != bytes.len() {
        return Err(WireError::Decode(format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(value)
}

/// Why bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a valid encoding of a [`Message`].
    #[error("undecodable message: {0}")]
    Decode(String),
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// Encodes and decodes messages. One implementation today ([`Bincode`]).
pub trait Codec: Send + Sync + 'static {
    /// The message's bytes.
    fn encode(&self, message: &Message) -> Result<Vec<u8>, WireError>;
    /// The message in `bytes`; never panics, whatever the bytes.
    fn decode(&self, bytes: &[u8]) -> Result<Message, WireError>;
}

/// bincode 2 (standard configuration, varint integers), limited to
/// [`MAX_MESSAGE_BYTES`] so a hostile length prefix cannot allocate more.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

impl Codec for Bincode {
    fn encode(&self, message: &Message) -> Result<Vec<u8>, WireError> {
        bincode::serde::encode_to_vec(message, config())
            .map_err(|error| WireError::Decode(error.to_string()))
    }

    fn decode(&self, bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let (message, used) = bincode::serde::decode_from_slice(bytes, config())
            .map_err(|error| WireError::Decode(error.to_string()))?;
        if used != bytes.len() {
            return Err(WireError::Decode(format!("{} trailing bytes", bytes.len() - used)));
        }
        Ok(message)
    }
}

/// The length-prefix framing of every message on a link.
pub fn framing() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_MESSAGE_BYTES)
        .new_codec()
}

/// The handshake proof: HMAC-SHA256 over the nonce and the node id, keyed by the secret.
pub fn proof(secret: &str, nonce: &[u8; 16], node: &str) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC accepts keys of any length; this branch is unreachable.
        return Vec::new();
    };
    mac.update(nonce);
    mac.update(node.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Checks a [`proof`] in constant time.
pub fn verify_proof(secret: &str, nonce: &[u8; 16], node: &str, proof: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(nonce);
    mac.update(node.as_bytes());
    mac.verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Challenge { version: VERSION, nonce: [7; 16] },
            Message::Hello { version: VERSION, node: "n1".into(), proof: vec![1, 2, 3] },
            Message::Pull { stream: "live/test".into() },
            Message::Call(Call {
                kind: "chat".into(),
                name: "live/test".into(),
                from: "n3".into(),
                epoch: Some(4),
                seq: 9,
                correlation: 77,
                body: b"hello".to_vec(),
            }),
            Message::Reply { correlation: 77, result: Err(RemoteError::NotOwner) },
        ]
    }

    #[test]
    fn messages_round_trip() {
        for message in samples() {
            let bytes = Bincode.encode(&message).expect("encodes");
            assert_eq!(Bincode.decode(&bytes).expect("decodes"), message);
        }
    }

    #[test]
    fn hostile_bytes_are_errors() {
        // Empty, unknown variant, a vec claiming 2^60 elements, trailing garbage.
        let mut trailing = Bincode.encode(&Message::Pull { stream: "a/b".into() }).unwrap();
        trailing.push(0);
        let huge_len = [8u8, 0xff, 0, 0, 0, 0, 0, 0, 0x10];
        for bytes in [&[][..], &[200, 1, 2][..], &huge_len[..], &trailing[..]] {
            assert!(Bincode.decode(bytes).is_err(), "{bytes:?}");
        }
        assert!(matches!(
            Bincode.decode(&vec![0; MAX_MESSAGE_BYTES + 1]),
            Err(WireError::TooLarge(_))
        ));
    }

    #[test]
    fn envelopes_round_trip_and_refuse_garbage() {
        let envelope = Envelope { message: "stream.kick".into(), payload: vec![1, 2, 3] };
        let bytes = encode_payload(&envelope).expect("encodes");
        assert_eq!(decode_payload::<Envelope>(&bytes).expect("decodes"), envelope);
        assert!(decode_payload::<Envelope>(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_payload::<Envelope>(&[0xff; 16]).is_err());
    }

    #[test]
    fn proofs_bind_the_secret_the_nonce_and_the_node() {
        let good = proof("s3cret", &[1; 16], "n1");
        assert!(verify_proof("s3cret", &[1; 16], "n1", &good));
        assert!(!verify_proof("other", &[1; 16], "n1", &good));
        assert!(!verify_proof("s3cret", &[2; 16], "n1", &good));
        assert!(!verify_proof("s3cret", &[1; 16], "n2", &good));
        assert!(!verify_proof("s3cret", &[1; 16], "n1", &good[..31]));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Bincode.decode(&bytes);
        }
    }
}
