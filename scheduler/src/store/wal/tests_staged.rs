//! The staged replay of `staged.rs` against the plain one: for random logs, the live set after each segment
//! must be the same, whichever way the records were applied.

use super::format::{Entry, IdemRef};
use super::live::LiveSet;

/// What a live set holds, in an order that does not depend on its maps.
fn snapshot(live: &LiveSet) -> String {
    let mut tasks: Vec<_> =
        live.tasks.iter().map(|(id, t)| (*id, t.seg, t.off, t.size, t.attempts, t.dead.clone())).collect();
    tasks.sort_by_key(|t| t.0);
    let mut results: Vec<_> = live.results.iter().map(|(id, r)| (*id, r.seg, r.off, r.expires_unix_ms)).collect();
    results.sort_by_key(|r| r.0);
    let mut keys: Vec<_> = live.keys.iter().map(|(k, v)| (k.clone(), v.task_id, v.seg, v.off)).collect();
    keys.sort();
    format!("{tasks:?}\n{results:?}\n{keys:?}\n{:?}\n{}", live.usage, live.max_task_id)
}

#[test]
fn a_staged_replay_ends_where_the_log_order_does() {
    use rand::{Rng, SeedableRng};
    for seed in 0..20u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (mut direct, mut staged) = (LiveSet::default(), LiveSet::default());
        for live in [&mut direct, &mut staged] {
            live.max_results = 5;
        }
        staged.stage();
        let mut next_id = 1u64;
        let keys: Vec<String> = (0..8).map(|k| format!("key-{k}")).collect();
        for seg in 0..6u64 {
            for live in [&mut direct, &mut staged] {
                live.add_segment(seg);
            }
            for off in 0..300u64 {
                // Mostly enqueues, then records of recent or older tasks (some long gone, some never seen).
                let id = next_id.saturating_sub(rng.gen_range(1..40));
                let key = &keys[rng.gen_range(0..keys.len())];
                let idem = rng.gen_bool(0.2).then_some(IdemRef { key, expires_unix_ms: 1_000 + off });
                let entry = match rng.gen_range(0..12) {
                    0..=4 => {
                        next_id += 1;
                        Entry::Enqueue { task_id: next_id - 1, idem, body: b"b" }
                    }
                    5 => Entry::Attempt { task_id: id, attempts: rng.gen_range(1..4) },
                    6 => Entry::Ack { task_id: id },
                    7 => Entry::DeadLetter { task_id: id, reason: "no" },
                    8 => Entry::Redrive { task_id: id },
                    9 => Entry::Snapshot { task_id: id, attempts: 2, dead: None, idem, body: b"s" },
                    10 => Entry::Finish { task_id: id, expires_unix_ms: 5_000 + off, body: b"f" },
                    _ => Entry::KeyCarry { task_id: id, idem: IdemRef { key, expires_unix_ms: 9_000 } },
                };
                let size = 20 + rng.gen_range(0..50);
                for live in [&mut direct, &mut staged] {
                    live.apply(&entry, seg, off * 100, size);
                    live.trim();
                }
            }
            staged.flush_staged();
            assert_eq!(snapshot(&staged), snapshot(&direct), "seed {seed}, after segment {seg}");
        }
        staged.unstage();
        assert_eq!(snapshot(&staged), snapshot(&direct), "seed {seed}");
    }
}
