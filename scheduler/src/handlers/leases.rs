//! `Ack`, `Nack`, `Extend`: per-lease operations, routed to the shard that issued each lease id, or to the
//! work stealer for the leases of tasks taken from a peer node (which forwards them to the task's owner).

use bytes::Bytes;
use pm_protocol::{pb, ErrorCode, Role};

use super::ctx::{by_shard, ConnCtx};
use crate::outbox::{Merge, Outbound, Part, Reply};
use crate::shard::{shard_of_lease, ShardMsg};
use crate::stolen::{is_foreign, StealMsg};

/// (index in the request, lease id, the item's data).
type Item<T> = (usize, u64, T);

fn begin(ctx: &ConnCtx, request_id: u64, n: usize, parts: usize) {
    let merge = Merge { parts, reply: Reply::Lease(vec![0; n]), holds_slot: false };
    let _ = ctx.out.send(Outbound::Begin { request_id, merge });
}

/// Splits `items` (index, lease id, item) into the groups of each shard and those of stolen tasks; registers
/// the reply with one part per group; hands the stolen ones to `steal` (or answers them `STALE_LEASE` when
/// this node steals nothing). Returns the shard groups for the caller to send.
fn split<T>(
    ctx: &ConnCtx,
    request_id: u64,
    items: Vec<Item<T>>,
    steal: impl FnOnce(Vec<Item<T>>) -> StealMsg,
) -> Vec<(usize, Vec<Item<T>>)> {
    let shards = ctx.server.shards.len();
    let n = items.len();
    let (foreign, local): (Vec<_>, Vec<_>) = items.into_iter().partition(|(_, lease_id, _)| is_foreign(*lease_id));
    let groups = by_shard(shards, local.into_iter().map(|it| (shard_of_lease(it.1, shards), it)));
    begin(ctx, request_id, n, groups.len() + usize::from(!foreign.is_empty()));
    if !foreign.is_empty() {
        match &ctx.server.steal {
            Some(s) => s.send(steal(foreign)),
            None => {
                let codes = foreign.into_iter().map(|(i, _, _)| (i, ErrorCode::StaleLease)).collect();
                let _ = ctx.out.send(Outbound::Part { request_id, part: Part::Lease(codes) });
            }
        }
    }
    groups
}

/// Acks: the tasks are done.
pub fn ack(ctx: &mut ConnCtx, ack: pb::Ack) {
    let request_id = ack.request_id;
    let items: Vec<(usize, u64, Bytes)> =
        ack.items.into_iter().enumerate().map(|(i, it)| (i, it.lease_id, it.result)).collect();
    let out = ctx.out.clone();
    let groups = split(ctx, request_id, items, |items| StealMsg::Ack { out, request_id, items });
    for (shard, items) in groups {
        ctx.server.shards[shard].send(ShardMsg::Ack { out: ctx.out.clone(), request_id, items });
    }
}

/// Nacks: the deliveries failed.
pub fn nack(ctx: &mut ConnCtx, nack: pb::Nack) {
    let request_id = nack.request_id;
    // Only a peer node may say a delivery never started (an agent's claim would let a task that crashes its
    // agents dodge max_attempts).
    let peer = ctx.role == Role::Peer;
    let items = nack
        .items
        .into_iter()
        .enumerate()
        .map(|(i, mut it)| {
            it.released &= peer;
            (i, it.lease_id, it)
        })
        .collect();
    let out = ctx.out.clone();
    let strip = |items: Vec<(usize, u64, pb::NackItem)>| items.into_iter().map(|(i, _, it)| (i, it)).collect();
    let groups = split(ctx, request_id, items, |items| StealMsg::Nack { out, request_id, items: strip(items) });
    for (shard, items) in groups {
        ctx.server.shards[shard].send(ShardMsg::Nack { out: ctx.out.clone(), request_id, items: strip(items) });
    }
}

/// Extends: heartbeats for running tasks.
pub fn extend(ctx: &mut ConnCtx, ext: pb::Extend) {
    let (request_id, extend_ms) = (ext.request_id, ext.extend_ms);
    let items = ext.lease_ids.into_iter().enumerate().map(|(i, id)| (i, id, ())).collect();
    let out = ctx.out.clone();
    let strip = |items: Vec<(usize, u64, ())>| items.into_iter().map(|(i, id, ())| (i, id)).collect();
    let groups =
        split(ctx, request_id, items, |items| StealMsg::Extend { out, request_id, items: strip(items), extend_ms });
    for (shard, items) in groups {
        ctx.server.shards[shard].send(ShardMsg::Extend {
            out: ctx.out.clone(),
            request_id,
            items: strip(items),
            extend_ms,
        });
    }
}
