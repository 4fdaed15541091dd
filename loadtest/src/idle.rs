//! `idle-connections N`: opens N long-lived, idle consumer connections and measures what they cost the server.
//!
//! One process may hold only so many file descriptors (20,000 on the reference machine), so the parent
//! spreads the connections over child processes (`idle-worker`), each bound to its own loopback source
//! address (127.0.0.2 to 127.0.0.251, starting at a different one per run) so no source runs out of
//! ephemeral ports either. Each child opens its
//! share (a bounded number of handshakes at a time), reports `ready OPENED FAILED` on stdout, and holds the
//! connections until its stdin closes or `--hold` runs out. With `--server-pid` the parent reads the server's
//! resident memory before and after (from `/proc/PID/status`) and reports bytes per connection. First it opens
//! `--warmup` connections (kept open, not counted) so that the server's runtime threads and allocator heaps
//! have paid their one-time costs before the baseline: otherwise the baseline moves by megabytes with which
//! threads the first connections happened to touch.
//!
//! An idle connection is what a waiting consumer holds: pm: `Hello` as an agent, the `Welcome`, and one
//! `Credit`; Redis: a `PING`; beanstalkd: a `watch`.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pm_protocol::pb::{self, Credit, Hello};
use pm_protocol::{Envelope, FrameCodec, Kind, Role, PROTOCOL_VERSION};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Decoder, Encoder};

use crate::backend::LoadError;
use crate::target::Target;

/// Tries to open one connection before it counts as failed.
const OPEN_ATTEMPTS: usize = 3;
/// Handshakes in flight per worker.
const CONCURRENT_HANDSHAKES: usize = 256;

/// What the parent measured.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    /// Connections asked for.
    pub requested: usize,
    /// Connections open and handshaken.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// Warm-up connections opened (and kept) before the baseline; not in `opened`.
    pub warmup: usize,
    /// Worker processes used.
    pub processes: usize,
    /// Seconds until every worker was ready.
    pub open_s: f64,
    /// Server RSS before, bytes (with `--server-pid`).
    pub server_rss_before: Option<u64>,
    /// Server RSS with every connection open, bytes.
    pub server_rss_after: Option<u64>,
    /// (after − before) / opened.
    pub server_bytes_per_connection: Option<f64>,
}

/// Options of the parent.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// Connections in all.
    pub count: usize,
    /// Connections per worker process.
    pub per_process: usize,
    /// Connections opened and kept before the baseline is read.
    pub warmup: usize,
    /// Longest time a worker holds its connections.
    pub hold: Duration,
    /// Longest wait for all workers to be ready.
    pub open_timeout: Duration,
    /// Wait after the last connection opened before reading the server's memory.
    pub settle: Duration,
    /// The server's pid, to read its memory.
    pub server_pid: Option<u32>,
    /// How long the connections stay open after the measurement.
    pub linger: Duration,
    /// Last byte of the first source address (default: picked per run).
    pub first_source: Option<u8>,
}

/// Reads `VmRSS` of `pid` in bytes.
pub fn rss(pid: u32) -> Result<u64, LoadError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| LoadError::Backend(format!("no VmRSS in /proc/{pid}/status")))
}

/// Kills the workers when dropped (closing their stdin first lets them exit by themselves).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            drop(c.stdin.take());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.0 {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts a worker for `n` connections from `source`.
/// What every worker is given: the target, the queue and the token (through the environment, not the
/// command line, where `ps` would show it).
struct WorkerTarget<'a> {
    target: &'a str,
    queue: &'a str,
    token: &'a str,
}

fn spawn_worker(
    exe: &std::path::Path,
    t: &WorkerTarget<'_>,
    n: usize,
    source: &str,
    hold: Duration,
) -> Result<Child, LoadError> {
    Ok(Command::new(exe)
        .args(["--target", t.target, "--queue", t.queue, "idle-worker", "--count", &n.to_string(), "--source", source])
        .env("PM_TOKEN", t.token)
        .args(["--hold", &format!("{}", hold.as_secs().max(1))])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// Waits for every worker's `ready OPENED FAILED` line; returns the sums.
fn wait_ready(workers: &mut [Child], deadline: Instant) -> Result<(usize, usize), LoadError> {
    let (tx, rx) = std::sync::mpsc::channel();
    for c in workers.iter_mut() {
        let Some(out) = c.stdout.take() else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let line = BufReader::new(out).lines().next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(line);
        });
    }
    drop(tx);
    let (mut opened, mut failed) = (0, 0);
    for _ in 0..workers.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).map_err(|_| LoadError::Backend("a worker was not ready in time".into()))?;
        let mut it = line.split_whitespace();
        let (word, o, f) = (
            it.next(),
            it.next().and_then(|v| v.parse::<usize>().ok()),
            it.next().and_then(|v| v.parse::<usize>().ok()),
        );
        match (word, o, f) {
            (Some("ready"), Some(o), Some(f)) => {
                opened += o;
                failed += f;
            }
            _ => return Err(LoadError::Backend(format!("a worker failed: {line:?}"))),
        }
    }
    Ok((opened, failed))
}

/// The parent: opens the warm-up connections, reads the server's memory, starts the workers, waits until they
/// are ready, reads it again.
pub fn run_parent(target: &str, queue: &str, token: &str, opts: &IdleOptions) -> Result<IdleReport, LoadError> {
    let target = WorkerTarget { target, queue, token };
    let exe = std::env::current_exe()?;
    let deadline = Instant::now() + opts.open_timeout;
    // Warm-up connections stay open through the measurement: they make the server's runtime threads and
    // allocator heaps pay their one-time costs before the baseline is read.
    let mut warm = Workers(Vec::new());
    if opts.warmup > 0 {
        warm.0.push(spawn_worker(&exe, &target, opts.warmup, "127.0.0.1", opts.hold)?);
        wait_ready(&mut warm.0, deadline)?;
        std::thread::sleep(opts.settle);
    }
    let before = opts.server_pid.map(rss).transpose()?;
    let start = Instant::now();
    let per = opts.per_process.max(1);
    let mut workers = Workers(Vec::new());
    let mut left = opts.count;
    // Sources from 127.0.0.2 on spread the ephemeral ports. A socket bound before it connects holds its port
    // for any destination, and a run's ports stay in TIME_WAIT for a minute after it: so each run starts at
    // another source, or a run right after another one would find too few ports.
    let first = match opts.first_source {
        Some(b) => usize::from(b) - 2,
        None => std::process::id() as usize % 60 * 4,
    };
    while left > 0 {
        let n = left.min(per);
        let source = format!("127.0.0.{}", 2 + (first + workers.0.len()) % 250);
        workers.0.push(spawn_worker(&exe, &target, n, &source, opts.hold)?);
        left -= n;
    }
    let (opened, failed) = wait_ready(&mut workers.0, deadline)?;
    let open_s = start.elapsed().as_secs_f64();
    std::thread::sleep(opts.settle);
    let after = opts.server_pid.map(rss).transpose()?;
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };
    let processes = workers.0.len();
    std::thread::sleep(opts.linger);
    drop(workers);
    drop(warm);
    Ok(IdleReport {
        requested: opts.count,
        opened,
        failed,
        warmup: opts.warmup,
        processes,
        open_s,
        server_rss_before: before,
        server_rss_after: after,
        server_bytes_per_connection: per_conn,
    })
}

/// A worker: opens `count` idle connections from `source`, prints `ready OPENED FAILED`, holds them.
pub async fn run_worker(target: Target, count: usize, source: Option<IpAddr>, hold: Duration) -> Result<(), LoadError> {
    let limit = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
    let target = Arc::new(target);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let (limit, target) = (limit.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.ok()?;
            // A busy server may drop a SYN or miss a handshake: try again, as an agent would.
            for attempt in 0..OPEN_ATTEMPTS {
                let from = source.map(|ip| SocketAddr::new(ip, source_port(i, attempt, count)));
                match tokio::time::timeout(Duration::from_secs(30), open(&target, from, i)).await {
                    Ok(Ok(s)) => return Some(s),
                    Ok(Err(e)) if i < 3 || attempt + 1 == OPEN_ATTEMPTS && i % 1000 == 0 => {
                        eprintln!("idle connection {i}, attempt {}: {e}", attempt + 1)
                    }
                    _ => {}
                }
            }
            None
        }));
    }
    let mut conns = Vec::with_capacity(count);
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            conns.push(s);
        }
    }
    let failed = count - conns.len();
    let mut out = tokio::io::stdout();
    out.write_all(format!("ready {} {failed}\n", conns.len()).as_bytes()).await?;
    out.flush().await?;
    // Hold until the parent closes our stdin (or goes away), or the hold time is over.
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(hold, async {
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    drop(conns);
    Ok(())
}

/// The source port of connection `i`'s `attempt`: each attempt of each connection of a worker has its own,
/// from 10,000 up, or 0 (the kernel picks) past the last port.
///
/// Chosen here, not by the kernel: for `bind(ip, 0)` the kernel searches for a free port, and with a million
/// sockets bound on this host each search walked long bind-hash chains (`inet_bind2_bucket_find` took over
/// half of both cores, and handshakes timed out). A given port is one lookup.
fn source_port(i: usize, attempt: usize, count: usize) -> u16 {
    u16::try_from(10_000 + attempt * count + i).unwrap_or(0)
}

/// Connects to `addr` from `source` (if given; port 0 lets the kernel pick one). A given source port may be
/// reused while an earlier socket of it waits in TIME_WAIT.
pub(crate) async fn connect(addr: &str, source: Option<SocketAddr>) -> Result<TcpStream, LoadError> {
    let err = |e: std::io::Error| LoadError::Connect { addr: addr.to_string(), message: e.to_string() };
    let remote: SocketAddr = tokio::net::lookup_host(addr)
        .await
        .map_err(err)?
        .next()
        .ok_or_else(|| LoadError::Connect { addr: addr.to_string(), message: "no address".into() })?;
    let sock = if remote.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
    if let Some(source) = source {
        if source.port() != 0 {
            sock.set_reuseaddr(true).map_err(err)?;
        }
        sock.bind(source).map_err(err)?;
    }
    sock.connect(remote).await.map_err(err)
}

/// Opens one idle consumer connection and completes its handshake.
async fn open(target: &Target, source: Option<SocketAddr>, i: usize) -> Result<TcpStream, LoadError> {
    let mut s = connect(target.addr(), source).await?;
    match target {
        Target::Pm { queue, token, .. } => {
            let mut codec = FrameCodec::new(1 << 20);
            let mut buf = BytesMut::new();
            let hello = Hello {
                version: PROTOCOL_VERSION,
                role: Role::Agent as i32,
                client_id: format!("pm-loadtest-idle-{i}"),
                auth_token: token.clone(),
                ..Default::default()
            };
            codec.encode(Envelope::from(hello), &mut buf).map_err(|e| LoadError::Backend(e.to_string()))?;
            codec
                .encode(Envelope::from(Credit { queue: queue.clone(), n: 1, set: false }), &mut buf)
                .map_err(|e| LoadError::Backend(e.to_string()))?;
            s.write_all(&buf).await?;
            buf.clear();
            loop {
                if s.read_buf(&mut buf).await? == 0 {
                    return Err(LoadError::Backend("closed during the handshake".into()));
                }
                match codec.decode(&mut buf).map_err(|e| LoadError::Backend(e.to_string()))? {
                    Some(Envelope { kind: Some(Kind::Welcome(_)) }) => break,
                    Some(Envelope { kind: Some(Kind::Error(pb::Error { message, .. })) }) => {
                        return Err(LoadError::Backend(message))
                    }
                    Some(other) => return Err(LoadError::Backend(format!("unexpected frame {other:?}"))),
                    None => {}
                }
            }
        }
        Target::Redis { .. } => expect_reply(&mut s, b"PING\r\n", b"+PONG\r\n").await?,
        Target::Beanstalk { tube, .. } => {
            let cmd = format!("watch {tube}\r\n");
            expect_reply(&mut s, cmd.as_bytes(), b"WATCHING 2\r\n").await?
        }
    }
    Ok(s)
}

async fn expect_reply(s: &mut TcpStream, cmd: &[u8], want: &[u8]) -> Result<(), LoadError> {
    s.write_all(cmd).await?;
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).await?;
    if got != want {
        return Err(LoadError::Backend(format!("unexpected reply {:?}", String::from_utf8_lossy(&got))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_reads_this_process() {
        let me = rss(std::process::id()).expect("own RSS");
        assert!(me > 100_000, "{me}");
        assert!(rss(u32::MAX).is_err());
    }
}
