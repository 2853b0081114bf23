//! What a session's packets travel by, so that sessions need not care: the shared UDP socket
//! or one of the ICE-TCP connections ([`super::tcp`]) that named the session.
//!
//! Every packet a session receives carries how it came ([`Via`]); [`Links`] hands it to the
//! session's `rtc` peer connection with the matching transport context (UDP or TCP, and the
//! local candidate it reached) and sends what the connection wants to send back the way the
//! remote address came: from the UDP socket, or framed onto that remote's TCP connection.

use std::net::SocketAddr;

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::sansio::Protocol as _;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::mpsc;
use zenlive_actors::StreamKey;

use super::udp::Datagram;
use super::udp_send::UdpSender;

/// TCP connections remembered per session (a client's candidate pairs that reached it).
const MAX_TCP_LINKS: usize = 8;

/// The host candidates a session advertised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    /// UDP host candidates (the shared UDP port).
    pub udp: Vec<SocketAddr>,
    /// Passive TCP host candidates (the ICE-TCP port), when ICE-TCP is on.
    pub tcp: Vec<SocketAddr>,
}

impl Candidates {
    /// Whether there is no candidate at all.
    pub fn is_empty(&self) -> bool {
        self.udp.is_empty() && self.tcp.is_empty()
    }

    /// The local candidate a packet that reached `reached` by `protocol` belongs to: the
    /// candidate of that address, else the first of that transport (a NAT or a wildcard
    /// socket hides which was meant; an ICE-lite agent answers on any), else `reached`.
    pub fn local_for(&self, protocol: TransportProtocol, reached: SocketAddr) -> SocketAddr {
        let list = match protocol {
            TransportProtocol::TCP => &self.tcp,
            _ => &self.udp,
        };
        if list.contains(&reached) {
            return reached;
        }
        list.first().copied().unwrap_or(reached)
    }
}

/// One TCP connection's way back: its outgoing packets' bounded queue (the connection's
/// task frames and writes them).
#[derive(Debug, Clone)]
pub struct TcpLink {
    /// The connection's local address.
    pub local: SocketAddr,
    /// Packets to write to it.
    pub out: mpsc::Sender<BytesMut>,
}

/// How a packet came.
#[derive(Debug, Clone)]
pub enum Via {
    /// The shared UDP socket.
    Udp,
    /// An ICE-TCP connection.
    Tcp(TcpLink),
}

/// A session's ways back to its client: the UDP socket and the TCP connections that reached
/// it. See the module docs.
#[derive(Debug, Default)]
pub struct Links {
    candidates: Candidates,
    tcp: Vec<(SocketAddr, TcpLink)>,
    /// UDP datagrams collected for one batch, and where they go (kept between flushes for
    /// their capacity).
    udp: Vec<BytesMut>,
    udp_to: Option<SocketAddr>,
}

impl Links {
    /// Links of a session that advertised `candidates`.
    pub fn new(candidates: Candidates) -> Self {
        Self { candidates, tcp: Vec::new(), udp: Vec::new(), udp_to: None }
    }

    /// Remembers the way back to the sender of a packet that came by TCP.
    fn learn(&mut self, from: SocketAddr, link: &TcpLink) {
        if let Some(known) = self.tcp.iter_mut().find(|(peer, _)| *peer == from) {
            if !known.1.out.same_channel(&link.out) {
                known.1 = link.clone();
            }
            return;
        }
        self.tcp.retain(|(_, link)| !link.out.is_closed());
        if self.tcp.len() >= MAX_TCP_LINKS {
            self.tcp.remove(0);
        }
        self.tcp.push((from, link.clone()));
    }

    /// Hands one packet to a peer connection (WHIP or WHEP, `what` in the log); `udp_bound`
    /// is the UDP socket's address. What the stack refuses (garbage, a replay, a packet for
    /// a closed context) is dropped and logged.
    pub fn feed(
        &mut self,
        peer: &mut RTCPeerConnection,
        udp_bound: SocketAddr,
        datagram: Datagram,
        key: &StreamKey,
        what: &str,
    ) {
        let (protocol, reached) = match &datagram.via {
            Via::Udp => (TransportProtocol::UDP, udp_bound),
            Via::Tcp(link) => {
                self.learn(datagram.from, link);
                (TransportProtocol::TCP, link.local)
            }
        };
        let input = TaggedBytesMut {
            now: datagram.at,
            transport: TransportContext {
                local_addr: self.candidates.local_for(protocol, reached),
                peer_addr: datagram.from,
                ecn: None,
                transport_protocol: protocol,
            },
            message: datagram.data,
        };
        if let Err(error) = peer.handle_read(input) {
            tracing::debug!(stream = %key, %error, "{what}: packet refused");
        }
    }

    /// Sends what a peer connection wants to send: from the shared UDP socket, or onto the
    /// TCP connection of its remote. UDP packets are collected and go out in batches, one
    /// system call per run to one address ([`UdpSender`]). A full send buffer or queue
    /// drops the packet, as a congested network would.
    pub fn send_pending(
        &mut self,
        peer: &mut RTCPeerConnection,
        sender: &UdpSender,
        key: &StreamKey,
        what: &str,
    ) {
        while let Some(out) = peer.poll_write() {
            let to = out.transport.peer_addr;
            match out.transport.transport_protocol {
                TransportProtocol::TCP => {
                    let Some((_, link)) = self.tcp.iter().find(|(peer, _)| *peer == to) else {
                        tracing::trace!(stream = %key, %to, "{what}: no TCP connection");
                        continue;
                    };
                    if link.out.try_send(out.message).is_err() {
                        tracing::trace!(stream = %key, %to, "{what}: TCP queue full or closed");
                    }
                }
                _ => {
                    if self.udp_to != Some(to) {
                        self.send_udp(sender);
                        self.udp_to = Some(to);
                    }
                    self.udp.push(out.message);
                }
            }
        }
        self.send_udp(sender);
    }

    /// Sends the collected UDP datagrams (all to `udp_to`).
    fn send_udp(&mut self, sender: &UdpSender) {
        if let (Some(to), false) = (self.udp_to, self.udp.is_empty()) {
            sender.send(to, &self.udp);
        }
        self.udp.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("literal")
    }

    #[test]
    fn a_packet_belongs_to_the_candidate_it_reached_or_the_first_of_its_transport() {
        let candidates = Candidates {
            udp: vec![addr("203.0.113.5:8189"), addr("127.0.0.1:8189")],
            tcp: vec![addr("203.0.113.5:8190")],
        };
        let udp = TransportProtocol::UDP;
        let tcp = TransportProtocol::TCP;
        assert_eq!(candidates.local_for(udp, addr("127.0.0.1:8189")), addr("127.0.0.1:8189"));
        assert_eq!(candidates.local_for(udp, addr("0.0.0.0:8189")), addr("203.0.113.5:8189"));
        assert_eq!(candidates.local_for(tcp, addr("10.0.0.2:8190")), addr("203.0.113.5:8190"));
        let none = Candidates { udp: vec![addr("127.0.0.1:1")], tcp: vec![] };
        assert_eq!(none.local_for(tcp, addr("127.0.0.1:2")), addr("127.0.0.1:2"));
    }

    #[test]
    fn a_session_remembers_a_bounded_number_of_tcp_connections() {
        let mut links = Links::default();
        let mut queues = Vec::new();
        for port in 0..20 {
            let (out, rx) = mpsc::channel(1);
            queues.push(rx);
            links.learn(
                addr(&format!("127.0.0.1:{}", 1000 + port)),
                &TcpLink { local: addr("127.0.0.1:9"), out },
            );
        }
        assert_eq!(links.tcp.len(), MAX_TCP_LINKS);
        assert_eq!(links.tcp.last().map(|l| l.0), Some(addr("127.0.0.1:1019")));
    }
}
