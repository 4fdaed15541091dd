//! Raw throughput of the group-commit path: records per second through one `Committer`, fed by several
//! submitting threads (as shard actors would), each keeping a bounded number of jobs in flight.
//!
//! ```text
//! cargo run --release -p pm-bench --example commit_throughput -- [wal|sled] [always|none|batch=<n>ms]
//!     [threads=4] [jobs=2000] [records=64] [body=256] [inflight=8]
//! ```
//! Prints one line: backend, mode, records, seconds, records/s, and the mean records per commit group.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pm_scheduler::store::committer::Committer;
use pm_scheduler::store::sled_store::SledStore;
use pm_scheduler::store::wal::{Wal, WalOptions};
use pm_scheduler::store::{BodyReader, FsyncMode, Record, StoreError, StoreStats, TaskStore, Upkeep};

/// Counts appends and syncs, to report the mean group size.
struct Counting {
    inner: Box<dyn TaskStore>,
    counts: Arc<Mutex<(u64, u64)>>,
}

impl TaskStore for Counting {
    fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.counts.lock().expect("lock").0 += records.len() as u64;
        self.inner.append(records)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.counts.lock().expect("lock").1 += 1;
        self.inner.sync()
    }
    fn maintain(&mut self, now_unix_ms: u64) -> Result<Upkeep, StoreError> {
        self.inner.maintain(now_unix_ms)
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
    fn body_reader(&self) -> Arc<dyn BodyReader> {
        self.inner.body_reader()
    }
}

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .filter_map(|a| a.strip_prefix(&format!("{name}=")).and_then(|v| v.parse().ok()))
        .next()
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = if args.iter().any(|a| a == "sled") { "sled" } else { "wal" };
    let mode = if args.iter().any(|a| a == "none") {
        FsyncMode::None
    } else if let Some(ms) = args.iter().find_map(|a| a.strip_prefix("batch=").filter(|_| a.ends_with("ms"))) {
        FsyncMode::Batch(Duration::from_millis(ms.trim_end_matches("ms").parse().expect("batch=<n>ms")))
    } else {
        FsyncMode::Always
    };
    let (threads, jobs, batch, body_len, inflight) =
        (arg("threads", 4), arg("jobs", 2000), arg("records", 64), arg("body", 256) as usize, arg("inflight", 8));

    let dir = tempfile::tempdir().expect("tempdir");
    let inner: Box<dyn TaskStore> = match backend {
        "wal" => Box::new(Wal::open(dir.path(), WalOptions::default()).expect("open wal").0),
        _ => Box::new(SledStore::open(dir.path(), 100_000).expect("open sled").0),
    };
    let counts = Arc::new(Mutex::new((0, 0)));
    let committer = Committer::start(Box::new(Counting { inner, counts: counts.clone() }), mode);
    let body = Bytes::from(vec![b'x'; body_len]);
    let failed = Arc::new(AtomicUsize::new(0));

    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (handle, body, failed) = (committer.handle(), body.clone(), failed.clone());
            s.spawn(move || {
                let (tx, rx) = mpsc::channel();
                let mut in_flight = 0;
                for j in 0..jobs {
                    if in_flight == inflight {
                        rx.recv().expect("completion");
                        in_flight -= 1;
                    }
                    let first = (t * jobs + j) * batch + 1;
                    let records = (first..first + batch)
                        .map(|task_id| Record::Enqueue { task_id, body: body.clone(), idempotency: None })
                        .collect();
                    let (tx, failed) = (tx.clone(), failed.clone());
                    handle.submit(
                        records,
                        Box::new(move |r| {
                            if r.is_err() {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = tx.send(());
                        }),
                    );
                    in_flight += 1;
                }
                for _ in 0..in_flight {
                    rx.recv().expect("completion");
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    committer.shutdown();
    let records = threads * jobs * batch;
    let (appended, syncs) = *counts.lock().expect("lock");
    let per_group = if syncs > 0 { appended as f64 / syncs as f64 } else { f64::NAN };
    println!(
        "{backend} {mode:?}: {records} records in {secs:.2} s = {:.0} records/s, {per_group:.0} records per sync, {} failed jobs",
        records as f64 / secs,
        failed.load(Ordering::Relaxed)
    );
}
