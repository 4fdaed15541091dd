//! The one test suite every [`TaskStore`] backend must pass, written once as generic functions and
//! instantiated per backend by [`conformance!`]. Backend-specific tests (the WAL's recovery and space
//! reclamation) live next to their backend.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::committer::Committer;
use super::sled_store::SledStore;
use super::wal::{now_unix_ms, Wal, WalOptions};
use super::{
    BodyReader, FsyncMode, IdemKey, Record, Recovered, RecoveredTask, StoreError, StoreStats, TaskStore, Upkeep,
};

/// How the suite opens a backend.
trait Backend {
    /// Opens the store in `dir`, keeping at most `max_results` results.
    fn open_keeping(dir: &Path, max_results: usize) -> Result<(Box<dyn TaskStore>, Recovered), StoreError>;
    /// Most files the store may keep once everything is acked and maintained.
    const IDLE_SEGMENTS: u64;
}

struct WalBackend;
impl Backend for WalBackend {
    fn open_keeping(dir: &Path, max_results: usize) -> Result<(Box<dyn TaskStore>, Recovered), StoreError> {
        // Small segments so that rollover, deletion and compaction happen within the tests.
        let opts = WalOptions {
            segment_bytes: 64 << 10,
            max_record_bytes: 16 << 10,
            compact_live_ratio: 0.25,
            max_results,
            ..WalOptions::default()
        };
        let (wal, recovered) = Wal::open(dir, opts)?;
        Ok((Box::new(wal), recovered))
    }
    const IDLE_SEGMENTS: u64 = 2;
}

struct SledBackend;
impl Backend for SledBackend {
    fn open_keeping(dir: &Path, max_results: usize) -> Result<(Box<dyn TaskStore>, Recovered), StoreError> {
        let (store, recovered) = SledStore::open(dir, max_results)?;
        Ok((Box::new(store), recovered))
    }
    const IDLE_SEGMENTS: u64 = 1;
}

fn open<B: Backend>(dir: &Path) -> (Box<dyn TaskStore>, Recovered) {
    open_keeping::<B>(dir, 100_000)
}

/// As [`open`], keeping at most `max_results` results.
fn open_keeping<B: Backend>(dir: &Path, max_results: usize) -> (Box<dyn TaskStore>, Recovered) {
    // A sled store dropped in this process may hold its file lock a moment longer (its flusher thread ends
    // after the drop): a reopen right after waits for it rather than failing the test.
    for _ in 0..100 {
        match B::open_keeping(dir, max_results) {
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result.unwrap_or_else(|e| panic!("open {}: {e}", dir.display())),
        }
    }
    B::open_keeping(dir, max_results).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

fn enqueue(task_id: u64, body: &str) -> Record {
    Record::Enqueue { task_id, body: Bytes::copy_from_slice(body.as_bytes()), idempotency: None }
}

fn enqueue_keyed(task_id: u64, key: &str, expires_unix_ms: u64) -> Record {
    let idempotency = Some(IdemKey { key: key.into(), expires_unix_ms });
    Record::Enqueue { task_id, body: Bytes::from(format!("body {task_id}")), idempotency }
}

fn task(task_id: u64, body: &str, attempts: u32, dead: Option<&str>) -> RecoveredTask {
    RecoveredTask {
        task_id,
        body: Bytes::copy_from_slice(body.as_bytes()),
        attempts,
        dead_reason: dead.map(Into::into),
    }
}

fn round_trip_across_reopen<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, rec) = open::<B>(dir.path());
    assert_eq!(rec, Recovered::default());
    store.append(&[enqueue(1, "a"), enqueue(2, "b"), enqueue(3, "c"), enqueue(4, "d")]).unwrap();
    store
        .append(&[
            Record::Attempt { task_id: 2, attempts: 3 },
            Record::DeadLetter { task_id: 2, reason: "boom".into() },
            Record::Attempt { task_id: 1, attempts: 1 },
            Record::Ack { task_id: 3 },
            // Records about tasks the store does not know change nothing.
            Record::Attempt { task_id: 99, attempts: 5 },
            Record::Ack { task_id: 98 },
        ])
        .unwrap();
    store.sync().unwrap();
    assert_eq!(store.stats().live_tasks, 3);
    drop(store);

    let (mut store, rec) = open::<B>(dir.path());
    let expected = vec![task(1, "a", 1, None), task(2, "b", 3, Some("boom")), task(4, "d", 0, None)];
    assert_eq!(rec.tasks, expected);
    assert_eq!(rec.max_task_id, 4);
    store.append(&[Record::Redrive { task_id: 2 }, Record::Ack { task_id: 1 }, enqueue(5, "e")]).unwrap();
    store.sync().unwrap();
    drop(store);

    let (_, rec) = open::<B>(dir.path());
    assert_eq!(rec.tasks, vec![task(2, "b", 0, None), task(4, "d", 0, None), task(5, "e", 0, None)]);
    assert_eq!(rec.max_task_id, 5);
}

fn max_task_id_survives_everything_acked<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open::<B>(dir.path());
    let body = "x".repeat(200);
    let mut most_files = StoreStats::default().segments;
    for batch in 0..40u64 {
        let ids = batch * 50 + 1..=batch * 50 + 50;
        store.append(&ids.clone().map(|id| enqueue(id, &body)).collect::<Vec<_>>()).unwrap();
        store.append(&ids.map(|task_id| Record::Ack { task_id }).collect::<Vec<_>>()).unwrap();
        store.sync().unwrap();
        while store.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
        most_files = most_files.max(store.stats().segments);
    }
    let stats = store.stats();
    assert_eq!(stats.live_tasks, 0);
    assert!(stats.segments <= B::IDLE_SEGMENTS, "{stats:?}");
    assert!(most_files <= B::IDLE_SEGMENTS + 1, "up to {most_files} files");
    drop(store);
    let (_, rec) = open::<B>(dir.path());
    assert!(rec.tasks.is_empty());
    assert!(rec.max_task_id >= 2000, "max task id {}", rec.max_task_id);
}

fn idempotency_survives_reopen_and_ack_until_expiry<B: Backend>() {
    const SHORT_MS: u64 = 2_500;
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix_ms();
    let (mut store, _) = open::<B>(dir.path());
    store
        .append(&[
            enqueue_keyed(1, "q/long", now + 3_600_000),
            enqueue_keyed(2, "q/expired", now - 1),
            enqueue_keyed(3, "q/short", now + SHORT_MS),
        ])
        .unwrap();
    store.append(&[Record::Ack { task_id: 1 }]).unwrap();
    store.sync().unwrap();
    drop(store);

    let (mut store, rec) = open::<B>(dir.path());
    let keys: Vec<(&str, u64)> = rec.idempotency.iter().map(|k| (k.key.as_str(), k.task_id)).collect();
    assert!(keys.contains(&("q/long", 1)), "{keys:?}");
    assert!(keys.contains(&("q/short", 3)), "{keys:?}");
    assert!(!keys.iter().any(|(k, _)| *k == "q/expired"), "{keys:?}");
    assert_eq!(rec.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(), vec![2, 3]);
    store.append(&[Record::Ack { task_id: 2 }, Record::Ack { task_id: 3 }]).unwrap();
    store.sync().unwrap();
    // Generous window so a slow open under a loaded test run cannot expire it early; then wait it out.
    while now_unix_ms() <= now + SHORT_MS {
        std::thread::sleep(Duration::from_millis(50));
    }
    while store.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
    drop(store);

    let (_, rec) = open::<B>(dir.path());
    let keys: Vec<&str> = rec.idempotency.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, vec!["q/long"]);
    assert_eq!(rec.idempotency[0].expires_unix_ms, now + 3_600_000);
    assert!(rec.tasks.is_empty());
}

fn finish(task_id: u64, expires_unix_ms: u64) -> Record {
    Record::Finish { task_id, expires_unix_ms, body: Bytes::from(format!("outcome {task_id}")) }
}

fn results_survive_reopen_until_expiry_within_the_maximum<B: Backend>() {
    const SHORT_MS: u64 = 2_500;
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix_ms();
    let hour = 3_600_000;
    let (mut store, _) = open_keeping::<B>(dir.path(), 3);
    store.append(&(1..=7).map(|id| enqueue(id, "task")).collect::<Vec<_>>()).unwrap();
    store
        .append(&[
            finish(1, now + hour),
            finish(2, now + hour + 1),
            finish(3, now + hour - 1),
            finish(4, now - 1),
            finish(5, now + SHORT_MS),
            Record::Ack { task_id: 6 },
        ])
        .unwrap();
    store.sync().unwrap();
    assert_eq!(store.stats().results, 3, "room for three");
    drop(store);

    // Four unexpired results, room for three: the one expiring soonest (5) went; the expired one (4) too.
    let (mut store, rec) = open_keeping::<B>(dir.path(), 3);
    let kept: Vec<(u64, &[u8])> = rec.results.iter().map(|r| (r.task_id, r.body.as_ref())).collect();
    assert_eq!(kept, vec![(3, &b"outcome 3"[..]), (1, b"outcome 1"), (2, b"outcome 2")], "ordered by expiry");
    assert_eq!(rec.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(), vec![7], "a Finish ends its task");
    assert!(rec.max_task_id >= 7);
    store.append(&[finish(7, now + SHORT_MS)]).unwrap();
    store.sync().unwrap();
    drop(store);

    // A smaller maximum at open keeps the ones expiring last; the short one expires.
    let (mut store, rec) = open_keeping::<B>(dir.path(), 2);
    assert_eq!(rec.results.iter().map(|r| r.task_id).collect::<Vec<_>>(), vec![1, 2]);
    assert!(rec.tasks.is_empty());
    store.append(&[finish(8, now + SHORT_MS)]).unwrap();
    store.sync().unwrap();
    while now_unix_ms() <= now + SHORT_MS {
        std::thread::sleep(Duration::from_millis(50));
    }
    while store.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
    assert_eq!(store.stats().results, 2);
    drop(store);
    let (_, rec) = open_keeping::<B>(dir.path(), 2);
    assert_eq!(rec.results.iter().map(|r| r.task_id).collect::<Vec<_>>(), vec![1, 2]);
    // Keeping none forgets them all.
    let (store, rec) = open_keeping::<B>(dir.path(), 0);
    assert!(rec.results.is_empty());
    assert_eq!(store.stats().results, 0);
}

fn kept_results_do_not_grow_the_store_without_bound<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix_ms();
    let (mut store, _) = open_keeping::<B>(dir.path(), 50);
    let body = "x".repeat(200);
    // Task 1's result expires last: it stays while thousands of others come and go around it.
    store.append(&[enqueue(1, &body), finish(1, now + 7_200_000)]).unwrap();
    let mut most_files = 0;
    for batch in 0..40u64 {
        let ids = batch * 50 + 2..=batch * 50 + 51;
        store.append(&ids.clone().map(|id| enqueue(id, &body)).collect::<Vec<_>>()).unwrap();
        let finishes: Vec<Record> = ids
            .map(|task_id| Record::Finish {
                task_id,
                expires_unix_ms: now + 3_600_000 + task_id,
                body: body.clone().into(),
            })
            .collect();
        store.append(&finishes).unwrap();
        store.sync().unwrap();
        while store.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
        most_files = most_files.max(store.stats().segments);
    }
    let stats = store.stats();
    assert_eq!((stats.live_tasks, stats.results), (0, 50));
    assert!(most_files <= B::IDLE_SEGMENTS + 2, "up to {most_files} files");
    drop(store);
    let (_, rec) = open_keeping::<B>(dir.path(), 50);
    let ids: Vec<u64> = rec.results.iter().map(|r| r.task_id).collect();
    assert_eq!(ids.len(), 50);
    assert_eq!(ids.last(), Some(&1), "the long-lived result was carried along");
    assert_eq!(ids[0], 2001 - 48, "the newest others");
    assert!(rec.results.iter().all(|r| r.body.len() == 200 || r.task_id == 1));
}

/// What the spy saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Append(usize),
    /// A job's appended hook ran.
    Appended(usize),
    Sync,
    Done(usize, bool),
}

/// Wraps a store to record calls and inject failures.
struct Spy {
    inner: Box<dyn TaskStore>,
    events: Arc<Mutex<Vec<Event>>>,
    /// Appends of a batch containing this task id fail.
    poison_task: u64,
    /// The sync with this number (1-based) fails.
    fail_sync_no: usize,
    syncs: usize,
    appends: usize,
    /// The append with this number (1-based) waits for a message on the receiver first.
    gates: Vec<(usize, mpsc::Receiver<()>)>,
}

impl Spy {
    fn new(inner: Box<dyn TaskStore>) -> (Spy, Arc<Mutex<Vec<Event>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let spy = Spy {
            inner,
            events: events.clone(),
            poison_task: u64::MAX,
            fail_sync_no: 0,
            syncs: 0,
            appends: 0,
            gates: Vec::new(),
        };
        (spy, events)
    }
}

impl TaskStore for Spy {
    fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.appends += 1;
        self.events.lock().unwrap().push(Event::Append(records.len()));
        if let Some(i) = self.gates.iter().position(|(n, _)| *n == self.appends) {
            let _ = self.gates.swap_remove(i).1.recv_timeout(Duration::from_secs(10));
        }
        if records.iter().any(|r| matches!(r, Record::Enqueue { task_id, .. } if *task_id == self.poison_task)) {
            return Err(StoreError::RecordTooLarge { len: 1, max: 0 });
        }
        self.inner.append(records)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.syncs += 1;
        self.events.lock().unwrap().push(Event::Sync);
        if self.syncs == self.fail_sync_no {
            return Err(StoreError::io("spy", std::io::Error::from_raw_os_error(libc::EIO)));
        }
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

/// Submits `records` as job `n` and returns a receiver of its outcome.
fn submit(
    c: &Committer,
    events: &Arc<Mutex<Vec<Event>>>,
    n: usize,
    records: Vec<Record>,
) -> mpsc::Receiver<Result<(), String>> {
    let (tx, rx) = mpsc::channel();
    let events = events.clone();
    c.submit(
        records,
        Box::new(move |r: Result<(), StoreError>| {
            events.lock().unwrap().push(Event::Done(n, r.is_ok()));
            let _ = tx.send(r.map_err(|e| e.to_string()));
        }),
    );
    rx
}

/// Waits until the store has seen `n` appends (so the commit thread has closed that group).
fn wait_for_appends(events: &Mutex<Vec<Event>>, n: usize) {
    for _ in 0..1000 {
        if events.lock().unwrap().iter().filter(|e| matches!(e, Event::Append(_))).count() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the store never saw {n} appends");
}

fn wait(rx: &mpsc::Receiver<Result<(), String>>) -> Result<(), String> {
    rx.recv_timeout(Duration::from_secs(10)).expect("job never completed")
}

fn committer_completes_only_after_sync<B: Backend>() {
    for mode in [FsyncMode::Always, FsyncMode::Batch(Duration::from_millis(2)), FsyncMode::None] {
        let dir = tempfile::tempdir().unwrap();
        let (spy, events) = Spy::new(open::<B>(dir.path()).0);
        let c = Committer::start(Box::new(spy), mode);
        assert_eq!(wait(&submit(&c, &events, 1, vec![enqueue(1, "a"), enqueue(2, "b")])), Ok(()));
        let seen = events.lock().unwrap().clone();
        let expected = match mode {
            FsyncMode::None => vec![Event::Append(2), Event::Done(1, true)],
            _ => vec![Event::Append(2), Event::Sync, Event::Done(1, true)],
        };
        assert_eq!(seen, expected, "{mode:?}");
        c.shutdown();
        assert_eq!(open::<B>(dir.path()).1.tasks.len(), 2, "{mode:?}");
    }
}

/// The appended hook runs after the job's append and before the sync; not when the append fails, nor when
/// no sync follows.
fn committer_reports_appended_before_the_sync<B: Backend>() {
    for mode in [FsyncMode::Always, FsyncMode::Batch(Duration::from_millis(2)), FsyncMode::None] {
        let dir = tempfile::tempdir().unwrap();
        let (mut spy, events) = Spy::new(open::<B>(dir.path()).0);
        spy.poison_task = 9;
        let c = Committer::start(Box::new(spy), mode);
        let job = |n: usize, records: Vec<Record>| {
            let (tx, rx) = mpsc::channel();
            let (on_append, on_done) = (events.clone(), events.clone());
            c.handle().submit_with_appended(
                records,
                Box::new(move || on_append.lock().unwrap().push(Event::Appended(n))),
                Box::new(move |r: Result<(), StoreError>| {
                    on_done.lock().unwrap().push(Event::Done(n, r.is_ok()));
                    let _ = tx.send(r.map_err(|e| e.to_string()));
                }),
            );
            rx
        };
        assert_eq!(wait(&job(1, vec![enqueue(1, "a")])), Ok(()));
        assert!(wait(&job(2, vec![enqueue(9, "poisoned")])).is_err());
        let seen = events.lock().unwrap().clone();
        let expected = match mode {
            FsyncMode::None => vec![Event::Append(1), Event::Done(1, true), Event::Append(1), Event::Done(2, false)],
            _ => vec![
                Event::Append(1),
                Event::Appended(1),
                Event::Sync,
                Event::Done(1, true),
                Event::Append(1),
                Event::Done(2, false),
            ],
        };
        assert_eq!(seen, expected, "{mode:?}");
        c.shutdown();
    }
}

/// A lazy job completes without a sync of its own, rides on the next synced group, and is synced within
/// `LAZY_MAX` when no such group comes.
fn committer_syncs_lazy_jobs_with_the_next_group_or_after_a_bound<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (spy, events) = Spy::new(open::<B>(dir.path()).0);
    let c = Committer::start(Box::new(spy), FsyncMode::Always);
    let lazy = |n: usize, records: Vec<Record>| {
        let (tx, rx) = mpsc::channel();
        let events = events.clone();
        c.handle().submit_lazy(
            records,
            Box::new(move |r: Result<(), StoreError>| {
                events.lock().unwrap().push(Event::Done(n, r.is_ok()));
                let _ = tx.send(r.map_err(|e| e.to_string()));
            }),
        );
        rx
    };
    assert_eq!(wait(&lazy(1, vec![enqueue(1, "a")])), Ok(()));
    assert_eq!(events.lock().unwrap().clone(), vec![Event::Append(1), Event::Done(1, true)], "no sync of its own");
    assert_eq!(wait(&submit(&c, &events, 2, vec![enqueue(2, "b")])), Ok(()));
    assert_eq!(
        events.lock().unwrap()[2..].to_vec(),
        vec![Event::Append(1), Event::Sync, Event::Done(2, true)],
        "the next synced group covers it"
    );
    events.lock().unwrap().clear();
    assert_eq!(wait(&lazy(3, vec![enqueue(3, "c")])), Ok(()));
    std::thread::sleep(super::committer::LAZY_MAX * 3);
    let seen = events.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|e| **e == Event::Sync).count(), 1, "synced once within the bound: {seen:?}");
    c.shutdown();
    assert_eq!(open::<B>(dir.path()).1.tasks.len(), 3);
}

fn committer_fails_only_the_failing_job_or_the_whole_group_on_sync_error<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spy, events) = Spy::new(open::<B>(dir.path()).0);
    let (open_first, gate) = mpsc::channel();
    spy.gates.push((1, gate));
    let (open_sixth, gate) = mpsc::channel();
    spy.gates.push((6, gate));
    spy.poison_task = 13;
    spy.fail_sync_no = 4;
    let c = Committer::start(Box::new(spy), FsyncMode::Always);
    // Group 1 = job 0 (held at its append); group 2 = jobs 1..=4, queued meanwhile.
    let first = submit(&c, &events, 0, vec![enqueue(10, "a")]);
    wait_for_appends(&events, 1);
    let rest: Vec<_> = (1..=4u64).map(|n| submit(&c, &events, n as usize, vec![enqueue(10 + n, "b")])).collect();
    open_first.send(()).unwrap();
    assert_eq!(wait(&first), Ok(()));
    let outcomes: Vec<bool> = rest.iter().map(|rx| wait(rx).is_ok()).collect();
    assert_eq!(outcomes, vec![true, true, false, true], "only the job with task 13 fails");
    let syncs = events.lock().unwrap().iter().filter(|e| **e == Event::Sync).count();
    assert_eq!(syncs, 2, "one sync per group: {:?}", events.lock().unwrap());
    // Group 3 = job 20 (held, sync 3 succeeds); group 4 = jobs 21 and 22, whose sync fails: both fail.
    let held = submit(&c, &events, 20, vec![enqueue(20, "c")]);
    wait_for_appends(&events, 6);
    let group: Vec<_> = (21..=22u64).map(|n| submit(&c, &events, n as usize, vec![enqueue(n, "c")])).collect();
    open_sixth.send(()).unwrap();
    assert_eq!(wait(&held), Ok(()));
    assert!(group.iter().map(wait).all(|r| r.is_err()), "a failed sync fails every job of its group");
    assert_eq!(wait(&submit(&c, &events, 30, vec![enqueue(30, "d")])), Ok(()), "the committer goes on");
    c.shutdown();
}

fn many_concurrent_submitters_all_complete<B: Backend>() {
    for mode in [FsyncMode::Always, FsyncMode::Batch(Duration::from_millis(1))] {
        let dir = tempfile::tempdir().unwrap();
        let c = Committer::start(open::<B>(dir.path()).0, mode);
        let ok = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let handle = c.handle();
                let (ok, done_tx) = (ok.clone(), done_tx.clone());
                s.spawn(move || {
                    for j in 0..100u64 {
                        let base = (t * 100 + j) * 4 + 1;
                        let records = (base..base + 4).map(|id| enqueue(id, "payload")).collect();
                        let (ok, done_tx) = (ok.clone(), done_tx.clone());
                        handle.submit(
                            records,
                            Box::new(move |r| {
                                if r.is_ok() {
                                    ok.fetch_add(1, Ordering::SeqCst);
                                }
                                let _ = done_tx.send(());
                            }),
                        );
                    }
                });
            }
        });
        for _ in 0..800 {
            done_rx.recv_timeout(Duration::from_secs(20)).expect("a job never completed");
        }
        assert_eq!(ok.load(Ordering::SeqCst), 800, "{mode:?}");
        c.shutdown();
        let (_, rec) = open::<B>(dir.path());
        assert_eq!(rec.tasks.len(), 3200, "{mode:?}");
        assert_eq!(rec.max_task_id, 3200);
    }
}

fn recovery_after_committer_shutdown<B: Backend>() {
    for mode in [FsyncMode::Always, FsyncMode::None] {
        let dir = tempfile::tempdir().unwrap();
        let c = Committer::start(open::<B>(dir.path()).0, mode);
        let ok = Arc::new(AtomicUsize::new(0));
        for j in 0..50u64 {
            let ok = ok.clone();
            let records =
                vec![enqueue(j * 2 + 1, "one"), enqueue(j * 2 + 2, "two"), Record::Ack { task_id: j * 2 + 1 }];
            c.submit(records, Box::new(move |r| assert!(r.is_ok() && ok.fetch_add(1, Ordering::SeqCst) < 50)));
        }
        let late = c.handle();
        c.shutdown();
        assert_eq!(ok.load(Ordering::SeqCst), 50, "shutdown completes every submitted job ({mode:?})");
        let (tx, rx) = mpsc::channel();
        late.submit(
            vec![enqueue(1000, "late")],
            Box::new(move |r| tx.send(matches!(r, Err(StoreError::Closed))).unwrap()),
        );
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "a job after shutdown is Closed");
        let (_, rec) = open::<B>(dir.path());
        let ids: Vec<u64> = rec.tasks.iter().map(|t| t.task_id).collect();
        assert_eq!(ids, (1..=50).map(|j| j * 2).collect::<Vec<_>>(), "{mode:?}");
    }
}

/// Instantiates every generic test for one backend.
/// A live task's body reads back, from another thread too, while the store goes on writing; after its segment
/// was compacted away and after a reopen; a finished or unknown task reads as none.
fn bodies_read_back_while_live<B: Backend>() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open::<B>(dir.path());
    let reader = store.body_reader();
    let body = |id: u64| format!("{id:04}-").repeat(200);
    // ~1 KB each: the WAL's 64 KiB test segments roll several times.
    for chunk in (1..=300u64).collect::<Vec<_>>().chunks(20) {
        store.append(&chunk.iter().map(|&id| enqueue(id, &body(id))).collect::<Vec<_>>()).unwrap();
    }
    store.sync().unwrap();
    for id in [1, 150, 300] {
        assert_eq!(reader.read_body(id).unwrap().as_deref(), Some(body(id).as_bytes()), "task {id}");
    }
    assert_eq!(reader.read_body(301).unwrap(), None, "never written");
    // All but a few early tasks finish: their segments are compacted forward and deleted.
    let keep = [2u64, 3, 40];
    let acks: Vec<Record> = (1..=300).filter(|id| !keep.contains(id)).map(|task_id| Record::Ack { task_id }).collect();
    store.append(&acks).unwrap();
    store.sync().unwrap();
    for _ in 0..1000 {
        if store.maintain(now_unix_ms()).unwrap() == Upkeep::Done {
            break;
        }
    }
    assert!(store.stats().segments <= B::IDLE_SEGMENTS, "{:?}", store.stats());
    let from_another_thread = {
        let reader = reader.clone();
        std::thread::spawn(move || keep.map(|id| reader.read_body(id).unwrap())).join().unwrap()
    };
    for (id, read) in keep.iter().zip(from_another_thread) {
        assert_eq!(read.as_deref(), Some(body(*id).as_bytes()), "task {id} after compaction");
    }
    assert_eq!(reader.read_body(1).unwrap(), None, "finished");
    drop((store, reader));
    let (store, rec) = open::<B>(dir.path());
    assert_eq!(rec.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(), keep.to_vec());
    let reader = store.body_reader();
    for id in keep {
        assert_eq!(reader.read_body(id).unwrap().as_deref(), Some(body(id).as_bytes()), "task {id} after reopen");
    }
}

macro_rules! conformance {
    ($name:ident, $backend:ty) => {
        mod $name {
            #[test]
            fn round_trip_across_reopen() {
                super::round_trip_across_reopen::<$backend>();
            }
            #[test]
            fn max_task_id_survives_everything_acked() {
                super::max_task_id_survives_everything_acked::<$backend>();
            }
            #[test]
            fn idempotency_survives_reopen_and_ack_until_expiry() {
                super::idempotency_survives_reopen_and_ack_until_expiry::<$backend>();
            }
            #[test]
            fn committer_completes_only_after_sync() {
                super::committer_completes_only_after_sync::<$backend>();
            }
            #[test]
            fn committer_reports_appended_before_the_sync() {
                super::committer_reports_appended_before_the_sync::<$backend>();
            }
            #[test]
            fn committer_syncs_lazy_jobs_with_the_next_group_or_after_a_bound() {
                super::committer_syncs_lazy_jobs_with_the_next_group_or_after_a_bound::<$backend>();
            }
            #[test]
            fn committer_fails_only_the_failing_job_or_the_whole_group_on_sync_error() {
                super::committer_fails_only_the_failing_job_or_the_whole_group_on_sync_error::<$backend>();
            }
            #[test]
            fn many_concurrent_submitters_all_complete() {
                super::many_concurrent_submitters_all_complete::<$backend>();
            }
            #[test]
            fn results_survive_reopen_until_expiry_within_the_maximum() {
                super::results_survive_reopen_until_expiry_within_the_maximum::<$backend>();
            }
            #[test]
            fn kept_results_do_not_grow_the_store_without_bound() {
                super::kept_results_do_not_grow_the_store_without_bound::<$backend>();
            }
            #[test]
            fn bodies_read_back_while_live() {
                super::bodies_read_back_while_live::<$backend>();
            }
            #[test]
            fn recovery_after_committer_shutdown() {
                super::recovery_after_committer_shutdown::<$backend>();
            }
        }
    };
}

conformance!(wal, super::WalBackend);
conformance!(sled, super::SledBackend);
