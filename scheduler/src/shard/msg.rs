//! A shard's mailbox: the messages connections, the committer, peers and sibling shards send it, and the
//! handle they send them with.
//!
//! Every change to a shard's state arrives here as a message; nothing else touches it. The receivers are
//! `Shard::handle` and the `on_*` methods it calls, named after the message.

use std::sync::Arc;

use bytes::Bytes;
use pm_protocol::pb::{self, LeasedTask, TaskSpec};
use pm_protocol::ErrorCode;
use tokio::sync::mpsc;

use super::list_query::ListQuery;
use super::queue::Executors;
use crate::holdings::Holdings;
use crate::outbox::{ConnId, OutTx};

/// Messages to a shard.
#[derive(Debug)]
pub enum ShardMsg {
    /// Enqueue tasks; `items` are (index in the request, spec), already validated. Sent by
    /// `handlers::submit`; received by `Shard::on_submit`, which writes an `Enqueue` record per task into the
    /// round (answered with `SubmitAck` once the round is durable, `Shard::on_durable`).
    Submit {
        /// Where the reply goes.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// Tasks for this shard.
        items: Vec<(usize, TaskSpec)>,
        /// Send `out` a `Completed` for each accepted task when it finishes.
        notify: bool,
    },
    /// An agent (or a peer node) grants credits on a queue.
    Credit {
        /// Agent connection.
        conn: ConnId,
        /// Its outbound channel.
        out: OutTx,
        /// Queue name (validated).
        queue: String,
        /// Credits added.
        n: u32,
        /// `n` replaces the connection's credits instead of adding to them.
        set: bool,
        /// The connection is a peer node (served only when no agent has credit).
        peer: bool,
        /// The executors the agent declared in Hello (`None`: it runs anything).
        executors: Option<Executors>,
        /// What the connection holds node-wide, bounded by `--max-leases-per-conn` (`None`: no bound).
        holdings: Option<Arc<Holdings>>,
    },
    /// Work stealing: which queues have agents with idle credits and no ready work (queue, idle credits minus
    /// stolen tasks already waiting here).
    Hungry {
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<Vec<(String, u64)>>,
    },
    /// Work stealing: a task a peer leased to this node, with this node's lease id, for a local agent.
    Foreign {
        /// The task as the agent will see it.
        task: LeasedTask,
    },
    /// Finished deliveries.
    Ack {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index in request, lease id, result).
        items: Vec<(usize, u64, Bytes)>,
    },
    /// Failed deliveries.
    Nack {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, item).
        items: Vec<(usize, pb::NackItem)>,
    },
    /// Heartbeats.
    Extend {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, lease id).
        items: Vec<(usize, u64)>,
        /// New duration from now (0 = the task's lease duration).
        extend_ms: u32,
    },
    /// Cancel tasks: `items` are (index in the request, task id), the whole request (ids of other shards
    /// are left out of this shard's answer).
    Cancel {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, task id).
        items: Vec<(usize, u64)>,
    },
    /// An agent (just reconnected) asks for the leases of the tasks it still runs: `items` are (index in the
    /// request, item), the whole request (ids of other shards are left out of this shard's answer).
    Reclaim {
        /// The agent connection that gets the leases.
        conn: ConnId,
        /// Its outbound channel (reply, and later revocations).
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, item).
        items: Vec<(usize, pb::ReclaimItem)>,
        /// What the connection holds node-wide (`None`: no bound).
        holdings: Option<Arc<Holdings>>,
    },
    /// A connection closed: drop its credits, return its leases (after the grace period).
    Disconnected {
        /// The connection.
        conn: ConnId,
    },
    /// Task status: `items` are (index in the request, task id), the whole request (ids of other shards are
    /// left out of this shard's answer).
    Status {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, task id).
        items: Vec<(usize, u64)>,
    },
    /// Send `out` a `Completed` when each task finishes (at once if it has): as [`ShardMsg::Status`].
    Watch {
        /// Where the answer and the `Completed` messages go.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// (index, task id).
        items: Vec<(usize, u64)>,
    },
    /// Queue counters.
    Stats {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
    },
    /// List dead letters.
    DeadList {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// Queue filter (empty = all).
        queue: String,
        /// Most entries.
        limit: usize,
        /// Only task ids above it.
        after: u64,
    },
    /// Delete dead letters (`ShardMsg::Redrive`'s filters, but nothing unless `all` or ids are given).
    DeadDelete {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// Queue filter (empty = all).
        queue: String,
        /// Task ids.
        task_ids: Vec<u64>,
        /// Every dead letter of the queue filter.
        all: bool,
    },
    /// Pause, resume or purge a queue (sent to the shard that owns it).
    QueueControl {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// Queue name (validated).
        queue: String,
        /// What to do.
        action: pb::QueueAction,
    },
    /// One page of a task listing (every shard answers a part).
    TaskList {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// The filters, page size and cursor.
        query: ListQuery,
    },
    /// Redrive dead letters.
    Redrive {
        /// Reply channel.
        out: OutTx,
        /// Request being answered.
        request_id: u64,
        /// Queue filter (empty = all).
        queue: String,
        /// Task filter (empty = all).
        task_ids: Vec<u64>,
    },
    /// A round's records are written and their sync is under way: its new tasks may be leased now. Sent by the
    /// commit thread (`store::committer`); received by `Shard::on_appended`.
    Appended {
        /// Round number.
        round: u64,
    },
    /// The committer finished a round's job (the `Done` callback of `Rounds::flush`). Received by
    /// `Shard::on_durable`, which releases the round's waiters.
    Durable {
        /// Round number.
        round: u64,
        /// Outcome.
        result: Result<(), (ErrorCode, String)>,
    },
    /// A follow-up another shard wrote (durably) for a queue of this one.
    Adopt {
        /// Its id.
        task_id: u64,
        /// The stored task, as written.
        body: Bytes,
    },
    /// Stop leasing; answer nothing new.
    Drain,
}

/// A shard's handle: cheap to clone.
#[derive(Debug, Clone)]
pub struct ShardHandle {
    tx: mpsc::UnboundedSender<ShardMsg>,
}

impl ShardHandle {
    /// A handle sending to `tx`.
    pub(super) fn new(tx: mpsc::UnboundedSender<ShardMsg>) -> ShardHandle {
        ShardHandle { tx }
    }

    /// Sends a message; false if the shard has stopped.
    pub fn send(&self, msg: ShardMsg) -> bool {
        self.tx.send(msg).is_ok()
    }
}

/// Which of `n` shards owns `queue`.
pub fn shard_of_queue(queue: &str, n: usize) -> usize {
    // FNV-1a: stable across builds and platforms (placement must not change between restarts).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in queue.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::shard_of_queue;

    /// Placement is part of the on-disk contract: recovery puts each task back on its queue's shard, and a
    /// node restarted with the same shard count must find the same owners (FNV-1a, computed by hand).
    #[test]
    fn a_queue_lands_on_the_same_shard_on_every_build() {
        assert_eq!((shard_of_queue("default", 4), shard_of_queue("default", 7)), (2, 6));
        assert_eq!((shard_of_queue("ocr/main", 4), shard_of_queue("ocr/main", 7)), (1, 6));
        assert_eq!(shard_of_queue("anything", 1), 0);
    }
}
