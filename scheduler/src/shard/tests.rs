//! Shard tests against a real committer and WAL: cancellation of ready, delayed and leased tasks, what the
//! agent and the canceller see, durability across a reopen, and a cancellation that fails to persist;
//! reclaiming leases after a restart, and the reclaim grace that holds recovered tasks for their agents;
//! new tasks leased while their sync runs, and taken back when that sync fails.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pm_protocol::pb::{self, TaskSpec, TaskState};
use pm_protocol::{ErrorCode, Kind};

use super::{Shard, ShardConfig, ShardHandle, ShardMsg};
use crate::outbox::{self, OutRx, OutTx, Outbound, Part};
use crate::store::committer::Committer;
use crate::store::wal::{Wal, WalOptions};
use crate::store::{BodyReader, FsyncMode, Record, Recovered, StoreError, StoreStats, TaskStore, Upkeep};

const AGENT: u64 = 7;

/// A WAL whose appends fail while `fail` is set (nothing of the failed batch is written), whose syncs wait
/// while `hold_sync` is set, and fail (after syncing) while `fail_sync` is set; its bodies cannot be read
/// back while `fail_reads` is set.
struct Flaky {
    inner: Wal,
    pub(super) fail: Arc<AtomicBool>,
    hold_sync: Arc<AtomicBool>,
    fail_sync: Arc<AtomicBool>,
    fail_reads: Arc<AtomicBool>,
}

/// [`Flaky`]'s body reader.
#[derive(Debug)]
struct FlakyBodies {
    inner: Arc<dyn BodyReader>,
    fail: Arc<AtomicBool>,
}

impl BodyReader for FlakyBodies {
    fn read_body(&self, task_id: u64) -> Result<Option<bytes::Bytes>, StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Io { path: "flaky".into(), source: std::io::Error::from_raw_os_error(5) });
        }
        self.inner.read_body(task_id)
    }
}

impl TaskStore for Flaky {
    fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::NoSpace { path: "flaky".into() });
        }
        self.inner.append(records)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        while self.hold_sync.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.inner.sync()?;
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(StoreError::Io { path: "flaky".into(), source: std::io::Error::from_raw_os_error(5) });
        }
        Ok(())
    }
    fn maintain(&mut self, now_unix_ms: u64) -> Result<Upkeep, StoreError> {
        self.inner.maintain(now_unix_ms)
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }

    fn body_reader(&self) -> Arc<dyn BodyReader> {
        Arc::new(FlakyBodies { inner: self.inner.body_reader(), fail: self.fail_reads.clone() })
    }
}

fn open_wal(dir: &Path) -> (Wal, Recovered) {
    let opts = WalOptions {
        segment_bytes: 64 << 10,
        max_record_bytes: 16 << 10,
        compact_live_ratio: 0.25,
        ..WalOptions::default()
    };
    Wal::open(dir, opts).unwrap_or_else(|e| panic!("open: {e}"))
}

pub(super) struct Harness {
    pub(super) shard: ShardHandle,
    committer: Option<Committer>,
    fail: Arc<AtomicBool>,
    hold_sync: Arc<AtomicBool>,
    fail_sync: Arc<AtomicBool>,
    pub(super) fail_reads: Arc<AtomicBool>,
    pub(super) out: OutTx,
    rx: OutRx,
    agent_out: OutTx,
    agent_rx: OutRx,
    next_request: u64,
}

impl Harness {
    pub(super) fn start(dir: &Path) -> (Harness, Recovered) {
        Self::start_with_grace(dir, Duration::ZERO)
    }

    fn start_with_grace(dir: &Path, reclaim_grace: Duration) -> (Harness, Recovered) {
        Self::start_with(dir, reclaim_grace, false)
    }

    fn start_with(dir: &Path, reclaim_grace: Duration, lease_after_sync: bool) -> (Harness, Recovered) {
        let (wal, rec) = open_wal(dir);
        let fail = Arc::new(AtomicBool::new(false));
        let (hold_sync, fail_sync) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let fail_reads = Arc::new(AtomicBool::new(false));
        let flaky = Flaky {
            inner: wal,
            fail: fail.clone(),
            hold_sync: hold_sync.clone(),
            fail_sync: fail_sync.clone(),
            fail_reads: fail_reads.clone(),
        };
        let bodies = flaky.body_reader();
        let committer = Committer::start(Box::new(flaky), FsyncMode::Always);
        let cfg = ShardConfig {
            default_lease: Duration::from_secs(30),
            default_max_attempts: 3,
            idempotency_window: Duration::from_secs(60),
            max_frame_bytes: 1 << 20,
            disconnect_grace: Duration::ZERO,
            reclaim_grace,
            steal: None,
            lease_prefix: 0,
            result_retention: Duration::from_secs(60),
            lease_after_sync,
            results_budget: Arc::new(crate::shard::ResultsBudget::new(1000, 1 << 20, 1)),
            max_result_bytes: 1024,
            queue_limits: Default::default(),
            siblings: Default::default(),
            paused: Arc::new(crate::paused::PausedQueues::open(dir).unwrap()),
            bodies,
            // None kept in memory: every lease, status and follow-up here reads its payload back from the log.
            resident_payload_bytes: 0,
        };
        let next_id = Arc::new(AtomicU64::new(rec.max_task_id + 1));
        let shard =
            Shard::spawn(0, 1, cfg, committer.handle(), next_id, rec.tasks.clone(), Vec::new(), rec.results.clone());
        let (out, rx) = outbox::channel();
        let (agent_out, agent_rx) = outbox::channel();
        let h = Harness {
            shard,
            committer: Some(committer),
            fail,
            hold_sync,
            fail_sync,
            fail_reads,
            out,
            rx,
            agent_out,
            agent_rx,
            next_request: 1,
        };
        (h, rec)
    }

    pub(super) fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    pub(super) async fn part(&mut self, request_id: u64) -> Part {
        let msg = tokio::time::timeout(Duration::from_secs(5), self.rx.recv()).await.expect("no reply").expect("open");
        match msg {
            Outbound::Part { request_id: id, part } if id == request_id => part,
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn agent_frame(&mut self) -> Kind {
        let msg = tokio::time::timeout(Duration::from_secs(5), self.agent_rx.recv())
            .await
            .expect("nothing sent to the agent")
            .expect("open");
        match msg {
            Outbound::Frame(pm_protocol::Envelope { kind: Some(k) }) => k,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub(super) async fn submit(&mut self, specs: Vec<TaskSpec>) -> Vec<u64> {
        let request_id = self.request_id();
        let items = specs.into_iter().enumerate().collect();
        self.shard.send(ShardMsg::Submit { out: self.out.clone(), request_id, items, notify: false });
        match self.part(request_id).await {
            Part::Submit(results) => results
                .into_iter()
                .map(|(_, r)| {
                    assert_eq!(r.code, ErrorCode::Ok as i32, "{r:?}");
                    r.task_id
                })
                .collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn cancel(&mut self, ids: &[u64]) -> Vec<(usize, ErrorCode)> {
        let request_id = self.request_id();
        let items = ids.iter().copied().enumerate().collect();
        self.shard.send(ShardMsg::Cancel { out: self.out.clone(), request_id, items });
        match self.part(request_id).await {
            Part::Cancel(mut codes) => {
                codes.sort_by_key(|(i, _)| *i);
                codes
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    pub(super) async fn stats(&mut self) -> pb::QueueStats {
        let request_id = self.request_id();
        self.shard.send(ShardMsg::Stats { out: self.out.clone(), request_id });
        match self.part(request_id).await {
            Part::Stats(queues) => queues.into_iter().find(|q| q.queue == "q").expect("queue q"),
            other => panic!("unexpected {other:?}"),
        }
    }

    pub(super) fn credit(&self, n: u32) {
        self.shard.send(ShardMsg::Credit {
            conn: AGENT,
            out: self.agent_out.clone(),
            queue: "q".into(),
            n,
            set: false,
            peer: false,
            executors: None,
            holdings: None,
        });
    }

    pub(super) async fn leased(&mut self) -> pb::LeasedTask {
        match self.agent_frame().await {
            Kind::Leased(l) => l.tasks.into_iter().next().expect("one task"),
            other => panic!("expected Leased, got {other:?}"),
        }
    }

    pub(super) async fn lease_op(&mut self, msg: impl FnOnce(OutTx, u64) -> ShardMsg) -> ErrorCode {
        let request_id = self.request_id();
        self.shard.send(msg(self.out.clone(), request_id));
        match self.part(request_id).await {
            Part::Lease(codes) => codes[0].1,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Sends a Reclaim of `(task id, attempt, lease id)` items from agent connection `conn`; returns this
    /// shard's answer (ids it does not hold are left out).
    async fn reclaim(&mut self, conn: u64, items: &[(u64, u32, u64)]) -> Vec<(usize, pb::ReclaimResult)> {
        let request_id = self.request_id();
        let items = items
            .iter()
            .map(|&(task_id, attempt, lease_id)| pb::ReclaimItem { task_id, attempt, lease_id })
            .enumerate()
            .collect();
        self.shard.send(ShardMsg::Reclaim { conn, out: self.out.clone(), request_id, items, holdings: None });
        match self.part(request_id).await {
            Part::Reclaim(results) => results,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Stops the committer (everything durable) and reopens the WAL: what a restart would recover.
    pub(super) fn reopen(mut self, dir: &Path) -> Recovered {
        if let Some(c) = self.committer.take() {
            c.shutdown();
        }
        open_wal(dir).1
    }
}

pub(super) fn spec(payload: &str, priority: i32, delay_ms: u64) -> TaskSpec {
    TaskSpec { payload: Bytes::from(payload.to_string()), queue: "q".into(), priority, delay_ms, ..Default::default() }
}

#[tokio::test]
async fn cancel_removes_ready_delayed_and_leased_tasks_durably_and_revokes_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    let ids = h.submit(vec![spec("leased", 10, 0), spec("ready", 0, 0), spec("delayed", 0, 60_000)]).await;
    let (leased_id, ready_id, delayed_id) = (ids[0], ids[1], ids[2]);
    let kept = h.submit(vec![spec("kept", 0, 0)]).await[0];
    h.credit(1);
    let lease = h.leased().await;
    assert_eq!(lease.task_id, leased_id, "the higher priority is leased first");

    let codes = h.cancel(&[ready_id, 999_999, delayed_id, leased_id, ready_id]).await;
    // The unknown id is not this shard's to answer (the merged reply defaults to NOT_FOUND); a repeated id
    // is already cancelled.
    assert_eq!(codes, vec![(0, ErrorCode::Ok), (2, ErrorCode::Ok), (3, ErrorCode::Ok), (4, ErrorCode::NotFound)]);
    match h.agent_frame().await {
        Kind::Revoke(r) => {
            assert_eq!((r.lease_id, r.task_id), (lease.lease_id, leased_id));
            assert_eq!(r.reason, "cancelled");
        }
        other => panic!("expected Revoke, got {other:?}"),
    }
    // The revoked lease is stale, like any other: ack, nack and extend are refused.
    let lease_id = lease.lease_id;
    let ack = h.lease_op(|out, request_id| ack(out, request_id, lease_id)).await;
    assert_eq!(ack, ErrorCode::StaleLease);
    let nack_item =
        pb::NackItem { lease_id, retry_after_ms: 0, reason: String::new(), released: false, ..Default::default() };
    let nack = h.lease_op(|out, request_id| ShardMsg::Nack { out, request_id, items: vec![(0, nack_item)] }).await;
    assert_eq!(nack, ErrorCode::StaleLease);
    let ext = h
        .lease_op(|out, request_id| ShardMsg::Extend { out, request_id, items: vec![(0, lease_id)], extend_ms: 0 })
        .await;
    assert_eq!(ext, ErrorCode::StaleLease);

    let q = h.stats().await;
    assert_eq!((q.ready, q.delayed, q.leased, q.dead), (1, 0, 0, 0), "only the kept task is left: {q:?}");
    // Cancelled tasks are gone once durable: a second cancel does not find them (no answer from the shard,
    // so NOT_FOUND in the merged reply).
    assert_eq!(h.cancel(&[leased_id, delayed_id]).await, vec![]);
    // The next credit gets the kept task, never a cancelled one.
    h.credit(5);
    assert_eq!(h.leased().await.task_id, kept);

    let rec = h.reopen(dir.path());
    let live: Vec<u64> = rec.tasks.iter().map(|t| t.task_id).collect();
    assert_eq!(live, vec![kept], "a cancelled task must not come back after a restart");
}

#[tokio::test]
async fn cancelled_tasks_stay_cancelled_after_a_restart_of_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    let ids = h.submit(vec![spec("a", 0, 0), spec("b", 0, 0)]).await;
    assert_eq!(h.cancel(&[ids[0]]).await, vec![(0, ErrorCode::Ok)]);
    drop(h.reopen(dir.path()));

    let (mut h, rec) = Harness::start(dir.path());
    assert_eq!(rec.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(), vec![ids[1]]);
    assert_eq!(h.cancel(&[ids[0]]).await, vec![], "an id the shard does not hold gets no answer from it");
    h.credit(2);
    assert_eq!(h.leased().await.task_id, ids[1]);
    let q = h.stats().await;
    assert_eq!((q.ready, q.leased), (0, 1));
}

#[tokio::test]
async fn a_cancellation_that_fails_to_persist_leaves_the_task_live() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    let id = h.submit(vec![spec("a", 0, 0)]).await[0];
    h.fail.store(true, Ordering::SeqCst);
    assert_eq!(h.cancel(&[id]).await, vec![(0, ErrorCode::StoreFull)]);
    h.fail.store(false, Ordering::SeqCst);
    let q = h.stats().await;
    assert_eq!(q.ready, 1, "the task is still ready: {q:?}");
    // It can be cancelled once the store works again.
    assert_eq!(h.cancel(&[id]).await, vec![(0, ErrorCode::Ok)]);
    assert!(h.reopen(dir.path()).tasks.is_empty());
}

fn codes(results: &[(usize, pb::ReclaimResult)]) -> Vec<(usize, ErrorCode)> {
    results.iter().map(|(i, r)| (*i, ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal))).collect()
}

async fn extend(h: &mut Harness, lease_id: u64) -> ErrorCode {
    h.lease_op(|out, request_id| ShardMsg::Extend { out, request_id, items: vec![(0, lease_id)], extend_ms: 0 }).await
}

/// Leases every task of `specs` once, then "restarts": returns the leases of the first life and the new
/// harness (with `grace`).
async fn leased_then_restarted(
    dir: &Path,
    specs: Vec<TaskSpec>,
    grace: Duration,
) -> (Vec<pb::LeasedTask>, Harness, Recovered) {
    let (mut h, _) = Harness::start(dir);
    let n = specs.len();
    h.submit(specs).await;
    h.credit(n as u32);
    let mut leases = Vec::new();
    while leases.len() < n {
        match h.agent_frame().await {
            Kind::Leased(l) => leases.extend(l.tasks),
            other => panic!("expected Leased, got {other:?}"),
        }
    }
    // An idle round trip lets the lazy Attempt records reach the log before the committer stops.
    h.stats().await;
    let _ = h.reopen(dir);
    let (h, rec) = Harness::start_with_grace(dir, grace);
    (leases, h, rec)
}

#[tokio::test]
async fn a_recovered_task_is_reclaimed_by_its_attempt_without_counting_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (leases, mut h, rec) =
        leased_then_restarted(dir.path(), vec![spec("a", 0, 0), spec("b", 0, 0)], Duration::ZERO).await;
    assert_eq!(rec.tasks.iter().map(|t| t.attempts).collect::<Vec<_>>(), vec![1, 1]);
    let (a, b) = (&leases[0], &leases[1]);
    assert_eq!((a.attempt, b.attempt), (1, 1));
    // The old lease ids died with the process.
    assert_eq!(extend(&mut h, a.lease_id).await, ErrorCode::StaleLease);

    // Wrong attempt (a stale agent of an older delivery, or a newer one): refused. Unknown id: no answer from
    // this shard (NOT_FOUND in the merged reply).
    let got = h.reclaim(8, &[(a.task_id, 2, a.lease_id), (999_999, 1, 0), (b.task_id, 0, 0)]).await;
    assert_eq!(codes(&got), vec![(0, ErrorCode::StaleLease), (2, ErrorCode::StaleLease)]);

    // The right attempt: leased to the caller under a fresh id, with the task's lease length.
    let before = super::now_unix_ms();
    let got = h.reclaim(8, &[(a.task_id, 1, a.lease_id)]).await;
    assert_eq!(codes(&got), vec![(0, ErrorCode::Ok)]);
    let r = &got[0].1;
    assert_eq!(r.task_id, a.task_id);
    assert_ne!(r.lease_id, a.lease_id);
    assert!(r.deadline_unix_ms >= before + 29_000, "the default lease is 30 s: {r:?}");
    let q = h.stats().await;
    assert_eq!((q.ready, q.leased), (1, 1), "{q:?}");
    assert_eq!(extend(&mut h, r.lease_id).await, ErrorCode::Ok);
    // Asked again (e.g. a second agent with the same memory): it is leased now, so it is not theirs.
    let again = h.reclaim(9, &[(a.task_id, 1, a.lease_id)]).await;
    assert_eq!(codes(&again), vec![(0, ErrorCode::StaleLease)]);
    // A credit gets the other task, never the reclaimed one.
    h.credit(5);
    let next = h.leased().await;
    assert_eq!((next.task_id, next.attempt), (b.task_id, 2));

    let lease_id = r.lease_id;
    let ack = h.lease_op(|out, request_id| ack(out, request_id, lease_id)).await;
    assert_eq!(ack, ErrorCode::Ok);
    // Once acked it is gone: NOT_FOUND-by-silence.
    assert_eq!(codes(&h.reclaim(8, &[(a.task_id, 1, 0)]).await), vec![]);
    // The reclaim wrote no Attempt record: the other task's count moved, this one's never did.
    let rec = h.reopen(dir.path());
    assert_eq!(rec.tasks.iter().map(|t| (t.task_id, t.attempts)).collect::<Vec<_>>(), vec![(b.task_id, 2)]);
}

#[tokio::test]
async fn a_task_leased_to_someone_else_is_not_reclaimed_but_its_own_live_lease_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    let id = h.submit(vec![spec("a", 0, 0)]).await[0];
    h.credit(1);
    let t = h.leased().await;
    // Another agent (or this one with another lease id in mind) cannot take it.
    assert_eq!(codes(&h.reclaim(8, &[(id, 1, 0)]).await), vec![(0, ErrorCode::StaleLease)]);
    assert_eq!(codes(&h.reclaim(8, &[(id, 1, t.lease_id + 1)]).await), vec![(0, ErrorCode::StaleLease)]);
    // The agent holding the lease, reconnected before its lease ended (no restart): the lease moves to the
    // new connection and keeps its id.
    let got = h.reclaim(8, &[(id, 1, t.lease_id)]).await;
    assert_eq!(codes(&got), vec![(0, ErrorCode::Ok)]);
    assert_eq!(got[0].1.lease_id, t.lease_id);
    // The old connection closing now does not end the moved lease.
    h.shard.send(ShardMsg::Disconnected { conn: AGENT });
    assert_eq!(extend(&mut h, t.lease_id).await, ErrorCode::Ok);
    let q = h.stats().await;
    assert_eq!((q.ready, q.leased), (0, 1), "{q:?}");
    // The new connection closing does.
    h.shard.send(ShardMsg::Disconnected { conn: 8 });
    assert_eq!(extend(&mut h, t.lease_id).await, ErrorCode::StaleLease);
    let q = h.stats().await;
    assert_eq!((q.ready, q.leased), (1, 0), "{q:?}");
}

#[tokio::test]
async fn recovered_attempted_tasks_are_held_for_the_reclaim_grace_then_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(600);
    let (leases, mut h, _) =
        leased_then_restarted(dir.path(), vec![spec("held1", 5, 0), spec("held2", 5, 0)], grace).await;
    let started = tokio::time::Instant::now();
    // A task never delivered is not held.
    let fresh = h.submit(vec![spec("fresh", 0, 0)]).await[0];
    h.credit(10);
    let t = h.leased().await;
    assert_eq!((t.task_id, t.attempt), (fresh, 1), "only the never-delivered task goes out during the grace");
    let q = h.stats().await;
    assert_eq!((q.ready, q.delayed, q.leased), (0, 2, 1), "held tasks count as delayed: {q:?}");
    // During the grace a held task can be reclaimed.
    let (a, b) = (&leases[0], &leases[1]);
    let got = h.reclaim(8, &[(a.task_id, a.attempt, a.lease_id)]).await;
    assert_eq!(codes(&got), vec![(0, ErrorCode::Ok)]);
    let q = h.stats().await;
    assert_eq!((q.ready, q.delayed, q.leased), (0, 1, 2), "{q:?}");
    // Nothing more is delivered before the grace ends; then the unclaimed one is, as its next attempt.
    let next = h.leased().await;
    assert!(started.elapsed() >= grace - Duration::from_millis(50), "delivered after {:?}", started.elapsed());
    assert_eq!((next.task_id, next.attempt), (b.task_id, 2));
    // Too late for its first agent now.
    assert_eq!(codes(&h.reclaim(9, &[(b.task_id, 1, b.lease_id)]).await), vec![(0, ErrorCode::StaleLease)]);
    let q = h.stats().await;
    assert_eq!((q.ready, q.delayed, q.leased), (0, 0, 3), "{q:?}");
}

#[tokio::test]
async fn a_held_task_can_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let (leases, mut h, _) = leased_then_restarted(dir.path(), vec![spec("held", 0, 0)], Duration::from_secs(60)).await;
    let id = leases[0].task_id;
    assert_eq!(h.cancel(&[id]).await, vec![(0, ErrorCode::Ok)]);
    let q = h.stats().await;
    assert_eq!((q.ready, q.delayed, q.leased), (0, 0, 0), "{q:?}");
    assert_eq!(codes(&h.reclaim(8, &[(id, 1, 0)]).await), vec![], "cancelled: gone");
}

/// Sends a Submit of one task to queue `q` without waiting for its SubmitAck; returns the request id.
fn submit_one(h: &mut Harness, payload: &str) -> u64 {
    let request_id = h.request_id();
    let items = vec![(0, spec(payload, 0, 0))];
    h.shard.send(ShardMsg::Submit { out: h.out.clone(), request_id, items, notify: false });
    request_id
}

/// The answer to a one-task Submit sent by [`submit_one`].
async fn submit_result(h: &mut Harness, request_id: u64) -> pb::SubmitResult {
    match h.part(request_id).await {
        Part::Submit(mut results) if results.len() == 1 => results.remove(0).1,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_new_task_is_leased_while_its_sync_runs_and_its_submit_ack_waits_for_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    h.credit(1);
    h.hold_sync.store(true, Ordering::SeqCst);
    let request_id = submit_one(&mut h, "early");
    let leased = h.leased().await;
    assert_eq!(&leased.payload[..], b"early");
    // The sync is still held: the producer has no answer yet.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!h.rx.has_queued(), "a SubmitAck went out before the task was durable");
    h.hold_sync.store(false, Ordering::SeqCst);
    let r = submit_result(&mut h, request_id).await;
    assert_eq!((r.code, r.task_id), (ErrorCode::Ok as i32, leased.task_id));
    assert_eq!(h.lease_op(|out, request_id| ack(out, request_id, leased.lease_id)).await, ErrorCode::Ok);
    assert!(h.reopen(dir.path()).tasks.is_empty(), "acked: gone after a reopen");
}

#[tokio::test]
async fn with_lease_after_sync_a_new_task_waits_for_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start_with(dir.path(), Duration::ZERO, true);
    h.credit(1);
    h.hold_sync.store(true, Ordering::SeqCst);
    let request_id = submit_one(&mut h, "strict");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!h.agent_rx.has_queued(), "leased before its sync ended");
    h.hold_sync.store(false, Ordering::SeqCst);
    let id = submit_result(&mut h, request_id).await.task_id;
    assert_eq!(h.leased().await.task_id, id);
}

#[tokio::test]
async fn a_task_leased_before_its_sync_failed_is_revoked_and_its_submit_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    h.credit(1);
    h.hold_sync.store(true, Ordering::SeqCst);
    h.fail_sync.store(true, Ordering::SeqCst);
    let request_id = submit_one(&mut h, "doomed");
    let leased = h.leased().await;
    h.hold_sync.store(false, Ordering::SeqCst);
    assert_eq!(submit_result(&mut h, request_id).await.code, ErrorCode::StoreFailed as i32);
    match h.agent_frame().await {
        Kind::Revoke(r) => assert_eq!((r.task_id, r.lease_id), (leased.task_id, leased.lease_id)),
        other => panic!("expected Revoke, got {other:?}"),
    }
    let q = h.stats().await;
    assert_eq!((q.ready, q.leased), (0, 0), "{q:?}");
    h.fail_sync.store(false, Ordering::SeqCst);
    let code = h.lease_op(|out, request_id| ack(out, request_id, leased.lease_id)).await;
    assert_eq!(code, ErrorCode::StaleLease, "the revoked lease cannot be acked");
}

#[tokio::test]
async fn a_task_whose_append_failed_is_never_leased() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    h.credit(1);
    h.fail.store(true, Ordering::SeqCst);
    let request_id = submit_one(&mut h, "unwritten");
    assert_eq!(submit_result(&mut h, request_id).await.code, ErrorCode::StoreFull as i32);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!h.agent_rx.has_queued(), "a task that was not written was leased");
    h.fail.store(false, Ordering::SeqCst);
    let id = h.submit(vec![spec("written", 0, 0)]).await[0];
    assert_eq!(h.leased().await.task_id, id);
}

#[tokio::test]
async fn an_ack_reply_carries_the_store_error_when_its_round_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    h.credit(2);
    let ids = h.submit(vec![spec("a", 0, 0), spec("b", 0, 0)]).await;
    let mut leases = Vec::new();
    while leases.len() < 2 {
        match h.agent_frame().await {
            Kind::Leased(l) => leases.extend(l.tasks),
            other => panic!("expected Leased, got {other:?}"),
        }
    }
    h.fail.store(true, Ordering::SeqCst);
    let code = h.lease_op(|out, request_id| ack(out, request_id, leases[0].lease_id)).await;
    assert_eq!(code, ErrorCode::StoreFull);
    h.fail.store(false, Ordering::SeqCst);
    assert_eq!(h.lease_op(|out, request_id| ack(out, request_id, leases[1].lease_id)).await, ErrorCode::Ok);
    let left: Vec<u64> = h.reopen(dir.path()).tasks.iter().map(|t| t.task_id).collect();
    let failed = leases[0].task_id;
    assert_eq!(left, vec![failed], "only the task whose ack failed is still live on disk ({ids:?})");
}

/// An Ack of one lease.
pub(super) fn ack(out: OutTx, request_id: u64, lease_id: u64) -> ShardMsg {
    ShardMsg::Ack { out, request_id, items: vec![(0, lease_id, Bytes::new())] }
}

/// A Nack of one lease (retried, or dead-lettered once its attempts are used up).
pub(super) fn nack(out: OutTx, request_id: u64, lease_id: u64) -> ShardMsg {
    ShardMsg::Nack {
        out,
        request_id,
        items: vec![(0, pb::NackItem { lease_id, reason: "exit 3".into(), ..Default::default() })],
    }
}

impl Harness {
    /// The status this shard gives of `task_id` (`None` if it does not know it).
    async fn status(&mut self, task_id: u64) -> Option<pb::TaskStatus> {
        let request_id = self.request_id();
        self.shard.send(ShardMsg::Status { out: self.out.clone(), request_id, items: vec![(0, task_id)] });
        match self.part(request_id).await {
            Part::Status(mut items) => items.pop().map(|(_, s)| s),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_dead_letter_shows_its_follow_ups_and_tells_watchers_only_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    let payload = r#"{"pipeline":[{"executorName":"sh","commands":["exit 3"]}],
        "onFailure":[{"pipeline":[{"executorName":"sh","commands":["true"]}],"queue":"q"}]}"#;
    let id = h.submit(vec![TaskSpec { max_attempts: 1, ..spec(payload, 0, 0) }]).await[0];
    h.credit(1);
    let lease = h.leased().await;
    h.hold_sync.store(true, Ordering::SeqCst);
    assert_eq!(h.lease_op(|out, request_id| nack(out, request_id, lease.lease_id)).await, ErrorCode::Ok);
    // Dead (never leased again) but not durable yet: no follow-up is shown, a watcher is not told.
    let s = h.status(id).await.expect("known");
    assert_eq!((s.state, s.children.len()), (TaskState::Dead as i32, 0), "{s:?}");
    let request_id = h.request_id();
    h.shard.send(ShardMsg::Watch { out: h.out.clone(), request_id, items: vec![(0, id)] });
    assert!(matches!(h.part(request_id).await, Part::Cancel(c) if c == vec![(0, ErrorCode::Ok)]));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!h.rx.has_queued(), "a watcher was told before the dead letter was durable");
    h.hold_sync.store(false, Ordering::SeqCst);
    let msg = tokio::time::timeout(Duration::from_secs(5), h.rx.recv()).await.expect("no Completed").expect("open");
    let told = match msg {
        Outbound::Frame(pm_protocol::Envelope { kind: Some(Kind::Completed(c)) }) => c.task.expect("a status"),
        other => panic!("expected Completed, got {other:?}"),
    };
    assert_eq!((told.state, told.children.len()), (TaskState::Dead as i32, 1), "{told:?}");
    // Every follow-up it names is known by then.
    let child = told.children[0];
    let s = h.status(child).await.expect("the follow-up is known once its parent shows it");
    assert_eq!(s.parent_id, id);
    assert_eq!(h.status(id).await.expect("known").children, vec![child]);
}

#[tokio::test]
async fn a_dead_letter_whose_round_failed_is_ready_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    let id = h.submit(vec![TaskSpec { max_attempts: 1, ..spec("once", 0, 0) }]).await[0];
    h.credit(1);
    let lease = h.leased().await;
    h.hold_sync.store(true, Ordering::SeqCst);
    h.fail_sync.store(true, Ordering::SeqCst);
    assert_eq!(h.lease_op(|out, request_id| nack(out, request_id, lease.lease_id)).await, ErrorCode::Ok);
    assert_eq!(h.stats().await.dead, 1, "dead (not leased again) while its record is written");
    h.hold_sync.store(false, Ordering::SeqCst);
    // The dead-letter record is not durable, so the task is still live on disk: here too, and delivered again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h.stats().await.dead != 0 {
        assert!(std::time::Instant::now() < deadline, "still dead after its round failed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.fail_sync.store(false, Ordering::SeqCst);
    h.credit(1);
    let again = h.leased().await;
    assert_eq!(again.task_id, id);
    let s = h.status(id).await.expect("known");
    assert_eq!(s.state, TaskState::Leased as i32, "{s:?}");
}
