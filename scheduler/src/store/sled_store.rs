//! The [`TaskStore`] contract on top of the `sled` embedded database (`--store sled`).
//!
//! Why keep it: it is the obvious off-the-shelf alternative, and running it through the same conformance
//! suite and benchmarks as [`super::wal`] is how we show what our own log buys (see `docs/benchmarks.md`).
//! Why it is not the default: no release since 2021 and open corruption and space-reclaim issues.
//!
//! Layout: four trees.
//!
//! - `task_state`: task id (big-endian u64, so iteration is in id order) → `attempts u32 LE | dead u8 |
//!   reason utf-8`. Kept apart from the body so an Attempt rewrites a few bytes, not the whole task.
//! - `task_body`: task id → the opaque body.
//! - `idempotency`: key → `task_id u64 BE | expires_unix_ms u64 BE`.
//! - `results`: task id → `expires_unix_ms u64 BE | outcome`. Which ones go first (expired, or beyond the
//!   maximum) is decided from an in-memory index of (expiry, id); the extras are removed right after the
//!   transaction that added them, and again at open if a crash came in between.
//! - the default tree: `max_task_id` → u64 BE, so ids are never reused after every task is gone.
//!
//! A batch is applied in one sled transaction across the trees (all or nothing); `sync` is `Db::flush`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::wal::now_unix_ms;
use super::{
    BodyReader, Record, Recovered, RecoveredIdem, RecoveredResult, RecoveredTask, StoreError, StoreStats, TaskStore,
    Upkeep,
};

const META_MAX_TASK_ID: &[u8] = b"max_task_id";

/// The sled backend. See the module docs for its layout.
#[derive(Debug)]
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    states: sled::Tree,
    bodies: sled::Tree,
    idem: sled::Tree,
    results: sled::Tree,
    /// The kept results by (expiry, task id).
    result_order: BTreeSet<(u64, u64)>,
    /// Most results kept (0: none).
    max_results: usize,
    live_tasks: u64,
    /// No key expires before this (a lower bound), so an idle `maintain` rarely scans the key tree.
    next_expiry: u64,
}

type TxResult<T> = Result<T, ConflictableTransactionError<String>>;

impl SledStore {
    /// Opens (or creates) the database in `dir` and recovers every live task, unexpired key and kept result
    /// (at most `max_results` of them; 0 keeps none).
    pub fn open(dir: &Path, max_results: usize) -> Result<(SledStore, Recovered), StoreError> {
        let path = dir.to_owned();
        let err = |e: sled::Error| sled_error(&path, e);
        let db = sled::Config::new().path(dir).open().map_err(err)?;
        let states = db.open_tree("task_state").map_err(err)?;
        let bodies = db.open_tree("task_body").map_err(err)?;
        let idem = db.open_tree("idempotency").map_err(err)?;
        let results_tree = db.open_tree("results").map_err(err)?;

        let mut tasks = Vec::new();
        for item in states.iter() {
            let (key, value) = item.map_err(err)?;
            let task_id = be_u64(&key).ok_or_else(|| corrupt("task id key", &key))?;
            let (attempts, dead_reason) = decode_state(&value).map_err(StoreError::Sled)?;
            let body = bodies.get(&key).map_err(err)?.map(|b| Bytes::copy_from_slice(&b)).unwrap_or_default();
            tasks.push(RecoveredTask { task_id, body, attempts, dead_reason });
        }
        let now = now_unix_ms();
        let mut next_expiry = u64::MAX;
        let mut idempotency = Vec::new();
        for item in idem.iter() {
            let (key, value) = item.map_err(err)?;
            let (task_id, expires_unix_ms) = decode_idem(&value).ok_or_else(|| corrupt("idempotency value", &value))?;
            next_expiry = next_expiry.min(expires_unix_ms);
            if expires_unix_ms > now {
                let key =
                    String::from_utf8(key.to_vec()).map_err(|e| StoreError::Sled(format!("idempotency key: {e}")))?;
                idempotency.push(RecoveredIdem { key, task_id, expires_unix_ms });
            }
        }
        let stored_max = db.get(META_MAX_TASK_ID).map_err(err)?.and_then(|v| be_u64(&v)).unwrap_or(0);
        let max_task_id = tasks.last().map_or(stored_max, |t| t.task_id.max(stored_max));
        let mut results = Vec::new();
        let mut gone = sled::Batch::default();
        for item in results_tree.iter() {
            let (key, value) = item.map_err(err)?;
            let task_id = be_u64(&key).ok_or_else(|| corrupt("result key", &key))?;
            let expires_unix_ms = value.get(..8).and_then(be_u64).ok_or_else(|| corrupt("result", &value))?;
            if expires_unix_ms <= now || max_results == 0 {
                gone.remove(key);
            } else {
                results.push(RecoveredResult { task_id, expires_unix_ms, body: Bytes::copy_from_slice(&value[8..]) });
            }
        }
        results.sort_unstable_by_key(|r| (r.expires_unix_ms, r.task_id));
        let extra = results.len().saturating_sub(max_results);
        for r in results.drain(..extra) {
            gone.remove(&r.task_id.to_be_bytes());
        }
        results_tree.apply_batch(gone).map_err(err)?;
        let result_order = results.iter().map(|r| (r.expires_unix_ms, r.task_id)).collect();
        let max_task_id = results.iter().map(|r| r.task_id).fold(max_task_id, u64::max);
        let live_tasks = tasks.len() as u64;
        let store = SledStore {
            path,
            db,
            states,
            bodies,
            idem,
            results: results_tree,
            result_order,
            max_results,
            live_tasks,
            next_expiry,
        };
        Ok((store, Recovered { tasks, idempotency, max_task_id, results }))
    }
}

impl TaskStore for SledStore {
    fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let meta: &sled::Tree = &self.db;
        let keep = self.max_results > 0;
        let result = (&self.states, &self.bodies, &self.idem, meta, &self.results).transaction(
            |(states, bodies, idem, meta, results)| apply(records, states, bodies, idem, meta, keep.then_some(results)),
        );
        let delta = match result {
            Ok(delta) => delta,
            Err(TransactionError::Abort(msg)) => return Err(StoreError::Sled(msg)),
            Err(TransactionError::Storage(e)) => return Err(sled_error(&self.path, e)),
        };
        self.live_tasks = self.live_tasks.saturating_add_signed(delta);
        for r in records {
            match r {
                Record::Enqueue { idempotency: Some(k), .. } => {
                    self.next_expiry = self.next_expiry.min(k.expires_unix_ms)
                }
                Record::Finish { task_id, expires_unix_ms, .. } if keep => {
                    self.result_order.insert((*expires_unix_ms, *task_id));
                }
                _ => {}
            }
        }
        if self.result_order.len() > self.max_results {
            let mut gone = sled::Batch::default();
            while self.result_order.len() > self.max_results {
                let Some((_, id)) = self.result_order.pop_first() else { break };
                gone.remove(&id.to_be_bytes());
            }
            self.results.apply_batch(gone).map_err(|e| sled_error(&self.path, e))?;
        }
        let bytes: usize = records.iter().map(encoded_len).sum();
        metrics::counter!(crate::metrics::WAL_BYTES_WRITTEN).increment(bytes as u64);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| sled_error(&self.path, e))
    }

    fn maintain(&mut self, now_unix_ms: u64) -> Result<Upkeep, StoreError> {
        let mut expired = sled::Batch::default();
        for item in self.idem.iter() {
            let (key, value) = item.map_err(|e| sled_error(&self.path, e))?;
            if decode_idem(&value).is_none_or(|(_, expires)| expires <= now_unix_ms) {
                expired.remove(key);
            }
        }
        self.idem.apply_batch(expired).map_err(|e| sled_error(&self.path, e))?;
        let mut gone = sled::Batch::default();
        while let Some(&(exp, id)) = self.result_order.first() {
            if exp > now_unix_ms {
                break;
            }
            self.result_order.pop_first();
            gone.remove(&id.to_be_bytes());
        }
        self.results.apply_batch(gone).map_err(|e| sled_error(&self.path, e))?;
        Ok(Upkeep::Done)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            disk_bytes: self.db.size_on_disk().unwrap_or(0),
            segments: 1,
            live_tasks: self.live_tasks,
            results: self.result_order.len() as u64,
        }
    }

    fn body_reader(&self) -> Arc<dyn BodyReader> {
        Arc::new(SledBodies { path: self.path.clone(), bodies: self.bodies.clone() })
    }
}

/// The sled store's [`BodyReader`]: a handle on its body tree (sled trees are shared between threads).
#[derive(Debug)]
struct SledBodies {
    path: PathBuf,
    bodies: sled::Tree,
}

impl BodyReader for SledBodies {
    fn read_body(&self, task_id: u64) -> Result<Option<Bytes>, StoreError> {
        let body = self.bodies.get(task_id.to_be_bytes()).map_err(|e| sled_error(&self.path, e))?;
        Ok(body.map(|b| Bytes::copy_from_slice(&b)))
    }
}

/// Applies a batch inside the transaction; returns the change in the number of live tasks.
fn apply(
    records: &[Record],
    states: &TransactionalTree,
    bodies: &TransactionalTree,
    idem: &TransactionalTree,
    meta: &TransactionalTree,
    results: Option<&TransactionalTree>,
) -> TxResult<i64> {
    let stored_max = meta.get(META_MAX_TASK_ID)?.and_then(|v| be_u64(&v)).unwrap_or(0);
    let mut max = stored_max;
    let mut delta = 0i64;
    for record in records {
        match record {
            Record::Enqueue { task_id, body, idempotency } => {
                let key = task_id.to_be_bytes();
                if states.insert(&key, encode_state(0, None))?.is_none() {
                    delta += 1;
                }
                bodies.insert(&key, body.as_ref())?;
                if let Some(k) = idempotency {
                    idem.insert(k.key.as_bytes(), encode_idem(*task_id, k.expires_unix_ms).as_slice())?;
                }
                max = max.max(*task_id);
            }
            Record::Attempt { task_id, attempts } => {
                update(states, *task_id, |_, dead| (*attempts, dead))?;
            }
            Record::DeadLetter { task_id, reason } => {
                update(states, *task_id, |attempts, _| (attempts, Some(reason.clone())))?;
            }
            Record::Redrive { task_id } => {
                update(states, *task_id, |_, _| (0, None))?;
            }
            Record::Ack { task_id } => {
                let key = task_id.to_be_bytes();
                if states.remove(&key)?.is_some() {
                    delta -= 1;
                }
                bodies.remove(&key)?;
            }
            // One append is one transaction already.
            Record::Group { .. } => {}
            Record::Finish { task_id, expires_unix_ms, body } => {
                let key = task_id.to_be_bytes();
                if states.remove(&key)?.is_some() {
                    delta -= 1;
                }
                bodies.remove(&key)?;
                if let Some(results) = results {
                    let mut v = Vec::with_capacity(8 + body.len());
                    v.extend_from_slice(&expires_unix_ms.to_be_bytes());
                    v.extend_from_slice(body);
                    results.insert(&key, v)?;
                }
                max = max.max(*task_id);
            }
        }
    }
    if max > stored_max {
        meta.insert(META_MAX_TASK_ID, &max.to_be_bytes())?;
    }
    Ok(delta)
}

/// Rewrites the state of a live task (records about unknown tasks are ignored, as in the WAL).
fn update(
    states: &TransactionalTree,
    task_id: u64,
    f: impl FnOnce(u32, Option<String>) -> (u32, Option<String>),
) -> TxResult<()> {
    let key = task_id.to_be_bytes();
    if let Some(old) = states.get(key)? {
        let (attempts, dead) = decode_state(&old).map_err(ConflictableTransactionError::Abort)?;
        let (attempts, dead) = f(attempts, dead);
        states.insert(&key, encode_state(attempts, dead.as_deref()))?;
    }
    Ok(())
}

fn encode_state(attempts: u32, dead: Option<&str>) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + dead.map_or(0, str::len));
    v.extend_from_slice(&attempts.to_le_bytes());
    v.push(u8::from(dead.is_some()));
    v.extend_from_slice(dead.unwrap_or_default().as_bytes());
    v
}

fn decode_state(v: &[u8]) -> Result<(u32, Option<String>), String> {
    let (Some(attempts), Some(&flag)) = (v.get(0..4), v.get(4)) else {
        return Err(format!("task state of {} bytes is too short", v.len()));
    };
    let attempts = u32::from_le_bytes([attempts[0], attempts[1], attempts[2], attempts[3]]);
    let dead = match flag {
        0 => None,
        _ => Some(String::from_utf8(v[5..].to_vec()).map_err(|e| format!("dead-letter reason: {e}"))?),
    };
    Ok((attempts, dead))
}

fn encode_idem(task_id: u64, expires_unix_ms: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&task_id.to_be_bytes());
    v[8..].copy_from_slice(&expires_unix_ms.to_be_bytes());
    v
}

fn decode_idem(v: &[u8]) -> Option<(u64, u64)> {
    Some((be_u64(v.get(..8)?)?, be_u64(v.get(8..)?)?))
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// Approximate bytes a record adds (for the bytes-written counter).
fn encoded_len(r: &Record) -> usize {
    match r {
        Record::Enqueue { body, idempotency, .. } => {
            13 + body.len() + idempotency.as_ref().map_or(0, |k| k.key.len() + 16)
        }
        Record::DeadLetter { reason, .. } => 13 + reason.len(),
        Record::Finish { body, .. } => 21 + body.len(),
        _ => 13,
    }
}

fn corrupt(what: &str, bytes: &[u8]) -> StoreError {
    StoreError::Sled(format!("malformed {what} of {} bytes", bytes.len()))
}

fn sled_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(source) => StoreError::io(path, source),
        other => StoreError::Sled(other.to_string()),
    }
}
