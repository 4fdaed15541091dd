//! Where a step's commands run, agent side: each executor name of a task resolves to an [`Executor`], and
//! `Executor::run` runs one command there, its output streamed to an `OutputSink` as it comes.
//!
//! - [`local`]: a process of the agent itself.
//! - [`pod`]: the `pm-agent exec` serving a unix socket in a utility container of the pod.
//! - [`grpc`]: a server of the original executors' gRPC service `exec.ExecService`.
//!
//! [`Executors`] is the agent's table of them, from `--executors` and `--pod-dir`, or from the original agent's
//! variables ([`original_env`]). This side only connects: what serves the other end of a socket is
//! [`crate::exec_server`], and what crosses it is [`crate::wire`]. Invariant: a name that comes from a task
//! never reaches outside the pod socket directory, and never falls back to running locally.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::command::{CommandSpec, Outcome, OutputSink};
use grpc::{GrpcAddr, GrpcExecutor, GrpcExecutorError};

pub mod grpc;
pub mod local;
pub mod original_env;
pub mod pod;
pub mod watcher;

/// Where one executor name runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executor {
    /// As a local process of the agent.
    Local,
    /// On the `pm-agent exec` process serving this unix socket (a utility container of the pod).
    Pod(PathBuf),
    /// On a server of the original executors' gRPC service `exec.ExecService`, one call per command (only
    /// the command line travels: see [`grpc`]).
    Grpc(GrpcExecutor),
}

impl Executor {
    /// Runs `spec` on this executor (`name` is the step's executor name, for the reasons given), handing its
    /// output to `sink` as it comes. `deadline` and `cancel` stop it; the [`Outcome`] says which did.
    pub(crate) async fn run<S: OutputSink>(
        &self,
        name: &str,
        spec: &CommandSpec,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
        sink: &mut S,
    ) -> Outcome {
        match self {
            Executor::Local => local::run_local(spec, deadline, cancel, sink).await,
            Executor::Pod(sock) => pod::run_remote(name, sock, spec, deadline, cancel, sink).await,
            #[cfg(feature = "exec-grpc")]
            Executor::Grpc(g) => grpc::run_grpc(name, g, spec, deadline, cancel, sink).await,
            #[cfg(not(feature = "exec-grpc"))]
            Executor::Grpc(g) => Outcome::error(GrpcExecutorError::NotBuilt(g.addr().to_string()).to_string()),
        }
    }
}

/// Which executor names this agent runs, and where.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Executors {
    /// Any name not listed runs locally.
    all_local: bool,
    /// Names given explicitly.
    named: BTreeMap<String, Executor>,
    /// Any name not listed runs on the executor serving `DIR/NAME.sock`.
    pod_dir: Option<PathBuf>,
}

/// Longest executor name resolved through the pod socket directory.
const MAX_EXECUTOR_NAME: usize = 63;

impl Executors {
    /// Every name runs locally (the embedded default).
    pub fn all_local() -> Executors {
        Executors { all_local: true, ..Executors::default() }
    }

    /// Parses `--executors` (`all`, or a comma-separated list of `NAME` for local executors,
    /// `NAME=unix:///path.sock` for pod executors and `NAME=grpc://HOST:PORT` or `NAME=grpc+unix:///path.sock`
    /// for servers of the original executors' gRPC service) and `--pod-dir`. Without `--executors`, every name
    /// runs locally unless a pod directory is given.
    pub fn parse(spec: Option<&str>, pod_dir: Option<PathBuf>) -> Result<Executors, String> {
        let mut ex = Executors { all_local: spec.is_none() && pod_dir.is_none(), named: BTreeMap::new(), pod_dir };
        let Some(spec) = spec else { return Ok(ex) };
        if spec.trim() == "all" {
            ex.all_local = true;
            return Ok(ex);
        }
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.split_once('=') {
                Some((name, target)) => {
                    let executor = remote(target.trim()).map_err(|e| format!("`{entry}`: {e}"))?;
                    ex.named.insert(name.trim().to_string(), executor);
                }
                None => {
                    ex.named.insert(entry.to_string(), Executor::Local);
                }
            }
        }
        if ex.named.is_empty() {
            return Err(
                "give `all` or a comma-separated list of NAME, NAME=unix:///path.sock, NAME=grpc://HOST:PORT or \
                 NAME=grpc+unix:///path.sock"
                    .into(),
            );
        }
        Ok(ex)
    }

    /// The executors of `--executors` when it is given; otherwise those the original agent's variables
    /// `PIPELINE_AGENT__EXECUTORS__<i>__NAME` / `__TARGET` name in `vars` (gRPC executors, and any other name
    /// is unknown unless a pod directory is given); otherwise the default of [`Executors::parse`].
    pub fn from_args_or_env(
        spec: Option<&str>,
        pod_dir: Option<PathBuf>,
        vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) -> Result<Executors, String> {
        if spec.is_some() {
            return Executors::parse(spec, pod_dir).map_err(|e| format!("--executors: {e}"));
        }
        let original = original_env::original_executors(vars).map_err(|e| e.to_string())?;
        if original.is_empty() {
            return Executors::parse(None, pod_dir).map_err(|e| format!("--executors: {e}"));
        }
        let mut ex = Executors { all_local: false, named: BTreeMap::new(), pod_dir };
        for (name, addr) in original {
            ex.named.insert(name, grpc_executor(addr)?);
        }
        Ok(ex)
    }

    /// What to declare to the scheduler: the names given explicitly when they are all this agent runs;
    /// nothing (it is leased anything) when it runs any name locally or through the pod directory.
    pub fn declared(&self) -> Vec<String> {
        if self.all_local || self.pod_dir.is_some() {
            return Vec::new();
        }
        self.named.keys().cloned().collect()
    }

    /// The names given explicitly, with where they run.
    pub fn named(&self) -> impl Iterator<Item = (&str, &Executor)> {
        self.named.iter().map(|(n, e)| (n.as_str(), e))
    }

    /// The pod executors named explicitly, with their sockets (the agent is ready once they all exist).
    pub fn pods(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.named().filter_map(|(n, e)| match e {
            Executor::Pod(p) => Some((n, p.as_path())),
            Executor::Local | Executor::Grpc(_) => None,
        })
    }

    /// Where the pod executors' sockets are: the pod directory, and each socket named explicitly (empty when
    /// this agent has no pod executors).
    pub fn pod_paths(&self) -> Vec<&Path> {
        self.pod_dir.as_deref().into_iter().chain(self.pods().map(|(_, sock)| sock)).collect()
    }

    /// Where `name` runs, or why it cannot.
    pub fn resolve(&self, name: &str) -> Result<Executor, String> {
        if let Some(e) = self.named.get(name) {
            return Ok(e.clone());
        }
        if let Some(dir) = &self.pod_dir {
            // The name comes from the task: it must not reach outside the socket directory.
            let plain = !name.is_empty()
                && name.len() <= MAX_EXECUTOR_NAME
                && !name.starts_with('.')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if plain {
                return Ok(Executor::Pod(dir.join(format!("{name}.sock"))));
            }
            // Not a name that can be a socket: never fall back to running it here.
            return Err(format!("invalid executor name `{name}` (use letters, digits, `-`, `_` and `.`)"));
        }
        if self.all_local {
            return Ok(Executor::Local);
        }
        let mut known: Vec<String> = self.named.keys().cloned().collect();
        if let Some(dir) = &self.pod_dir {
            known.push(format!("any NAME with a socket {}/NAME.sock", dir.display()));
        }
        Err(format!("unknown executor `{name}` (this agent runs: {})", known.join(", ")))
    }
}

/// The executor an `--executors` entry's `=TARGET` names: a pod socket or a gRPC server.
fn remote(target: &str) -> Result<Executor, String> {
    if target.starts_with("grpc://") || target.starts_with("grpc+unix://") {
        return grpc_executor(grpc::parse_target(target).map_err(|e| e.to_string())?);
    }
    if target.starts_with("unix://") {
        return crate::wire::pod::socket_path(target).map(Executor::Pod).map_err(|e| e.to_string());
    }
    Err(format!(
        "expected unix:///path.sock (a pm-agent exec), grpc://HOST:PORT or grpc+unix:///path.sock (the original \
         executors' gRPC service), got `{target}`"
    ))
}

/// A gRPC executor, when this agent is built with the service.
fn grpc_executor(addr: GrpcAddr) -> Result<Executor, String> {
    if cfg!(feature = "exec-grpc") {
        Ok(Executor::Grpc(GrpcExecutor::new(addr)))
    } else {
        Err(GrpcExecutorError::NotBuilt(addr.to_string()).to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn executor_names_resolve_to_local_or_pod_sockets() {
        let ex = Executors::parse(Some("sh, wget=unix:///mnt/pipe/.pm/w.sock"), Some("/mnt/pipe/.pm".into())).unwrap();
        assert_eq!(ex.resolve("sh"), Ok(Executor::Local));
        assert_eq!(ex.resolve("wget"), Ok(Executor::Pod("/mnt/pipe/.pm/w.sock".into())));
        assert_eq!(ex.resolve("tesseract"), Ok(Executor::Pod("/mnt/pipe/.pm/tesseract.sock".into())));
        // What the shared task directory keeps: the socket directory and each socket named.
        assert_eq!(ex.pod_paths(), [Path::new("/mnt/pipe/.pm"), Path::new("/mnt/pipe/.pm/w.sock")]);
        assert!(Executors::parse(Some("sh"), None).unwrap().pod_paths().is_empty());
        // Names from a task never reach outside the socket directory, nor fall back to running locally.
        for bad in ["../etc/x", ".hidden", "a/b", "", "a b"] {
            assert!(ex.resolve(bad).unwrap_err().contains("invalid executor name"), "{bad}");
        }
        let mixed = Executors::parse(Some("all"), Some("/mnt/pipe/.pm".into())).unwrap();
        assert!(mixed.resolve(".x").is_err());
        assert_eq!(Executors::parse(None, None).unwrap(), Executors::all_local());
        assert!(Executors::parse(Some("x=tcp://host:1"), None).is_err());
        assert!(Executors::parse(Some(" , "), None).is_err());
    }

    #[test]
    fn grpc_executors_are_named_in_the_list_or_by_the_original_agents_variables() {
        let ex = Executors::parse(Some("sh, wget=grpc://127.0.0.1:50051, ocr=grpc+unix:///mnt/pipe/ocr.sock"), None)
            .unwrap();
        let addr = |name: &str| match ex.resolve(name) {
            Ok(Executor::Grpc(g)) => g.addr().to_string(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(addr("wget"), "grpc://127.0.0.1:50051");
        assert_eq!(addr("ocr"), "grpc+unix:///mnt/pipe/ocr.sock");
        assert_eq!(ex.resolve("sh"), Ok(Executor::Local));
        // They are declared executors, like pod sockets: capability routing leases this agent only their tasks.
        assert_eq!(ex.declared(), ["ocr", "sh", "wget"]);
        for bad in ["x=grpc://nohost", "x=grpc+unix://rel.sock", "x=http://h:1"] {
            let why = Executors::parse(Some(bad), None).unwrap_err();
            assert!(why.starts_with(&format!("`{bad}`: ")), "{why}");
        }

        let vars = || {
            [
                ("PIPELINE_AGENT__EXECUTORS__0__NAME", "wget"),
                ("PIPELINE_AGENT__EXECUTORS__0__TARGET", "127.0.0.1:50051"),
                ("PIPELINE_AGENT__EXECUTORS__1__NAME", "tesseract"),
                ("PIPELINE_AGENT__EXECUTORS__1__TARGET", "http://127.0.0.1:50052"),
            ]
            .map(|(k, v)| (std::ffi::OsString::from(k), std::ffi::OsString::from(v)))
        };
        let ex = Executors::from_args_or_env(None, None, vars()).unwrap();
        assert_eq!(ex.declared(), ["tesseract", "wget"]);
        assert!(
            matches!(ex.resolve("tesseract"), Ok(Executor::Grpc(g)) if g.addr().to_string() == "grpc://127.0.0.1:50052")
        );
        // As in the original agent, a name it was not given is unknown.
        assert!(ex.resolve("sh").unwrap_err().starts_with("unknown executor `sh`"));
        // --executors (PM_EXECUTORS) wins over the variables; without either, the default.
        assert_eq!(Executors::from_args_or_env(Some("all"), None, vars()).unwrap(), Executors::all_local());
        assert_eq!(Executors::from_args_or_env(None, None, []).unwrap(), Executors::all_local());
        let bad = [("PIPELINE_AGENT__EXECUTORS__0__NAME", "wget")].map(|(k, v)| (k.into(), v.into()));
        assert!(Executors::from_args_or_env(None, None, bad).unwrap_err().contains("__0__TARGET"));
    }
}
