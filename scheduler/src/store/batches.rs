//! What a store recovered, with its live tasks handed over a batch at a time ([`Recovery`], [`TaskBatches`]).
//!
//! Why batches: a backlog on disk may be larger than the memory. Were every live task's body held at once
//! between the store's recovery and the shards' rebuild, a log of 100 M queued tasks would need its whole live
//! part in RAM to restart. The WAL reads its segments again after the replay, a few at a time, in id order,
//! and each batch is decoded into its shard and dropped before the next is read (`wal/stream.rs`).

use super::{Recovered, RecoveredIdem, RecoveredResult, RecoveredTask, StoreError};

/// Live tasks (not acked, dead letters included), in id order, a batch at a time.
pub struct TaskBatches {
    total: usize,
    source: Box<dyn Iterator<Item = Result<Vec<RecoveredTask>, StoreError>> + Send>,
}

impl TaskBatches {
    /// `total` tasks from `source`.
    pub fn new(
        total: usize,
        source: impl Iterator<Item = Result<Vec<RecoveredTask>, StoreError>> + Send + 'static,
    ) -> Self {
        TaskBatches { total, source: Box::new(source) }
    }

    /// Tasks already in memory, as one batch.
    pub fn whole(tasks: Vec<RecoveredTask>) -> Self {
        let total = tasks.len();
        TaskBatches::new(total, (!tasks.is_empty()).then_some(Ok(tasks)).into_iter())
    }

    /// How many tasks the batches hold in all.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The same batches, read by a thread of their own up to `depth` batches ahead, so that reading the next
    /// batch (the disk, or copies out of the page cache) overlaps what the caller does with this one. Memory
    /// stays bounded: at most `depth` batches wait.
    pub fn read_ahead(self, depth: usize) -> TaskBatches {
        let total = self.total;
        let (tx, rx) = std::sync::mpsc::sync_channel(depth.max(1));
        let spawned = std::thread::Builder::new().name("pm-recovery-read".into()).spawn(move || {
            for batch in self {
                if tx.send(batch).is_err() {
                    return; // the caller stopped taking batches
                }
            }
        });
        match spawned {
            Ok(_) => TaskBatches::new(total, rx.into_iter()),
            Err(e) => {
                // No file is concerned: the error names the thread that could not start.
                let e = StoreError::Io { path: "(thread pm-recovery-read)".into(), source: e };
                TaskBatches::new(total, std::iter::once(Err(e)))
            }
        }
    }

    /// Every task in one vector (tests, and small stores).
    pub fn collect_all(self) -> Result<Vec<RecoveredTask>, StoreError> {
        let mut all = Vec::with_capacity(self.total);
        for batch in self {
            all.extend(batch?);
        }
        Ok(all)
    }
}

impl Iterator for TaskBatches {
    type Item = Result<Vec<RecoveredTask>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.source.next()
    }
}

impl std::fmt::Debug for TaskBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskBatches").field("total", &self.total).finish_non_exhaustive()
    }
}

/// Everything a store knows when it opens, its tasks in batches ([`Recovered`] holds them all at once).
#[derive(Debug)]
pub struct Recovery {
    /// Live tasks, in id order.
    pub tasks: TaskBatches,
    /// Unexpired idempotency keys (expired ones may or may not be returned; callers re-check expiry).
    pub idempotency: Vec<RecoveredIdem>,
    /// At least the largest task id ever appended to this store (new ids are allocated above it).
    pub max_task_id: u64,
    /// Unexpired results, at most the store's maximum, ordered by expiry (then task id).
    pub results: Vec<RecoveredResult>,
}

impl Recovery {
    /// Everything at once.
    pub fn collect(self) -> Result<Recovered, StoreError> {
        Ok(Recovered {
            tasks: self.tasks.collect_all()?,
            idempotency: self.idempotency,
            max_task_id: self.max_task_id,
            results: self.results,
        })
    }
}

impl From<Recovered> for Recovery {
    fn from(r: Recovered) -> Self {
        Recovery {
            tasks: TaskBatches::whole(r.tasks),
            idempotency: r.idempotency,
            max_task_id: r.max_task_id,
            results: r.results,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn task(id: u64) -> RecoveredTask {
        RecoveredTask { task_id: id, body: Bytes::new(), attempts: 0, dead_reason: None }
    }

    #[test]
    fn batches_come_in_order_and_collect_whole() {
        let batches = vec![Ok(vec![task(1), task(2)]), Ok(vec![task(5)])];
        let b = TaskBatches::new(3, batches.into_iter());
        assert_eq!(b.total(), 3);
        let all = b.collect_all().unwrap();
        assert_eq!(all.iter().map(|t| t.task_id).collect::<Vec<_>>(), vec![1, 2, 5]);
        assert_eq!(TaskBatches::whole(Vec::new()).count(), 0, "nothing: no batch");
        let failing = vec![Ok(vec![task(1)]), Err(StoreError::Closed)];
        assert!(TaskBatches::new(1, failing.into_iter()).collect_all().is_err());
        let many = (0..50u64).map(|i| Ok(vec![task(2 * i), task(2 * i + 1)]));
        let ahead = TaskBatches::new(100, many).read_ahead(2);
        assert_eq!(ahead.total(), 100);
        let ids: Vec<u64> = ahead.collect_all().unwrap().iter().map(|t| t.task_id).collect();
        assert_eq!(ids, (0..100).collect::<Vec<_>>(), "read ahead, in the same order");
    }
}
