//! Names of the scheduler's metrics (`pm_<component>_<what>_<unit>`), recorded through the `metrics` facade.
//! Labels are bounded: queue names and reasons, never task ids.

/// Counter: tasks made durable and enqueued.
pub const SUBMITTED: &str = "pm_tasks_submitted_total";
/// Counter: leases handed to agents.
pub const LEASED: &str = "pm_tasks_leased_total";
/// Counter: tasks acknowledged (durably).
pub const ACKED: &str = "pm_tasks_acked_total";
/// Counter: deliveries nacked by agents.
pub const NACKED: &str = "pm_tasks_nacked_total";
/// Counter: deliveries whose lease expired (or whose agent left) and were made ready again.
pub const REDELIVERED: &str = "pm_tasks_redelivered_total";
/// Counter: tasks moved to the dead-letter set.
pub const DEAD_LETTERED: &str = "pm_tasks_dead_lettered_total";
/// Counter: tasks cancelled (durably) by a producer or admin.
pub const CANCELLED: &str = "pm_tasks_cancelled_total";
/// Counter: reclaim items answered (label `outcome`: `ok`, `stale` or `not_found`).
pub const RECLAIMED: &str = "pm_tasks_reclaimed_total";
/// Counter: ack/nack/extend quoting an unknown lease id (label `op`).
pub const STALE_LEASES: &str = "pm_stale_lease_total";
/// Counter: frames or connections refused (label `reason`).
pub const REFUSED: &str = "pm_refused_total";
/// Gauge: ready tasks per queue.
pub const QUEUE_DEPTH: &str = "pm_queue_depth";
/// Gauge: delayed tasks per queue.
pub const QUEUE_DELAYED: &str = "pm_queue_delayed";
/// Gauge: leases in flight per queue.
pub const LEASES_IN_FLIGHT: &str = "pm_leases_in_flight";
/// Gauge: dead letters per queue.
pub const DEAD_LETTERS: &str = "pm_dead_letters";
/// Gauge: open connections (label `role`).
pub const CONNECTIONS: &str = "pm_connections";
