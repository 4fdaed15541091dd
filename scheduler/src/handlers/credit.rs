//! `Credit`: an agent (or a peer node) can take `n` more tasks from a queue, or exactly `n` with `set`.

use pm_protocol::pb;
use pm_protocol::{ErrorCode, Role};
use pm_task::pipeline::{queue_or_default, validate_queue_name};

use super::ctx::ConnCtx;
use crate::shard::{shard_of_queue, ShardMsg};

/// Hands the credits to the queue's shard (an empty queue name is `default`). A bad queue name cannot be
/// answered per request (a Credit has no request id): it gets `INVALID_TASK` with request id 0 and the
/// connection closes, as after every error with request id 0; returns false then.
pub fn handle(ctx: &mut ConnCtx, credit: pb::Credit) -> bool {
    if let Err(msg) = validate_queue_name(&credit.queue) {
        metrics::counter!(crate::metrics::REFUSED, "reason" => "credit_queue").increment(1);
        ctx.error(ErrorCode::InvalidTask, 0, msg);
        return false;
    }
    let queue = queue_or_default(&credit.queue).to_string();
    let shard = shard_of_queue(&queue, ctx.server.shards.len());
    let peer = ctx.role == Role::Peer;
    let (conn, out, n, set) = (ctx.id, ctx.out.clone(), credit.n, credit.set);
    let (executors, holdings) = (ctx.executors.clone(), ctx.holdings.clone());
    ctx.server.shards[shard].send(ShardMsg::Credit { conn, out, queue, n, set, peer, executors, holdings });
    true
}
