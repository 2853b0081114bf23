//! The RTMP accept loop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::connection;
use crate::node::NodeContext;

/// Accepts connections until the task is dropped, handing each to the next arbiter of the
/// pool. Connections beyond `rtmp.max_connections` are closed at once.
pub async fn run(listener: TcpListener, node: Arc<NodeContext>) {
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
        if open.load(Ordering::Relaxed) >= node.config.rtmp.max_connections {
            tracing::warn!(%peer, "rtmp connection refused: too many connections");
            continue;
        }
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%peer, %error, "cannot hand over rtmp connection");
                continue;
            }
        };
        let node = Arc::clone(&node);
        let open = Arc::clone(&open);
        open.fetch_add(1, Ordering::Relaxed);
        node.pool.next().spawn(async move {
            if let Ok(stream) = TcpStream::from_std(std_stream) {
                connection::serve(stream, peer, Arc::clone(&node)).await;
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
