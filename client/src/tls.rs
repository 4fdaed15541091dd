//! TLS for client connections (rustls, ring), and what both ends share: PEM loading, and certificates
//! re-read from their files when they change.
//!
//! A client trusts the CA certificates of one PEM file (not the system store: a scheduler's certificate comes
//! from the operator's own CA) and may present a certificate of its own, for schedulers that require mutual
//! TLS. PEM files are read with `rustls-pki-types` (`PemObject`).
//!
//! A [`ReloadingCert`] is a certificate and key read from two files and read again when either changes (a
//! renewed Kubernetes Secret or cert-manager certificate). Servers present one ([`server_config`]; the
//! scheduler's listener, the agent's direct-run API) and check it every second ([`ReloadingCert::watch`]); a
//! client presents one under mutual TLS ([`client_config`]) and checks it at most once a second, when a
//! handshake asks for it, so that a reconnect after a renewal presents the new certificate. A pair that cannot
//! be read, or a key that does not match its certificate, keeps the one in force and logs a warning.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// How often a [`ReloadingCert`]'s files are checked for a change (at most).
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

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

/// A client config trusting the CAs of `ca_file`, presenting `cert_file` + `key_file` when both are given
/// (re-read when they change: see [`ReloadingCert`]).
pub fn client_config(ca_file: &Path, identity: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, TlsError> {
    let identity = identity.map(|(cert, key)| ReloadingCert::load(cert, key)).transpose()?;
    client_config_presenting(ca_file, identity)
}

/// A client config trusting the CAs of `ca_file`, presenting `identity` (checked for a renewal at most once a
/// second, when a handshake asks for it).
///
/// With an identity, TLS session resumption is off: a resumed session would carry the certificate of the
/// first handshake, and a reconnect after a renewal must present the new one (long-lived clients reconnect
/// rarely, so the full handshake costs little).
pub fn client_config_presenting(
    ca_file: &Path,
    identity: Option<Arc<ReloadingCert>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(load_roots(ca_file)?);
    let config = match identity {
        Some(cert) => {
            let mut config = builder.with_client_cert_resolver(cert);
            config.resumption = Resumption::disabled();
            config
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A server config presenting `cert` (TLS 1.2 and 1.3), and requiring a client certificate signed by a CA of
/// `client_ca` when given (mutual TLS).
pub fn server_config(cert: Arc<ReloadingCert>, client_ca: Option<&Path>) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
                .build()
                .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(cert))
}

/// Size and modification time of a file (None: absent or unreadable).
type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let der = load_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::File { path: key.to_path_buf(), why: e.to_string() })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| TlsError::Config(format!("{} and {}: {e}", cert.display(), key.display())))?;
    Ok(ck)
}

/// A certificate and key read from PEM files, swapped when the files change (a server's certificate, or a
/// client's under mutual TLS).
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamps taken just before the pair in force was read.
    loaded: Mutex<(Stamp, Stamp)>,
    /// When [`ReloadingCert::refresh_if_due`] last looked at the files.
    checked: Mutex<Instant>,
}

impl ReloadingCert {
    /// Reads the pair (an error, naming the file, if it cannot be used).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        let loaded = Mutex::new((stamp(cert), stamp(key)));
        let ck = certified_key(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(ck)),
            loaded,
            checked: Mutex::new(Instant::now()),
        }))
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The pair in force.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().clone()
    }

    /// Re-reads the pair if a file changed since it was loaded; true if a new certificate is in force. A pair
    /// that cannot be used keeps the one in force (and is tried again at the next call).
    pub fn refresh(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        if now == *self.loaded.lock() {
            return false;
        }
        match certified_key(&self.cert, &self.key) {
            Ok(ck) => {
                *self.current.write() = Arc::new(ck);
                *self.loaded.lock() = now;
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!("TLS certificate not reloaded, the one in force stays: {e}");
                false
            }
        }
    }

    /// [`ReloadingCert::refresh`], unless the files were looked at less than [`RELOAD_EVERY`] ago.
    pub fn refresh_if_due(&self) -> bool {
        {
            let mut checked = self.checked.lock();
            if checked.elapsed() < RELOAD_EVERY {
                return false;
            }
            *checked = Instant::now();
        }
        self.refresh()
    }

    /// Checks the files every [`RELOAD_EVERY`] until `shutdown` (a server's certificate).
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(RELOAD_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return,
            }
            self.refresh();
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _root_hints: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.refresh_if_due();
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
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

    /// Writes a new self-signed pair, after a pause that makes the change visible in the files' times.
    fn write_pair(cert: &Path, key: &Path) -> CertificateDer<'static> {
        std::thread::sleep(Duration::from_millis(30));
        let pair = rcgen::generate_simple_self_signed(vec!["node".to_string()]).unwrap();
        std::fs::write(key, pair.signing_key.serialize_pem()).unwrap();
        std::fs::write(cert, pair.cert.pem()).unwrap();
        pair.cert.der().clone()
    }

    #[test]
    fn a_changed_pair_is_reloaded_and_a_mismatched_one_keeps_the_one_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let first = write_pair(&cert, &key);
        let c = ReloadingCert::load(&cert, &key).unwrap();
        assert_eq!(c.current().cert[0], first);
        assert!(!c.refresh(), "nothing changed");

        // A new certificate whose key is not there yet (a renewal caught half-written).
        let other = dir.path().join("other");
        let second = write_pair(&cert, &other);
        assert!(!c.refresh());
        assert_eq!(c.current().cert[0], first, "a key that does not match keeps the pair in force");
        std::thread::sleep(Duration::from_millis(30));
        std::fs::copy(&other, &key).unwrap();
        assert!(c.refresh());
        assert_eq!(c.current().cert[0], second);

        // A client looks at the files at most once a second.
        let third = write_pair(&cert, &key);
        *c.checked.lock() = Instant::now();
        assert!(!c.refresh_if_due());
        assert_eq!(ResolvesClientCert::resolve(c.as_ref(), &[], &[]).unwrap().cert[0], second);
        *c.checked.lock() = Instant::now() - RELOAD_EVERY;
        assert_eq!(ResolvesClientCert::resolve(c.as_ref(), &[], &[]).unwrap().cert[0], third);

        std::thread::sleep(Duration::from_millis(30));
        std::fs::write(&cert, "garbage\n").unwrap();
        assert!(!c.refresh());
        assert_eq!(c.current().cert[0], third, "an unreadable file keeps the pair in force");
    }
}
