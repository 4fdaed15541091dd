//! `Ack`, `Nack`, `Extend`: per-lease operations, routed to the shard that issued each lease id.

use pm_protocol::pb;

use super::by_shard;
use crate::connection::{ConnCtx, Merge, Outbound, Reply};
use crate::shard::{shard_of_lease, ShardMsg};

fn begin(ctx: &ConnCtx, request_id: u64, n: usize, parts: usize) {
    let merge = Merge { parts, reply: Reply::Lease(vec![0; n]), holds_slot: false };
    let _ = ctx.out.send(Outbound::Begin { request_id, merge });
}

/// Acks: the tasks are done.
pub fn handle_ack(ctx: &mut ConnCtx, ack: pb::Ack) {
    let shards = ctx.server.shards.len();
    let n = ack.items.len();
    let groups = by_shard(
        shards,
        ack.items
            .into_iter()
            .enumerate()
            .map(|(i, it)| (shard_of_lease(it.lease_id, shards), (i, it.lease_id, it.result))),
    );
    begin(ctx, ack.request_id, n, groups.len());
    for (shard, items) in groups {
        ctx.server.shards[shard].send(ShardMsg::Ack { out: ctx.out.clone(), request_id: ack.request_id, items });
    }
}

/// Nacks: the deliveries failed.
pub fn handle_nack(ctx: &mut ConnCtx, nack: pb::Nack) {
    let shards = ctx.server.shards.len();
    let n = nack.items.len();
    let groups = by_shard(
        shards,
        nack.items.into_iter().enumerate().map(|(i, it)| (shard_of_lease(it.lease_id, shards), (i, it))),
    );
    begin(ctx, nack.request_id, n, groups.len());
    for (shard, items) in groups {
        ctx.server.shards[shard].send(ShardMsg::Nack { out: ctx.out.clone(), request_id: nack.request_id, items });
    }
}

/// Extends: heartbeats for running tasks.
pub fn handle_extend(ctx: &mut ConnCtx, ext: pb::Extend) {
    let shards = ctx.server.shards.len();
    let n = ext.lease_ids.len();
    let groups =
        by_shard(shards, ext.lease_ids.into_iter().enumerate().map(|(i, id)| (shard_of_lease(id, shards), (i, id))));
    begin(ctx, ext.request_id, n, groups.len());
    for (shard, items) in groups {
        ctx.server.shards[shard].send(ShardMsg::Extend {
            out: ctx.out.clone(),
            request_id: ext.request_id,
            items,
            extend_ms: ext.extend_ms,
        });
    }
}
