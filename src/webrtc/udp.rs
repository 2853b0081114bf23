//! The one UDP port every WebRTC session shares: a task reads each datagram and hands it to
//! its session's bounded queue; sessions send from the same socket themselves.
//!
//! Which session a datagram belongs to ([`Router`], sans-IO): a STUN binding request names
//! the session in its `USERNAME` (`{our ufrag}:{their ufrag}`, the ufrag this node put in the
//! answer), and the address it came from is remembered for that session; every other
//! datagram (DTLS, SRTP, SRTCP) is routed by its source address. A datagram nobody claims
//! (garbage, a session that ended) is dropped and counted; a session whose queue is full
//! loses the datagram (UDP would have), and the others are unaffected.
//!
//! Registrations arrive on a control channel that the task drains before every read, so a
//! session registered before its answer was sent is known when its first packet arrives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::stats::WebRtcStats;
use super::transport::Via;

/// Largest datagram read (an Ethernet MTU with room; SRTP packets are smaller).
const MAX_DATAGRAM: usize = 2048;

/// Source addresses remembered per session (a client's candidates that sent checks).
const MAX_PEERS_PER_SESSION: usize = 8;

/// A session's id on the node (random, and the last part of its WHIP resource URL).
pub type SessionId = Arc<str>;

/// One datagram for a session.
#[derive(Debug)]
pub struct Datagram {
    /// Who sent it.
    pub from: SocketAddr,
    /// When it was read.
    pub at: Instant,
    /// Its bytes.
    pub data: BytesMut,
    /// How it came (the UDP socket, or an ICE-TCP connection: [`super::tcp`]).
    pub via: Via,
}

/// What the control channel tells the UDP task.
#[derive(Debug)]
pub enum Control {
    /// A session that answered with `ufrag`: its datagrams go to `queue`.
    Register {
        /// The session.
        session: SessionId,
        /// The ICE username fragment of the node's answer.
        ufrag: String,
        /// Its datagram queue.
        queue: mpsc::Sender<Datagram>,
    },
    /// The session ended.
    Unregister {
        /// The session.
        session: SessionId,
    },
}

#[derive(Debug)]
struct Route<Q> {
    ufrag: String,
    queue: Q,
    peers: Vec<SocketAddr>,
}

/// Which session a datagram goes to. See the module docs. `Q` is a session's queue (a
/// channel sender in the node, anything in tests).
#[derive(Debug)]
pub struct Router<Q> {
    sessions: HashMap<SessionId, Route<Q>>,
    by_ufrag: HashMap<String, SessionId>,
    by_peer: HashMap<SocketAddr, SessionId>,
}

impl<Q> Default for Router<Q> {
    fn default() -> Self {
        Self { sessions: HashMap::new(), by_ufrag: HashMap::new(), by_peer: HashMap::new() }
    }
}

impl<Q> Router<Q> {
    /// Adds a session (replacing one of the same id).
    pub fn register(&mut self, session: SessionId, ufrag: String, queue: Q) {
        // A session registered again (an ICE restart: a new username fragment) keeps the
        // addresses it was reached from, so its media goes on until the new checks come.
        let peers = match self.sessions.remove(&session) {
            Some(route) => {
                self.by_ufrag.remove(&route.ufrag);
                route.peers
            }
            None => Vec::new(),
        };
        self.by_ufrag.insert(ufrag.clone(), Arc::clone(&session));
        self.sessions.insert(session, Route { ufrag, queue, peers });
    }

    /// Removes a session and every address routed to it.
    pub fn unregister(&mut self, session: &SessionId) {
        if let Some(route) = self.sessions.remove(session) {
            self.by_ufrag.remove(&route.ufrag);
            for peer in route.peers {
                self.by_peer.remove(&peer);
            }
        }
    }

    /// How many sessions are routed.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is routed.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The session `datagram` from `from` belongs to, and its queue.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<(&SessionId, &Q)> {
        let by_name = stun_username(datagram)
            .and_then(|name| name.split(':').next())
            .and_then(|ufrag| self.by_ufrag.get(ufrag))
            .cloned();
        let id = match by_name {
            Some(id) => {
                self.learn(&id, from);
                id
            }
            None => self.by_peer.get(&from)?.clone(),
        };
        self.sessions.get_key_value(&id).map(|(id, route)| (id, &route.queue))
    }

    /// Routes `from` to `id` from now on (a STUN check named it).
    fn learn(&mut self, id: &SessionId, from: SocketAddr) {
        match self.by_peer.get(&from) {
            Some(current) if current == id => return,
            Some(other) => {
                // The address moved to another session (a client reusing its port).
                let other = other.clone();
                if let Some(route) = self.sessions.get_mut(&other) {
                    route.peers.retain(|p| *p != from);
                }
            }
            None => {}
        }
        let Some(route) = self.sessions.get_mut(id) else { return };
        if route.peers.len() >= MAX_PEERS_PER_SESSION {
            let oldest = route.peers.remove(0);
            self.by_peer.remove(&oldest);
        }
        route.peers.push(from);
        self.by_peer.insert(from, id.clone());
    }
}

/// The `USERNAME` of a STUN message (RFC 8489), if `datagram` is one and has it. Reads
/// only within the message's declared length and the datagram.
pub fn stun_username(datagram: &[u8]) -> Option<&str> {
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const USERNAME: u16 = 0x0006;
    let header = datagram.get(..20)?;
    // The first two bits of a STUN message are zero (RFC 7983 demultiplexing).
    if header[0] & 0xc0 != 0 || header[4..8] != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attributes = datagram.get(20..20 + length)?;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let len = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        let value = attributes.get(4..4 + len)?;
        if kind == USERNAME {
            return std::str::from_utf8(value).ok();
        }
        let padded = 4 + len.div_ceil(4) * 4;
        attributes = attributes.get(padded..).unwrap_or(&[]);
    }
    None
}

/// Reads `socket` until the control channel closes (the node stops), routing each datagram.
pub async fn run(
    socket: tokio::net::UdpSocket,
    mut control: mpsc::Receiver<Control>,
    stats: Arc<WebRtcStats>,
) {
    let mut router: Router<mpsc::Sender<Datagram>> = Router::default();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            // Registrations first: a session is known before a datagram for it is read.
            biased;
            message = control.recv() => match message {
                Some(Control::Register { session, ufrag, queue }) => {
                    router.register(session, ufrag, queue);
                }
                Some(Control::Unregister { session }) => router.unregister(&session),
                None => return,
            },
            received = socket.recv_from(&mut buffer) => {
                let (len, from) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        // ICMP errors (a peer's port closed) surface here on some systems.
                        tracing::debug!(%error, "webrtc: UDP read error");
                        continue;
                    }
                };
                let data = buffer.get(..len).unwrap_or(&[]);
                let Some((session, queue)) = router.route(from, data) else {
                    stats.udp_dropped("unroutable");
                    continue;
                };
                let datagram = Datagram {
                    from,
                    at: Instant::now(),
                    data: BytesMut::from(data),
                    via: Via::Udp,
                };
                match queue.try_send(datagram) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => stats.udp_dropped("queue_full"),
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        let session = session.clone();
                        router.unregister(&session);
                        stats.udp_dropped("unroutable");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A STUN binding request with `USERNAME` = `username` (and another attribute first).
    pub(in crate::webrtc) fn binding_request(username: &str) -> Vec<u8> {
        let mut attributes = vec![0x80, 0x2a, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]; // ICE-CONTROLLING
        attributes.extend_from_slice(&0x0006u16.to_be_bytes());
        attributes.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attributes.extend_from_slice(username.as_bytes());
        while attributes.len() % 4 != 0 {
            attributes.push(0);
        }
        let mut message = vec![0x00, 0x01];
        message.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
        message.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        message.extend_from_slice(&[9; 12]);
        message.extend_from_slice(&attributes);
        message
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_username_of_a_binding_request_is_read() {
        assert_eq!(stun_username(&binding_request("abcd:wxyz")), Some("abcd:wxyz"));
        assert_eq!(stun_username(&binding_request("abc:w")), Some("abc:w"));
        assert_eq!(stun_username(&[0x16, 0xfe, 0xfd]), None, "DTLS");
        assert_eq!(stun_username(&[0x80; 40]), None, "RTP");
    }

    #[test]
    fn a_check_names_the_session_and_its_address_routes_the_rest() {
        let mut router = Router::default();
        router.register("s1".into(), "ufrag1".into(), 1);
        router.register("s2".into(), "ufrag2".into(), 2);
        assert!(router.route(addr(5000), &[0x16, 0xfe, 0xfd, 0, 0]).is_none(), "unknown peer");
        let (_, queue) = router.route(addr(5000), &binding_request("ufrag2:x")).expect("named");
        assert_eq!(*queue, 2);
        let (_, queue) = router.route(addr(5000), &[0x16, 0xfe, 0xfd, 0, 0]).expect("learned");
        assert_eq!(*queue, 2);
        assert!(router.route(addr(5001), &binding_request("nobody:x")).is_none());
        router.unregister(&"s2".into());
        assert!(router.route(addr(5000), &[0x16, 0xfe, 0xfd]).is_none(), "forgotten");
        assert_eq!(router.len(), 1);
    }

    #[test]
    fn an_address_that_moves_to_another_session_follows_it() {
        let mut router = Router::default();
        router.register("s1".into(), "u1".into(), 1);
        router.register("s2".into(), "u2".into(), 2);
        router.route(addr(7000), &binding_request("u1:x"));
        router.route(addr(7000), &binding_request("u2:x"));
        assert_eq!(router.route(addr(7000), &[0x80, 0x60]).map(|(_, q)| *q), Some(2));
        router.unregister(&"s1".into());
        assert_eq!(router.route(addr(7000), &[0x80, 0x60]).map(|(_, q)| *q), Some(2));
    }

    #[test]
    fn a_session_remembers_a_bounded_number_of_addresses() {
        let mut router = Router::default();
        router.register("s".into(), "u".into(), 0);
        for port in 0..100 {
            router.route(addr(port), &binding_request("u:x"));
        }
        assert_eq!(router.by_peer.len(), MAX_PEERS_PER_SESSION);
        assert!(router.route(addr(99), &[0x80]).is_some());
        assert!(router.route(addr(0), &[0x80]).is_none());
    }

    proptest! {
        #[test]
        fn any_datagram_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = stun_username(&data);
            let mut router = Router::default();
            router.register("s".into(), "u".into(), 0);
            let _ = router.route(addr(1), &data);
        }

        #[test]
        fn cut_binding_requests_never_panic(cut in 0usize..60) {
            let message = binding_request("ufrag:peer");
            let _ = stun_username(&message[..cut.min(message.len())]);
        }
    }
}
