//! One partition's raft log as raft reads it: the [`raft::Storage`] of its group.
//!
//! The entries since the last compaction are held in memory, so raft's reads (`entries`, `term`) never touch
//! the disk; the disk ([`super::log_file`]) only has to be appended to, and read back at start. raft-rs's
//! asynchronous mode needs exactly this split: an entry must be readable from the storage as soon as the
//! group hands it out for persisting, and it counts as persisted only once the writer's `fdatasync` returned
//! ([`super::group::Group::persisted`]). Nothing here claims durability.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::RwLock;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::codec::Frame;

/// A partition's log state: what its frames in the raft log add up to.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct LogState {
    /// Term, vote and commit index.
    pub hard: HardState,
    /// Voters and learners.
    pub conf: ConfState,
    /// Entries up to this index are compacted away (0: none ever were).
    pub compacted_index: u64,
    /// The term of the entry at `compacted_index`.
    pub compacted_term: u64,
    /// The entries after `compacted_index`, consecutive.
    pub entries: VecDeque<Entry>,
}

/// Why a partition's frames do not add up to a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogStateError {
    /// Entries that would leave a hole after the last one held.
    #[error("entries starting at {first} after a log ending at {last}")]
    Gap {
        /// Index of the first new entry.
        first: u64,
        /// Last index held.
        last: u64,
    },
    /// Entries whose indexes do not follow one another.
    #[error("entry {index} follows entry {prev}")]
    NotConsecutive {
        /// The entry before.
        prev: u64,
        /// The entry out of order.
        index: u64,
    },
}

impl LogState {
    /// Index of the first entry held (one past the compacted ones).
    pub fn first_index(&self) -> u64 {
        self.compacted_index + 1
    }

    /// Index of the last entry held, or the compacted index when none is.
    pub fn last_index(&self) -> u64 {
        self.compacted_index + self.entries.len() as u64
    }

    /// Term of the entry at `index`, if it is held or is the compacted one.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.compacted_index {
            return Some(self.compacted_term);
        }
        let at = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(at).ok()?).map(|e| e.term)
    }

    /// Appends consecutive entries; the first replaces the entry at its index and everything after it.
    pub fn append(&mut self, new: &[Entry]) -> Result<(), LogStateError> {
        let Some(first) = new.first() else { return Ok(()) };
        for pair in new.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(LogStateError::NotConsecutive { prev: pair[0].index, index: pair[1].index });
            }
        }
        let last = self.last_index();
        if first.index > last + 1 {
            return Err(LogStateError::Gap { first: first.index, last });
        }
        if first.index <= self.compacted_index {
            // Entries at or below the compaction point are applied already: keep only what follows it.
            let skip = (self.compacted_index + 1 - first.index) as usize;
            self.entries.clear();
            self.entries.extend(new.iter().skip(skip).cloned());
            return Ok(());
        }
        self.entries.truncate((first.index - self.first_index()) as usize);
        self.entries.extend(new.iter().cloned());
        Ok(())
    }

    /// Drops the entries up to and including `index` (applied by the state machine, which holds them now).
    pub fn compact(&mut self, index: u64) {
        if index <= self.compacted_index {
            return;
        }
        let Some(term) = self.term(index) else { return };
        let n = ((index - self.compacted_index) as usize).min(self.entries.len());
        self.entries.drain(..n);
        self.compacted_index = index;
        self.compacted_term = term;
    }

    /// Applies one frame read back from the log (the frame names this partition).
    pub fn apply(&mut self, frame: Frame) -> Result<(), LogStateError> {
        match frame {
            Frame::Entries { entries, .. } => self.append(&entries)?,
            Frame::HardState { state, .. } => self.hard = state,
            Frame::ConfState { state, .. } => self.conf = state,
            Frame::Compacted { index, term, .. } => {
                if index > self.compacted_index {
                    if self.term(index).is_some() {
                        self.compact(index);
                    } else {
                        self.entries.clear();
                        self.compacted_index = index;
                        self.compacted_term = term;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The shared handle raft reads through; the group's driver writes through [`PartitionStorage::state`].
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionStorage {
    state: Arc<RwLock<LogState>>,
}

impl PartitionStorage {
    /// Storage holding `state` (read back from the log at start, or empty).
    pub fn new(state: LogState) -> Self {
        PartitionStorage { state: Arc::new(RwLock::new(state)) }
    }

    /// The log state, to change it (append, hard state, compaction) before raft is told.
    pub fn state(&self) -> &RwLock<LogState> {
        &self.state
    }
}

impl raft::Storage for PartitionStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let s = self.state.read();
        Ok(RaftState { hard_state: s.hard.clone(), conf_state: s.conf.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let s = self.state.read();
        if low <= s.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > s.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - s.first_index()) as usize;
        let to = (high - s.first_index()) as usize;
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity(to - from);
        let mut size = 0u64;
        for e in s.entries.range(from..to) {
            size += (e.data.len() + e.context.len() + 24) as u64;
            // At least one entry, as raft requires, then up to the size limit.
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let s = self.state.read();
        if idx < s.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        s.term(idx).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.state.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.state.read().last_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // A follower that fell behind the compaction point needs the partition's tasks, which live in the
        // state machine (the task log), not here. Until that transfer exists, entries are not compacted while
        // a replica still needs them, so raft never asks.
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn e(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Entry::default() }
    }

    fn terms(s: &LogState) -> Vec<(u64, u64)> {
        s.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn appends_overwrite_a_conflicting_tail_and_refuse_holes() {
        let mut s = LogState::default();
        s.append(&[e(1, 1), e(2, 1), e(3, 1)]).expect("append");
        s.append(&[e(2, 2), e(3, 2), e(4, 2)]).expect("overwrite from 2");
        assert_eq!(terms(&s), vec![(1, 1), (2, 2), (3, 2), (4, 2)]);
        assert_eq!(s.append(&[e(6, 2)]), Err(LogStateError::Gap { first: 6, last: 4 }));
        assert_eq!(s.append(&[e(5, 2), e(7, 2)]), Err(LogStateError::NotConsecutive { prev: 5, index: 7 }));
        assert_eq!(s.last_index(), 4);
    }

    #[test]
    fn compaction_keeps_the_term_of_the_last_entry_dropped() {
        let mut s = LogState::default();
        s.append(&[e(1, 1), e(2, 1), e(3, 2), e(4, 2)]).expect("append");
        s.compact(2);
        assert_eq!((s.first_index(), s.last_index(), s.term(2), s.term(1)), (3, 4, Some(1), None));
        let storage = PartitionStorage::new(s.clone());
        assert!(storage.entries(2, 4, None, GetEntriesContext::empty(false)).is_err());
        let got = storage.entries(3, 5, None, GetEntriesContext::empty(false)).expect("entries");
        assert_eq!(got.len(), 2);
        assert_eq!(storage.term(2).expect("term of the compacted entry"), 1);
        // Entries from before the compaction point are already applied: only the rest is kept.
        s.append(&[e(2, 1), e(3, 2), e(4, 3)]).expect("append across the compaction point");
        assert_eq!(terms(&s), vec![(3, 2), (4, 3)]);
    }

    #[test]
    fn a_size_limit_still_returns_one_entry() {
        let mut s = LogState::default();
        let big = Entry { data: bytes::Bytes::from(vec![0u8; 1000]), ..e(1, 1) };
        s.append(&[big, e(2, 1)]).expect("append");
        let storage = PartitionStorage::new(s);
        let got = storage.entries(1, 3, Some(10), GetEntriesContext::empty(false)).expect("entries");
        assert_eq!(got.len(), 1);
    }
}
