//! [`StartError`]: why a node could not start, one variant per cause, each naming what to
//! change.

use std::net::SocketAddr;

use crate::auth::AuthSetupError;
use crate::config::ConfigError;
use crate::tls::TlsError;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The registry refused the node.
    #[error("registry: {0}")]
    Registry(#[from] zenlive_registry::RegistryError),
    /// The auth configuration is unusable.
    #[error("auth: {0}")]
    Auth(#[from] AuthSetupError),
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The TLS certificate or key is unusable.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// An application actor kind could not be registered
    /// ([`crate::NodeBuilder::actor_kind`]).
    #[error("{0}")]
    ActorKind(#[from] crate::app_actors::KindError),
    /// Another running node has this node's id.
    #[error("node id {id} is in use by a running node ({addresses}): two nodes with one id would take each other's streams; give this one another node.id (--node-id, ZENLIVE_NODE_ID) or stop the other")]
    NodeIdInUse {
        /// The id.
        id: String,
        /// Where the other node says it is.
        addresses: String,
    },
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {addr}: {cause}; {}", bind_hint(what, cause))]
pub struct BindError {
    /// Which listener.
    pub what: &'static str,
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub cause: std::io::Error,
}

fn bind_hint(what: &str, error: &std::io::Error) -> String {
    let setting = match what {
        "https" | "rtmps" => {
            format!("set tls.{what}_addr (ZENLIVE_TLS_{}_ADDR)", what.to_uppercase())
        }
        "webrtc" => {
            "set webrtc.udp_addr (ZENLIVE_WEBRTC_UDP_ADDR), or webrtc.enabled = false".to_owned()
        }
        _ => format!("set {what}.addr (ZENLIVE_{}_ADDR, --{what}-addr)", what.to_uppercase()),
    };
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!("another process holds that port: stop it, or {setting}")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("ports below 1024 need privileges (CAP_NET_BIND_SERVICE), or {setting}")
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!("no interface of this machine has that address: {setting}")
        }
        _ => setting,
    }
}
