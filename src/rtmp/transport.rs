//! What an RTMP connection reads from: a TCP socket (RTMP) or a TLS stream over one
//! (RTMPS). Reads that go straight to the socket can be merged (`SO_RCVLOWAT`, see
//! `read_merge`) and tuned; reads through TLS cannot, since the TLS layer decides when the
//! socket is read.

use tokio::io::{AsyncRead, ReadHalf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// The read side of a connection. See the module docs.
pub(crate) trait Reader: AsyncRead + Unpin + Send {
    /// The TCP socket, when reads go straight to it.
    fn socket(&self) -> Option<&TcpStream>;
}

impl Reader for OwnedReadHalf {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl Reader for ReadHalf<TlsStream<TcpStream>> {
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}
