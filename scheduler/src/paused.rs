//! The queues an operator paused, kept across restarts: `<data>/paused-queues.json`,
//! `{"paused": ["name", ...]}`.
//!
//! A pause or resume rewrites the whole file durably ([`crate::durable_file`]) before the shard is told and
//! before the operator is answered, so an acknowledged pause survives a crash. Shards read the set only when
//! they create a queue (its first task or credit after a start); a change reaches a live queue through its
//! shard's mailbox (`ShardMsg::QueueControl`). Changes are serialised by one async lock: two operators pausing
//! different queues at once both end up in the file.
//!
//! The set is small (queues, not tasks) and changes rarely: a read lock per queue creation costs nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// File name in the data directory.
pub const FILE: &str = "paused-queues.json";

/// Why the paused set could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PausedError {
    /// The file exists but is not a paused set.
    #[error("{path}: not a paused-queues file: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        why: String,
    },
    /// Reading or writing failed; a failed write changed nothing.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    paused: BTreeSet<String>,
}

/// The paused queues of one node. See the module doc.
#[derive(Debug)]
pub struct PausedQueues {
    dir: PathBuf,
    path: PathBuf,
    set: RwLock<BTreeSet<String>>,
    writer: tokio::sync::Mutex<()>,
}

impl PausedQueues {
    /// Reads the set from data directory `dir` (none paused when there is no file yet).
    pub fn open(dir: &Path) -> Result<PausedQueues, PausedError> {
        let path = dir.join(FILE);
        let set = match std::fs::read(&path) {
            Ok(bytes) => {
                let doc: OnDisk = serde_json::from_slice(&bytes)
                    .map_err(|e| PausedError::Corrupt { path: path.clone(), why: e.to_string() })?;
                doc.paused
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(source) => return Err(PausedError::Io { path, source }),
        };
        Ok(PausedQueues { dir: dir.to_path_buf(), path, set: RwLock::new(set), writer: tokio::sync::Mutex::new(()) })
    }

    /// Whether `queue` is paused.
    pub fn contains(&self, queue: &str) -> bool {
        self.set.read().contains(queue)
    }

    /// The paused queues, sorted.
    pub fn list(&self) -> Vec<String> {
        self.set.read().iter().cloned().collect()
    }

    /// Pauses (`paused`) or resumes `queue`: durable on disk when this returns `Ok`; on an error nothing
    /// changed. `then` runs once the change is durable, still in turn with other changes (the shard is told
    /// there, so shards see changes in the order the file does).
    pub async fn set(&self, queue: &str, paused: bool, then: impl FnOnce()) -> Result<(), PausedError> {
        let _one_writer = self.writer.lock().await;
        let mut next = self.set.read().clone();
        let changed = if paused { next.insert(queue.to_string()) } else { next.remove(queue) };
        if !changed {
            then();
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&OnDisk { paused: next.clone() })
            .map_err(|e| PausedError::Io { path: self.path.clone(), source: std::io::Error::other(e) })?;
        let (path, dir) = (self.path.clone(), self.dir.clone());
        let written = tokio::task::spawn_blocking(move || crate::durable_file::write_durably(&path, &dir, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("writer task failed: {e}"))));
        written.map_err(|source| PausedError::Io { path: self.path.clone(), source })?;
        *self.set.write() = next;
        then();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pause_survives_a_reopen_and_a_resume_too() {
        let dir = tempfile::tempdir().unwrap();
        let p = PausedQueues::open(dir.path()).unwrap();
        assert!(!p.contains("a"));
        let told = std::sync::atomic::AtomicUsize::new(0);
        let tell = || {
            told.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        p.set("a", true, tell).await.unwrap();
        p.set("b", true, tell).await.unwrap();
        p.set("b", false, tell).await.unwrap();
        assert_eq!(told.load(std::sync::atomic::Ordering::Relaxed), 3);
        let again = PausedQueues::open(dir.path()).unwrap();
        assert_eq!(again.list(), vec!["a".to_string()]);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_refused_and_a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), b"{\"paused\": 3}").unwrap();
        assert!(matches!(PausedQueues::open(dir.path()), Err(PausedError::Corrupt { .. })));

        let gone = tempfile::tempdir().unwrap();
        let p = PausedQueues::open(gone.path()).unwrap();
        let path = gone.path().to_path_buf();
        drop(gone);
        assert!(!path.exists());
        let mut told = false;
        assert!(p.set("a", true, || told = true).await.is_err());
        assert!(!told, "the shard is not told of a change that was not written");
        assert!(!p.contains("a"), "a failed write is not applied");
    }
}
