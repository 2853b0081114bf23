//! A raw cluster link, as a prober (or an attacker with the secret) sees it.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use zenlive::cluster::wire::{self, Bincode, Codec, Message};

/// Connects to the cluster port `addr` and does the handshake with `secret` as the node
/// `prober`; panics unless the node welcomes it.
pub async fn handshaken_link(addr: &str, secret: &str) -> Framed<TcpStream, LengthDelimitedCodec> {
    let mut link = Framed::new(TcpStream::connect(addr).await.expect("connect"), wire::framing());
    let Some(Ok(challenge)) = link.next().await else { panic!("no challenge") };
    let Ok(Message::Challenge { nonce, .. }) = Bincode.decode(&challenge) else {
        panic!("expected a challenge")
    };
    let hello = Message::Hello {
        version: wire::VERSION,
        node: "prober".into(),
        proof: wire::proof(secret, &nonce, "prober"),
    };
    link.send(Bytes::from(Bincode.encode(&hello).expect("encode"))).await.expect("hello");
    let welcome = link.next().await.and_then(Result::ok).map(|b| Bincode.decode(&b));
    assert!(matches!(welcome, Some(Ok(Message::Welcome { .. }))), "{welcome:?}");
    link
}
