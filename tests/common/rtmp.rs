//! Raw RTMP for tests: a handshake as a client, rml_rtmp's client session over a socket,
//! hand-made chunks, and a wait for the server to close.

use std::net::SocketAddr;
use std::time::Duration;

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
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

/// Writes a session's outbound packets; answers the events it raised.
pub async fn send_results(
    stream: &mut TcpStream,
    results: Vec<ClientSessionResult>,
) -> Vec<ClientSessionEvent> {
    let mut events = Vec::new();
    for result in results {
        match result {
            ClientSessionResult::OutboundResponse(packet) => {
                stream.write_all(&packet.bytes).await.expect("write")
            }
            ClientSessionResult::RaisedEvent(event) => events.push(event),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    events
}

/// Reads and answers until `wanted` is raised.
pub async fn until(
    stream: &mut TcpStream,
    session: &mut ClientSession,
    wanted: fn(&ClientSessionEvent) -> bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while !read_events(stream, session, &mut buf, "answer").await.iter().any(wanted) {}
}

/// Reads once (`expecting` it within 10 s), hands the bytes to `session` and sends its
/// answers: the events raised.
pub async fn read_events(
    stream: &mut TcpStream,
    session: &mut ClientSession,
    buf: &mut [u8],
    expecting: &str,
) -> Vec<ClientSessionEvent> {
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(buf))
        .await
        .expect(expecting)
        .expect("read");
    assert!(n > 0, "server closed");
    let results = session.handle_input(&buf[..n]).expect("valid RTMP");
    send_results(stream, results).await
}

/// Completes the handshake on `stream` and connects to app `live` with rml_rtmp's client
/// session.
pub async fn connected(mut stream: TcpStream) -> (TcpStream, ClientSession) {
    let mut handshake = Handshake::new(PeerType::Client);
    stream.write_all(&handshake.generate_outbound_p0_and_p1().expect("c0c1")).await.expect("write");
    let mut buf = vec![0u8; 8192];
    let leftover = loop {
        let n = stream.read(&mut buf).await.expect("read");
        match handshake.process_bytes(&buf[..n]).expect("handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await.expect("write")
            }
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                stream.write_all(&response_bytes).await.expect("write");
                break remaining_bytes;
            }
        }
    };
    let (mut session, results) = ClientSession::new(ClientSessionConfig::new()).expect("session");
    send_results(&mut stream, results).await;
    if !leftover.is_empty() {
        let results = session.handle_input(&leftover).expect("valid");
        send_results(&mut stream, results).await;
    }
    let request = session.request_connection("live".into()).expect("connect request");
    send_results(&mut stream, vec![request]).await;
    until(&mut stream, &mut session, |e| {
        matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
    })
    .await;
    (stream, session)
}

/// `stream` connected and publishing `name` (with `?token=` inside it if needed), once the
/// server accepted the publish.
pub async fn publishing(stream: TcpStream, name: &str) -> (TcpStream, ClientSession) {
    let (mut stream, mut session) = connected(stream).await;
    let request =
        session.request_publishing(name.into(), PublishRequestType::Live).expect("publish");
    send_results(&mut stream, vec![request]).await;
    until(&mut stream, &mut session, |e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
        .await;
    (stream, session)
}
