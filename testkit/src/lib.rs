//! Test harness for end-to-end tests: real processes, real sockets.
//!
//! [`Scheduler::start`] builds the binaries once per test process (`cargo build --bins`, a no-op when they are
//! fresh), starts `pm-scheduler --listen 127.0.0.1:0 --http-listen 127.0.0.1:0` with a data directory, reads the
//! `listening on ADDR` and `http listening on ADDR` lines, and returns a handle that can SIGKILL, SIGTERM and
//! restart the process on the same address and data. [`pmctl`] runs the CLI. Processes are killed when their handle is dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

pub mod tls;

/// The directory holding the workspace's binaries for the profile the tests were built with.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/<test-binary>
        let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "pm-scheduler",
            "-p",
            "pmctl",
            "-p",
            "pm-agent",
            "-p",
            "pm",
            "-p",
            "pm-loadtest",
        ]);
        if release {
            cmd.arg("--release");
        }
        // The variables cargo sets for the test itself (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...) would reach build
        // scripts that track them (ring's does) and make this build and the test build invalidate each other.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            let test_only = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_PACKAGE"]
                .iter()
                .any(|p| k.starts_with(p))
                || k == "CARGO_TARGET_TMPDIR";
            if test_only {
                cmd.env_remove(&k);
            }
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build --bins failed");
        dir
    })
    .clone()
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A running (or stopped) `pm-scheduler`.
pub struct Scheduler {
    child: Option<Child>,
    /// `host:port` it listens on (kept across restarts).
    pub addr: String,
    /// Its data directory.
    pub data: PathBuf,
    /// `host:port` of its HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), from the `http listening on ADDR`
    /// line; `None` with `--http-listen off`. A free port is picked at every (re)start.
    pub http_addr: Option<String>,
    args: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
    _logdir: tempfile::TempDir,
    log: PathBuf,
}

impl Scheduler {
    /// Starts a scheduler with a fresh temporary data directory and extra flags.
    pub fn start(extra: &[&str]) -> Scheduler {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let mut s = Self::start_in(&data, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a scheduler on `data` (kept after the handle is dropped).
    pub fn start_in(data: &Path, extra: &[&str]) -> Scheduler {
        Self::start_logging_to(data, None, extra)
    }

    /// Starts a scheduler on `data` whose stderr goes to `log` (default: a temporary directory of its own,
    /// so a test that fills the data disk still gets its log).
    pub fn start_logging_to(data: &Path, log: Option<&Path>, extra: &[&str]) -> Scheduler {
        Self::start_at("127.0.0.1:0", data, log, extra)
    }

    /// Starts a scheduler listening on `addr` (port 0 picks one) with its data in `data`.
    pub fn start_at(addr: &str, data: &Path, log: Option<&Path>, extra: &[&str]) -> Scheduler {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = log.map(Path::to_path_buf).unwrap_or_else(|| logdir.path().join("pm-scheduler.log"));
        let mut s = Scheduler {
            child: None,
            addr: addr.into(),
            data: data.to_path_buf(),
            http_addr: None,
            args,
            _tmp: None,
            _logdir: logdir,
            log,
        };
        s.spawn().expect("scheduler did not start");
        s
    }

    /// Starts the process again (same data, same address).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart failed ({e}); retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("scheduler did not restart: {e}"),
            }
        }
    }

    /// Replaces the extra flags used by the next [`Scheduler::restart`] or [`Scheduler::spawn`].
    pub fn set_args(&mut self, extra: &[&str]) {
        self.args = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Tries to start the process; returns the stderr tail on failure.
    pub fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).map_err(|e| e.to_string())?;
        // Many schedulers run at once: each gets a free HTTP port unless the test chose one (or `off`).
        let http_pos = self.args.iter().position(|a| a == "--http-listen");
        let http_off = http_pos.and_then(|i| self.args.get(i + 1)).is_some_and(|v| v == "off");
        let mut cmd = Command::new(bin("pm-scheduler"));
        cmd.arg("--listen").arg(&self.addr).arg("--data").arg(&self.data);
        if http_pos.is_none() {
            cmd.args(["--http-listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(&self.args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(line)) if line.starts_with("listening on ") => {
                self.addr = line["listening on ".len()..].trim().to_string();
                self.http_addr = None;
                if !http_off {
                    match lines.next() {
                        Some(Ok(l)) if l.starts_with("http listening on ") => {
                            self.http_addr = Some(l["http listening on ".len()..].trim().to_string());
                        }
                        other => {
                            let _ = child.kill();
                            let status = child.wait().ok();
                            return Err(format!(
                                "unexpected second line {other:?}, exit {status:?}; log: {}",
                                self.log_tail()
                            ));
                        }
                    }
                }
                // Keep draining stdout so the child never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                self.child = Some(child);
                Ok(())
            }
            other => {
                let status = child.wait().ok();
                Err(format!("unexpected first line {other:?}, exit {status:?}; log: {}", self.log_tail()))
            }
        }
    }

    /// The last 4 KiB of the process's stderr log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s[s.len().saturating_sub(4096)..].to_string()
    }

    /// Process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit (up to `timeout`, then SIGKILL).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        if let Some(pid) = Pid::from_raw(c.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok().filter(|_| false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A client connected with `opts`.
    pub async fn client(&self, opts: pm_client::ConnectOptions) -> pm_client::Client {
        pm_client::Client::connect(&self.addr, opts).await.expect("connect")
    }

    /// An agent connection.
    pub async fn agent(&self) -> (pm_client::Client, pm_client::Leases) {
        pm_client::Client::connect_agent(&self.addr, pm_client::ConnectOptions::agent().reconnect(false))
            .await
            .expect("connect agent")
    }
}

/// Scheduler nodes of one cluster on loopback: node `i` listens on `127.0.0.{10+i}` at a free port, with its
/// own data directory, and every node gets `--members` (all of them, in ordinal order).
pub struct SchedulerCluster {
    /// The nodes, in ordinal order.
    pub nodes: Vec<Scheduler>,
    _tmp: tempfile::TempDir,
}

impl SchedulerCluster {
    /// Starts `n` nodes with `extra` flags each.
    pub fn start(n: usize, extra: &[&str]) -> SchedulerCluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let addrs: Vec<String> = (0..n).map(|i| free_addr(&format!("127.0.0.{}", 10 + i))).collect();
        let members = addrs.join(",");
        let mut args = vec!["--members", members.as_str()];
        args.extend_from_slice(extra);
        let nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Scheduler::start_at(a, &tmp.path().join(format!("node-{i}")), None, &args))
            .collect();
        SchedulerCluster { nodes, _tmp: tmp }
    }

    /// Every node's address, in ordinal order (the `--members` list).
    pub fn members(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Adds a node listening on `127.0.0.{10+n}`, with `--members` naming the old nodes and itself; the old
    /// nodes keep running with their old list until restarted with [`SchedulerCluster::restart_all`].
    pub fn add_node(&mut self, extra: &[&str]) -> String {
        let i = self.nodes.len();
        let addr = free_addr(&format!("127.0.0.{}", 10 + i));
        let mut members = self.members();
        members.push(addr.clone());
        let members = members.join(",");
        let mut args = vec!["--members", members.as_str()];
        args.extend_from_slice(extra);
        let node = Scheduler::start_at(&addr, &self._tmp.path().join(format!("node-{i}")), None, &args);
        self.nodes.push(node);
        addr
    }

    /// Restarts every node (same data and address) with `--members` naming all current nodes.
    pub fn restart_all(&mut self, extra: &[&str]) {
        let members = self.members().join(",");
        let mut args = vec!["--members", members.as_str()];
        args.extend_from_slice(extra);
        for n in &mut self.nodes {
            n.set_args(&args);
            n.restart();
        }
    }
}

/// `ip:port` with a port that was free on `ip` a moment ago.
pub fn free_addr(ip: &str) -> String {
    let l = std::net::TcpListener::bind((ip, 0)).expect("bind a free port");
    l.local_addr().expect("local addr").to_string()
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `pm-agent run` process, killed when dropped.
pub struct Agent {
    child: Child,
    /// Its work directory (task directories live here).
    pub work: PathBuf,
    _tmp: tempfile::TempDir,
    log: PathBuf,
}

impl Agent {
    /// Starts `pm-agent run --server ADDR` with a fresh work directory and extra flags; stderr goes to a log.
    pub fn start(addr: &str, extra: &[&str]) -> Agent {
        let tmp = tempfile::tempdir().expect("tempdir");
        let work = tmp.path().join("work");
        let log = tmp.path().join("agent.log");
        let child = Command::new(bin("pm-agent"))
            .args(["run", "--server", addr, "--work-dir"])
            .arg(&work)
            .args(extra)
            // Many agents run side by side in tests: no direct-run API unless a test asks for one.
            .env("PM_API_LISTEN", "off")
            // Each task's outcome is a DEBUG line ("task done", "task failed: ..."), which tests read.
            .env("RUST_LOG", "info,pm_agent::agent=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("spawn pm-agent");
        Agent { child, work, _tmp: tmp, log }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILLs the agent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (the agent starts draining) and waits up to `timeout` for it to exit; `None` if it did
    /// not (it is then SIGKILLed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `pmctl --server ADDR args...` with `stdin` and returns its output.
pub fn pmctl(addr: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin("pmctl"))
        .arg("--server")
        .arg(addr)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pmctl");
    if let Some(mut sin) = child.stdin.take() {
        if let Some(data) = stdin {
            let _ = sin.write_all(data);
        }
    }
    child.wait_with_output().expect("pmctl output")
}

/// Polls `f` every 10 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `pm-agent exec` process (a stand-in for one utility container), killed when dropped.
pub struct Executor {
    child: Child,
    /// The socket it serves.
    pub socket: PathBuf,
}

impl Executor {
    /// Starts `pm-agent exec --name NAME --listen unix://SOCKET` and waits until it serves.
    pub fn start(name: &str, socket: &Path) -> Executor {
        let child = Command::new(bin("pm-agent"))
            .args(["exec", "--name", name, "--listen"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pm-agent exec");
        let e = Executor { child, socket: socket.to_path_buf() };
        wait_for(Duration::from_secs(10), "the executor's socket", || {
            std::os::unix::net::UnixStream::connect(socket).ok()
        });
        e
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs it (its socket file stays behind, as when a container dies).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `pm-agent serve`: the direct-run HTTP/gRPC API with no scheduler, on a temporary work directory.
pub struct AgentApi {
    child: Child,
    /// `host:port` from its `api listening on ADDR` line.
    pub addr: String,
    _work: tempfile::TempDir,
}

impl AgentApi {
    /// Starts it on a free loopback port with extra flags.
    pub fn start(extra: &[&str]) -> AgentApi {
        AgentApi::start_on("127.0.0.1:0", extra)
    }

    /// Starts it with `--api-listen listen` and extra flags.
    pub fn start_on(listen: &str, extra: &[&str]) -> AgentApi {
        let work = tempfile::tempdir().expect("work dir");
        let mut child = Command::new(bin("pm-agent"))
            .args(["serve", "--api-listen", listen, "--work-dir"])
            .arg(work.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pm-agent serve");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout).read_line(&mut line).expect("read the api line");
        let addr = line.trim().strip_prefix("api listening on ").unwrap_or_else(|| panic!("{line:?}")).to_string();
        AgentApi { child, addr, _work: work }
    }
}

impl Drop for AgentApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
