//! `pm-loadtest`: load scenarios against a pm-scheduler, and the same workloads against Redis streams and
//! beanstalkd for side-by-side comparisons.
//!
//! ```text
//! pm-loadtest [--target pm://127.0.0.1:7070] max-rate   [--duration 10 --warmup 2 --producers 4 --consumers 4 ...]
//! pm-loadtest [--target ...]                 fixed-rate --rate 20000 [...]
//! pm-loadtest [--target ...]                 soak       [--rate 5000 --duration 600 --interval 10]
//! pm-loadtest [--target ...]                 idle-connections --count 19000 [--server-pid PID]
//! pm-loadtest [--target ...]                 slowloris  --count 5000 [--mode silent|partial] [--rate 5000 ...]
//! pm-loadtest [--target ...]                 flood      --count 12000 [--server-pid PID]
//! ```
//! Targets: `pm://HOST:PORT` (or a bare `HOST:PORT`; `pm://A,B,...` for a cluster: producer and consumer `i`
//! use member `i mod N`), `redis://HOST:PORT`, `beanstalk://HOST:PORT`. The tool
//! connects only to the address it is given. The report is one JSON document on stdout (or `--out FILE`);
//! `--plot FILE.svg` draws latency and throughput over time; a progress line goes to stderr when it is a
//! terminal. Every scenario is bounded in time (and the workloads by `--max-tasks`) and stops by itself.
//! See `docs/benchmarks.md` for the commands behind the published figures.

mod backend;
mod beanstalk;
mod hostile;
mod idle;
mod plot;
mod redis;
mod stats;
mod target;
mod workload;

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::backend::{Backend, LoadError, Pm};
use crate::stats::{Counters, Point, Quantiles};
use crate::target::Target;
use crate::workload::{Outcome, Pace, Workload};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load tester for pipeline-manager (and, to compare, Redis streams and beanstalkd).
#[derive(Parser, Debug)]
#[command(name = "pm-loadtest", version)]
struct Cli {
    /// System under test: pm://HOST:PORT (or HOST:PORT), redis://HOST:PORT or beanstalk://HOST:PORT.
    #[arg(long, global = true, default_value = "pm://127.0.0.1:7070")]
    target: String,
    /// Queue (pm), stream (Redis) or tube (beanstalkd) to use.
    #[arg(long, global = true, default_value = "loadtest")]
    queue: String,
    /// pm: the token presented in Hello (the agent and producer roles need theirs when the scheduler has token
    /// files; give one valid for both roles' files, or run producers and consumers separately).
    #[arg(long, global = true, env = "PM_TOKEN", hide_env_values = true, default_value = "")]
    token: String,
    /// No progress line, even on a terminal.
    #[arg(long, global = true)]
    quiet: bool,
    /// The client library's warnings (a lost connection, a reconnect) on stderr; level via RUST_LOG, default
    /// `warn`.
    #[command(flatten)]
    log: pm_logging::LogArgs,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Closed loop: every producer keeps `--inflight` batches in flight; reports the highest rate.
    MaxRate(Load),
    /// Open loop at `--rate` tasks/s; latency counts from each task's intended send time.
    FixedRate(Load),
    /// A long open-loop run (default 10 min at 5,000 tasks/s, 10 s intervals) to watch for drift.
    Soak(Load),
    /// Opens N idle consumer connections over several processes and measures the server's memory.
    IdleConnections(Idle),
    /// pm: N connections that never finish their handshake (slowloris), opened while the fixed-rate workload
    /// runs; reports the workload's latency without and with them, and how the server closed them.
    Slowloris(Slow),
    /// pm: N producer handshakes at once, past the server's --max-connections: accepted, refused, the
    /// server's memory, and whether it still serves.
    Flood(Flood),
    /// Internal: one process of `idle-connections`.
    #[command(hide = true)]
    IdleWorker {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        source: Option<IpAddr>,
        #[arg(long, default_value_t = 60)]
        hold: u64,
    },
}

/// Options of the workload scenarios.
#[derive(Args, Debug, Clone)]
struct Load {
    /// Offered tasks/s (fixed-rate, soak; default 20000, soak 5000).
    #[arg(long)]
    rate: Option<u64>,
    /// Producer connections; 0 = consumers only: they take what is queued, and the run ends once they acked
    /// --max-tasks (or at the window's end plus --drain).
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Consumer (agent) connections; 0 = producers only: what they submit stays queued (a backlog to drain
    /// later with --producers 0).
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Tasks per submit.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Payload bytes per task (≥ 8).
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Measured seconds (default 10; soak 600).
    #[arg(long)]
    duration: Option<u64>,
    /// Seconds to wait for consumers to catch up after the window.
    #[arg(long, default_value_t = 5)]
    drain: u64,
    /// Submits in flight per producer.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Deliveries a consumer may hold unacked (pm credits).
    #[arg(long, default_value_t = 2048)]
    prefetch: u32,
    /// Most deliveries per ack call.
    #[arg(long, default_value_t = 64)]
    ack_batch: usize,
    /// Ack calls in flight per consumer (32 = the default prefetch over the default ack batch: a consumer
    /// never sits on received tasks waiting for an ack slot).
    #[arg(long, default_value_t = 32)]
    ack_inflight: usize,
    /// Producers stop after exactly this many tasks in all (the last Submit is cut to fit); with --producers 0,
    /// consumers stop once they acked this many.
    #[arg(long, default_value_t = 1_000_000_000)]
    max_tasks: u64,
    /// Seconds per point of the series (default 1; soak 10).
    #[arg(long)]
    interval: Option<u64>,
    /// Write the JSON report here instead of stdout.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Draw latency and throughput over time into this SVG file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// The server's pid, when it runs on this machine: its resident memory goes into every series point.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// Options of `idle-connections`.
#[derive(Args, Debug, Clone)]
struct Idle {
    /// Connections to open.
    #[arg(long)]
    count: usize,
    /// Connections per worker process (one process may hold only so many file descriptors).
    #[arg(long, default_value_t = 15_000)]
    per_process: usize,
    /// Connections opened (and kept) before the server's baseline memory is read; not counted.
    #[arg(long, default_value_t = 512)]
    warmup: usize,
    /// The server's pid: report its memory per connection.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Longest time the connections are held.
    #[arg(long, default_value_t = 120)]
    hold: u64,
    /// Longest wait for every connection to open, s.
    #[arg(long, default_value_t = 120)]
    open_timeout: u64,
    /// Wait after opening before reading the server's memory, s.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// Keep the connections open this long after the measurement (e.g. while another load runs), s.
    #[arg(long, default_value_t = 0)]
    linger: u64,
    /// Last byte of the first source address (127.0.0.N, N ≥ 2); default: picked per run. Give parallel runs
    /// disjoint ranges: a bound socket holds its port for every destination.
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..))]
    first_source: Option<u8>,
    /// Write the JSON report here instead of stdout.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Options of `slowloris` (plus the workload's, which runs at `--rate`, default 5000).
#[derive(Args, Debug, Clone)]
struct Slow {
    /// Slow connections (at most ~15,000: one process's file descriptors).
    #[arg(long)]
    count: usize,
    /// What each sends before stalling: nothing, or half a length prefix.
    #[arg(long, value_enum, default_value = "silent")]
    mode: hostile::SlowMode,
    /// Longest wait for each to open, and for the server to close them after the workload, s.
    #[arg(long, default_value_t = 30)]
    hold: u64,
    /// Last byte of the first source address (127.0.0.N); 10,000 connections per address.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..))]
    first_source: u8,
    #[command(flatten)]
    load: Load,
}

/// Options of `flood`.
#[derive(Args, Debug, Clone)]
struct Flood {
    /// Handshakes to try at once (at most ~15,000: one process's file descriptors).
    #[arg(long)]
    count: usize,
    /// Last byte of the first source address (127.0.0.N); 10,000 connections per address.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..))]
    first_source: u8,
    /// The server's pid: its memory before, at the peak and after.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the JSON report here instead of stdout.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli: Cli = match pm_client::cli::parse_or_exit() {
        Ok(c) => c,
        Err(code) => return code,
    };
    pm_logging::init(cli.log.log_format, "warn");
    let target = match Target::parse(&cli.target, &cli.queue, &cli.token) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pm-loadtest: {e}");
            return ExitCode::from(64);
        }
    };
    match run(cli, target) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pm-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, LoadError> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(cli: Cli, target: Target) -> Result<(), LoadError> {
    let name = match &cli.scenario {
        Scenario::MaxRate(_) => "max-rate",
        Scenario::FixedRate(_) => "fixed-rate",
        Scenario::Soak(_) => "soak",
        Scenario::IdleConnections(_) => "idle-connections",
        Scenario::Slowloris(_) => "slowloris",
        Scenario::Flood(_) => "flood",
        Scenario::IdleWorker { .. } => "idle-worker",
    };
    match cli.scenario {
        Scenario::MaxRate(l) => load(name, &cli.target, cli.quiet, target, Pace::Max, l, 10, 1),
        Scenario::FixedRate(l) => {
            let rate = l.rate.unwrap_or(20_000);
            load(name, &cli.target, cli.quiet, target, Pace::Fixed(rate), l, 10, 1)
        }
        Scenario::Soak(l) => {
            let rate = l.rate.unwrap_or(5_000);
            load(name, &cli.target, cli.quiet, target, Pace::Fixed(rate), l, 600, 10)
        }
        Scenario::IdleConnections(o) => {
            let opts = idle::IdleOptions {
                count: o.count,
                per_process: o.per_process,
                warmup: o.warmup,
                hold: Duration::from_secs(o.hold),
                open_timeout: Duration::from_secs(o.open_timeout),
                settle: Duration::from_secs(o.settle),
                server_pid: o.server_pid,
                linger: Duration::from_secs(o.linger),
                first_source: o.first_source,
            };
            let report = idle::run_parent(&cli.target, &cli.queue, &cli.token, &opts)?;
            let doc = json!({"scenario": name, "target": cli.target, "system": target.system(), "report": report});
            write_report(o.out.as_deref(), &doc)
        }
        Scenario::Slowloris(o) => {
            let Target::Pm { addr, queue, token } = &target else {
                return Err(LoadError::Backend("slowloris targets pm:// only".into()));
            };
            let pm = Pm { addr: addr.clone(), queue: queue.clone(), token: token.clone() };
            let rate = o.load.rate.unwrap_or(5_000);
            let w = workload_of(Pace::Fixed(rate), &o.load, 10, 1)?;
            let opts = hostile::SlowOptions {
                count: o.count,
                mode: o.mode,
                hold: Duration::from_secs(o.hold.max(1)),
                first_source: o.first_source,
                server_pid: o.load.server_pid,
            };
            let report = runtime()?.block_on(hostile::slowloris(pm, w, opts))?;
            let doc = json!({"scenario": name, "target": cli.target, "rate": rate, "report": report});
            write_report(o.load.out.as_deref(), &doc)
        }
        Scenario::Flood(o) => {
            let Target::Pm { addr, queue, token } = &target else {
                return Err(LoadError::Backend("flood targets pm:// only".into()));
            };
            let pm = Pm { addr: addr.clone(), queue: queue.clone(), token: token.clone() };
            let report = runtime()?.block_on(hostile::flood(pm, o.count, o.first_source, o.server_pid))?;
            let doc = json!({"scenario": name, "target": cli.target, "report": report});
            write_report(o.out.as_deref(), &doc)
        }
        Scenario::IdleWorker { count, source, hold } => {
            runtime()?.block_on(idle::run_worker(target, count, source, Duration::from_secs(hold)))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn load(
    name: &str,
    url: &str,
    quiet: bool,
    target: Target,
    pace: Pace,
    l: Load,
    default_duration: u64,
    default_interval: u64,
) -> Result<(), LoadError> {
    let w = workload_of(pace, &l, default_duration, default_interval)?;
    let show_progress = !quiet && std::io::stderr().is_terminal();
    let progress = show_progress.then(progress_line);
    let rt = runtime()?;
    let outcome = match &target {
        Target::Pm { addr, queue, token } => {
            let pm = Pm { addr: addr.clone(), queue: queue.clone(), token: token.clone() };
            rt.block_on(workload::run(Arc::new(pm), w.clone(), progress))
        }
        // Leftovers of an earlier run would be delivered in this one, with stamps from another clock.
        Target::Redis { addr, stream } => rt.block_on(async {
            let r = redis::Redis::new(addr, stream);
            r.reset().await?;
            run_with(r, &w, progress).await
        }),
        Target::Beanstalk { addr, tube } => rt.block_on(async {
            let b = beanstalk::Beanstalk::new(addr, tube);
            b.clear().await?;
            run_with(b, &w, progress).await
        }),
    }?;
    if show_progress {
        eprintln!();
    }
    let doc = report(name, url, &target, &w, &outcome);
    if let Some(path) = &l.plot {
        let title = format!("{name} · {} · {url} · shaded: the measured window", target.system());
        let window = (w.warmup.as_secs_f64(), (w.warmup + w.duration).as_secs_f64());
        std::fs::write(path, plot::svg(&title, &outcome.series, window))?;
    }
    write_report(l.out.as_deref(), &doc)
}

/// The workload the options describe (checked).
fn workload_of(pace: Pace, l: &Load, default_duration: u64, default_interval: u64) -> Result<Workload, LoadError> {
    if l.batch == 0 || l.inflight == 0 || l.ack_batch == 0 || l.ack_inflight == 0 {
        return Err(LoadError::Backend(
            "--batch, --inflight, --ack-batch and --ack-inflight must be at least 1".into(),
        ));
    }
    if l.producers == 0 && l.consumers == 0 {
        return Err(LoadError::Backend("--producers and --consumers cannot both be 0".into()));
    }
    if pace == Pace::Fixed(0) {
        return Err(LoadError::Backend("--rate must be at least 1".into()));
    }
    Ok(Workload {
        pace,
        producers: l.producers,
        consumers: l.consumers,
        batch: l.batch,
        payload: l.payload.max(8),
        warmup: Duration::from_secs(l.warmup),
        duration: Duration::from_secs(l.duration.unwrap_or(default_duration).max(1)),
        drain: Duration::from_secs(l.drain),
        inflight: l.inflight,
        prefetch: l.prefetch,
        ack_batch: l.ack_batch,
        ack_inflight: l.ack_inflight,
        max_tasks: l.max_tasks,
        interval: Duration::from_secs(l.interval.unwrap_or(default_interval).max(1)),
        server_pid: l.server_pid,
    })
}

async fn run_with<B: Backend>(b: B, w: &Workload, progress: Option<workload::OnTick>) -> Result<Outcome, LoadError> {
    workload::run(Arc::new(b), w.clone(), progress).await
}

/// One line on stderr, rewritten every interval.
fn progress_line() -> workload::OnTick {
    Box::new(|p: &Point, n: &Counters| {
        let t = n.totals();
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r{:>6.1}s  submitted {:>9.0}/s  acked {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}   ",
            p.t,
            p.submitted_per_s,
            p.acked_per_s,
            p.latency_ms.p50,
            p.latency_ms.p99,
            t.submit_errors + t.ack_errors
        );
        let _ = e.flush();
    })
}

fn report(name: &str, url: &str, target: &Target, w: &Workload, o: &Outcome) -> serde_json::Value {
    let secs = w.duration.as_secs_f64();
    json!({
        "scenario": name,
        "target": url,
        "system": target.system(),
        "config": {
            "rate": match w.pace { Pace::Max => None, Pace::Fixed(r) => Some(r) },
            "producers": w.producers, "consumers": w.consumers, "batch": w.batch, "payload": w.payload,
            "warmup_s": w.warmup.as_secs(), "duration_s": w.duration.as_secs(), "drain_s": w.drain.as_secs(),
            "inflight": w.inflight, "prefetch": w.prefetch, "ack_batch": w.ack_batch, "ack_inflight": w.ack_inflight,
            "max_tasks": w.max_tasks, "interval_s": w.interval.as_secs(), "server_pid": w.server_pid,
        },
        "submitted_per_s": o.n.submitted_win as f64 / secs,
        "acked_per_s": o.n.acked_win as f64 / secs,
        "totals": o.n,
        "unacked_at_end": o.n.submitted.saturating_sub(o.n.acked),
        "stopped_by_max_tasks": o.hit_max_tasks,
        "latency_ms": Quantiles::of(&o.latency),
        "submit_rtt_ms": Quantiles::of(&o.submit_rtt),
        "send_late_ms": Quantiles::of(&o.send_late),
        "elapsed_s": o.elapsed_s,
        "series": o.series,
    })
}

fn write_report(path: Option<&std::path::Path>, doc: &serde_json::Value) -> Result<(), LoadError> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| LoadError::Backend(e.to_string()))? + "\n";
    match path {
        Some(p) => std::fs::write(p, text)?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_scheme() {
        assert!(matches!(Target::parse_test("127.0.0.1:7070", "q"), Ok(Target::Pm { .. })));
        assert!(matches!(Target::parse_test("pm://h:1", "q"), Ok(Target::Pm { .. })));
        assert!(matches!(Target::parse_test("redis://h:1", "q"), Ok(Target::Redis { .. })));
        assert!(matches!(Target::parse_test("beanstalk://h:1", "q"), Ok(Target::Beanstalk { .. })));
        assert!(Target::parse_test("kafka://h:1", "q").is_err());
        assert!(Target::parse_test("pm://", "q").is_err());
        assert!(Target::parse_test("redis://h:1/0", "q").is_err());
        assert_eq!(Target::parse_test("redis://h:1", "q").map(|t| t.addr().to_string()), Ok("h:1".to_string()));
    }

    fn load_of(args: &[&str]) -> Load {
        let mut all = vec!["pm-loadtest", "max-rate"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).map(|c| c.scenario) {
            Ok(Scenario::MaxRate(l)) => l,
            other => panic!("max-rate expected: {other:?}"),
        }
    }

    #[test]
    fn one_side_of_the_workload_may_be_absent_but_not_both() {
        let producers_only = workload_of(Pace::Max, &load_of(&["--consumers", "0"]), 10, 1);
        assert!(producers_only.is_ok_and(|w| w.consumers == 0 && w.producers == 4));
        let consumers_only = workload_of(Pace::Max, &load_of(&["--producers", "0", "--max-tasks", "5"]), 10, 1);
        assert!(consumers_only.is_ok_and(|w| w.producers == 0 && w.max_tasks == 5));
        let neither = workload_of(Pace::Max, &load_of(&["--producers", "0", "--consumers", "0"]), 10, 1);
        assert!(neither.is_err_and(|e| e.to_string().contains("both be 0")));
        assert!(workload_of(Pace::Max, &load_of(&["--batch", "0"]), 10, 1).is_err());
    }
}
