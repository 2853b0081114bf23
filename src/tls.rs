//! TLS for the HTTP front-end and RTMP: HTTPS and WSS on a listener of their own
//! (`tls.https_addr`) with the same routes as the HTTP port, RTMPS on `tls.rtmps_addr`, from PEM certificate and key files (rustls with
//! the `ring` provider). The certificate is served through a resolver that [`Tls::reload`]
//! swaps, so SIGHUP picks up renewed files without dropping a connection; a reload that
//! fails keeps the certificate in use.

use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM of the kind wanted.
    #[error("{what} {path}: {reason}")]
    File {
        /// `tls.cert` or `tls.key`.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refused the setup.
    #[error("tls: {0}")]
    Setup(String),
}

/// The certificate in use, swapped by a reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.read()))
    }
}

/// The node's TLS setup. See the module docs.
#[derive(Debug)]
pub struct Tls {
    cert: String,
    key: String,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
}

impl Tls {
    /// Loads `config`'s certificate chain and key; `None` when TLS is not configured.
    pub fn load(config: &TlsConfig) -> Result<Option<Self>, TlsError> {
        if !config.enabled() {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(&provider, &config.cert, &config.key)?;
        Ok(Some(Self {
            cert: config.cert.clone(),
            key: config.key.clone(),
            provider,
            current: Arc::new(Current(RwLock::new(Arc::new(key)))),
        }))
    }

    /// Reads the files again and serves what they hold from the next handshake on.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.provider, &self.cert, &self.key)?;
        *self.current.0.write() = Arc::new(key);
        Ok(())
    }

    /// A server configuration for the HTTPS listener (HTTP/1.1).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = self.rtmps_config()?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A server configuration for RTMPS (no ALPN: RTMP clients send none).
    pub fn rtmps_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        Ok(rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&self.current) as Arc<dyn ResolvesServerCert>))
    }
}

/// The chain in `cert` and the key in `key`, checked against each other.
fn certified_key(
    provider: &CryptoProvider,
    cert: &str,
    key: &str,
) -> Result<CertifiedKey, TlsError> {
    let file =
        |what, path: &str, reason: String| TlsError::File { what, path: path.to_owned(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file("tls.cert", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file("tls.cert", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file("tls.cert", cert, "no certificate in it (PEM expected)".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| file("tls.key", key, e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| file("tls.key", key, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        TlsError::Setup(format!("{key} is not the key of the certificate in {cert}: {e}"))
    })?;
    Ok(certified)
}
