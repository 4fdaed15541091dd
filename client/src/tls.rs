//! TLS for client connections (rustls, ring), and the PEM loading both ends share.
//!
//! A client trusts the CA certificates of one PEM file (not the system store: a scheduler's certificate comes
//! from the operator's own CA) and may present a certificate of its own, for schedulers that require mutual
//! TLS. PEM files are read with `rustls-pki-types` (`PemObject`).

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why TLS settings cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the combination (e.g. a key that does not match its certificate).
    #[error("TLS settings: {0}")]
    Config(String),
}

/// The certificates of a PEM file (a chain: leaf first), at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = |why: String| TlsError::File { path: path.to_path_buf(), why };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file(e.to_string()))?;
    if certs.is_empty() {
        return Err(file("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File { path: path.to_path_buf(), why: e.to_string() })
}

/// A root store holding every certificate of a CA file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::File { path: path.to_path_buf(), why: e.to_string() })?;
    }
    Ok(roots)
}

/// The ring provider, for configs built without relying on a process-wide default.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting the CAs of `ca_file`, presenting `cert_file` + `key_file` when both are given.
pub fn client_config(ca_file: &Path, identity: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(load_roots(ca_file)?);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Config(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name a server's certificate must carry for `addr` (`host:port`, `[v6]:port` or an IP).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?} is not a valid server name: {e}"))
}

/// The TLS flags of a command-line client (`pmctl`, `pm-agent run`, `pm-loadtest`).
#[cfg(feature = "cli")]
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Connect over TLS, trusting the CA certificates of this PEM file (the scheduler's CA).
    #[arg(long, env = "PM_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Mutual TLS: present this certificate chain (PEM). Needs --tls-client-key-file and --tls-ca-file.
    #[arg(long, env = "PM_TLS_CLIENT_CERT_FILE", requires_all = ["tls_client_key_file", "tls_ca_file"])]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The private key of --tls-client-cert-file (PEM).
    #[arg(long, env = "PM_TLS_CLIENT_KEY_FILE", requires = "tls_client_cert_file")]
    pub tls_client_key_file: Option<PathBuf>,
}

#[cfg(feature = "cli")]
impl TlsArgs {
    /// The client config these flags describe; `None` without `--tls-ca-file` (plain TCP).
    pub fn config(&self) -> Result<Option<Arc<ClientConfig>>, TlsError> {
        let Some(ca) = &self.tls_ca_file else { return Ok(None) };
        let identity = self.tls_client_cert_file.as_deref().zip(self.tls_client_key_file.as_deref());
        client_config(ca, identity).map(Some)
    }
}

/// A client socket: plain TCP, or TLS over it.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// An in-process pipe to a connection served by the same process (the scheduler's HTTP API).
    Memory(tokio::io::DuplexStream),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(server_name("pm-0.pm-headless:7070").unwrap(), ServerName::try_from("pm-0.pm-headless").unwrap());
        assert!(matches!(server_name("127.0.0.1:7070").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("[::1]:7070").unwrap(), ServerName::IpAddress(_)));
        assert!(server_name("bad name:1").is_err());
    }

    #[test]
    fn files_without_pem_blocks_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = load_certs(&path).unwrap_err().to_string();
        assert!(e.contains("ca.pem") && e.contains("no CERTIFICATE"), "{e}");
        assert!(load_key(&path).unwrap_err().to_string().contains("ca.pem"));
        assert!(load_certs(&dir.path().join("missing.pem")).is_err());
    }
}
