//! The state of a compaction under way: the oldest segment read a slice at a time, and what of it is carried
//! forward. The steps themselves are `Wal` methods (`space.rs`), run between commits.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{self, Entry, IdemRef};
use crate::store::StoreError;

/// Most bytes of the old segment read and carried in one slice of a compaction.
pub(super) const COMPACT_SLICE: usize = 256 << 10;
/// A compaction of the oldest segment under way: it is read and carried forward a slice at a time, between
/// commits. Crash safety is as for a compaction in one go: carried records are newer copies, recovery keeps
/// the newest, and the old segment is deleted only after the carried ones are synced.
pub(super) struct Compaction {
    /// The segment being compacted.
    pub(super) index: u64,
    pub(super) file: File,
    /// File offset of the next record to read.
    pub(super) pos: u64,
    /// The current slice (reused).
    pub(super) buf: Vec<u8>,
    /// Results up to this (expiry, task id) are pushed out soon: not carried (see [`Wal::start_compaction`]).
    pub(super) going: Option<(u64, u64)>,
    /// Records carried so far.
    pub(super) carried: usize,
}

impl std::fmt::Debug for Compaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compaction").field("index", &self.index).field("pos", &self.pos).finish_non_exhaustive()
    }
}

impl Compaction {
    /// Reads the next slice from `pos` into `buf`: [`COMPACT_SLICE`] bytes, or a whole record if one is larger,
    /// never past `end`. Returns whether nothing is left to read.
    pub(super) fn read_slice(&mut self, end: u64, path: &Path) -> Result<bool, StoreError> {
        if self.pos >= end {
            self.buf.clear();
            return Ok(true);
        }
        let mut want = COMPACT_SLICE.min((end - self.pos) as usize);
        let mut prefix = [0u8; 4];
        if self.file.read_exact_at(&mut prefix, self.pos).is_ok() {
            let len = u32::from_le_bytes(prefix) as usize + format::FRAME_PREFIX;
            want = want.max(len.min((end - self.pos) as usize));
        }
        self.buf.resize(want, 0);
        self.file.read_exact_at(&mut self.buf, self.pos).map_err(|e| StoreError::io(path, e))?;
        Ok(false)
    }
}

/// A live task and/or key found in a segment being compacted.
pub(super) struct Carried<'a> {
    pub(super) task_id: u64,
    /// Attempts, dead reason and body, if the record is the task's current home.
    pub(super) task: Option<(u32, Option<String>, &'a [u8])>,
    /// Key, expiry and its task, if the record is the key's current home.
    pub(super) key: Option<(&'a str, u64, u64)>,
    /// Expiry and outcome, if the record is a kept result's current home.
    pub(super) result: Option<(u64, &'a [u8])>,
}

impl Carried<'_> {
    pub(super) fn entry(&self) -> Entry<'_> {
        let idem = self.key.map(|(key, expires_unix_ms, _)| IdemRef { key, expires_unix_ms });
        if let Some((expires_unix_ms, body)) = self.result {
            return Entry::Finish { task_id: self.task_id, expires_unix_ms, body };
        }
        match (&self.task, self.key, idem) {
            (Some((attempts, dead, body)), _, _) => {
                Entry::Snapshot { task_id: self.task_id, attempts: *attempts, dead: dead.as_deref(), idem, body }
            }
            (None, Some((_, _, task_id)), Some(idem)) => Entry::KeyCarry { task_id, idem },
            _ => Entry::Checkpoint,
        }
    }
}
