//! Raw RTMP for hostile-client tests: a handshake as a client, hand-made chunks, and a wait
//! for the server to close.

use std::net::SocketAddr;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr` and completes the RTMP handshake as a client.
pub async fn handshaken(addr: SocketAddr) -> TcpStream {
    handshake(TcpStream::connect(addr).await.expect("connect")).await
}

/// Connects to `addr` from the loopback address `from` (any of 127.0.0.0/8).
pub async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((from, 0))).expect("bind the client address");
    socket.connect(addr).await.expect("connect")
}

/// Completes the RTMP handshake as a client on `stream`.
pub async fn handshake(mut stream: TcpStream) -> TcpStream {
    let mut handshake = Handshake::new(PeerType::Client);
    let c0c1 = handshake.generate_outbound_p0_and_p1().expect("c0c1");
    stream.write_all(&c0c1).await.expect("write c0c1");
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read handshake");
        assert!(n > 0, "server closed during handshake");
        match handshake.process_bytes(&buf[..n]).expect("valid handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await.expect("write")
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                stream.write_all(&response_bytes).await.expect("write");
                return stream;
            }
        }
    }
}

/// A chunk header of type 0 on chunk stream `csid` for a message of `len` bytes.
pub fn type0(csid: u8, type_id: u8, len: u32) -> Vec<u8> {
    let mut v = vec![csid, 0, 0, 0];
    v.extend_from_slice(&len.to_be_bytes()[1..]);
    v.push(type_id);
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// Set Chunk Size to `size`.
pub fn set_chunk_size(size: u32) -> Vec<u8> {
    let mut v = type0(2, 1, 4);
    v.extend_from_slice(&size.to_be_bytes());
    v
}

/// Whether the server closes `stream` within `limit` (reading and dropping what it sends).
pub async fn closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Reads until the server closes the connection; panics if it stays open for 10 s.
pub async fn expect_closed(mut stream: TcpStream, case: &str) {
    let closed = closes_within(&mut stream, Duration::from_secs(10)).await;
    assert!(closed, "{case}: the server did not close the connection");
}
