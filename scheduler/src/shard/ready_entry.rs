//! A ready task's place in its class's order ([`ReadyEntry`]): higher priority first, then the earlier submit.

use std::cmp::Ordering;

/// A ready task in a heap: higher priority first, then lower id (= earlier submit) first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyEntry {
    /// Task priority.
    pub priority: i32,
    /// Task id (monotonic, so it is also the submit order).
    pub task_id: u64,
}

impl Ord for ReadyEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then_with(|| other.task_id.cmp(&self.task_id))
    }
}

impl PartialOrd for ReadyEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
