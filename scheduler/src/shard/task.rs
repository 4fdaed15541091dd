//! A task as its shard holds it, and the states of its life.
//!
//! ```text
//!            written            leased             acked / failed / cancelled
//! Pending ──────────► Ready ─────────────► Leased ───────────────────────────► Acking ──► (gone, or kept outcome)
//!    │                 ▲  ▲                  │  nack / lease expired
//!    │ delay           │  └── Delayed ◄──────┤  (attempts left; after a backoff: Delayed)
//!    └───────────────► Delayed               │  attempts used up
//!                                            └──────────────────► Dead ──redrive──► Ready
//! Held (recovered with an attempt, kept for its agent to reclaim) ──grace over──► Ready, or reclaimed ──► Leased
//! ```
//!
//! The transitions themselves are written by the shard (`mod.rs`, `dispatch.rs`, `durable.rs`), each next to
//! the record it writes; this file holds only the data.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pm_protocol::pb::TaskSpec;
use tokio::time::Instant;

use super::ready_entry::ReadyEntry;

/// Where a task is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    /// Submitted, not yet written to the WAL (a new task becomes ready once written, while it is synced).
    Pending,
    Ready,
    Delayed,
    /// Recovered after a restart with at least one attempt (probably running on an agent when the node
    /// stopped): not delivered until the reclaim grace ends, but its agent may reclaim it.
    Held,
    Leased(u64),
    /// Ack tombstone written (acked, failed or cancelled), not yet durable.
    Acking,
    Dead(Box<Dead>),
}

/// Why a task is dead, and what its last attempt reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dead {
    pub(super) reason: String,
    /// The result document of the failed last attempt (kept in memory only; empty after a restart).
    pub(super) result: Bytes,
    /// When it was dead-lettered, ms since the Unix epoch (kept in memory only; 0 after a restart).
    pub(super) finished_unix_ms: u64,
    /// Its `onFailure` follow-ups (in memory only, like `result`), shown once the record burying it is durable.
    pub(super) children: Vec<u64>,
    /// Whether the dead-letter record is durable: until then status shows no follow-ups (they are not known
    /// to any shard yet) and watchers are not told.
    pub(super) written: bool,
}

/// One task: what it is (from its spec) and where it is.
#[derive(Debug)]
pub(super) struct Task {
    pub(super) queue: u32,
    pub(super) priority: i32,
    pub(super) key: String,
    /// The payload, if kept in memory; `None`: read it back from the store (see `payload.rs`).
    pub(super) payload: Option<Bytes>,
    pub(super) max_attempts: u32,
    pub(super) lease: Duration,
    pub(super) attempts: u32,
    pub(super) state: State,
    /// Not before, for Delayed.
    pub(super) not_before: Option<Instant>,
    pub(super) idem: Option<String>,
    /// When it last became ready (for `pm_queue_wait_seconds`).
    pub(super) ready_since: Instant,
    /// When it was submitted, wall clock (for the end-to-end histogram; 0 if unknown).
    pub(super) submitted_unix_ms: u64,
    /// When its newest delivery was leased, wall clock (0: never, or not since the restart); for
    /// `pm_run_seconds` too.
    pub(super) started_unix_ms: u64,
    /// Its executor class in its queue (0: needs no particular executor).
    pub(super) class: u32,
    /// Its payload may name follow-ups or a flow ([`pm_task::pipeline::may_chain`]).
    pub(super) chain: bool,
}

impl Task {
    /// A new task of queue `queue` and executor class `class` from `spec` (state `Pending`: the caller places
    /// it), with the node's defaults for what the spec leaves out.
    pub(super) fn new(
        queue: u32,
        class: u32,
        spec: &TaskSpec,
        idem: Option<String>,
        default_lease: Duration,
        default_max_attempts: u32,
    ) -> Task {
        let chain = pm_task::pipeline::may_chain(&spec.payload);
        let defaults = Defaults { lease: default_lease, max_attempts: default_max_attempts };
        Task::from_spec(queue, class, spec, chain, idem, defaults, Instant::now())
    }

    /// [`Task::new`] with what it would work out given: whether the payload may chain, and the time now.
    pub(super) fn from_spec(
        queue: u32,
        class: u32,
        spec: &TaskSpec,
        chain: bool,
        idem: Option<String>,
        defaults: Defaults,
        now: Instant,
    ) -> Task {
        let lease = if spec.lease_ms == 0 { defaults.lease } else { Duration::from_millis(spec.lease_ms.into()) };
        let max_attempts = if spec.max_attempts == 0 { defaults.max_attempts } else { spec.max_attempts };
        Task {
            queue,
            priority: spec.priority,
            key: spec.key.clone(),
            payload: Some(spec.payload.clone()),
            max_attempts,
            lease,
            attempts: 0,
            state: State::Pending,
            not_before: None,
            idem,
            ready_since: now,
            submitted_unix_ms: 0,
            started_unix_ms: 0,
            class,
            chain,
        }
    }

    /// Its place in a ready heap.
    pub(super) fn entry(&self, task_id: u64) -> ReadyEntry {
        ReadyEntry { priority: self.priority, task_id }
    }
}

/// What a task gets when its spec leaves the lease or the attempts out (the node's `--default-lease-ms` and
/// `--default-max-attempts`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Defaults {
    pub(super) lease: Duration,
    pub(super) max_attempts: u32,
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Longest failure reason kept (an agent's reason beyond it is cut): the outcome and dead-letter records stay
/// small and always fit a record.
pub const MAX_REASON_BYTES: usize = 2048;

/// `reason` cut to [`MAX_REASON_BYTES`] on a character boundary.
pub(super) fn cap_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

/// `ms` since the Unix epoch as RFC 3339 UTC (second precision), for humans.
pub fn format_unix_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::format_unix_ms;

    #[test]
    fn unix_ms_formats_as_utc() {
        assert_eq!(format_unix_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_ms(951_782_400_999), "2000-02-29T00:00:00Z");
    }
}
