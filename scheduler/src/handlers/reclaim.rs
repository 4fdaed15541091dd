//! `Reclaim`: after a reconnect, an agent asks for the leases of the tasks it still runs. Like `Cancel`, a task
//! id does not name its shard, so every shard gets the whole list and answers for the ids it owns; the others
//! stay `NOT_FOUND` in the merged reply. Nothing is written to the store, so the reply goes out at once.

use pm_protocol::pb;
use pm_protocol::ErrorCode;

use super::ctx::ConnCtx;
use crate::outbox::Reply;
use crate::shard::ShardMsg;

/// Sends the items to every shard; the reply goes out once every shard has answered.
pub fn handle(ctx: &mut ConnCtx, reclaim: pb::Reclaim) {
    let request_id = reclaim.request_id;
    let results = reclaim
        .items
        .iter()
        .map(|it| pb::ReclaimResult { task_id: it.task_id, code: ErrorCode::NotFound as i32, ..Default::default() })
        .collect();
    super::ctx::to_every_shard(ctx, request_id, "tasks", reclaim.items, Reply::Reclaim(results), |ctx, items| {
        ShardMsg::Reclaim { conn: ctx.id, out: ctx.out.clone(), request_id, items, holdings: ctx.holdings.clone() }
    });
}
