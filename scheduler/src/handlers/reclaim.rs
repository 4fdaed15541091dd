//! `Reclaim`: after a reconnect, an agent asks for the leases of the tasks it still runs. Like `Cancel`, a task
//! id does not name its shard, so every shard gets the whole list and answers for the ids it owns; the others
//! stay `NOT_FOUND` in the merged reply. Nothing is written to the store, so the reply goes out at once.

use pm_protocol::pb;
use pm_protocol::ErrorCode;

use crate::connection::{ConnCtx, Merge, Outbound, Reply};
use crate::shard::ShardMsg;

/// Sends the items to every shard; the reply goes out once every shard has answered.
pub fn handle(ctx: &mut ConnCtx, reclaim: pb::Reclaim) {
    let request_id = reclaim.request_id;
    let max = ctx.server.cfg.max_batch;
    if reclaim.items.len() > max {
        let msg = format!("{} tasks in one reclaim; the limit is {max}", reclaim.items.len());
        ctx.error(ErrorCode::LimitExceeded, request_id, msg);
        return;
    }
    let n = reclaim.items.len();
    let parts = if n == 0 { 0 } else { ctx.server.shards.len() };
    let results = reclaim
        .items
        .iter()
        .map(|it| pb::ReclaimResult { task_id: it.task_id, code: ErrorCode::NotFound as i32, ..Default::default() })
        .collect();
    let merge = Merge { parts, reply: Reply::Reclaim(results), permit: None };
    let _ = ctx.out.send(Outbound::Begin { request_id, merge });
    if n == 0 {
        return;
    }
    let items: Vec<(usize, pb::ReclaimItem)> = reclaim.items.into_iter().enumerate().collect();
    for s in &ctx.server.shards {
        s.send(ShardMsg::Reclaim { conn: ctx.id, out: ctx.out.clone(), request_id, items: items.clone() });
    }
}
