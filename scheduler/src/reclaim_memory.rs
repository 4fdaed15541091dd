//! Giving the memory recovery used back to the system once the node is up.
//!
//! Recovery reads whole segments (64 MiB each by default) and rebuilds maps sized for the log's busiest
//! moment; all of that is freed by the time the node serves. The allocator (mimalloc) does not hand freed
//! memory back at once: it schedules it to be purged after a delay (1 s) and purges only when it next frees
//! a page, which an idle node may not do for a long time. Measured on a log of ~1M finished tasks: 148 MB
//! resident when idle after the restart, against 14 MB after a fresh start (docs/benchmarks.md, "Idle memory
//! after recovery").
//!
//! So, once recovery is over, a thread of its own waits past the purge delay and then allocates and frees
//! one large block: freeing its page is the allocator's cue to purge everything whose delay has passed,
//! program-wide. It costs one short-lived thread per start; nothing else changes. The live set's maps are
//! also shrunk once replayed (`store/wal/live.rs`), so that they do not keep the room of the busiest moment.

use std::time::Duration;

/// Longer than the allocator's purge delay (mimalloc: 1 s).
const AFTER: Duration = Duration::from_millis(1500);

/// A block larger than the allocator's small and medium pages, so that it gets (and frees) a page of its own.
const BLOCK: usize = 8 << 20;

/// Starts the thread (see the module doc). Returns at once.
pub fn after_recovery() {
    let spawned = std::thread::Builder::new().name("pm-reclaim-memory".into()).spawn(|| {
        std::thread::sleep(AFTER);
        let block: Vec<u8> = Vec::with_capacity(BLOCK);
        drop(std::hint::black_box(block));
    });
    if let Err(e) = spawned {
        tracing::debug!("memory left to the allocator's next purge: {e}");
    }
}
