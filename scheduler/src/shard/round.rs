//! Group-commit rounds: what a shard writes between two looks at its mailbox goes to the log as one job, and
//! the replies that depend on it wait for that job.
//!
//! The shard handles every message already queued, then flushes a round ([`Rounds::flush`]): the round's
//! records go to the commit thread (`store::committer`) as one job, which writes them, syncs once for every
//! shard's jobs that arrived meanwhile, and calls the job's `Done`. That sends [`ShardMsg::Durable`] back, and
//! the shard takes the round's [`Waiter`]s with [`Rounds::complete`] and releases them.
//!
//! **Invariants.** Records pushed between two flushes belong to one round and reach the log in one job, in
//! push order (so a unit such as `Group | Enqueue… | Finish` is never split). Each waiter is handed back by
//! [`Rounds::complete`] exactly once, with its round's result; nothing is told "stored" before that.
//! Ack replies are the exception that proves the rule: they need nothing more from the shard, so the commit
//! thread sends them itself the moment the round is durable, one hop sooner.

use std::collections::HashSet;

use bytes::Bytes;
use pm_protocol::pb::SubmitResult;
use pm_protocol::ErrorCode;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::msg::ShardMsg;
use super::results::Outcome;
use super::task::Dead;
use crate::idmap::{IdMap, IdSet};
use crate::outbox::{OutTx, Outbound, Part};
use crate::store::committer::{CommitterHandle, Done};
use crate::store::{Record, StoreError};

/// A reply (or a change of state) waiting for its round to be durable.
#[derive(Debug)]
pub(super) enum Waiter {
    /// A `SubmitAck`, and the new tasks it names (withdrawn if the round fails).
    Submit {
        out: OutTx,
        request_id: u64,
        results: Vec<(usize, SubmitResult)>,
        new_tasks: Vec<u64>,
        /// When the shard received it (for the submit latency histogram).
        received: Instant,
    },
    /// Acked tasks, finished once durable.
    Ack {
        /// The reply (`None` once handed to the committer, which sends it the moment the round is durable).
        reply: Option<LeaseReply>,
        /// Items in the request.
        n: usize,
        acked: Vec<(u64, Outcome)>,
    },
    /// A `CancelReply`, and the tasks it cancelled (live again if the round fails).
    Cancel { out: OutTx, request_id: u64, items: Vec<(usize, ErrorCode)>, cancelled: Vec<(u64, Outcome)> },
    /// A purge's `QueueControlReply`, and the tasks it cancelled (live again if the round fails).
    Purge { out: OutTx, request_id: u64, paused: bool, cancelled: Vec<(u64, Outcome)> },
    /// A `DeadLetterDeleteReply`, and the dead letters it finished (dead again if the round fails).
    DeadDeleted { out: OutTx, request_id: u64, deleted: Vec<(u64, Box<Dead>, Outcome)> },
    /// Tasks that failed for good (a final nack, answered already): finished once durable.
    Failed { failed: Vec<(u64, Outcome)> },
    /// Tasks dead-lettered this round, with their `onFailure` follow-ups: shown and told to watchers once
    /// durable, ready again if the round failed (still live on disk).
    Buried { buried: Vec<(u64, Vec<u64>)> },
    /// Follow-ups written this round: handed to their shards once durable.
    Adopt { children: Vec<(u64, Bytes)> },
}

/// A `LeaseReply` waiting for its round: where it goes, its request id and its codes.
pub(super) type LeaseReply = (OutTx, u64, Vec<(usize, ErrorCode)>);

/// Sends `reply` with the round's `result`: a store error replaces every `OK` (nothing of the round is durable).
pub(super) fn send_lease_reply((out, request_id, mut items): LeaseReply, result: &Result<(), (ErrorCode, String)>) {
    if let Err((code, _)) = result {
        for (_, c) in items.iter_mut() {
            if *c == ErrorCode::Ok {
                *c = *code;
            }
        }
    }
    let _ = out.send(Outbound::Part { request_id, part: Part::Lease(items) });
}

/// Maps a store failure to the wire code producers see.
pub fn store_error_code(e: &StoreError) -> ErrorCode {
    match e {
        StoreError::NoSpace { .. } => ErrorCode::StoreFull,
        StoreError::RecordTooLarge { .. } => ErrorCode::InvalidTask,
        _ => ErrorCode::StoreFailed,
    }
}

/// One shard's rounds: the one being gathered, and those handed to the committer and not yet reported.
pub(super) struct Rounds {
    /// The last round flushed.
    round: u64,
    /// Records of the round being gathered.
    records: Vec<Record>,
    /// Waiters of the round being gathered.
    waiters: Vec<Waiter>,
    /// Follow-ups written in the round being gathered (id, stored task).
    adopting: Vec<(u64, Bytes)>,
    /// Tasks dead-lettered in the round being gathered, with their follow-ups.
    buried: Vec<(u64, Vec<u64>)>,
    /// Flushed rounds, by number, until the committer reports them.
    pending: IdMap<u64, Vec<Waiter>>,
    /// Tasks whose round failed while later rounds were still in flight: a duplicate submit in a later round
    /// must not be told "already enqueued as X" when X never became durable.
    failed: IdSet<u64>,
    committer: CommitterHandle,
    /// The shard's own mailbox, for `Appended` and `Durable`.
    self_tx: mpsc::UnboundedSender<ShardMsg>,
    /// Lease new tasks only once durable (`--lease-after-sync`): no `Appended` is asked for.
    lease_after_sync: bool,
}

impl Rounds {
    /// Rounds handed to `committer`, reported back on `self_tx`.
    pub(super) fn new(
        committer: CommitterHandle,
        self_tx: mpsc::UnboundedSender<ShardMsg>,
        lease_after_sync: bool,
    ) -> Rounds {
        Rounds {
            round: 0,
            records: Vec::new(),
            waiters: Vec::new(),
            adopting: Vec::new(),
            buried: Vec::new(),
            pending: IdMap::default(),
            failed: IdSet::default(),
            committer,
            self_tx,
            lease_after_sync,
        }
    }

    /// Adds a record to the round being gathered.
    pub(super) fn record(&mut self, record: Record) {
        self.records.push(record);
    }

    /// Makes `waiter` wait for the round being gathered.
    pub(super) fn wait(&mut self, waiter: Waiter) {
        self.waiters.push(waiter);
    }

    /// A follow-up written in this round, to hand to its shard once durable.
    pub(super) fn adopt_later(&mut self, task_id: u64, body: Bytes) {
        self.adopting.push((task_id, body));
    }

    /// A task dead-lettered in this round, with its follow-ups.
    pub(super) fn bury(&mut self, task_id: u64, children: Vec<u64>) {
        self.buried.push((task_id, children));
    }

    /// Ends the round being gathered: its records go to the committer as one job (nothing if it has neither
    /// records nor waiters). A round that only counts attempts or moves dead letters has nobody waiting, so it
    /// asks for no sync of its own (`CommitterHandle::submit_lazy`; a crash can at worst undercount one
    /// attempt). A round with new tasks asks to hear when it is written (`Appended`), so they can be leased
    /// while it syncs, unless `--lease-after-sync`.
    pub(super) fn flush(&mut self) {
        if !self.buried.is_empty() {
            self.waiters.push(Waiter::Buried { buried: std::mem::take(&mut self.buried) });
        }
        if !self.adopting.is_empty() {
            self.waiters.push(Waiter::Adopt { children: std::mem::take(&mut self.adopting) });
        }
        if self.records.is_empty() && self.waiters.is_empty() {
            return;
        }
        self.round += 1;
        let round = self.round;
        let records = std::mem::take(&mut self.records);
        let mut waiters = std::mem::take(&mut self.waiters);
        // Ack replies need nothing more from this shard: the commit thread sends them the moment the round is
        // durable, one hop sooner than through this shard (the shard's own part follows on `Durable`).
        let replies: Vec<LeaseReply> = waiters
            .iter_mut()
            .filter_map(|w| match w {
                Waiter::Ack { reply, .. } => reply.take(),
                _ => None,
            })
            .collect();
        let tx = self.self_tx.clone();
        let done: Done = Box::new(move |res: Result<(), StoreError>| {
            let result = res.map_err(|e| (store_error_code(&e), e.to_string()));
            // `Durable` first: anything the agent sends after reading its reply queues behind it at the shard.
            let _ = tx.send(ShardMsg::Durable { round, result: result.clone() });
            for reply in replies {
                send_lease_reply(reply, &result);
            }
        });
        if waiters.is_empty() {
            self.committer.submit_lazy(records, done);
            return;
        }
        let new_tasks = waiters.iter().any(|w| matches!(w, Waiter::Submit { new_tasks, .. } if !new_tasks.is_empty()));
        self.pending.insert(round, waiters);
        if new_tasks && !self.lease_after_sync {
            let tx = self.self_tx.clone();
            let appended = Box::new(move || {
                let _ = tx.send(ShardMsg::Appended { round });
            });
            self.committer.submit_with_appended(records, appended, done);
        } else {
            self.committer.submit(records, done);
        }
    }

    /// The new tasks of flushed round `round` (written, maybe not yet durable).
    pub(super) fn new_tasks_of(&self, round: u64) -> Vec<u64> {
        let Some(waiters) = self.pending.get(&round) else { return Vec::new() };
        waiters
            .iter()
            .filter_map(|w| match w {
                Waiter::Submit { new_tasks, .. } => Some(new_tasks.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The waiters of round `round`, which the committer reported: handed back once.
    pub(super) fn complete(&mut self, round: u64) -> Option<Vec<Waiter>> {
        self.pending.remove(&round)
    }

    /// Called after a round's waiters are released: once nothing is in flight, no later submit can be a
    /// duplicate of a failed one, so the failed ids are forgotten.
    pub(super) fn settle(&mut self) {
        if self.pending.is_empty() && self.waiters.is_empty() {
            self.failed.clear();
        }
    }

    /// Notes tasks whose submit failed to become durable.
    pub(super) fn mark_failed(&mut self, ids: &HashSet<u64>) {
        self.failed.extend(ids.iter().copied());
    }

    /// Whether `task_id`'s submit failed to become durable (while rounds are still in flight).
    pub(super) fn is_failed(&self, task_id: u64) -> bool {
        self.failed.contains(&task_id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::store::committer::Committer;
    use crate::store::wal::{Wal, WalOptions};
    use crate::store::FsyncMode;

    fn enqueue(task_id: u64) -> Record {
        Record::Enqueue { task_id, body: Bytes::from_static(b"{}"), idempotency: None }
    }

    fn submit_waiter(new_tasks: Vec<u64>) -> Waiter {
        let (out, _rx) = crate::outbox::channel();
        Waiter::Submit { out, request_id: 1, results: Vec::new(), new_tasks, received: Instant::now() }
    }

    /// The next message the rounds sent to their shard.
    fn next(rx: &mut mpsc::UnboundedReceiver<ShardMsg>) -> ShardMsg {
        for _ in 0..500 {
            if let Ok(msg) = rx.try_recv() {
                return msg;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no message from the commit thread");
    }

    /// A WAL in a temporary directory, its commit thread, and rounds reporting on a channel of their own.
    pub(crate) fn rounds_on_a_wal(
        lease_after_sync: bool,
    ) -> (tempfile::TempDir, Committer, Rounds, mpsc::UnboundedReceiver<ShardMsg>) {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let committer = Committer::start(Box::new(wal), FsyncMode::Always);
        let (tx, rx) = mpsc::unbounded_channel();
        let rounds = Rounds::new(committer.handle(), tx, lease_after_sync);
        (dir, committer, rounds, rx)
    }

    #[test]
    fn a_rounds_records_go_as_one_job_and_its_waiters_come_back_once() {
        let (dir, committer, mut rounds, mut rx) = rounds_on_a_wal(false);
        rounds.flush();
        assert!(rx.try_recv().is_err(), "an empty round is not flushed");
        rounds.record(enqueue(1));
        rounds.record(enqueue(2));
        rounds.wait(submit_waiter(vec![1, 2]));
        rounds.flush();
        assert!(matches!(next(&mut rx), ShardMsg::Appended { round: 1 }), "new tasks: told when written");
        assert_eq!(rounds.new_tasks_of(1), vec![1, 2]);
        assert!(matches!(next(&mut rx), ShardMsg::Durable { round: 1, result: Ok(()) }));
        assert_eq!(rounds.complete(1).map(|w| w.len()), Some(1));
        assert!(rounds.complete(1).is_none(), "waiters are handed back once");
        committer.shutdown();
        let (_, recovered) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(recovered.tasks.len(), 2, "both records reached the log");
    }

    #[test]
    fn a_round_nobody_waits_for_is_written_without_a_pending_entry() {
        let (_dir, committer, mut rounds, mut rx) = rounds_on_a_wal(true);
        rounds.record(Record::Attempt { task_id: 9, attempts: 1 });
        rounds.flush();
        assert!(matches!(next(&mut rx), ShardMsg::Durable { round: 1, result: Ok(()) }));
        assert!(rounds.complete(1).is_none());
        // With --lease-after-sync a round of new tasks is reported only when durable.
        rounds.record(enqueue(1));
        rounds.wait(submit_waiter(vec![1]));
        rounds.flush();
        assert!(matches!(next(&mut rx), ShardMsg::Durable { round: 2, result: Ok(()) }));
        committer.shutdown();
    }

    #[test]
    fn failed_submits_are_remembered_until_nothing_is_in_flight() {
        let (_dir, committer, mut rounds, mut rx) = rounds_on_a_wal(false);
        rounds.mark_failed(&HashSet::from([5]));
        rounds.record(enqueue(6));
        rounds.wait(submit_waiter(vec![6]));
        rounds.flush();
        rounds.settle();
        assert!(rounds.is_failed(5), "a round is still in flight");
        let _appended = next(&mut rx);
        let _durable = next(&mut rx);
        rounds.complete(1);
        rounds.settle();
        assert!(!rounds.is_failed(5));
        committer.shutdown();
    }
}
