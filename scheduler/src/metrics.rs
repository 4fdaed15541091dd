//! The scheduler's metrics (`pm_<component>_<what>_<unit>`), recorded through the `metrics` facade: their
//! names, and [`ALL`], the one table of every metric with its kind, unit and help text.
//!
//! Labels are bounded: queue names and reasons, never task ids. [`describe`] gives every metric its
//! `# HELP`, and [`register`] creates every metric whose labels are known in advance, so that a fresh node
//! already exports them (a counter at 0, a histogram with empty buckets): an alert on a counter that never
//! moved reads 0, not "no data", and `promtool check metrics` passes before the first event.

use metrics::Unit::{Bytes, Count, Seconds};
use Kind::{Counter, Gauge, Histogram};

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
/// Counter: Submits answered with a Redirect (cluster mode: a key another member owns; the client sends them
/// again to that member).
pub const REDIRECTED: &str = "pm_redirects_total";
/// Gauge: members that DNS lists and this node's ring lacks (`--members dns:NAME`; 0 otherwise). They join at
/// the node's restart: above 0 for long, the node waits for one.
pub const MEMBERS_PENDING: &str = "pm_cluster_members_pending";
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
/// Counter: payloads read back from the store (not resident: `--resident-payload-bytes`).
pub const PAYLOAD_READS: &str = "pm_payload_reads_total";
/// Gauge: payload bytes of live tasks kept in memory, per shard.
pub const PAYLOAD_RESIDENT: &str = "pm_payload_resident_bytes";
/// Gauge: ready tasks kept small (their payload in the store only, the rest read back when leased), per shard.
pub const TASKS_KEPT_SMALL: &str = "pm_tasks_kept_small";
/// Counter: bytes written to the store.
pub const WAL_BYTES_WRITTEN: &str = "pm_wal_bytes_written_total";
/// Histogram, seconds: a Submit's part on a shard, from the shard receiving it to its reply (made durable)
/// going to the connection's outbox.
pub const SUBMIT_SECONDS: &str = "pm_submit_seconds";
/// Histogram, seconds: a task's wait in its queue, from ready (submitted, delay over, retried or redriven) to
/// leased. What the latency alerts watch: it grows when agents cannot keep up or the node is slow, and not
/// with the pipelines' own run time.
pub const QUEUE_WAIT_SECONDS: &str = "pm_queue_wait_seconds";
/// Histogram, seconds: a delivery's run, from leased (wall clock) to its ack being durable: the pipeline's
/// run time plus the ack's trip. Only deliveries leased since the node started are counted.
pub const RUN_SECONDS: &str = "pm_run_seconds";
/// Histogram, seconds: from a task's submit (`submitted_unix_ms`, wall clock) to its ack being durable: queue
/// wait plus run time.
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
pub const METRIC_BUCKETS: &[(&str, &[f64])] = &[
    (QUEUE_WAIT_SECONDS, &WAIT_BUCKETS),
    (RUN_SECONDS, &WAIT_BUCKETS),
    (END_TO_END_SECONDS, &WAIT_BUCKETS),
    (WAL_BATCH_RECORDS, &BATCH_BUCKETS),
];

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One metric: its name, kind, unit, help text, and its label with the values known in advance, if it has
/// one: [`register`] creates one series per value. Series of other queues appear with their queue.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Full name, as exported.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Unit (`# HELP` text only; the name carries it too).
    pub unit: metrics::Unit,
    /// The `# HELP` text.
    pub help: &'static str,
    /// `(label, values)`: the series that exist from the start; `None`: one unlabelled series.
    pub labels: Option<(&'static str, &'static [&'static str])>,
}

/// Every `reason` of [`REFUSED`], as the connection code and the HTTP gateway count them.
pub const REFUSE_REASONS: &[&str] = &[
    "too_many_connections",
    "too_many_connections_per_ip",
    "tls_handshake",
    "handshake_timeout",
    "no_hello",
    "second_hello",
    "version",
    "role",
    "cert_role",
    "token_missing",
    "token_unknown",
    "token_role",
    "token_expired",
    "capabilities",
    "server_only_message",
    "frame_too_large",
    "malformed",
    "unknown_message",
    "idle_timeout",
    "slow_consumer",
    "credit_queue",
    "lease_cap",
    "not_replicated",
    "raft_misaddressed",
    "raft_malformed",
];

/// The queue that exists on every node (tasks that name none): per-queue gauges start with it, at 0.
pub const DEFAULT_QUEUE: &[&str] = &["default"];

/// Every `role` of [`CONNECTIONS`] (the protocol's role names).
pub const ROLES: &[&str] = &["ROLE_PRODUCER", "ROLE_AGENT", "ROLE_ADMIN", "ROLE_PEER"];

const fn metric(name: &'static str, kind: Kind, unit: metrics::Unit, help: &'static str) -> Metric {
    Metric { name, kind, unit, help, labels: None }
}

const fn labelled(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    label: &'static str,
    values: &'static [&'static str],
) -> Metric {
    Metric { name, kind, unit: metrics::Unit::Count, help, labels: Some((label, values)) }
}

/// Every metric the scheduler exports. `tests/metrics.rs` checks that a fresh node exports each of them, with
/// its `# HELP` and `# TYPE`.
pub const ALL: &[Metric] = &[
    metric(SUBMITTED, Counter, Count, "Tasks made durable and enqueued."),
    metric(LEASED, Counter, Count, "Leases handed to agents."),
    metric(ACKED, Counter, Count, "Tasks acknowledged (durably)."),
    metric(NACKED, Counter, Count, "Deliveries nacked by agents."),
    metric(REDELIVERED, Counter, Count, "Deliveries whose lease expired or whose agent left."),
    metric(DEAD_LETTERED, Counter, Count, "Tasks moved to the dead-letter set."),
    metric(FAILED, Counter, Count, "Tasks an agent reported failed for good (not retried)."),
    metric(CANCELLED, Counter, Count, "Tasks cancelled (durably)."),
    metric(FOLLOW_UPS, Counter, Count, "Follow-up tasks submitted by the scheduler for finished tasks."),
    metric(TEMPLATE_SUBMITS, Counter, Count, "Tasks submitted by their parameters (filled pipeline templates)."),
    labelled(RECLAIMED, Counter, "Reclaim items answered, by outcome.", "outcome", &["ok", "stale", "not_found"]),
    labelled(
        STALE_LEASES,
        Counter,
        "Ack, nack or extend quoting an unknown lease id, by op.",
        "op",
        &["ack", "nack", "extend"],
    ),
    labelled(REFUSED, Counter, "Frames or connections refused, by reason.", "reason", REFUSE_REASONS),
    metric(STOLEN, Counter, Count, "Tasks peers leased to this node for its idle agents (work stealing)."),
    metric(
        STEAL_RELEASED,
        Counter,
        Count,
        "Stolen tasks given back to their owner unstarted or after their agent left.",
    ),
    metric(REDIRECTED, Counter, Count, "Submits answered with a Redirect to the member that owns their key."),
    metric(WAL_BYTES_WRITTEN, Counter, Bytes, "Bytes written to the store."),
    metric(PAYLOAD_READS, Counter, Count, "Payloads read back from the store (beyond --resident-payload-bytes)."),
    labelled(QUEUE_DEPTH, Gauge, "Ready tasks per queue.", "queue", DEFAULT_QUEUE),
    labelled(
        WAITING_EXECUTOR,
        Gauge,
        "Ready tasks no connected agent can run (an executor is missing).",
        "queue",
        DEFAULT_QUEUE,
    ),
    labelled(QUEUE_DELAYED, Gauge, "Delayed tasks per queue.", "queue", DEFAULT_QUEUE),
    labelled(LEASES_IN_FLIGHT, Gauge, "Leases in flight per queue.", "queue", DEFAULT_QUEUE),
    labelled(DEAD_LETTERS, Gauge, "Dead letters per queue.", "queue", DEFAULT_QUEUE),
    labelled(RESULTS_KEPT, Gauge, "Outcomes of finished tasks kept for status queries, per shard.", "shard", &["0"]),
    labelled(PAYLOAD_RESIDENT, Gauge, "Payload bytes of live tasks kept in memory, per shard.", "shard", &["0"]),
    labelled(TASKS_KEPT_SMALL, Gauge, "Ready tasks kept small, their record in the store, per shard.", "shard", &["0"]),
    labelled(CONNECTIONS, Gauge, "Open connections, by role.", "role", ROLES),
    metric(MEMBERS_PENDING, Gauge, Count, "Members DNS lists that this node's ring lacks (they join at its restart)."),
    metric(SUBMIT_SECONDS, Histogram, Seconds, "Submit received by a shard to its durable reply."),
    metric(QUEUE_WAIT_SECONDS, Histogram, Seconds, "Task ready to leased: its wait in the queue."),
    metric(RUN_SECONDS, Histogram, Seconds, "Task leased to its ack durable: the pipeline's run."),
    metric(END_TO_END_SECONDS, Histogram, Seconds, "Task submitted to its ack durable."),
    metric(WAL_FSYNC_SECONDS, Histogram, Seconds, "One WAL fsync."),
    metric(
        WAL_MAINTAIN_SECONDS,
        Histogram,
        Seconds,
        "One round of the log's upkeep (expiry, segment freeing and compaction) on the commit thread.",
    ),
    metric(WAL_BATCH_RECORDS, Histogram, Count, "Records written by one group commit."),
];

/// Gives every metric its help text and unit (Prometheus `# HELP`). Call after the recorder is installed.
pub fn describe() {
    for m in ALL {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// Creates every series known in advance: unlabelled metrics, and one series per known label value (counters
/// at 0, gauges at 0, histograms without observations). Call after the recorder is installed; recording later
/// adds to these series.
pub fn register() {
    for m in ALL {
        match m.labels {
            None => register_one(m.kind, m.name, None),
            Some((label, values)) => {
                for value in values {
                    register_one(m.kind, m.name, Some((label, value)));
                }
            }
        }
    }
}

fn register_one(kind: Kind, name: &'static str, label: Option<(&'static str, &'static str)>) {
    let labels: Vec<metrics::Label> = label.map(|(k, v)| metrics::Label::new(k, v)).into_iter().collect();
    match kind {
        Kind::Counter => metrics::counter!(name, labels).increment(0),
        Kind::Gauge => metrics::gauge!(name, labels).increment(0.0),
        // Registering is enough: the recorder renders a registered histogram with empty buckets.
        Kind::Histogram => drop(metrics::histogram!(name, labels)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_in_the_table_once_with_a_name_of_its_kind() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a metric is listed twice");
        for m in ALL {
            assert!(m.name.starts_with("pm_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only they end in _total",
                m.name
            );
            assert!(!m.help.is_empty(), "{}", m.name);
        }
        for (name, _) in METRIC_BUCKETS {
            assert!(ALL.iter().any(|m| m.name == *name && m.kind == Kind::Histogram), "{name}");
        }
    }
}
