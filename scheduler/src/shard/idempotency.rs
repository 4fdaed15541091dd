//! Idempotency keys: a submit that names a key already used in its queue within `--idempotency-window` is
//! answered with the first task's id (`duplicate`), not enqueued again.
//!
//! **Invariants.** A key maps to the task it was first submitted as until it expires; keys expire in the
//! order of their expiry (a queue of (expiry, key), oldest first); a key is removed again if the submit that
//! wrote it failed to become durable. The key is `queue\0key`, so the same key in two queues names two tasks,
//! and a key lives on the shard of its queue. Each key is also in its task's `Enqueue` record, so recovery
//! restores the live ones.

use std::collections::{HashMap, VecDeque};

/// One shard's idempotency keys.
#[derive(Debug, Default)]
pub(super) struct Idempotency {
    /// Key → (task id, expiry in Unix ms).
    keys: HashMap<String, (u64, u64)>,
    /// (expiry, key), oldest first.
    expiry: VecDeque<(u64, String)>,
}

impl Idempotency {
    /// The stored form of `key` in `queue`.
    pub(super) fn key_of(queue: &str, key: &str) -> String {
        format!("{queue}\0{key}")
    }

    /// The queue part of a stored key.
    pub(super) fn queue_of(key: &str) -> &str {
        key.split('\0').next().unwrap_or(key)
    }

    /// Takes the recovered keys (key, task id, expiry) that are still live at `now_ms`.
    pub(super) fn restore(&mut self, keys: impl IntoIterator<Item = (String, u64, u64)>, now_ms: u64) {
        for (key, task_id, expires) in keys {
            if expires > now_ms {
                self.keys.insert(key.clone(), (task_id, expires));
                self.expiry.push_back((expires, key));
            }
        }
        self.expiry.make_contiguous().sort();
    }

    /// The task first submitted with `key`, if the key is live at `now_ms`.
    pub(super) fn get(&self, key: &str, now_ms: u64) -> Option<u64> {
        self.keys.get(key).filter(|(_, exp)| *exp > now_ms).map(|(id, _)| *id)
    }

    /// Remembers `key` as `task_id`'s until `expires` (later than every key inserted before: the window is
    /// fixed).
    pub(super) fn insert(&mut self, key: String, task_id: u64, expires: u64) {
        self.keys.insert(key.clone(), (task_id, expires));
        self.expiry.push_back((expires, key));
    }

    /// Forgets `key` (its submit was not stored). Its expiry entry is skipped when it comes due.
    pub(super) fn forget(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// Forgets the keys that expired at or before `now_ms`.
    pub(super) fn expire(&mut self, now_ms: u64) {
        while let Some((exp, _)) = self.expiry.front() {
            if *exp > now_ms {
                break;
            }
            if let Some((exp, key)) = self.expiry.pop_front() {
                // A key written again since has a later expiry: it stays.
                if self.keys.get(&key).is_some_and(|(_, e)| *e == exp) {
                    self.keys.remove(&key);
                }
            }
        }
    }

    /// How many keys are live.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_first_task_until_it_expires() {
        let mut idem = Idempotency::default();
        let key = Idempotency::key_of("q", "k");
        idem.insert(key.clone(), 7, 1_000);
        assert_eq!(idem.get(&key, 999), Some(7));
        assert_eq!(idem.get(&key, 1_000), None, "expired at its expiry");
        assert_eq!(idem.get(&Idempotency::key_of("other", "k"), 999), None, "keys are per queue");
        idem.expire(1_000);
        assert_eq!(idem.len(), 0);
    }

    #[test]
    fn a_key_written_again_outlives_its_first_expiry() {
        let mut idem = Idempotency::default();
        idem.insert("q\0k".into(), 1, 1_000);
        idem.forget("q\0k");
        idem.insert("q\0k".into(), 2, 2_000);
        idem.expire(1_500);
        assert_eq!(idem.get("q\0k", 1_500), Some(2));
    }

    #[test]
    fn recovery_keeps_only_live_keys_in_expiry_order() {
        let mut idem = Idempotency::default();
        idem.restore([("q\0b".to_string(), 2, 3_000), ("q\0a".to_string(), 1, 2_000), ("q\0c".into(), 3, 50)], 100);
        assert_eq!(idem.len(), 2);
        idem.expire(2_000);
        assert_eq!((idem.get("q\0a", 0), idem.get("q\0b", 0)), (None, Some(2)));
        assert_eq!(Idempotency::queue_of("q\0b"), "q");
    }
}
