//! A shard's settings, taken from the node's configuration once at start.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::msg::ShardHandle;
use super::queue::QueueLimits;
use super::results::ResultsBudget;
use crate::stolen::StealHandle;
use crate::store::BodyReader;

/// Settings a shard needs.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Lease duration when a task names none.
    pub default_lease: Duration,
    /// Deliveries before dead-lettering when a task names none.
    pub default_max_attempts: u32,
    /// How long idempotency keys are remembered.
    pub idempotency_window: Duration,
    /// Largest frame we may send (Leased batches are split below it).
    pub max_frame_bytes: usize,
    /// How long a disconnected agent's leases are kept before they are redelivered.
    pub disconnect_grace: Duration,
    /// After startup, how long recovered tasks that had been delivered before are held for their agents to
    /// reclaim before they are delivered to anyone (zero: not held).
    pub reclaim_grace: Duration,
    /// Cluster mode: the work stealer (tasks taken from peers are reported to it once delivered).
    pub steal: Option<StealHandle>,
    /// The node's ordinal in the top bits of its lease ids (0 for a single node; see [`super::LEASE_NODE_SHIFT`]).
    pub lease_prefix: u64,
    /// How long the outcome of a finished task is kept (zero: not kept; finishing writes a bare tombstone).
    pub result_retention: Duration,
    /// Lease new tasks only once durable, not as soon as written (see `Shard::on_appended`).
    pub lease_after_sync: bool,
    /// How many outcomes (and bytes of them) the node's shards keep in memory, together.
    pub results_budget: Arc<ResultsBudget>,
    /// Largest result document kept with an outcome; a larger one is left out (the outcome says so).
    pub max_result_bytes: usize,
    /// Limits of named queues (`--queue-limit`); other queues have none.
    pub queue_limits: Arc<HashMap<String, QueueLimits>>,
    /// The queues paused by an operator (kept across restarts): a queue starts paused if named there.
    pub paused: Arc<crate::paused::PausedQueues>,
    /// Every shard of the node, by index (set once they are all started): follow-ups go to their queue's.
    pub siblings: Arc<OnceLock<Vec<ShardHandle>>>,
    /// Reads the payloads not kept in memory back from the store.
    pub bodies: Arc<dyn BodyReader>,
    /// Most payload bytes of live tasks each shard keeps in memory (`--resident-payload-bytes` over the
    /// shards); the others are read back from the store when needed.
    pub resident_payload_bytes: usize,
}
