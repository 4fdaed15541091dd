//! Requests about tasks by id: `Cancel` (stop them for good), `Status` and `Watch`. A task id does not name
//! its shard (tasks are placed by queue), so every shard gets the whole list and answers for the ids it owns;
//! the others stay `NOT_FOUND` in the merged reply.

use pm_protocol::pb;
use pm_protocol::ErrorCode;

use super::ctx::ConnCtx;
use crate::outbox::Reply;
use crate::shard::ShardMsg;

/// Sends the ids to every shard; the reply goes out once every shard's cancellations are durable.
pub fn cancel(ctx: &mut ConnCtx, cancel: pb::Cancel) {
    let (request_id, n) = (cancel.request_id, cancel.task_ids.len());
    let reply = Reply::Cancel(vec![ErrorCode::NotFound as i32; n]);
    super::ctx::to_every_shard(ctx, request_id, "task ids", cancel.task_ids, reply, |ctx, items| ShardMsg::Cancel {
        out: ctx.out.clone(),
        request_id,
        items,
    });
}

/// `Status`: every shard answers for the ids it knows (a live task, or a kept outcome); the rest stay
/// `NOT_FOUND`.
pub fn status(ctx: &mut ConnCtx, req: pb::Status) {
    let request_id = req.request_id;
    let reply = Reply::Status(
        req.task_ids
            .iter()
            .map(|&task_id| pb::TaskStatus { task_id, code: ErrorCode::NotFound as i32, ..Default::default() })
            .collect(),
    );
    super::ctx::to_every_shard(ctx, request_id, "task ids", req.task_ids, reply, |ctx, items| ShardMsg::Status {
        out: ctx.out.clone(),
        request_id,
        items,
    });
}

/// `Watch`: every shard registers the ids it knows (and sends `Completed` at once for those finished).
pub fn watch(ctx: &mut ConnCtx, req: pb::Watch) {
    let (request_id, n) = (req.request_id, req.task_ids.len());
    let reply = Reply::Watch(vec![ErrorCode::NotFound as i32; n]);
    super::ctx::to_every_shard(ctx, request_id, "task ids", req.task_ids, reply, |ctx, items| ShardMsg::Watch {
        out: ctx.out.clone(),
        request_id,
        items,
    });
}
