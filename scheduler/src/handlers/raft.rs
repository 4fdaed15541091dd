//! `RaftBatch` (peers only): another member's raft messages for the partitions this node replicates, handed
//! to the replica driver. The kind is one way: nothing is answered. A message that does not convert, that is
//! addressed to another member, or that reaches a node without replication is dropped and counted, and raft
//! sends again what matters.

use pm_protocol::pb;

use super::ctx::ConnCtx;
use crate::metrics as m;
use crate::replica::{peers::raft_id, wire, Event};

/// Hands each message of the batch to the driver.
pub(super) fn handle(ctx: &ConnCtx, batch: pb::RaftBatch) {
    let (Some(replicas), Some(me)) = (&ctx.server.replicas, ctx.server.ordinal) else {
        metrics::counter!(m::REFUSED, "reason" => "not_replicated").increment(1);
        return;
    };
    let me = raft_id(me);
    for item in batch.items {
        let Some(msg) = item.message else { continue };
        match wire::from_wire(msg) {
            Ok(msg) if msg.to == me => replicas.send(Event::Message { partition: item.partition, msg }),
            Ok(msg) => {
                tracing::debug!(to = msg.to, me, "raft message for another member dropped");
                metrics::counter!(m::REFUSED, "reason" => "raft_misaddressed").increment(1);
            }
            Err(e) => {
                tracing::debug!(error = %e, "raft message refused");
                metrics::counter!(m::REFUSED, "reason" => "raft_malformed").increment(1);
            }
        }
    }
}
