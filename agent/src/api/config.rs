//! The direct-run API's options (`--api-*`, `--http-listen`) and their validation: where it listens, its
//! token, its bounds and its TLS. Invariant: the API never listens off loopback without a bearer token, since
//! it runs shell commands; TLS does not stand in for the token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pm_client::tls::{server_config, ReloadingCert, TlsError};
use tokio::net::TcpListener;

/// Command-line options of the direct-run API, shared by `pm-agent run`, `pm-agent serve` and `pm dev`.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Address of the direct-run HTTP API, or `off`. Only a loopback address unless --api-token is set.
    #[arg(long, env = "PM_API_LISTEN", default_value = "127.0.0.1:7071")]
    pub api_listen: String,
    /// Bearer token required on run requests (needed to listen on a non-loopback address).
    #[arg(long, env = "PM_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Read the bearer token from this file (e.g. a mounted Kubernetes Secret).
    #[arg(long, env = "PM_API_TOKEN_FILE", conflicts_with = "api_token")]
    pub api_token_file: Option<PathBuf>,
    /// Largest request body (task JSON), bytes.
    #[arg(long, env = "PM_API_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub api_max_body_bytes: usize,
    /// Time a client has to send the request headers, ms (slowloris bound).
    #[arg(long, env = "PM_API_HEADER_TIMEOUT_MS", default_value_t = 5000)]
    pub api_header_timeout_ms: u64,
    /// Pipelines run at once through the API; more get 429.
    #[arg(long, env = "PM_API_MAX_RUNS", default_value_t = 4)]
    pub api_max_runs: usize,
    /// Cancel a streamed run whose client has read nothing for this long, ms.
    #[arg(long, env = "PM_API_STREAM_STALL_MS", default_value_t = 30_000)]
    pub api_stream_stall_ms: u64,
    /// Open API connections at once; more wait to be accepted.
    #[arg(long, env = "PM_API_MAX_CONNECTIONS", default_value_t = 256)]
    pub api_max_connections: usize,
    /// Serve the API over TLS only (HTTPS, gRPC over TLS) with this certificate chain (PEM, leaf first);
    /// re-read within a second when it or the key changes.
    #[arg(long, env = "PM_API_TLS_CERT_FILE", requires = "api_tls_key_file")]
    pub api_tls_cert_file: Option<PathBuf>,
    /// The private key of --api-tls-cert-file (PEM).
    #[arg(long, env = "PM_API_TLS_KEY_FILE", requires = "api_tls_cert_file")]
    pub api_tls_key_file: Option<PathBuf>,
    /// Mutual TLS: every API client must present a certificate signed by a CA of this PEM file.
    #[arg(long, env = "PM_API_TLS_CLIENT_CA_FILE", requires = "api_tls_cert_file")]
    pub api_tls_client_ca_file: Option<PathBuf>,
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `--api-listen` is not `host:port` or `off`.
    #[error("--api-listen: expected IP:PORT or `off`, got `{0}`")]
    BadListen(String),
    /// A non-loopback address without a token.
    #[error(
        "--api-listen {0}: the direct-run API runs shell commands; set --api-token (or --api-token-file) to listen \
         on a non-loopback address"
    )]
    Unprotected(SocketAddr),
    /// The token file cannot be read, or the token is empty.
    #[error("--api-token-file {path}: {why}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A TLS file of the API cannot be used (the message names it).
    #[error("--api-tls-*: {0}")]
    Tls(#[from] TlsError),
    /// Binding failed.
    #[error("--api-listen {addr}: {source} (another agent on this machine? give each its own port, or `off`)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The validated API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time allowed for the request headers.
    pub header_timeout: Duration,
    /// Concurrent runs.
    pub max_runs: usize,
    /// Concurrent connections.
    pub max_connections: usize,
    /// A streaming client that reads nothing for this long has its run cancelled.
    pub stream_stall: Duration,
    /// TLS, when configured: HTTPS and gRPC over TLS only.
    pub tls: Option<ApiTls>,
}

/// The API's TLS: its server config and the certificate it presents (watched for renewals while serving).
#[derive(Debug, Clone)]
pub struct ApiTls {
    /// Offers ALPN `h2` and `http/1.1`; requires client certificates under mutual TLS.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate in force.
    pub cert: Arc<ReloadingCert>,
}

impl ApiTls {
    /// Reads the certificate, its key and the client CAs (an error names the file that cannot be used).
    pub fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> Result<ApiTls, TlsError> {
        let cert = ReloadingCert::load(cert, key)?;
        let mut config = server_config(cert.clone(), client_ca)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ApiTls { config: Arc::new(config), cert })
    }
}

/// Parses the probes endpoint's address (`pm-agent --http-listen`); `None` when it is `off`.
pub fn probes_listen(listen: &str) -> Result<Option<SocketAddr>, ApiError> {
    match listen.trim() {
        "off" => Ok(None),
        addr => addr.parse().map(Some).map_err(|_| ApiError::BadListen(listen.to_string())),
    }
}

impl ApiArgs {
    /// Validates the options; `None` when the API is off.
    pub fn build(&self) -> Result<Option<ApiConfig>, ApiError> {
        if self.api_listen.trim() == "off" {
            return Ok(None);
        }
        let listen: SocketAddr =
            self.api_listen.trim().parse().map_err(|_| ApiError::BadListen(self.api_listen.clone()))?;
        let token = match (&self.api_token, &self.api_token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(path)) => {
                let t = std::fs::read_to_string(path)
                    .map_err(|e| ApiError::TokenFile { path: path.clone(), why: e.to_string() })?;
                Some(t.trim().to_string())
            }
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            let path = self.api_token_file.clone().unwrap_or_default();
            return Err(ApiError::TokenFile { path, why: "the token is empty".into() });
        }
        // TLS does not stand in for the token: off loopback, both are wanted, and the token is required.
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(ApiError::Unprotected(listen));
        }
        let tls = match (&self.api_tls_cert_file, &self.api_tls_key_file) {
            (Some(cert), Some(key)) => Some(ApiTls::load(cert, key, self.api_tls_client_ca_file.as_deref())?),
            _ => None,
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            tracing::warn!(
                %listen,
                "the direct-run API listens off loopback without TLS: its token crosses the network in clear \
                 (set --api-tls-cert-file and --api-tls-key-file)"
            );
        }
        Ok(Some(ApiConfig {
            listen,
            token,
            max_body_bytes: self.api_max_body_bytes,
            header_timeout: Duration::from_millis(self.api_header_timeout_ms.max(1)),
            max_runs: self.api_max_runs.max(1),
            max_connections: self.api_max_connections.max(1),
            stream_stall: Duration::from_millis(self.api_stream_stall_ms.max(1)),
            tls,
        }))
    }
}

/// Binds the API's listener (done before anything else starts, so a taken port fails fast).
pub async fn bind(cfg: &ApiConfig) -> Result<TcpListener, ApiError> {
    TcpListener::bind(cfg.listen).await.map_err(|source| ApiError::Bind { addr: cfg.listen, source })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(listen: &str) -> ApiArgs {
        ApiArgs {
            api_listen: listen.into(),
            api_token: None,
            api_token_file: None,
            api_max_body_bytes: 1024,
            api_header_timeout_ms: 1000,
            api_max_runs: 1,
            api_max_connections: 8,
            api_stream_stall_ms: 1000,
            api_tls_cert_file: None,
            api_tls_key_file: None,
            api_tls_client_ca_file: None,
        }
    }

    #[test]
    fn non_loopback_needs_a_token() {
        assert!(args("off").build().unwrap().is_none());
        assert!(args("127.0.0.1:0").build().unwrap().is_some());
        assert!(args("[::1]:0").build().unwrap().is_some());
        assert!(matches!(args("0.0.0.0:7071").build(), Err(ApiError::Unprotected(_))));
        let mut a = args("0.0.0.0:7071");
        a.api_token = Some("s3cret".into());
        assert_eq!(a.build().unwrap().unwrap().token.as_deref(), Some("s3cret"));
        assert!(matches!(args("localhost").build(), Err(ApiError::BadListen(_))));
        let mut a = args("0.0.0.0:7071");
        a.api_token = Some("  ".into());
        assert!(a.build().is_err());
    }

    #[test]
    fn tls_files_are_checked_at_start_and_do_not_replace_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let (cert, key, bad) = (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("bad.pem"));
        std::fs::write(&cert, pair.cert.pem()).unwrap();
        std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
        std::fs::write(&bad, "garbage\n").unwrap();
        let with_tls = |listen: &str, cert: &std::path::Path| {
            let mut a = args(listen);
            a.api_tls_cert_file = Some(cert.to_path_buf());
            a.api_tls_key_file = Some(key.clone());
            a
        };
        let cfg = with_tls("127.0.0.1:0", &cert).build().unwrap().unwrap();
        let tls = cfg.tls.unwrap();
        assert_eq!(tls.config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(matches!(with_tls("0.0.0.0:7071", &cert).build(), Err(ApiError::Unprotected(_))));
        let mut a = with_tls("0.0.0.0:7071", &cert);
        a.api_token = Some("s3cret".into());
        assert!(a.build().unwrap().unwrap().tls.is_some());
        let e = with_tls("127.0.0.1:0", &bad).build().unwrap_err().to_string();
        assert!(e.contains("bad.pem"), "{e}");
        let mut a = with_tls("127.0.0.1:0", &cert);
        a.api_tls_client_ca_file = Some(bad.clone());
        assert!(a.build().unwrap_err().to_string().contains("bad.pem"));
    }
}
