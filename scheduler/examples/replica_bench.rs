//! Consensus-layer benchmark: three nodes' replica drivers in one process, each with its raft log on this
//! machine's disk, wired by channels. It measures what replication costs before any network: entries
//! committed per second (each held durably by a majority, one `fdatasync` per writer group) and the latency
//! from proposal to commit.
//!
//! ```sh
//! cargo run --release -p pm-scheduler --example replica_bench -- --partitions 8 --window 16 --entry-bytes 16384
//! ```
//! An entry stands for one shard round's records (64 tasks of 256 B ≈ 16 KiB); `--window` proposals are kept
//! in flight per partition. Results: docs/benchmarks.md, "Replication".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use parking_lot::Mutex;
use pm_scheduler::replica::{Event, ReplicaConfig, ReplicaHandle, Replicas, StateMachine, Timing, Transport};
use raft::eraftpb::{Entry, Message};

#[derive(Parser)]
struct Args {
    /// Partitions, each a group of the three nodes.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Proposals in flight per partition.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Bytes per entry.
    #[arg(long, default_value_t = 16384)]
    entry_bytes: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Where the raft logs go (a temporary directory under it).
    #[arg(long, default_value = "/var/tmp")]
    dir: std::path::PathBuf,
}

type Net = Arc<Mutex<BTreeMap<u64, ReplicaHandle>>>;

struct Wire(Net);

impl Transport for Wire {
    fn send(&self, partition: u32, msg: Message) {
        if let Some(h) = self.0.lock().get(&msg.to) {
            h.send(Event::Message { partition, msg });
        }
    }
}

struct Discard;

impl StateMachine for Discard {
    fn applied(&self, _: u32) -> u64 {
        0
    }
    fn apply(&mut self, _: u32, _: &Entry) {}
    fn leader(&mut self, _: u32, _: u64, _: u64) {}
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir_in(&args.dir).expect("temporary directory");
    let net = Net::default();
    let nodes: Vec<Replicas> = (1..=3u64)
        .map(|id| {
            let config = ReplicaConfig {
                id,
                partitions: (0..args.partitions).map(|p| (p, vec![1, 2, 3])).collect(),
                dir: dir.path().join(format!("node-{id}")),
                segment_bytes: 64 << 20,
                tick: Duration::from_millis(50),
                timing: Timing::default(),
                identity: "replica_bench".into(),
            };
            let r = Replicas::start(config, Wire(net.clone()), Discard).expect("start");
            net.lock().insert(id, r.handle());
            r
        })
        .collect();
    // Wait until every partition has a leader.
    let leaders: Vec<ReplicaHandle> = (0..args.partitions)
        .map(|p| loop {
            let l = nodes[0].handle().status().iter().find(|s| s.partition == p).map_or(0, |s| s.leader);
            if l != 0 {
                break nodes[(l - 1) as usize].handle();
            }
            std::thread::sleep(Duration::from_millis(10));
        })
        .collect();
    let (tx, rx) = crossbeam_channel::unbounded::<(u32, Instant, bool)>();
    let payload = Bytes::from(vec![7u8; args.entry_bytes]);
    let propose = |p: u32| {
        let tx = tx.clone();
        let sent = Instant::now();
        leaders[p as usize].propose(
            p,
            payload.clone(),
            Box::new(move |r| {
                let _ = tx.send((p, sent, r.is_ok()));
            }),
        );
    };
    for p in 0..args.partitions {
        for _ in 0..args.window {
            propose(p);
        }
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let (warmup, end) =
        (Instant::now() + Duration::from_secs(2), Instant::now() + Duration::from_secs(2 + args.duration));
    let (mut committed, mut failed) = (0u64, 0u64);
    let mut started = None;
    while let Ok((p, sent, ok)) = rx.recv_timeout(Duration::from_secs(5)) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= warmup {
            started.get_or_insert(now);
            if ok {
                committed += 1;
                let _ = hist.record(sent.elapsed().as_micros() as u64);
            } else {
                failed += 1;
            }
        }
        propose(p);
    }
    let secs = started.map_or(1.0, |t| t.elapsed().as_secs_f64());
    println!(
        "partitions {} window {} entry {} B: {:.0} entries/s committed ({:.1} MB/s), {} failed, commit latency p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms",
        args.partitions,
        args.window,
        args.entry_bytes,
        committed as f64 / secs,
        committed as f64 * args.entry_bytes as f64 / secs / 1e6,
        failed,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
    );
    drop(nodes);
}
