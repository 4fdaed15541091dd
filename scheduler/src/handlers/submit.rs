//! `Submit`: redirect it if another node owns a key (cluster mode); validate each task, split by owning shard,
//! reply once every part is durable.

use pm_protocol::limits::MAX_KEY_BYTES;
use pm_protocol::pb::{self, SubmitResult};
use pm_protocol::pipeline::{queue_or_default, validate_queue_name};
use pm_protocol::ErrorCode;

use super::by_shard;
use crate::connection::{ConnCtx, Merge, Outbound, Reply, MAX_EXECUTOR_NAME_BYTES};
use crate::metrics as m;
use crate::shard::{shard_of_queue, ShardMsg};

/// Handles a Submit. Takes one of the connection's in-flight slots until the reply is written: at the limit
/// the connection stops reading (backpressure on a producer that never reads its replies).
pub fn handle(ctx: &mut ConnCtx, submit: pb::Submit) {
    let (request_id, notify) = (submit.request_id, submit.notify);
    let cfg = &ctx.server.cfg;
    if submit.tasks.len() > cfg.max_batch {
        let msg = format!("{} tasks in one submit; the limit is {}", submit.tasks.len(), cfg.max_batch);
        ctx.error(ErrorCode::LimitExceeded, request_id, msg);
        return;
    }
    if let Some(owner) = (!submit.failover).then(|| foreign_owner(ctx, &submit.tasks)).flatten() {
        metrics::counter!(m::REDIRECTED).increment(1);
        let ring = &ctx.server.ring;
        let node = ring.members()[owner].clone();
        let redirect = pb::Redirect { request_id, node, ring_epoch: ring.epoch(), members: ring.members().to_vec() };
        let _ = ctx.out.send(Outbound::Frame(redirect.into()));
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
        ctx.server.shards[shard].send(ShardMsg::Submit { out: ctx.out.clone(), request_id, items, notify });
    }
}

/// Cluster mode: the ordinal of the owner of the first keyed task this node does not own. Tasks without a key
/// have no order to keep, so any node takes them.
fn foreign_owner(ctx: &ConnCtx, tasks: &[pb::TaskSpec]) -> Option<usize> {
    let me = ctx.server.ordinal?;
    let ring = &ctx.server.ring;
    tasks.iter().filter(|t| !t.key.is_empty()).filter_map(|t| ring.owner(t.key.as_bytes())).find(|o| *o != me)
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
    if pm_protocol::pipeline::has_follow_ups(&spec.payload) {
        // Follow-ups are submitted by the scheduler later: refuse a bad one now, not when the task finishes.
        pm_protocol::pipeline::parse_task(&spec.payload).map_err(|e| e.to_string())?;
    }
    if spec.executors.len() > MAX_TASK_EXECUTORS
        || spec.executors.iter().any(|e| e.is_empty() || e.len() > MAX_EXECUTOR_NAME_BYTES)
    {
        return Err(format!("executors: at most {MAX_TASK_EXECUTORS} names of 1 to {MAX_EXECUTOR_NAME_BYTES} bytes"));
    }
    Ok(())
}

/// Most executors one task may name in `TaskSpec.executors`.
const MAX_TASK_EXECUTORS: usize = 64;
