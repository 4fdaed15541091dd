//! `Submit`: validate each task, split by owning shard, reply once every part is durable.

use pm_protocol::limits::MAX_KEY_BYTES;
use pm_protocol::pb::{self, SubmitResult};
use pm_protocol::pipeline::{queue_or_default, validate_queue_name};
use pm_protocol::ErrorCode;

use super::by_shard;
use crate::connection::{ConnCtx, Merge, Outbound, Reply};
use crate::shard::{shard_of_queue, ShardMsg};

/// Handles a Submit. Takes one of the connection's in-flight slots until the reply is written: at the limit
/// the connection stops reading (backpressure on a producer that never reads its replies).
pub fn handle(ctx: &mut ConnCtx, submit: pb::Submit) {
    let request_id = submit.request_id;
    let cfg = &ctx.server.cfg;
    if submit.tasks.len() > cfg.max_batch {
        let msg = format!("{} tasks in one submit; the limit is {}", submit.tasks.len(), cfg.max_batch);
        ctx.error(ErrorCode::LimitExceeded, request_id, msg);
        return;
    }
    ctx.inflight += 1;
    let n = submit.tasks.len();
    let mut results = vec![SubmitResult::default(); n];
    let shards = ctx.server.shards.len();
    let mut routed = Vec::with_capacity(n);
    for (i, spec) in submit.tasks.into_iter().enumerate() {
        match validate(&spec, cfg.max_payload_bytes) {
            Ok(()) => routed.push((shard_of_queue(queue_or_default(&spec.queue), shards), (i, spec))),
            Err(msg) => {
                results[i] = SubmitResult { code: ErrorCode::InvalidTask as i32, message: msg, ..Default::default() }
            }
        }
    }
    let groups = by_shard(shards, routed);
    let merge = Merge { parts: groups.len(), reply: Reply::Submit(results), holds_slot: true };
    let _ = ctx.out.send(Outbound::Begin { request_id, merge });
    for (shard, items) in groups {
        ctx.server.shards[shard].send(ShardMsg::Submit { out: ctx.out.clone(), request_id, items });
    }
}

fn validate(spec: &pb::TaskSpec, max_payload: usize) -> Result<(), String> {
    if spec.payload.is_empty() {
        return Err("empty payload".into());
    }
    if spec.payload.len() > max_payload {
        return Err(format!("payload of {} bytes exceeds the limit of {max_payload} bytes", spec.payload.len()));
    }
    validate_queue_name(&spec.queue)?;
    if spec.key.len() > MAX_KEY_BYTES || spec.idempotency_key.len() > MAX_KEY_BYTES {
        return Err(format!("key and idempotency key are limited to {MAX_KEY_BYTES} bytes"));
    }
    Ok(())
}
