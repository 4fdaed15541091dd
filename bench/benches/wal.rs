//! The store's append path: one batch of 64 Enqueue records with 256-byte bodies, our WAL vs sled, with
//! `fsync always` (append + sync per batch: what one lone commit group costs) and `none` (append only).
//!
//! Run: `cargo bench -p pm-bench --bench wal`. Throughput is reported in records per second.
//! Each timed batch is acked afterwards, untimed, and the store maintained every 256 batches, so the
//! WAL's disk use stays bounded however many iterations criterion picks.

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pm_scheduler::store::sled_store::SledStore;
use pm_scheduler::store::wal::{Wal, WalOptions};
use pm_scheduler::store::{Record, TaskStore};

const BATCH: u64 = 64;
const BODY: usize = 256;

fn open(backend: &str, dir: &Path) -> Box<dyn TaskStore> {
    match backend {
        "wal" => Box::new(Wal::open(dir, WalOptions::default()).expect("open wal").0),
        _ => Box::new(SledStore::open(dir, 100_000).expect("open sled").0),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn append(c: &mut Criterion) {
    let body = Bytes::from(vec![b'x'; BODY]);
    let mut group = c.benchmark_group("store_append_64x256B");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for backend in ["wal", "sled"] {
        for fsync in ["always", "none"] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut store = open(backend, dir.path());
            let mut next_id = 1u64;
            group.bench_function(BenchmarkId::new(backend, format!("fsync_{fsync}")), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let ids = next_id..next_id + BATCH;
                        next_id += BATCH;
                        let batch: Vec<Record> = ids
                            .clone()
                            .map(|task_id| Record::Enqueue { task_id, body: body.clone(), idempotency: None })
                            .collect();
                        let started = Instant::now();
                        store.append(&batch).expect("append");
                        if fsync == "always" {
                            store.sync().expect("sync");
                        }
                        timed += started.elapsed();
                        let acks: Vec<Record> = ids.map(|task_id| Record::Ack { task_id }).collect();
                        store.append(&acks).expect("ack");
                        if next_id % (256 * BATCH) == 1 {
                            while store.maintain(now_ms()).expect("maintain") == pm_scheduler::store::Upkeep::Pending {}
                        }
                    }
                    timed
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
