//! The agent's own per-task cost, isolated from the scheduler: a one-step `exit 0` pipeline run through
//! `Runner::run` (with the task directory created and removed, as the agent does), on the local executor and
//! on a `pod` executor over a unix socket, interleaved with the baseline: spawning `sh -c 'exit 0'` directly
//! and waiting for it. Overhead = median(runner) − median(baseline). One current-thread runtime, as in
//! `pm-agent`.
//!
//! ```text
//! cargo run --release -p pm-bench --example agent_overhead -- --iterations 2000
//! ```

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use pm_agent::executor::Executors;
use pm_agent::runner::{task_dir, Runner};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
struct Args {
    /// Rounds; each runs the baseline, the local runner and the pod runner once.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Rounds run first and not counted.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

async fn timed<F: std::future::Future<Output = bool>>(f: F) -> Duration {
    let t = Instant::now();
    let ok = f.await;
    assert!(ok, "a run failed");
    t.elapsed()
}

async fn run(runner: &Runner, root: &Path, id: u64) -> bool {
    let task =
        pm_task::pipeline::parse_task(br#"{"pipeline":[{"executorName":"x","commands":["exit 0"]}]}"#).expect("task");
    let dir = task_dir(root, id);
    let r = runner.run(&task, &dir, id, &CancellationToken::new(), None).await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    r.ok
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let tmp = tempfile::tempdir()?;
        let sock = tmp.path().join(".pm/x.sock");
        let listener = pm_agent::exec_server::pod::bind(&sock).await?;
        tokio::spawn(pm_agent::exec_server::pod::serve("x", listener, CancellationToken::new()));
        let local = Runner::new(Executors::all_local(), 4096);
        let pod = Runner::new(
            Executors::parse(None, Some(tmp.path().join(".pm"))).map_err(std::io::Error::other)?,
            4096,
        );
        let (mut base, mut loc, mut pods) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..args.warmup + args.iterations {
            let b = timed(async {
                let s = tokio::process::Command::new("sh").args(["-c", "exit 0"]).stdin(Stdio::null()).status().await;
                s.map(|s| s.success()).unwrap_or(false)
            })
            .await;
            let l = timed(run(&local, tmp.path(), i as u64)).await;
            let p = timed(run(&pod, tmp.path(), i as u64)).await;
            if i >= args.warmup {
                base.push(b);
                loc.push(l);
                pods.push(p);
            }
        }
        let (b50, l50, p50) = (pct(&mut base, 0.5), pct(&mut loc, 0.5), pct(&mut pods, 0.5));
        let (b90, l90, p90) = (pct(&mut base, 0.9), pct(&mut loc, 0.9), pct(&mut pods, 0.9));
        println!(
            "{{\"iterations\":{},\"baseline_sh_ms\":{{\"p50\":{b50:.3},\"p90\":{b90:.3}}},\"local_ms\":{{\"p50\":{l50:.3},\"p90\":{l90:.3}}},\"pod_ms\":{{\"p50\":{p50:.3},\"p90\":{p90:.3}}},\"overhead_local_p50_ms\":{:.3},\"overhead_pod_p50_ms\":{:.3}}}",
            args.iterations,
            l50 - b50,
            p50 - b50
        );
        Ok(())
    })
}
