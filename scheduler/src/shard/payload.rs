//! Where a task's payload is: in memory, within the shard's share of `--resident-payload-bytes`, or only in
//! the store, read back when the task is leased (or shown, or its follow-ups are made).
//!
//! Why: every payload was in memory, so a backlog's size was bound by RAM (~775 B per queued 256 B task),
//! while it is already on disk in the store. Now the payloads of the newest tasks beyond the budget are not
//! kept: at a steady rate the backlog is small and every payload stays resident (no read on the hot path);
//! under a large backlog, the oldest tasks are resident (leased first, from memory) and the rest are read
//! back in the order they were written, sequentially through the page cache and the kernel's read-ahead.
//!
//! A task admitted while the budget is full stays in the store only for its whole life, even once room is made:
//! a task's payload is never read to make it resident again.

use std::sync::Arc;

use bytes::Bytes;
use pm_protocol::pb::StoredTask;
use pm_protocol::Message as _;

use crate::store::BodyReader;

/// The shard's resident payloads and its way to the others.
pub(crate) struct Payloads {
    reader: Arc<dyn BodyReader>,
    /// Most payload bytes kept in memory by this shard.
    budget: usize,
    /// Payload bytes kept in memory now.
    resident: usize,
}

impl Payloads {
    /// Payloads read through `reader`, at most `budget` bytes of them kept in memory.
    pub(crate) fn new(reader: Arc<dyn BodyReader>, budget: usize) -> Self {
        Self { reader, budget, resident: 0 }
    }

    /// What a new task keeps of `payload`: all of it while the budget allows, else nothing (it is read back
    /// from the store when needed).
    pub(super) fn admit(&mut self, payload: Bytes) -> Option<Bytes> {
        self.fits(payload.len()).then(|| {
            self.resident += payload.len();
            payload
        })
    }

    /// Whether a payload of `len` bytes would be admitted now.
    pub(super) fn fits(&self, len: usize) -> bool {
        self.resident.checked_add(len).is_some_and(|n| n <= self.budget)
    }

    /// A task with `payload` resident is gone.
    pub(super) fn release(&mut self, payload: Option<&Bytes>) {
        if let Some(p) = payload {
            self.resident = self.resident.saturating_sub(p.len());
        }
    }

    /// Payload bytes kept in memory now.
    pub(super) fn resident_bytes(&self) -> usize {
        self.resident
    }

    /// The payload of task `task_id`: its resident copy, or read back from the store.
    pub(super) fn get(&self, task_id: u64, resident: Option<&Bytes>) -> Result<Bytes, String> {
        match resident {
            Some(p) => Ok(p.clone()),
            None => self.read(task_id),
        }
    }

    /// Reads task `task_id`'s payload from the store (its stored body, decoded).
    fn read(&self, task_id: u64) -> Result<Bytes, String> {
        self.stored(task_id).map(|s| s.spec.unwrap_or_default().payload)
    }

    /// Reads task `task_id`'s stored record back from the store, decoded.
    pub(super) fn stored(&self, task_id: u64) -> Result<StoredTask, String> {
        metrics::counter!(crate::metrics::PAYLOAD_READS).increment(1);
        match self.reader.read_body(task_id) {
            Ok(Some(body)) => StoredTask::decode(body).map_err(|e| format!("its stored record does not decode: {e}")),
            Ok(None) => Err("the store holds no such live task".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::StoreError;

    /// A store that holds nothing (for tests whose payloads are all resident).
    #[derive(Debug)]
    pub(in crate::shard) struct NoStore;

    impl BodyReader for NoStore {
        fn read_body(&self, _: u64) -> Result<Option<Bytes>, StoreError> {
            Ok(None)
        }
    }

    #[test]
    fn payloads_are_kept_while_the_budget_allows_and_released_when_their_task_goes() {
        let mut p = Payloads::new(Arc::new(NoStore), 10);
        let a = p.admit(Bytes::from_static(b"123456")).unwrap();
        assert!(p.admit(Bytes::from_static(b"12345")).is_none(), "6 + 5 bytes are over 10");
        let b = p.admit(Bytes::from_static(b"1234")).unwrap();
        assert_eq!(p.resident_bytes(), 10);
        p.release(Some(&a));
        p.release(None);
        assert_eq!(p.resident_bytes(), 4);
        assert_eq!(p.get(1, Some(&b)).unwrap(), b);
        assert!(p.get(1, None).unwrap_err().contains("no such live task"));
    }
}
