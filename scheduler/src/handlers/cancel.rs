//! `Cancel`: stop tasks for good. A task id does not name its shard (tasks are placed by queue), so every
//! shard gets the whole list and answers for the ids it owns; the others stay `NOT_FOUND` in the merged reply.

use pm_protocol::pb;
use pm_protocol::ErrorCode;

use crate::connection::{ConnCtx, Reply};
use crate::shard::ShardMsg;

/// Sends the ids to every shard; the reply goes out once every shard's cancellations are durable.
pub fn handle(ctx: &mut ConnCtx, cancel: pb::Cancel) {
    let (request_id, n) = (cancel.request_id, cancel.task_ids.len());
    let reply = Reply::Cancel(vec![ErrorCode::NotFound as i32; n]);
    super::to_every_shard(ctx, request_id, "task ids", cancel.task_ids, reply, |ctx, items| ShardMsg::Cancel {
        out: ctx.out.clone(),
        request_id,
        items,
    });
}
