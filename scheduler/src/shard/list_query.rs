//! A listing request as a shard runs it ([`ListQuery`]), and the bounds on its page size. The shard's side
//! is `listing.rs`.

use pm_protocol::pb::TaskState;

/// The page size when a request names none.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page a listing may ask for.
pub const MAX_LIMIT: usize = 1_000;

/// A listing request, as a shard runs it.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this queue (empty: all).
    pub queue: String,
    /// Only this state (`Unspecified`: any).
    pub state: TaskState,
    /// Only this key (empty: any).
    pub key: String,
    /// Only this flow (empty: any).
    pub flow_id: String,
    /// Most tasks (1..=[`MAX_LIMIT`]).
    pub limit: usize,
    /// Only ids below it (0: from the newest).
    pub before: u64,
}
