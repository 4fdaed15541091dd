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
/// Counter: tasks an agent reported failed for good (a final nack: not retried, not dead-lettered).
pub const FAILED: &str = "pm_tasks_failed_total";
/// Gauge: outcomes of finished tasks kept for status queries (`--result-retention`, `--max-results`).
pub const RESULTS_KEPT: &str = "pm_results_kept";
/// Counter: follow-up tasks the scheduler submitted for finished tasks (`onSuccess` / `onFailure`).
pub const FOLLOW_UPS: &str = "pm_tasks_follow_ups_total";
/// Counter: tasks cancelled (durably) by a producer or admin.
pub const CANCELLED: &str = "pm_tasks_cancelled_total";
/// Counter: reclaim items answered (label `outcome`: `ok`, `stale` or `not_found`).
pub const RECLAIMED: &str = "pm_tasks_reclaimed_total";
/// Counter: ack/nack/extend quoting an unknown lease id (label `op`).
pub const STALE_LEASES: &str = "pm_stale_lease_total";
/// Counter: frames or connections refused (label `reason`).
pub const REFUSED: &str = "pm_refused_total";
/// Counter: tasks a peer node leased to this node for its idle agents (work stealing).
pub const STOLEN: &str = "pm_tasks_stolen_total";
/// Counter: stolen tasks given back to their owner unstarted (the agent left, or none took them in time).
pub const STEAL_RELEASED: &str = "pm_tasks_steal_released_total";
/// Counter: Submits answered with a Redirect (cluster mode: a key another node owns).
pub const REDIRECTED: &str = "pm_submits_redirected_total";
/// Counter: tasks submitted by their parameters (SubmitTemplate, `POST /api/applications/..`), accepted or not.
pub const TEMPLATE_SUBMITS: &str = "pm_template_tasks_total";
/// Gauge: ready tasks per queue.
pub const QUEUE_DEPTH: &str = "pm_queue_depth";
/// Gauge: ready tasks per queue that no connected agent can run (an executor they need is missing).
pub const WAITING_EXECUTOR: &str = "pm_tasks_waiting_executor";
/// Gauge: delayed tasks per queue.
pub const QUEUE_DELAYED: &str = "pm_queue_delayed";
/// Gauge: leases in flight per queue.
pub const LEASES_IN_FLIGHT: &str = "pm_leases_in_flight";
/// Gauge: dead letters per queue.
pub const DEAD_LETTERS: &str = "pm_dead_letters";
/// Gauge: open connections (label `role`).
pub const CONNECTIONS: &str = "pm_connections";
/// Counter: bytes written to the store.
pub const WAL_BYTES_WRITTEN: &str = "pm_wal_bytes_written_total";
/// Histogram, seconds: a Submit's part on a shard, from the shard receiving it to its reply (made durable)
/// going to the connection's outbox.
pub const SUBMIT_SECONDS: &str = "pm_submit_seconds";
/// Histogram, seconds: a task's wait from ready (submitted, delay over, retried or redriven) to leased.
pub const DISPATCH_SECONDS: &str = "pm_dispatch_seconds";
/// Histogram, seconds: from a task's submit (`submitted_unix_ms`, wall clock) to its ack being durable.
pub const END_TO_END_SECONDS: &str = "pm_end_to_end_seconds";
/// Histogram, seconds: one WAL fsync.
pub const WAL_FSYNC_SECONDS: &str = "pm_wal_fsync_seconds";
/// Histogram, seconds: one round of the log's upkeep on the commit thread (expiry, freeing and compacting old
/// segments, checkpoint); commits wait while it runs.
pub const WAL_MAINTAIN_SECONDS: &str = "pm_wal_maintain_seconds";
/// Histogram, records: records written by one group commit.
pub const WAL_BATCH_RECORDS: &str = "pm_wal_batch_records";

/// Buckets for waits that include queueing or a pipeline's run, seconds: 100 µs to an hour, with 0.05 s as a
/// boundary.
pub const WAIT_BUCKETS: [f64; 21] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];
/// Buckets for a group commit's size, records: 1 to 4096.
pub const BATCH_BUCKETS: [f64; 13] =
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];

/// The scheduler's histograms whose buckets are not the default latency buckets (100 µs to 10 s).
pub const METRIC_BUCKETS: &[(&str, &[f64])] =
    &[(DISPATCH_SECONDS, &WAIT_BUCKETS), (END_TO_END_SECONDS, &WAIT_BUCKETS), (WAL_BATCH_RECORDS, &BATCH_BUCKETS)];

/// Gives every metric its help text and unit (Prometheus `# HELP`). Call after the recorder is installed.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(SUBMITTED, Unit::Count, "Tasks made durable and enqueued.");
    describe_counter!(LEASED, Unit::Count, "Leases handed to agents.");
    describe_counter!(ACKED, Unit::Count, "Tasks acknowledged (durably).");
    describe_counter!(NACKED, Unit::Count, "Deliveries nacked by agents.");
    describe_counter!(REDELIVERED, Unit::Count, "Deliveries whose lease expired or whose agent left.");
    describe_counter!(DEAD_LETTERED, Unit::Count, "Tasks moved to the dead-letter set.");
    describe_counter!(CANCELLED, Unit::Count, "Tasks cancelled (durably).");
    describe_counter!(FOLLOW_UPS, Unit::Count, "Follow-up tasks submitted by the scheduler for finished tasks.");
    describe_counter!(FAILED, Unit::Count, "Tasks an agent reported failed for good (not retried).");
    describe_counter!(
        TEMPLATE_SUBMITS,
        Unit::Count,
        "Tasks submitted by their parameters (filled pipeline templates)."
    );
    describe_gauge!(WAITING_EXECUTOR, Unit::Count, "Ready tasks no connected agent can run (an executor is missing).");
    describe_gauge!(RESULTS_KEPT, Unit::Count, "Outcomes of finished tasks kept for status queries.");
    describe_counter!(RECLAIMED, Unit::Count, "Reclaim items answered, by outcome.");
    describe_counter!(STALE_LEASES, Unit::Count, "Ack, nack or extend quoting an unknown lease id, by op.");
    describe_counter!(REFUSED, Unit::Count, "Frames or connections refused, by reason.");
    describe_counter!(WAL_BYTES_WRITTEN, Unit::Bytes, "Bytes written to the store.");
    describe_gauge!(QUEUE_DEPTH, Unit::Count, "Ready tasks per queue.");
    describe_gauge!(QUEUE_DELAYED, Unit::Count, "Delayed tasks per queue.");
    describe_gauge!(LEASES_IN_FLIGHT, Unit::Count, "Leases in flight per queue.");
    describe_gauge!(DEAD_LETTERS, Unit::Count, "Dead letters per queue.");
    describe_gauge!(CONNECTIONS, Unit::Count, "Open connections, by role.");
    describe_histogram!(SUBMIT_SECONDS, Unit::Seconds, "Submit received by a shard to its durable reply.");
    describe_histogram!(DISPATCH_SECONDS, Unit::Seconds, "Task ready to leased.");
    describe_histogram!(END_TO_END_SECONDS, Unit::Seconds, "Task submitted to its ack durable.");
    describe_histogram!(WAL_FSYNC_SECONDS, Unit::Seconds, "One WAL fsync.");
    describe_histogram!(
        WAL_MAINTAIN_SECONDS,
        Unit::Seconds,
        "One round of the log's upkeep (expiry, segment freeing and compaction) on the commit thread."
    );
    describe_histogram!(WAL_BATCH_RECORDS, Unit::Count, "Records written by one group commit.");
}
