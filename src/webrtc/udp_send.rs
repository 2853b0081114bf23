//! Batched sends on the shared UDP socket: one system call per run of a session's packets
//! to one peer, not one per packet.
//!
//! A WHEP viewer's frame becomes a few SRTP packets, all MTU-sized but the last, for the
//! same address. With UDP generic segmentation offload (GSO, Linux 4.18+) such a run goes
//! to the kernel as one buffer with a `UDP_SEGMENT` control message giving the segment
//! size, and the kernel cuts it into the datagrams (every segment that size, the last one
//! no larger): one `sendmsg` and one pass through the IP stack per run. The runs are cut by
//! [`gso_run`]: equal sizes, a smaller last one ends a run, at most [`MAX_SEGMENTS`]
//! segments and [`MAX_GSO_BYTES`] bytes. When the kernel refuses GSO (`EIO`: no checksum
//! offload on the route's device; `EINVAL`: no `UDP_SEGMENT` support or a socket option
//! that excludes it), GSO is turned off for the socket, logged once, and every run is sent
//! with one `sendmmsg` (a datagram per message) from then on.
//!
//! Why hand-written on `nix`: `quinn-udp` does GSO and `sendmmsg`, but it configures the
//! socket for its own receive path too (GRO coalescing, which the UDP task's plain
//! `recv_from` here cannot take apart), and `socket2`/`std` have neither call. `nix` wraps
//! both safely; this module only decides the batches.
//!
//! `webrtc.udp_send` picks the way (`ZENLIVE_WEBRTC_UDP_SEND` in the environment, as every
//! key): `gso` (the default), `sendmmsg` (no GSO), or `sendto` (one system call per
//! datagram, as before batching), for a kernel or virtual NIC that mishandles GSO, and for
//! comparisons (BENCHMARKS.md).
//!
//! A full send buffer (`EAGAIN`) drops what was not sent, as a congested network would (the
//! receiver's NACKs and keyframe requests recover); the socket is non-blocking.

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::UdpSend;

use bytes::BytesMut;
use nix::errno::Errno;
use nix::sys::socket::{
    sendmmsg, sendmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Most segments one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;

/// Most bytes one GSO send may carry: under the 65,507-byte limit of a UDP/IPv4 payload.
pub const MAX_GSO_BYTES: usize = 60_000;

/// Most datagrams one `sendmmsg` carries when GSO is off (the kernel's `UIO_MAXIOV` is
/// 1024; a session's flush is rarely above a few dozen).
const MAX_MMSG: usize = 64;

/// The shared socket's sending side. See the module docs.
#[derive(Debug)]
pub struct UdpSender {
    socket: std::sync::Arc<UdpSocket>,
    gso: AtomicBool,
    /// `false`: one `sendto` per datagram (`ZENLIVE_WEBRTC_UDP_SEND=sendto`).
    batch: bool,
}

/// How many datagrams from the start of `sizes` one GSO send can carry (at least one when
/// `sizes` is not empty): a run of the first one's size, ended early by a smaller one
/// (which it includes), a larger one (which it leaves out), [`MAX_SEGMENTS`] or
/// [`MAX_GSO_BYTES`].
pub fn gso_run(sizes: impl IntoIterator<Item = usize>) -> usize {
    let mut sizes = sizes.into_iter();
    let Some(segment) = sizes.next() else { return 0 };
    let (mut count, mut bytes) = (1, segment);
    if segment == 0 {
        return count;
    }
    for size in sizes {
        if count >= MAX_SEGMENTS || bytes + size > MAX_GSO_BYTES || size > segment || size == 0 {
            break;
        }
        count += 1;
        bytes += size;
        if size < segment {
            break;
        }
    }
    count
}

impl UdpSender {
    /// Sends from `socket` (non-blocking) as `mode` says, with GSO (when asked for) until
    /// the kernel refuses it.
    pub fn new(socket: std::sync::Arc<UdpSocket>, mode: UdpSend) -> Self {
        let (gso, batch) = match mode {
            UdpSend::Gso => (true, true),
            UdpSend::Sendmmsg => (false, true),
            UdpSend::Sendto => (false, false),
        };
        if mode != UdpSend::Gso {
            tracing::info!(?mode, "webrtc: UDP send mode (webrtc.udp_send)");
        }
        Self { socket, gso: AtomicBool::new(gso && cfg!(target_os = "linux")), batch }
    }

    /// The socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Whether sends still use GSO.
    pub fn gso(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// Sends `datagrams` to `to`, in order; returns how many the kernel took (the rest were
    /// dropped: a full send buffer, or an error, logged at `trace`).
    pub fn send(&self, to: SocketAddr, datagrams: &[BytesMut]) -> usize {
        if !self.batch {
            return datagrams.iter().filter(|d| self.socket.send_to(d, to).is_ok()).count();
        }
        let address = SockaddrStorage::from(to);
        let mut sent = 0;
        while sent < datagrams.len() {
            let rest = datagrams.get(sent..).unwrap_or(&[]);
            let result = if self.gso() {
                let run = gso_run(rest.iter().map(|d| d.len())).max(1);
                self.send_gso(&address, rest.get(..run).unwrap_or(&[])).map(|()| run)
            } else {
                self.send_mmsg(&address, rest.get(..MAX_MMSG.min(rest.len())).unwrap_or(&[]))
            };
            match result {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(Errno::EAGAIN) => break,
                Err(errno @ (Errno::EIO | Errno::EINVAL)) if self.gso() => {
                    // Refused once, refused always (the route's device or the kernel):
                    // the same datagrams go again, one message each.
                    self.gso.store(false, Ordering::Relaxed);
                    tracing::info!(%errno, "webrtc: UDP GSO refused by the kernel; sending with sendmmsg");
                }
                Err(errno) => {
                    tracing::trace!(%errno, %to, "webrtc: UDP send failed");
                    // Skip the datagram that failed (e.g. EMSGSIZE); the rest may pass.
                    sent += 1;
                }
            }
        }
        sent
    }

    /// One GSO send of `run` (cut by [`gso_run`]); a run of one is a plain datagram.
    fn send_gso(&self, to: &SockaddrStorage, run: &[BytesMut]) -> Result<(), Errno> {
        let iov: Vec<IoSlice<'_>> = run.iter().map(|d| IoSlice::new(d)).collect();
        let fd = self.socket.as_raw_fd();
        let segment = run.first().map_or(0, |d| d.len());
        if run.len() > 1 {
            // gso_run keeps a run under 60,000 bytes, so a segment fits in u16.
            let segment = u16::try_from(segment).map_err(|_| Errno::EMSGSIZE)?;
            sendmsg(
                fd,
                &iov,
                &[ControlMessage::UdpGsoSegments(&segment)],
                MsgFlags::empty(),
                Some(to),
            )?;
        } else {
            sendmsg(fd, &iov, &[], MsgFlags::empty(), Some(to))?;
        }
        Ok(())
    }

    /// One `sendmmsg` of `datagrams` (one message each); how many the kernel took.
    fn send_mmsg(&self, to: &SockaddrStorage, datagrams: &[BytesMut]) -> Result<usize, Errno> {
        let slices: Vec<[IoSlice<'_>; 1]> = datagrams.iter().map(|d| [IoSlice::new(d)]).collect();
        let addresses = vec![Some(*to); datagrams.len()];
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(datagrams.len(), None);
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        let results = sendmmsg(
            self.socket.as_raw_fd(),
            &mut headers,
            &slices,
            &addresses,
            no_cmsgs,
            MsgFlags::empty(),
        )?;
        Ok(results.count())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn runs_are_equal_sizes_ended_by_a_smaller_one() {
        assert_eq!(gso_run([]), 0);
        assert_eq!(gso_run([1200]), 1);
        assert_eq!(gso_run([1200, 1200, 1200, 400, 1200]), 4, "a smaller one ends the run");
        assert_eq!(gso_run([400, 1200, 1200]), 1, "a larger one starts the next");
        assert_eq!(gso_run([1200, 1200, 1000, 1000]), 3);
        assert_eq!(gso_run([0, 0, 0]), 1, "empty datagrams go one by one");
        assert_eq!(gso_run([100; 100]), MAX_SEGMENTS);
        assert_eq!(gso_run([1400; 64]), MAX_GSO_BYTES / 1400);
    }

    fn pair() -> (UdpSender, UdpSocket) {
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
        receiver.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("non-blocking");
        (UdpSender::new(Arc::new(socket), UdpSend::Gso), receiver)
    }

    fn datagrams(sizes: &[usize]) -> Vec<BytesMut> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| BytesMut::from(&vec![i as u8; size][..]))
            .collect()
    }

    fn receive(receiver: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut buffer = [0u8; 65_536];
        (0..n)
            .map(|_| {
                let (len, _) = receiver.recv_from(&mut buffer).expect("a datagram");
                buffer[..len].to_vec()
            })
            .collect()
    }

    /// Each datagram arrives whole and in order, whether the kernel segments (GSO) or each
    /// went as its own message (after turning GSO off).
    #[test]
    fn datagrams_arrive_as_they_were_with_and_without_gso() {
        let sizes = [1200, 1200, 1200, 300, 80, 1200, 1200, 1200, 1300, 5];
        for gso in [true, false] {
            let (sender, receiver) = pair();
            sender.gso.store(gso && sender.gso(), Ordering::Relaxed);
            let sent = datagrams(&sizes);
            let to = receiver.local_addr().expect("address");
            assert_eq!(sender.send(to, &sent), sizes.len());
            let got = receive(&receiver, sizes.len());
            let want: Vec<Vec<u8>> = sent.iter().map(|d| d.to_vec()).collect();
            assert_eq!(got, want, "gso: {}", sender.gso());
        }
    }

    #[test]
    fn a_long_flush_goes_in_several_runs() {
        let (sender, receiver) = pair();
        let sizes = vec![600; 100];
        let sent = datagrams(&sizes);
        let to = receiver.local_addr().expect("address");
        assert_eq!(sender.send(to, &sent), sizes.len());
        let got = receive(&receiver, sizes.len());
        assert!(got.iter().zip(&sent).all(|(a, b)| a[..] == b[..]));
    }
}
