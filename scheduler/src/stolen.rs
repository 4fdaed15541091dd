//! Stolen tasks, as the shards and the connection handlers see them: the messages they send to the work
//! stealer ([`crate::cluster::steal::Stealer`]) and how a stolen task's lease id is told apart.
//!
//! This module sits below the shards: a shard reports the stolen tasks it gave to agents and hands back the
//! ones nobody took; handlers forward acks of stolen tasks here instead of to a shard. The stealer itself (in
//! `cluster/`) sits above the shards and sends them tasks; keeping its mailbox types down here is what keeps
//! the arrows between the two pointing one way.

use std::sync::Arc;

use bytes::Bytes;
use pm_client::AgentEvent;
use pm_protocol::pb::NackItem;
use tokio::sync::mpsc;

use crate::holdings::Holdings;
use crate::outbox::{ConnId, OutTx};

/// Lease ids with this bit set were issued by this node for a task a peer leased to it (bits 48–62: this
/// node's ordinal, as in its own lease ids; bits 0–47: a counter).
pub const FOREIGN_LEASE_BIT: u64 = 1 << 63;

/// True for a lease id of a stolen task.
pub fn is_foreign(lease_id: u64) -> bool {
    lease_id & FOREIGN_LEASE_BIT != 0
}

/// Messages to the [`Stealer`](crate::cluster::steal::Stealer) actor.
#[derive(Debug)]
pub enum StealMsg {
    /// A shard gave the stolen task leased as `lease_id` to agent `conn`.
    Delivered {
        /// Local lease id.
        lease_id: u64,
        /// The agent.
        conn: ConnId,
        /// Its outbox (for revocations).
        out: OutTx,
        /// What the agent holds (`--max-leases-per-conn`): the stolen lease counts until it is forgotten here.
        holdings: Option<Arc<Holdings>>,
    },
    /// Stolen tasks no agent took in time: give them back to their owners.
    Release {
        /// Local lease ids.
        lease_ids: Vec<u64>,
    },
    /// Agent acks of stolen tasks: (index in the request, local lease id, result).
    Ack {
        /// Reply channel.
        out: OutTx,
        /// Request being answered (one part of it).
        request_id: u64,
        /// Items.
        items: Vec<(usize, u64, Bytes)>,
    },
    /// Agent nacks of stolen tasks.
    Nack {
        /// Reply channel.
        out: OutTx,
        /// Request being answered (one part of it).
        request_id: u64,
        /// (index, item with the local lease id).
        items: Vec<(usize, NackItem)>,
    },
    /// Agent extends of stolen tasks.
    Extend {
        /// Reply channel.
        out: OutTx,
        /// Request being answered (one part of it).
        request_id: u64,
        /// (index, local lease id).
        items: Vec<(usize, u64)>,
        /// As in `Extend`.
        extend_ms: u32,
    },
    /// A shard has forgotten an agent connection that closed (each shard says so, after reporting every
    /// stolen task it gave that agent): give its stolen tasks back.
    Disconnected {
        /// The agent.
        conn: ConnId,
    },
    /// Something a peer pushed.
    Peer {
        /// The peer's ordinal.
        peer: usize,
        /// What it pushed.
        event: AgentEvent,
    },
}

/// Handle to the stealer; absent on a single node.
#[derive(Debug, Clone)]
pub struct StealHandle {
    tx: mpsc::UnboundedSender<StealMsg>,
}

impl StealHandle {
    /// Sends a message (dropped if the stealer has stopped).
    pub fn send(&self, msg: StealMsg) {
        let _ = self.tx.send(msg);
    }
}

/// Creates the stealer's channel; the handle goes to the shards before [`Stealer::start`](crate::cluster::steal::Stealer::start) runs it.
pub fn channel() -> (StealHandle, mpsc::UnboundedReceiver<StealMsg>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (StealHandle { tx }, rx)
}
