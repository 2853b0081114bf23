//! The RTMP accept loop (and RTMPS's, with a TLS acceptor).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::connection;
use crate::context::NodeContext;
use crate::refusals::Limit;

/// Accepts connections until the task is dropped, handing each to the next arbiter of the
/// pool. Connections beyond `rtmp.max_connections`, or beyond
/// `rtmp.max_pending_per_address` not yet publishing or playing from one address, are
/// closed at once (counted, and logged once a minute per address).
/// With `tls`, each connection first completes a TLS handshake (RTMPS).
pub async fn run(listener: TcpListener, node: Arc<NodeContext>, tls: Option<TlsAcceptor>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, "rtmp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let live = node.live();
        let rtmp = &live.rtmp;
        if open.load(Ordering::Relaxed) >= rtmp.max_connections {
            let detail = format!(
                "{} RTMP connections are open (rtmp.max_connections)",
                rtmp.max_connections
            );
            node.refusals.refuse(Some(peer.ip()), Limit::RtmpConnections, detail);
            continue;
        }
        let Some(pending) = node.rtmp_pending.take(peer.ip()) else {
            let detail = format!(
                "{} RTMP connections from this address are not publishing or playing yet \
                 (rtmp.max_pending_per_address)",
                rtmp.max_pending_per_address
            );
            node.refusals.refuse(Some(peer.ip()), Limit::RtmpPendingPerAddress, detail);
            continue;
        };
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%peer, %error, "cannot hand over rtmp connection");
                continue;
            }
        };
        let node = Arc::clone(&node);
        let open = Arc::clone(&open);
        let tls = tls.clone();
        open.fetch_add(1, Ordering::Relaxed);
        node.pool.next().spawn(async move {
            if let Ok(stream) = TcpStream::from_std(std_stream) {
                let context = Arc::clone(&node);
                let serve = async move {
                    match tls {
                        // Boxed: the TLS handshake's state is large, and the plain
                        // connections (most) would carry its size for their whole life.
                        Some(tls) => {
                            Box::pin(connection::serve_tls(stream, tls, peer, context, pending))
                                .await
                        }
                        None => connection::serve(stream, peer, context, pending).await,
                    }
                };
                node.until_shutdown(serve).await;
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
