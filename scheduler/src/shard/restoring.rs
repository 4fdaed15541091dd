//! A shard's rebuild in progress ([`Restoring`]): what `recover.rs` carries from one batch of recovered tasks to
//! the next, kept apart so that the shard's builder (`mod.rs`) names it without importing the rebuild itself.

use tokio::time::Instant;

use super::task::{now_unix_ms, Task};

/// A shard's rebuild in progress (see `Shard::restore_tasks` in `recover.rs`).
pub(super) struct Restoring {
    /// When the rebuild started, on both clocks: a recovered task's times are counted from it.
    pub(super) now: Instant,
    pub(super) now_ms: u64,
    /// The full tasks placed so far, put in the map at the end (in the order of its buckets).
    pub(super) counted: Vec<(u64, Box<Task>)>,
    /// Time spent decoding and placing, in all.
    pub(super) decoding: std::time::Duration,
    pub(super) placing: std::time::Duration,
}

impl Restoring {
    pub(super) fn new() -> Self {
        Restoring {
            now: Instant::now(),
            now_ms: now_unix_ms(),
            counted: Vec::new(),
            decoding: std::time::Duration::ZERO,
            placing: std::time::Duration::ZERO,
        }
    }
}
