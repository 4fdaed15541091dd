//! The group-commit thread: the one owner of the [`TaskStore`].
//!
//! One `fdatasync` costs about as much as writing thousands of records, so syncing per batch caps the
//! node at a few thousand batches per second. Instead every shard actor hands its batch to this thread and
//! carries on; the thread takes everything that queued up while the previous sync ran, appends it all,
//! syncs **once**, and only then completes each batch. Under load groups grow by themselves, so
//! throughput rises with concurrency while an idle node still commits a lone batch at once.
//!
//! It is a plain OS thread, not a tokio task: it spends its life blocked in `write`/`fdatasync`, which
//! must never stall a tokio worker. Single-writer invariant: only this thread touches the store, so the
//! store needs no locks.
//!
//! Lazy jobs ([`CommitterHandle::submit_lazy`]) are for records nobody waits on (a lease's attempt count,
//! dead-letter moves): they are appended but do not trigger a sync of their own; they become durable with
//! the next synced group, or within [`LAZY_MAX`] if none comes. Measured end to end, the sync each lease
//! round used to trigger sat in front of the next ack round, about one `fdatasync` of latency per ack.
//!
//! Completion is a callback run on this thread (keep it cheap: send on a channel). A job's callback is
//! always called exactly once — with the job's result, or [`StoreError::Closed`] if the committer is gone.
//!
//! A job may also carry an *appended* hook ([`CommitterHandle::submit_with_appended`]), called on this thread
//! right after the job's records were written and before the group's sync. The shards use it to lease new
//! tasks while their `fdatasync` runs: the producer's `SubmitAck` still waits for durability, but the agent
//! no longer does, which takes one sync off every task's end-to-end path (`docs/architecture.md`, "Leasing
//! while the log syncs").

use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::wal::now_unix_ms;
use super::{FsyncMode, Record, StoreError, TaskStore, Upkeep};

/// How a job's outcome is reported: called once, on the commit thread. A shard's (built in
/// `shard::round::Rounds::flush`) sends [`crate::shard::ShardMsg::Durable`], received by `Shard::on_durable`
/// (`shard/durable.rs`), and sends ack replies itself.
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Called on the commit thread once a job's records are written, before they are synced (see the module doc).
/// A shard's sends [`crate::shard::ShardMsg::Appended`], received by `Shard::on_appended` (`shard/durable.rs`).
pub type Appended = Box<dyn FnOnce() + Send>;

/// No job for this long: the store is idle, run `maintain`.
const IDLE: Duration = Duration::from_millis(100);
/// Under continuous load, still run `maintain` this often (or the disk would only grow).
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);
/// A maintenance round at least this long is logged (debug).
const SLOW_MAINTAIN: Duration = Duration::from_millis(5);
/// Longest a lazy job's records stay unsynced.
pub const LAZY_MAX: Duration = Duration::from_millis(50);
/// Upper bound on the jobs of one group, to bound the latency of the first of them.
const MAX_GROUP_JOBS: usize = 4096;

/// A batch of records and its completion.
struct Job {
    records: Vec<Record>,
    done: Option<Done>,
    /// Called after a successful append when a sync is still to come.
    appended: Option<Appended>,
    /// Whether this job asks for a sync (false: lazy).
    sync: bool,
}

impl Job {
    fn complete(mut self, result: Result<(), StoreError>) {
        if let Some(done) = self.done.take() {
            done(result);
        }
    }
}

impl Drop for Job {
    /// A job dropped without completing (committer gone) still reports, so no waiter hangs.
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(Err(StoreError::Closed));
        }
    }
}

enum Msg {
    Job(Job),
    Shutdown,
}

/// A cheap, cloneable way to submit batches; hand one to every shard actor.
#[derive(Clone, Debug)]
pub struct CommitterHandle {
    tx: Sender<Msg>,
}

impl CommitterHandle {
    /// Queues `records` (applied in order, all or nothing) and returns at once: never blocks on I/O.
    ///
    /// `done` runs on the commit thread once the batch is durable per the [`FsyncMode`] (or failed).
    pub fn submit(&self, records: Vec<Record>, done: Done) {
        // If the thread is gone the message comes back in the error and dropping it reports `Closed`.
        let _ = self.tx.send(Msg::Job(Job { records, done: Some(done), appended: None, sync: true }));
    }

    /// Like [`submit`](Self::submit), and calls `appended` as soon as the records are written, before the sync
    /// that makes them durable; `done` follows once they are durable (or failed). `appended` is not called
    /// when the append fails, nor when no sync follows (`--fsync none`), where `done` comes at once anyway.
    pub fn submit_with_appended(&self, records: Vec<Record>, appended: Appended, done: Done) {
        let _ = self.tx.send(Msg::Job(Job { records, done: Some(done), appended: Some(appended), sync: true }));
    }

    /// Like [`submit`](Self::submit), but the records do not trigger a sync: `done` runs once they are
    /// appended, and they become durable with the next synced group, at the latest after [`LAZY_MAX`].
    /// For records whose loss in a crash is harmless (e.g. an attempt count one too low).
    pub fn submit_lazy(&self, records: Vec<Record>, done: Done) {
        let _ = self.tx.send(Msg::Job(Job { records, done: Some(done), appended: None, sync: false }));
    }
}

/// Owns the commit thread. Stop it with [`Committer::shutdown`].
#[derive(Debug)]
pub struct Committer {
    handle: CommitterHandle,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Spawns the commit thread (`pm-wal-commit`), which takes ownership of `store`.
    ///
    /// # Panics
    /// If the OS cannot start a thread (at startup, where there is nothing better to do).
    pub fn start(store: Box<dyn TaskStore>, mode: FsyncMode) -> Committer {
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = thread::Builder::new()
            .name("pm-wal-commit".into())
            .spawn(move || run(store, mode, rx))
            .expect("cannot spawn the commit thread");
        Committer { handle: CommitterHandle { tx }, thread: Some(thread) }
    }

    /// A cloneable handle for submitting from many places.
    pub fn handle(&self) -> CommitterHandle {
        self.handle.clone()
    }

    /// See [`CommitterHandle::submit`].
    pub fn submit(&self, records: Vec<Record>, done: Done) {
        self.handle.submit(records, done);
    }

    /// Commits every job submitted before this call, syncs, and stops the thread. Jobs submitted later
    /// through a handle complete with [`StoreError::Closed`].
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.handle.tx.send(Msg::Shutdown);
            if thread.join().is_err() {
                tracing::error!("the commit thread panicked");
            }
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The commit thread's loop.
fn run(mut store: Box<dyn TaskStore>, mode: FsyncMode, rx: Receiver<Msg>) {
    let mut last_maintain = Instant::now();
    // A maintenance round left work half done (a compaction): continue it between groups, and at once when idle.
    let mut pending = false;
    let mut group = Vec::new();
    // Since when lazily appended records wait for a sync.
    let mut lazy_since: Option<Instant> = None;
    loop {
        let wait = match lazy_since {
            _ if pending => Duration::ZERO,
            Some(since) => LAZY_MAX.saturating_sub(since.elapsed()).min(IDLE),
            None => IDLE,
        };
        let first = match rx.recv_timeout(wait) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => {
                if lazy_since.is_some_and(|since| !pending || since.elapsed() >= LAZY_MAX) {
                    lazy_since = None;
                    sync_lazy(store.as_mut());
                }
                if pending || last_maintain.elapsed() >= IDLE {
                    pending = maintain(store.as_mut());
                    last_maintain = Instant::now();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let shutdown = gather(first, &rx, mode, &mut group);
        commit(store.as_mut(), mode, &mut group, &mut lazy_since);
        if shutdown {
            break;
        }
        if pending || last_maintain.elapsed() >= MAINTAIN_EVERY {
            pending = maintain(store.as_mut());
            last_maintain = Instant::now();
        }
    }
    if let Err(e) = store.sync() {
        tracing::error!("final sync at shutdown failed: {e}");
    }
    // Anything that raced with the shutdown: report it closed rather than dropping it silently.
    drop(rx);
}

/// Collects the jobs of one group into `group`; returns whether a shutdown was requested.
fn gather(first: Msg, rx: &Receiver<Msg>, mode: FsyncMode, group: &mut Vec<Job>) -> bool {
    let started = Instant::now();
    let mut next = Some(first);
    loop {
        match next.take() {
            Some(Msg::Job(job)) => group.push(job),
            Some(Msg::Shutdown) => return true,
            None => {}
        }
        if group.len() >= MAX_GROUP_JOBS {
            return false;
        }
        next = match rx.try_recv() {
            Ok(msg) => Some(msg),
            Err(_) => match mode {
                FsyncMode::Batch(window) => match rx.recv_deadline(started + window) {
                    Ok(msg) => Some(msg),
                    Err(_) => return false,
                },
                FsyncMode::Always | FsyncMode::None => return false,
            },
        };
    }
}

/// Appends every job of the group, syncs once (per `mode`; lazy-only groups not before [`LAZY_MAX`]), then
/// completes them.
fn commit(store: &mut dyn TaskStore, mode: FsyncMode, group: &mut Vec<Job>, lazy_since: &mut Option<Instant>) {
    if group.is_empty() {
        return;
    }
    let wants_sync = group.iter().any(|j| j.sync) || lazy_since.is_some_and(|t| t.elapsed() >= LAZY_MAX);
    let mode = match (mode, wants_sync) {
        (FsyncMode::None, _) | (_, true) => mode,
        (_, false) => {
            lazy_since.get_or_insert_with(Instant::now);
            FsyncMode::None
        }
    };
    if wants_sync {
        *lazy_since = None;
    }
    let records: usize = group.iter().map(|j| j.records.len()).sum();
    metrics::histogram!(crate::metrics::WAL_BATCH_RECORDS).record(records as f64);
    let will_sync = !matches!(mode, FsyncMode::None);
    let results: Vec<Result<(), StoreError>> = group
        .iter_mut()
        .map(|job| {
            let result = store.append(&job.records);
            if let (Ok(()), true, Some(appended)) = (&result, will_sync, job.appended.take()) {
                appended();
            }
            result
        })
        .collect();
    let synced = match mode {
        FsyncMode::None => Ok(()),
        FsyncMode::Always | FsyncMode::Batch(_) if results.iter().any(Result::is_ok) => {
            let started = Instant::now();
            let r = store.sync();
            metrics::histogram!(crate::metrics::WAL_FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
            r
        }
        FsyncMode::Always | FsyncMode::Batch(_) => Ok(()),
    };
    if let Err(e) = &synced {
        tracing::error!(jobs = group.len(), "sync failed, failing the whole group: {e}");
    }
    for (job, result) in group.drain(..).zip(results) {
        let result = match &synced {
            Ok(()) => result,
            Err(e) => Err(duplicate(e)),
        };
        job.complete(result);
    }
}

/// Syncs records of lazy jobs that no synced group has covered.
fn sync_lazy(store: &mut dyn TaskStore) {
    if let Err(e) = store.sync() {
        tracing::error!("sync of lazily written records failed: {e}");
    }
}

/// One bounded maintenance round; returns whether it left work for another round soon.
fn maintain(store: &mut dyn TaskStore) -> bool {
    let started = Instant::now();
    let pending = match store.maintain(now_unix_ms()) {
        Ok(upkeep) => upkeep == Upkeep::Pending,
        Err(e) => {
            tracing::warn!("store maintenance failed: {e}");
            false
        }
    };
    let took = started.elapsed();
    metrics::histogram!(crate::metrics::WAL_MAINTAIN_SECONDS).record(took.as_secs_f64());
    if took >= SLOW_MAINTAIN {
        tracing::debug!(ms = took.as_secs_f64() * 1e3, "slow store maintenance");
    }
    pending
}

/// A copy of `e` for each job of a failed group (`StoreError` is not `Clone`: it holds an `io::Error`).
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::NoSpace { path } => StoreError::NoSpace { path: path.clone() },
        StoreError::Io { path, source } => {
            let source = match source.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(source.kind(), source.to_string()),
            };
            StoreError::Io { path: path.clone(), source }
        }
        StoreError::Corrupt { path, offset, detail } => {
            StoreError::Corrupt { path: path.clone(), offset: *offset, detail: detail.clone() }
        }
        StoreError::RecordTooLarge { len, max } => StoreError::RecordTooLarge { len: *len, max: *max },
        StoreError::Sled(msg) => StoreError::Sled(msg.clone()),
        StoreError::Closed => StoreError::Closed,
    }
}
