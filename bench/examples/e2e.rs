//! End-to-end load generator against an already running `pm-scheduler`: producers submit batches of tasks,
//! agents lease and ack them, and the latency from submit to *durable ack* is recorded in an HDR histogram.
//!
//! ```text
//! target/release/pm-scheduler --listen 127.0.0.1:0 --data "$(mktemp -d)" --fsync always  # prints `listening on ADDR`
//! cargo run --release -p pm-bench --example e2e -- --addr ADDR --mode max|fixed [--rate 20000]
//!     [--producers 4] [--agents 4] [--batch 64] [--payload 256] [--warmup 2] [--duration 10] [--inflight 8]
//!     [--queue bench] [--credits 2048] [--drain 3]
//! ```
//! - `max`: every producer keeps `--inflight` Submits of `--batch` tasks in flight (closed loop).
//! - `fixed`: the producers together offer `--rate` tasks/s on a fixed schedule; each task carries its *intended*
//!   send time, so a slow server shows as latency, not as a lower offered rate (no coordinated omission). At most
//!   `--inflight` Submits per producer are in flight; later ones wait for a slot but keep their intended time.
//!
//! A payload is the send time (u64 LE, ns since the common start) padded to `--payload` bytes. Each agent grants
//! `--credits`, acks up to 64 received tasks per call (ack calls run concurrently) and grants as many back once
//! the ack returns. Latency = ack reply time − embedded time, for OK ack codes. Only completions inside
//! [warmup, warmup + duration) count: submitted/s (OK SubmitAck results), acked/s (OK ack codes), latency. Then
//! producers stop and agents drain for at most `--drain` s. Prints one JSON line (with per-second series, to
//! make stalls visible); errors go to stderr.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use pm_client::{Client, ConnectOptions, Leases};
use pm_protocol::pb::{LeasedTask, TaskSpec};
use pm_protocol::ErrorCode;
use tokio::task::JoinSet;

const ACK_BATCH: usize = 64;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The options of the usage above.
#[derive(Parser, Debug)]
struct Args {
    #[arg(long)]
    addr: String,
    #[arg(long, default_value = "max", value_parser = ["max", "fixed"])]
    mode: String,
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    #[arg(long, default_value_t = 4)]
    producers: usize,
    #[arg(long, default_value_t = 4)]
    agents: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    payload: usize,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    #[arg(long, default_value = "bench")]
    queue: String,
    #[arg(long, default_value_t = 2048)]
    credits: u32,
    #[arg(long, default_value_t = 3)]
    drain: u64,
    /// Report batches whose latency reached this many ms (with their send time) as `stalls`.
    #[arg(long, default_value_t = 20)]
    stall_ms: u64,
}

/// Counters over the whole run, and (`*_win`) over completions inside the window.
#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    submitted_win: AtomicU64,
    acked: AtomicU64,
    acked_win: AtomicU64,
    submit_errors: AtomicU64,
    rejected: AtomicU64,
    ack_errors: AtomicU64,
    redelivered: AtomicU64,
}

struct Ctx {
    args: Args,
    t0: Instant,
    win: (u64, u64),
    hist: Mutex<Histogram<u64>>,
    /// Submit round trips (actual send → SubmitAck), µs, inside the window.
    submit_hist: Mutex<Histogram<u64>>,
    /// Fixed mode: how late each Submit left against its schedule, µs.
    late_hist: Mutex<Histogram<u64>>,
    /// Slow batches: (send time ns since start, latency ms).
    stalls: Mutex<Vec<(u64, u64)>>,
    n: Counters,
    sub_series: Vec<AtomicU64>,
    ack_series: Vec<AtomicU64>,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
    fn in_win(&self, ns: u64) -> bool {
        ns >= self.win.0 && ns < self.win.1
    }
    /// Counts `n` completions at `now` into a run total, a window total and a per-second series.
    fn count(&self, counters: [&AtomicU64; 2], series: &[AtomicU64], now: u64, n: u64) {
        counters[0].fetch_add(n, Relaxed);
        if self.in_win(now) {
            counters[1].fetch_add(n, Relaxed);
        }
        if let Some(slot) = series.get((now / 1_000_000_000) as usize) {
            slot.fetch_add(n, Relaxed);
        }
    }
}

fn error(counter: &AtomicU64, what: &str, e: impl std::fmt::Display) {
    if counter.fetch_add(1, Relaxed) < 5 {
        eprintln!("{what}: {e}");
    }
}

async fn submit(ctx: &Ctx, client: &Client, ts: u64) {
    let mut buf = BytesMut::zeroed(ctx.args.payload.max(8));
    buf[..8].copy_from_slice(&ts.to_le_bytes());
    let payload: Bytes = buf.freeze();
    let tasks = (0..ctx.args.batch)
        .map(|_| TaskSpec { payload: payload.clone(), queue: ctx.args.queue.clone(), ..Default::default() })
        .collect();
    let sent = ctx.now_ns();
    match client.submit(tasks).await {
        Ok(results) => {
            let now = ctx.now_ns();
            if ctx.in_win(now) {
                ctx.submit_hist.lock().expect("histogram lock poisoned").saturating_record((now - sent) / 1000);
            }
            let ok = results.iter().filter(|r| r.code == ErrorCode::Ok as i32).count() as u64;
            if let Some(bad) = results.iter().find(|r| r.code != ErrorCode::Ok as i32) {
                if ctx.n.rejected.fetch_add(results.len() as u64 - ok, Relaxed) < 5 {
                    eprintln!("submit result: code {} {}", bad.code, bad.message);
                }
            }
            ctx.count([&ctx.n.submitted, &ctx.n.submitted_win], &ctx.sub_series, ctx.now_ns(), ok);
        }
        Err(e) => error(&ctx.n.submit_errors, "submit", e),
    }
}

async fn producer(ctx: Arc<Ctx>, client: Client, id: usize) {
    let mut set = JoinSet::new();
    if ctx.args.mode == "max" {
        for _ in 0..ctx.args.inflight {
            let (ctx, client) = (ctx.clone(), client.clone());
            set.spawn(async move {
                while ctx.now_ns() < ctx.win.1 {
                    submit(&ctx, &client, ctx.now_ns()).await;
                }
            });
        }
    } else {
        let per_producer = ctx.args.rate as f64 / ctx.args.producers as f64;
        let interval = (ctx.args.batch as f64 / per_producer * 1e9) as u64;
        // Producers are staggered within one interval. A late Submit keeps its intended time.
        let mut intended = interval * id as u64 / ctx.args.producers as u64;
        while intended < ctx.win.1 {
            tokio::time::sleep_until((ctx.t0 + Duration::from_nanos(intended)).into()).await;
            let mut stamp = ctx.now_ns();
            while set.len() >= ctx.args.inflight {
                set.join_next().await;
                stamp = intended;
            }
            // Timer lateness (tokio's wheel ticks in 1 ms) is ours, not the server's; waiting for a slot is the
            // server's, so then the intended time counts.
            let late = ctx.now_ns().saturating_sub(intended);
            ctx.late_hist.lock().expect("histogram lock poisoned").saturating_record(late / 1000);
            let (ctx, client) = (ctx.clone(), client.clone());
            set.spawn(async move { submit(&ctx, &client, stamp).await });
            while set.try_join_next().is_some() {}
            intended += interval;
        }
    }
    while set.join_next().await.is_some() {}
}

async fn ack(ctx: Arc<Ctx>, client: Client, tasks: Vec<LeasedTask>) {
    let n = tasks.len();
    let items = tasks.iter().map(|t| (t.lease_id, Bytes::new())).collect();
    match client.ack(items).await {
        Ok(codes) => {
            let now = ctx.now_ns();
            let win = ctx.in_win(now);
            let (mut ok, mut hist) = (0, ctx.hist.lock().expect("histogram lock poisoned"));
            for (t, code) in tasks.iter().zip(codes.iter()) {
                if *code != ErrorCode::Ok {
                    error(&ctx.n.ack_errors, "ack code", format!("{code:?} for task {}", t.task_id));
                    continue;
                }
                ok += 1;
                let sent = t.payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
                if let (true, Some(sent)) = (win, sent) {
                    let us = now.saturating_sub(sent) / 1000;
                    hist.saturating_record(us);
                    if us >= ctx.args.stall_ms * 1000 {
                        let mut stalls = ctx.stalls.lock().expect("stall list lock poisoned");
                        // One entry per stalled batch: (when it was sent, s; how long it took, ms).
                        if stalls.len() < 64 && stalls.last().is_none_or(|&(s, _)| s != sent) {
                            stalls.push((sent, us / 1000));
                        }
                    }
                }
            }
            drop(hist);
            ctx.n.ack_errors.fetch_add(n.abs_diff(codes.len()) as u64, Relaxed); // codes missing for items
            ctx.count([&ctx.n.acked, &ctx.n.acked_win], &ctx.ack_series, now, ok);
        }
        Err(e) => error(&ctx.n.ack_errors, "ack", e),
    }
    if let Err(e) = client.credit(&ctx.args.queue, n as u32).await {
        error(&ctx.n.ack_errors, "credit", e);
    }
}

async fn agent(ctx: Arc<Ctx>, client: Client, mut leases: Leases) {
    let mut acks = JoinSet::new();
    // The load generator never cancels, so no revocation arrives; any would be ignored.
    while let Some(first) = leases.next().await {
        let Some(first) = first.into_leased() else { continue };
        let mut tasks = vec![first];
        while let Some(ev) = (tasks.len() < ACK_BATCH).then(|| leases.try_next()).flatten() {
            tasks.extend(ev.into_leased());
        }
        let redelivered = tasks.iter().filter(|t| t.attempt > 1).count() as u64;
        ctx.n.redelivered.fetch_add(redelivered, Relaxed);
        acks.spawn(ack(ctx.clone(), client.clone(), tasks));
        while acks.try_join_next().is_some() {}
    }
    eprintln!("agent: lease stream ended at {:.3} s", ctx.now_ns() as f64 / 1e9);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (mut agent_conns, mut producer_conns) = (Vec::new(), Vec::new());
    for i in 0..args.agents {
        let opts = ConnectOptions::agent().client_id(format!("e2e-agent-{i}"));
        let (client, leases) = Client::connect_agent(&args.addr, opts).await.expect("agent connect");
        client.credit(&args.queue, args.credits).await.expect("initial credit");
        agent_conns.push((client, leases));
    }
    for i in 0..args.producers {
        let opts = ConnectOptions::producer().client_id(format!("e2e-producer-{i}"));
        producer_conns.push(Client::connect(&args.addr, opts).await.expect("producer connect"));
    }
    let secs = (args.warmup + args.duration + args.drain + 2) as usize;
    let win = (args.warmup * 1_000_000_000, (args.warmup + args.duration) * 1_000_000_000);
    let hist = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
    let ctx = Arc::new(Ctx {
        args,
        t0: Instant::now(),
        win,
        submit_hist: Mutex::new(hist.clone()),
        late_hist: Mutex::new(hist.clone()),
        stalls: Mutex::new(Vec::new()),
        hist: Mutex::new(hist),
        n: Counters::default(),
        sub_series: (0..secs).map(|_| AtomicU64::new(0)).collect(),
        ack_series: (0..secs).map(|_| AtomicU64::new(0)).collect(),
    });
    let agents: Vec<_> = agent_conns.into_iter().map(|(c, l)| tokio::spawn(agent(ctx.clone(), c, l))).collect();
    let producers: Vec<_> =
        producer_conns.into_iter().enumerate().map(|(i, c)| tokio::spawn(producer(ctx.clone(), c, i))).collect();

    // Producers stop at the window's end (their last Submits may still be in flight); then drain.
    let deadline =
        tokio::time::Instant::from(ctx.t0 + Duration::from_nanos(ctx.win.1 + ctx.args.drain * 1_000_000_000));
    for p in producers {
        if tokio::time::timeout_at(deadline, p).await.is_err() {
            eprintln!("producer: Submits still in flight at the drain deadline");
        }
    }
    while ctx.n.acked.load(Relaxed) < ctx.n.submitted.load(Relaxed) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for a in &agents {
        a.abort();
    }
    let end_s = ctx.now_ns() as f64 / 1e9;

    let a = &ctx.args;
    let d = a.duration as f64;
    let hist = ctx.hist.lock().expect("histogram lock poisoned");
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let quantiles = |h: &Histogram<u64>| {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        serde_json::json!({"p50": ms(0.5), "p99": ms(0.99), "max": h.max() as f64 / 1000.0})
    };
    let series = |s: &[AtomicU64]| s.iter().map(|x| x.load(Relaxed)).collect::<Vec<_>>();
    let out = serde_json::json!({
        "mode": a.mode, "offered_rate": if a.mode == "fixed" { Some(a.rate) } else { None },
        "submitted_per_s": (ctx.n.submitted_win.load(Relaxed) as f64 / d).round(),
        "acked_per_s": (ctx.n.acked_win.load(Relaxed) as f64 / d).round(),
        "latency_ms": {
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999), "max": hist.max() as f64 / 1000.0, "samples": hist.len(),
        },
        "submit_rtt_ms": quantiles(&ctx.submit_hist.lock().expect("histogram lock poisoned")),
        "send_late_ms": quantiles(&ctx.late_hist.lock().expect("histogram lock poisoned")),
        "producers": a.producers, "agents": a.agents, "batch": a.batch, "payload": a.payload,
        "inflight": a.inflight, "credits": a.credits, "warmup_s": a.warmup, "duration_s": a.duration,
        "submitted_total": ctx.n.submitted.load(Relaxed), "acked_total": ctx.n.acked.load(Relaxed),
        "unacked_at_end": ctx.n.submitted.load(Relaxed).saturating_sub(ctx.n.acked.load(Relaxed)),
        "submit_errors": ctx.n.submit_errors.load(Relaxed), "rejected": ctx.n.rejected.load(Relaxed),
        "ack_errors": ctx.n.ack_errors.load(Relaxed), "redelivered": ctx.n.redelivered.load(Relaxed),
        "end_s": (end_s * 1000.0).round() / 1000.0,
        "stalls_sent_s_ms": ctx.stalls.lock().expect("stall list lock poisoned").iter()
            .map(|&(sent, ms)| ((sent as f64 / 1e6).round() / 1e3, ms)).collect::<Vec<_>>(),
        "submitted_per_s_series": series(&ctx.sub_series), "acked_per_s_series": series(&ctx.ack_series),
    });
    println!("{out}");
}
