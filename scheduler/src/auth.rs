//! Tokens per role, checked in `Hello`.
//!
//! Each role (producer, agent, admin, peer) may have a token file: one token per line, optionally followed by
//! `not-after=<RFC 3339 time>` (e.g. `s3cr3t not-after=2027-01-01T00:00:00Z`); blank lines and lines starting
//! with `#` are ignored. Several lines let a token be rotated without a gap. Files are read at startup and
//! again whenever one changes (checked every second), so a mounted Kubernetes Secret can be updated in
//! place. Comparisons are constant-time; tokens are never logged.
//!
//! As soon as any token file is configured, every connection must present a token valid for its role: a
//! producer token cannot lease, an agent token cannot submit or use admin calls. An admin token is also valid
//! for the producer role ([`grants`]): the admin role may send every producer message, so an operator can
//! submit and read with the one token they hold. Without token files every
//! connection is accepted, and the configuration refuses to listen on anything but loopback unless
//! `--insecure` is given.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use pm_protocol::Role;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

/// How often token files are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The token files, per role.
#[derive(Debug, Clone, Default)]
pub struct TokenFiles {
    /// Producers.
    pub producer: Option<PathBuf>,
    /// Agents.
    pub agent: Option<PathBuf>,
    /// Admins.
    pub admin: Option<PathBuf>,
    /// Peer nodes (this node also presents the first valid one to its peers).
    pub peer: Option<PathBuf>,
}

impl TokenFiles {
    /// True when at least one file is configured (then every connection needs a token).
    pub fn enabled(&self) -> bool {
        self.files().any(|(_, f)| f.is_some())
    }

    fn files(&self) -> impl Iterator<Item = (Role, Option<&PathBuf>)> {
        [
            (Role::Producer, self.producer.as_ref()),
            (Role::Agent, self.agent.as_ref()),
            (Role::Admin, self.admin.as_ref()),
            (Role::Peer, self.peer.as_ref()),
        ]
        .into_iter()
    }
}

/// Errors reading token files.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("token file {path}: {msg}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        msg: String,
    },
    /// A line does not parse.
    #[error("token file {path}, line {line}: {msg}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the token itself).
        msg: String,
    },
}

/// Why a Hello's token was refused. The message names no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, but tokens are required.
    Missing,
    /// The token matches no configured token.
    Unknown,
    /// The token is valid for another role.
    WrongRole,
    /// The token's `not-after` time has passed.
    Expired,
}

impl Refusal {
    /// A message for the client.
    pub fn message(self, role: Role) -> String {
        let role = role_name(role);
        match self {
            Refusal::Missing => format!("a token is required (role {role})"),
            Refusal::Unknown => "the token is not valid".into(),
            Refusal::WrongRole => format!("the token is not valid for role {role}"),
            Refusal::Expired => "the token has expired".into(),
        }
    }

    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "token_missing",
            Refusal::Unknown => "token_unknown",
            Refusal::WrongRole => "token_role",
            Refusal::Expired => "token_expired",
        }
    }
}

/// Whether a credential (token or client certificate) of role `held` may open a connection as `asked`: its
/// own role, and, for an admin credential, the producer role too (the admin role may send every message a
/// producer may, so refusing it would only make operators keep a second token). Nothing else: an admin token
/// is not an agent's nor a peer's.
pub fn grants(held: Role, asked: Role) -> bool {
    held == asked || (held == Role::Admin && asked == Role::Producer)
}

/// The role's name in messages and flags (`producer`, `agent`, ...).
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Producer => "producer",
        Role::Agent => "agent",
        Role::Admin => "admin",
        Role::Peer => "peer",
        Role::Unspecified => "unspecified",
    }
}

#[derive(Debug)]
struct Token {
    secret: Vec<u8>,
    not_after: Option<SystemTime>,
}

/// The tokens in force.
#[derive(Debug, Default)]
struct Tokens {
    enabled: bool,
    by_role: Vec<(Role, Vec<Token>)>,
}

impl Tokens {
    fn load(files: &TokenFiles) -> Result<Tokens, TokenError> {
        let mut by_role = Vec::new();
        for (role, file) in files.files() {
            if let Some(path) = file {
                by_role.push((role, read_file(path)?));
            }
        }
        Ok(Tokens { enabled: files.enabled(), by_role })
    }

    fn check(&self, role: Role, given: &str, now: SystemTime) -> Result<(), Refusal> {
        if !self.enabled {
            return Ok(());
        }
        if given.is_empty() {
            return Err(Refusal::Missing);
        }
        let mut other_role = false;
        // Every configured token is compared, whatever matches first, so timing says nothing about which.
        let mut verdict = None;
        for (r, tokens) in &self.by_role {
            for t in tokens {
                if bool::from(t.secret.as_slice().ct_eq(given.as_bytes())) {
                    if grants(*r, role) {
                        let expired = t.not_after.is_some_and(|at| now > at);
                        verdict = Some(if expired { Err(Refusal::Expired) } else { Ok(()) });
                    } else {
                        other_role = true;
                    }
                }
            }
        }
        match verdict {
            Some(v) => v,
            None if other_role => Err(Refusal::WrongRole),
            None => Err(Refusal::Unknown),
        }
    }

    fn first_valid(&self, role: Role, now: SystemTime) -> Option<String> {
        let (_, tokens) = self.by_role.iter().find(|(r, _)| *r == role)?;
        let t = tokens.iter().find(|t| t.not_after.is_none_or(|at| now <= at))?;
        String::from_utf8(t.secret.clone()).ok()
    }
}

fn read_file(path: &Path) -> Result<Vec<Token>, TokenError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TokenError::Read { path: p.clone(), msg: e.to_string() })?;
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |msg: &str| TokenError::Syntax { path: p.clone(), line: i + 1, msg: msg.into() };
        let mut parts = line.split_whitespace();
        let secret = parts.next().unwrap_or_default();
        let mut not_after = None;
        for opt in parts {
            match opt.strip_prefix("not-after=") {
                Some(t) => {
                    let at = humantime::parse_rfc3339_weak(t)
                        .map_err(|_| syntax("not-after must be an RFC 3339 time like 2027-01-01T00:00:00Z"))?;
                    not_after = Some(at);
                }
                None => return Err(syntax("expected TOKEN [not-after=TIME]")),
            }
        }
        if secret.len() < 16 {
            return Err(syntax("a token must be at least 16 characters"));
        }
        tokens.push(Token { secret: secret.as_bytes().to_vec(), not_after });
    }
    if tokens.is_empty() {
        return Err(TokenError::Syntax { path: p, line: 0, msg: "no token in the file".into() });
    }
    Ok(tokens)
}

/// Size and modification time of each token file (None: absent or unreadable).
type Stamp = Vec<Option<(u64, SystemTime)>>;

fn stamp(files: &TokenFiles) -> Stamp {
    files
        .files()
        .map(|(_, f)| {
            let m = f.and_then(|p| std::fs::metadata(p).ok())?;
            Some((m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
        })
        .collect()
}

/// The node's token checker; reloads the files when they change.
#[derive(Debug)]
pub struct Auth {
    files: TokenFiles,
    tokens: RwLock<Arc<Tokens>>,
    /// The files' stamp taken just before the tokens in force were read, so a change made any time after
    /// (even before the reload task first runs) is seen.
    loaded: parking_lot::Mutex<Stamp>,
}

impl Auth {
    /// Reads the files (an error if one is missing or malformed).
    pub fn load(files: TokenFiles) -> Result<Arc<Auth>, TokenError> {
        let loaded = parking_lot::Mutex::new(stamp(&files));
        let tokens = Tokens::load(&files)?;
        Ok(Arc::new(Auth { files, tokens: RwLock::new(Arc::new(tokens)), loaded }))
    }

    /// Checks a Hello's token for `role`.
    pub fn check(&self, role: Role, token: &str) -> Result<(), Refusal> {
        let tokens = self.tokens.read().clone();
        tokens.check(role, token, SystemTime::now())
    }

    /// The token this node presents to its peers (the first unexpired peer token), if any.
    pub fn peer_token(&self) -> Option<String> {
        self.tokens.read().first_valid(Role::Peer, SystemTime::now())
    }

    /// Re-reads the files whenever one changes (size or modification time), until `shutdown`. A file that
    /// cannot be read or parsed keeps the tokens in force and is logged.
    pub async fn reload(self: Arc<Self>, shutdown: CancellationToken) {
        if !self.files.enabled() {
            return;
        }
        let mut every = tokio::time::interval(RELOAD_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let now = stamp(&self.files);
            if now == *self.loaded.lock() {
                continue;
            }
            match Tokens::load(&self.files) {
                Ok(t) => {
                    *self.tokens.write() = Arc::new(t);
                    *self.loaded.lock() = now;
                    tracing::info!("token files reloaded");
                }
                Err(e) => tracing::warn!("token files not reloaded, the old tokens stay in force: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn tokens_are_checked_per_role_with_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TokenFiles {
            producer: Some(write(
                dir.path(),
                "p",
                "# producers\nproducer-token-0001\nold-producer-token not-after=2020-01-01T00:00:00Z\n",
            )),
            agent: Some(write(dir.path(), "a", "agent-token-000001\n")),
            ..Default::default()
        };
        let auth = Auth::load(files).expect("load");
        assert_eq!(auth.check(Role::Producer, "producer-token-0001"), Ok(()));
        assert_eq!(auth.check(Role::Producer, "agent-token-000001"), Err(Refusal::WrongRole));
        assert_eq!(auth.check(Role::Agent, "producer-token-0001"), Err(Refusal::WrongRole));
        assert_eq!(auth.check(Role::Producer, "old-producer-token"), Err(Refusal::Expired));
        assert_eq!(auth.check(Role::Producer, ""), Err(Refusal::Missing));
        assert_eq!(auth.check(Role::Producer, "nope-nope-nope-nope"), Err(Refusal::Unknown));
        assert_eq!(auth.check(Role::Admin, "agent-token-000001"), Err(Refusal::WrongRole), "no admin file: no admin");
        assert_eq!(auth.peer_token(), None);
    }

    #[test]
    fn an_admin_token_is_also_a_producer_token_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = TokenFiles {
            producer: Some(write(dir.path(), "p", "producer-token-0001\n")),
            admin: Some(write(
                dir.path(),
                "a",
                "admin-token-0000001\nold-admin-token-001 not-after=2020-01-01T00:00:00Z\n",
            )),
            ..Default::default()
        };
        let auth = Auth::load(files).expect("load");
        assert_eq!(auth.check(Role::Admin, "admin-token-0000001"), Ok(()));
        assert_eq!(auth.check(Role::Producer, "admin-token-0000001"), Ok(()), "admin may do what producers do");
        assert_eq!(auth.check(Role::Producer, "old-admin-token-001"), Err(Refusal::Expired), "expiry still holds");
        assert_eq!(auth.check(Role::Agent, "admin-token-0000001"), Err(Refusal::WrongRole));
        assert_eq!(auth.check(Role::Peer, "admin-token-0000001"), Err(Refusal::WrongRole));
        assert_eq!(auth.check(Role::Admin, "producer-token-0001"), Err(Refusal::WrongRole), "not the other way");
    }

    #[test]
    fn no_files_means_no_check_and_bad_files_are_refused() {
        let auth = Auth::load(TokenFiles::default()).expect("load");
        assert_eq!(auth.check(Role::Admin, ""), Ok(()));
        let dir = tempfile::tempdir().expect("tempdir");
        for (text, what) in [
            ("short\n", "16 characters"),
            ("\n# only comments\n", "no token"),
            ("tok-tok-tok-tok-tok when=now\n", "expected"),
        ] {
            let files = TokenFiles { peer: Some(write(dir.path(), "x", text)), ..Default::default() };
            let e = Auth::load(files).expect_err(text).to_string();
            assert!(e.contains(what), "{e}");
            assert!(!e.contains("tok-tok"), "the error must not show the token: {e}");
        }
        let missing = TokenFiles { admin: Some(dir.path().join("absent")), ..Default::default() };
        assert!(Auth::load(missing).is_err());
    }
}
