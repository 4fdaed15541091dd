//! TLS on the scheduler's listener (rustls with ring).
//!
//! - `--tls-cert-file` + `--tls-key-file`: the node serves TLS only (a plaintext client fails the TLS
//!   handshake and is counted as `pm_refused_total{reason="tls_handshake"}`). The certificate is re-read within a
//!   second when either file changes (a renewed Kubernetes Secret); new connections get the new one, open
//!   ones keep theirs. A pair that cannot be read, or a key that does not match its certificate, keeps the
//!   one in force and logs a warning.
//! - `--tls-client-ca-file`: mutual TLS; every client must present a certificate signed by one of its CAs.
//!   Unless `--tls-client-role` names it, tokens decide the role in `Hello` (the certificate proves who connects).
//! - `--tls-client-role ROLE=NAME`: a verified client certificate whose subject Common Name, a DNS name or a
//!   URI of its subject alternative names is NAME has role ROLE without a token ([`ClientRoles`]).
//! - `--tls-ca-file`: the CAs a node trusts for its peers' certificates (cluster mode). A node presents its
//!   own certificate to its peers, so a cluster with mutual TLS works with one CA. That certificate is
//!   reloaded too: peer connections made after a renewal present the new one.
//!
//! The TLS handshake is bounded by `--handshake-timeout`, like the `Hello` that follows it.

use std::path::PathBuf;
use std::sync::Arc;

use pm_client::tls::{client_config_presenting, server_config, ReloadingCert, TlsError};
use pm_protocol::Role;
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
    /// Client certificate names that carry a role (mutual TLS).
    pub client_roles: ClientRoles,
}

/// `--tls-client-role`: the roles given by client certificate names.
///
/// A rule `(role, name)` matches a certificate whose subject Common Name, or one of whose DNS names or URIs
/// (subject alternative names), is exactly `name`. A certificate matching rules of several roles may take any
/// of them. Only certificates that passed verification against `--tls-client-ca-file` are looked at.
#[derive(Debug, Clone, Default)]
pub struct ClientRoles {
    rules: Vec<(Role, String)>,
}

/// A set of roles, one bit per [`Role`] value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleSet(u8);

impl RoleSet {
    fn bit(role: Role) -> u8 {
        match role {
            Role::Unspecified => 0,
            Role::Producer => 1,
            Role::Agent => 2,
            Role::Admin => 4,
            Role::Peer => 8,
        }
    }

    fn insert(&mut self, role: Role) {
        self.0 |= Self::bit(role);
    }

    /// True when no role is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        Self::bit(role) != 0 && self.0 & Self::bit(role) != 0
    }

    /// True when a certificate with these roles may connect as `role` (see [`crate::auth::grants`]: an admin
    /// certificate may also connect as a producer).
    pub fn grants(self, role: Role) -> bool {
        [Role::Producer, Role::Agent, Role::Admin, Role::Peer]
            .into_iter()
            .any(|held| self.contains(held) && crate::auth::grants(held, role))
    }

    /// The roles' names, comma-separated (for messages).
    pub fn names(self) -> String {
        [Role::Producer, Role::Agent, Role::Admin, Role::Peer]
            .into_iter()
            .filter(|r| self.contains(*r))
            .map(crate::auth::role_name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl ClientRoles {
    /// The rules, as `--tls-client-role` gave them.
    pub fn new(rules: Vec<(Role, String)>) -> ClientRoles {
        ClientRoles { rules }
    }

    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The roles the certificate `der` (the client's leaf, already verified) maps to; none for a certificate
    /// that does not parse.
    pub fn of(&self, der: &[u8]) -> RoleSet {
        let mut roles = RoleSet::default();
        if self.rules.is_empty() {
            return roles;
        }
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            tracing::debug!("a client certificate did not parse; it maps to no role");
            return roles;
        };
        let mut names: Vec<&str> = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(n) | x509_parser::extensions::GeneralName::URI(n) => {
                        names.push(n)
                    }
                    _ => {}
                }
            }
        }
        for (role, wanted) in &self.rules {
            if names.iter().any(|n| *n == wanted) {
                roles.insert(*role);
            }
        }
        roles
    }
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
    /// Roles given by client certificates.
    pub client_roles: Arc<ClientRoles>,
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
        let client_roles = Arc::new(files.client_roles.clone());
        Ok(Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)), peer, cert, client_roles })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_certificate_may_also_connect_as_producer() {
        let mut admin = RoleSet::default();
        admin.insert(Role::Admin);
        assert!(admin.grants(Role::Admin) && admin.grants(Role::Producer));
        assert!(!admin.grants(Role::Agent) && !admin.grants(Role::Peer));
        let mut producer = RoleSet::default();
        producer.insert(Role::Producer);
        assert!(producer.grants(Role::Producer) && !producer.grants(Role::Admin));
        assert!(!RoleSet::default().grants(Role::Producer));
    }
}
