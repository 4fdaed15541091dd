//! The state machine while tasks do not go through the partition groups yet: it holds nothing, so every
//! group starts from index 0 and applies nothing but its leaders' empty entries. The groups still elect,
//! replicate their own entries and fail over, which is what a running cluster shows of them
//! (`StatsReply.partitions`). docs/notes/replication.md lists what comes next.

use raft::eraftpb::Entry;

use super::driver::StateMachine;

/// Applies nothing; see the module doc.
#[derive(Debug, Default)]
pub struct NoTasksYet;

impl StateMachine for NoTasksYet {
    fn applied(&self, _partition: u32) -> u64 {
        0
    }

    fn apply(&mut self, partition: u32, entry: &Entry) {
        tracing::warn!(partition, index = entry.index, "a partition entry with data, which no state machine takes yet");
    }

    fn leader(&mut self, _partition: u32, _leader: u64, _term: u64) {}
}
