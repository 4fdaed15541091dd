//! `Cancel`: stop tasks for good. A task id does not name its shard (tasks are placed by queue), so every
//! shard gets the whole list and answers for the ids it owns; the others stay `NOT_FOUND` in the merged reply.

use pm_protocol::pb;
use pm_protocol::ErrorCode;

use crate::connection::{ConnCtx, Merge, Outbound, Reply};
use crate::shard::ShardMsg;

/// Sends the ids to every shard; the reply goes out once every shard's cancellations are durable.
pub fn handle(ctx: &mut ConnCtx, cancel: pb::Cancel) {
    let request_id = cancel.request_id;
    let max = ctx.server.cfg.max_batch;
    if cancel.task_ids.len() > max {
        let msg = format!("{} task ids in one cancel; the limit is {max}", cancel.task_ids.len());
        ctx.error(ErrorCode::LimitExceeded, request_id, msg);
        return;
    }
    let n = cancel.task_ids.len();
    let parts = if n == 0 { 0 } else { ctx.server.shards.len() };
    let merge = Merge { parts, reply: Reply::Cancel(vec![ErrorCode::NotFound as i32; n]), permit: None };
    let _ = ctx.out.send(Outbound::Begin { request_id, merge });
    if n == 0 {
        return;
    }
    let items: Vec<(usize, u64)> = cancel.task_ids.into_iter().enumerate().collect();
    for s in &ctx.server.shards {
        s.send(ShardMsg::Cancel { out: ctx.out.clone(), request_id, items: items.clone() });
    }
}
