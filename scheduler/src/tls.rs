//! TLS on the scheduler's listener (rustls with ring).
//!
//! - `--tls-cert-file` + `--tls-key-file`: the node serves TLS only (a plaintext client fails the TLS
//!   handshake and is counted as `pm_refused_total{reason="tls_handshake"}`). The certificate is re-read within a
//!   second when either file changes (a renewed Kubernetes Secret); new connections get the new one, open
//!   ones keep theirs. A pair that cannot be read, or a key that does not match its certificate, keeps the
//!   one in force and logs a warning.
//! - `--tls-client-ca-file`: mutual TLS; every client must present a certificate signed by one of its CAs.
//!   Tokens are still checked in `Hello` (the certificate proves who connects; the token, which role).
//! - `--tls-ca-file`: the CAs a node trusts for its peers' certificates (cluster mode). A node presents its
//!   own certificate to its peers, so a cluster with mutual TLS works with one CA. That certificate is
//!   reloaded too: peer connections made after a renewal present the new one.
//!
//! The TLS handshake is bounded by `--handshake-timeout`, like the `Hello` that follows it.

use std::path::PathBuf;
use std::sync::Arc;

use pm_client::tls::{client_config_presenting, server_config, ReloadingCert, TlsError};
use rustls::ClientConfig;

/// The TLS files of a node.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CAs for client certificates: set = mutual TLS required.
    pub client_ca: Option<PathBuf>,
    /// CAs for peer nodes' certificates (cluster mode).
    pub peer_ca: Option<PathBuf>,
}

/// A node's TLS: the acceptor of its listener, the config it connects to its peers with, and the
/// certificate to watch.
#[derive(Clone)]
pub struct Tls {
    /// Wraps accepted sockets.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// For connections to peer nodes (`None` without `--tls-ca-file`).
    pub peer: Option<Arc<ClientConfig>>,
    /// The certificate in force.
    pub cert: Arc<ReloadingCert>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert", &self.cert.cert_path()).field("peer", &self.peer.is_some()).finish()
    }
}

impl Tls {
    /// Loads every file (errors name the file) and builds the configs. The node presents the same
    /// certificate, reloaded, on its listener and to its peers.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let cert = ReloadingCert::load(&files.cert, &files.key)?;
        let server = server_config(cert.clone(), files.client_ca.as_deref())?;
        let peer = match &files.peer_ca {
            Some(ca) => Some(client_config_presenting(ca, Some(cert.clone()))?),
            None => None,
        };
        Ok(Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)), peer, cert })
    }
}
