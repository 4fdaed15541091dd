//! Frame codec: encode and decode a `Submit` of 64 tasks × 256-byte payloads (one producer batch), and a
//! `Leased` push of the same size, through `FrameCodec`.
//!
//! Run: `cargo bench -p pm-bench --bench codec`.

// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pm_protocol::pb::{Leased, LeasedTask, Submit, TaskSpec};
use pm_protocol::{Envelope, FrameCodec};
use tokio_util::codec::{Decoder, Encoder};

fn submit() -> Envelope {
    let tasks = (0..64)
        .map(|i| TaskSpec { payload: Bytes::from(vec![i as u8; 256]), queue: "bench".into(), ..Default::default() })
        .collect();
    Submit { request_id: 1, tasks, failover: false, notify: false }.into()
}

fn leased() -> Envelope {
    let tasks = (0..64u64)
        .map(|i| LeasedTask {
            task_id: i,
            lease_id: i * 7,
            attempt: 1,
            deadline_unix_ms: 1_800_000_000_000,
            payload: Bytes::from(vec![i as u8; 256]),
            queue: "bench".into(),
            key: String::new(),
            max_attempts: 5,
        })
        .collect();
    Leased { tasks }.into()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(64));
    for (name, env) in [("submit_64x256", submit()), ("leased_64x256", leased())] {
        g.bench_function(format!("encode/{name}"), |b| {
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                buf.clear();
                codec.encode(&env, &mut buf).expect("encode");
            })
        });
        let mut wire = BytesMut::new();
        FrameCodec::default().encode(&env, &mut wire).expect("encode");
        g.bench_function(format!("decode/{name}"), |b| {
            let mut codec = FrameCodec::default();
            b.iter_batched(
                || wire.clone(),
                |mut buf| codec.decode(&mut buf).expect("decode").expect("one frame"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
