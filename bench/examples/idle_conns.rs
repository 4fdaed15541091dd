//! Memory per idle agent connection on `pm-scheduler`: starts a scheduler on a fresh data folder, opens N raw
//! TCP connections that each do the agent handshake (Hello with role agent, then one Credit, as
//! `Client::connect_agent` + `client.credit` do), keeps them open, and reports the growth of the scheduler's
//! resident memory (`VmRSS` of `/proc/PID/status`, userspace only: socket buffers are kernel memory) divided by
//! N. A fresh scheduler per N; a few warm-up connections are opened and kept before the baseline is read, so
//! the runtime's and allocator's one-time costs are not counted. At the end an admin `StatsRequest` checks that
//! the queue really has N agents with credits.
//!
//! ```text
//! cargo build --release -p pm-scheduler -p pm-bench --example idle_conns
//! target/release/examples/idle_conns --conns 1000,19000
//! target/release/examples/idle_conns --bin /tmp/pm-scheduler-old --conns 19000
//! target/release/examples/idle_conns --conns 19000 --warmup 512   # steadier baseline (see below)
//! ```
//!
//! The baseline moves by ~2 MB with how many runtime threads the few warm-up connections happened to touch
//! (each thread's allocator heap), i.e. ±100 B per connection at 19,000; `--warmup 512` touches them all first.
//!
//! One process holds at most `ulimit -n` descriptors: 19,000 connections need a limit above ~19,100 in this
//! process and in the scheduler (it inherits this one's). Raise the soft limit first (`ulimit -n $(ulimit -Hn)`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use pm_protocol::codec::encode_frame;
use pm_protocol::limits::DEFAULT_MAX_FRAME_BYTES;
use pm_protocol::pb::{self, Envelope};
use pm_protocol::Message;
use pm_protocol::{Kind, Role, PROTOCOL_VERSION};

#[derive(Parser, Debug)]
struct Args {
    /// Scheduler binary (default: target/release/pm-scheduler of this workspace).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Connection counts to measure, comma-separated; a fresh scheduler for each.
    #[arg(long, value_delimiter = ',', default_value = "1000,19000")]
    conns: Vec<usize>,
    /// Connections opened and kept before the baseline is read (not counted).
    #[arg(long, default_value_t = 32)]
    warmup: usize,
    /// Wait after the last handshake before reading the scheduler's memory, ms.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Queue the agents grant credits on.
    #[arg(long, default_value = "idle")]
    queue: String,
    /// Extra scheduler arguments (split on whitespace).
    #[arg(long, default_value = "")]
    sched: String,
    /// Measure a scheduler started by hand (e.g. under a heap profiler) at this address, instead of starting
    /// one per count; needs `--pid`.
    #[arg(long, requires = "pid")]
    addr: Option<String>,
    /// Process id of the scheduler at `--addr`.
    #[arg(long)]
    pid: Option<u32>,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The scheduler under test; killed on drop.
struct Sched {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Drop for Sched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &PathBuf, extra: &str) -> Res<Sched> {
    let data = tempfile::tempdir()?;
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--max-connections", "100000"])
        .arg("--data")
        .arg(data.path())
        .args(extra.split_whitespace())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut text = String::new();
    let mut buf = [0u8; 256];
    let addr = loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            return Err(format!("scheduler exited before listening: {text:?}").into());
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(line) = text.lines().find(|l| l.starts_with("listening on ") && text.contains('\n')) {
            break line.trim_start_matches("listening on ").trim().to_string();
        }
    };
    // Keep reading stdout in the background so the scheduler never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        while matches!(out.read(&mut sink), Ok(n) if n > 0) {}
    });
    Ok(Sched { child, addr, _data: data })
}

fn rss_kib(pid: u32, field: &str) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).ok_or("no such field in /proc/PID/status")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad status line")?.parse()?)
}

fn frame(env: &Envelope, out: &mut BytesMut) -> Res<()> {
    encode_frame(env, DEFAULT_MAX_FRAME_BYTES, out).map_err(|e| e.to_string().into())
}

fn read_frame(s: &mut TcpStream) -> Res<Envelope> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(Envelope::decode(&body[..])?)
}

/// Opens `n` agent connections: connect and send Hello + Credit for a batch, then read each Welcome.
fn open(addr: &str, n: usize, queue: &str, into: &mut Vec<TcpStream>) -> Res<()> {
    let mut hello = BytesMut::new();
    let h = pb::Hello {
        version: PROTOCOL_VERSION,
        role: Role::Agent as i32,
        client_id: "idle".into(),
        ..Default::default()
    };
    frame(&h.into(), &mut hello)?;
    frame(&pb::Credit { queue: queue.into(), n: 1 }.into(), &mut hello)?;
    let mut left = n;
    while left > 0 {
        let batch = left.min(512);
        let first = into.len();
        for _ in 0..batch {
            let mut s = TcpStream::connect(addr).map_err(|e| format!("connect #{}: {e}", into.len()))?;
            s.set_nodelay(true)?;
            s.write_all(&hello)?;
            into.push(s);
        }
        for s in &mut into[first..] {
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            match read_frame(s)?.kind {
                Some(Kind::Welcome(_)) => {}
                other => return Err(format!("expected Welcome, got {other:?}").into()),
            }
        }
        left -= batch;
    }
    Ok(())
}

/// Agents with credits on `queue`, from an admin StatsRequest.
fn agents(addr: &str, queue: &str) -> Res<u64> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = BytesMut::new();
    let h = pb::Hello {
        version: PROTOCOL_VERSION,
        role: Role::Admin as i32,
        client_id: "idle".into(),
        ..Default::default()
    };
    frame(&h.into(), &mut buf)?;
    frame(&pb::StatsRequest { request_id: 1 }.into(), &mut buf)?;
    s.write_all(&buf)?;
    loop {
        if let Some(Kind::StatsReply(r)) = read_frame(&mut s)?.kind {
            return Ok(r.queues.iter().filter(|q| q.queue == queue).map(|q| q.agents).sum());
        }
    }
}

fn main() -> Res<()> {
    let args = Args::parse();
    let bin = args
        .bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/pm-scheduler")));
    for &n in &args.conns {
        let (sched, addr, pid) = match (&args.addr, args.pid) {
            (Some(addr), Some(pid)) => (None, addr.clone(), pid),
            _ => {
                let s = start(&bin, &args.sched)?;
                let (addr, pid) = (s.addr.clone(), s.child.id());
                (Some(s), addr, pid)
            }
        };
        let mut conns = Vec::with_capacity(n + args.warmup);
        open(&addr, args.warmup, &args.queue, &mut conns)?;
        std::thread::sleep(Duration::from_millis(args.settle_ms));
        let (before, anon_before) = (rss_kib(pid, "VmRSS:")?, rss_kib(pid, "RssAnon:")?);
        let t = Instant::now();
        open(&addr, n, &args.queue, &mut conns)?;
        let took = t.elapsed();
        std::thread::sleep(Duration::from_millis(args.settle_ms));
        let (after, anon_after) = (rss_kib(pid, "VmRSS:")?, rss_kib(pid, "RssAnon:")?);
        let agents = agents(&addr, &args.queue)?;
        if sched.is_some() && agents != (n + args.warmup) as u64 {
            return Err(format!("the queue has {agents} agents, expected {}", n + args.warmup).into());
        }
        let per = (after.saturating_sub(before) * 1024) as f64 / n as f64;
        let per_anon = (anon_after.saturating_sub(anon_before) * 1024) as f64 / n as f64;
        println!(
            "{{\"conns\":{n},\"rss_before_kib\":{before},\"rss_after_kib\":{after},\"bytes_per_conn\":{per:.0},\
             \"anon_bytes_per_conn\":{per_anon:.0},\"open_secs\":{:.2}}}",
            took.as_secs_f64()
        );
        drop(conns);
        drop(sched);
    }
    Ok(())
}
