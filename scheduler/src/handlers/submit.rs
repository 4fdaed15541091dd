//! `Submit`: redirect it if another node owns a key (cluster mode); validate each task, split by owning shard,
//! reply once every part is durable.

use std::collections::BTreeMap;

use pm_protocol::limits::{MAX_EXECUTOR_NAME_BYTES, MAX_KEY_BYTES};
use pm_protocol::pb::{self, SubmitResult};
use pm_protocol::ErrorCode;
use pm_task::pipeline::{queue_or_default, validate_queue_name};

use super::ctx::{by_shard, ConnCtx};
use crate::metrics as m;
use crate::outbox::{Merge, Outbound, Reply};
use crate::shard::{shard_of_queue, ShardMsg};

/// Handles a Submit. Takes one of the connection's in-flight slots until the reply is written: at the limit
/// the connection stops reading (backpressure on a producer that never reads its replies).
pub fn handle(ctx: &mut ConnCtx, submit: pb::Submit) {
    let items = submit.tasks.into_iter().map(Ok).collect();
    enqueue(ctx, submit.request_id, submit.notify, submit.failover, items);
}

/// Handles a SubmitTemplate: fills the pipeline's template with each task's parameters, then goes on as a
/// Submit. A task whose pipeline is unknown or whose parameters are refused gets its error in its result.
pub fn handle_template(ctx: &mut ConnCtx, st: pb::SubmitTemplate) {
    if st.tasks.len() > ctx.server.cfg.max_batch {
        let msg = format!("{} tasks in one submit; the limit is {}", st.tasks.len(), ctx.server.cfg.max_batch);
        ctx.error(ErrorCode::LimitExceeded, st.request_id, msg);
        return;
    }
    let compiled = ctx.server.catalog.pipeline(&st.app, &st.pipeline);
    let max_value = ctx.server.cfg.max_param_bytes;
    let items = st
        .tasks
        .into_iter()
        .map(|t| {
            let c = compiled.as_ref().map_err(|e| failed(e.code(), e.to_string()))?;
            let params: BTreeMap<String, String> = t.params.into_iter().collect();
            let mut spec = c.fill(&params, max_value).map_err(|e| failed(ErrorCode::InvalidTask, e.to_string()))?;
            spec.key = t.key;
            spec.idempotency_key = t.idempotency_key;
            if let Some(p) = t.priority {
                spec.priority = p;
            }
            if let Some(d) = t.delay_ms {
                spec.delay_ms = d;
            }
            Ok(spec)
        })
        .collect::<Vec<_>>();
    metrics::counter!(m::TEMPLATE_SUBMITS).increment(items.len() as u64);
    enqueue(ctx, st.request_id, st.notify, st.failover, items);
}

fn failed(code: ErrorCode, message: String) -> SubmitResult {
    SubmitResult { code: code as i32, message, ..Default::default() }
}

/// Validates the tasks, splits them by owning shard and registers the reply (an `Err` item is answered as it
/// is); redirects the whole request when another node owns a key (cluster mode).
fn enqueue(
    ctx: &mut ConnCtx,
    request_id: u64,
    notify: bool,
    failover: bool,
    tasks: Vec<Result<pb::TaskSpec, SubmitResult>>,
) {
    let cfg = &ctx.server.cfg;
    if tasks.len() > cfg.max_batch {
        let msg = format!("{} tasks in one submit; the limit is {}", tasks.len(), cfg.max_batch);
        ctx.error(ErrorCode::LimitExceeded, request_id, msg);
        return;
    }
    if let Some(owner) = (!failover).then(|| foreign_owner(ctx, tasks.iter().flatten())).flatten() {
        metrics::counter!(m::REDIRECTED).increment(1);
        ctx.server.redirects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ring = &ctx.server.ring;
        let node = ring.members()[owner].clone();
        let redirect = pb::Redirect { request_id, node, ring_epoch: ring.epoch(), members: ring.members().to_vec() };
        let _ = ctx.out.send(Outbound::Frame(redirect.into()));
        return;
    }
    ctx.inflight += 1;
    let n = tasks.len();
    let mut results = vec![SubmitResult::default(); n];
    let shards = ctx.server.shards.len();
    let mut routed = Vec::with_capacity(n);
    for (i, spec) in tasks.into_iter().enumerate() {
        match spec.and_then(|spec| {
            validate(&spec, cfg.max_payload_bytes).map(|()| spec).map_err(|msg| failed(ErrorCode::InvalidTask, msg))
        }) {
            Ok(spec) => routed.push((shard_of_queue(queue_or_default(&spec.queue), shards), (i, spec))),
            Err(refused) => results[i] = refused,
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
fn foreign_owner<'a>(ctx: &ConnCtx, tasks: impl Iterator<Item = &'a pb::TaskSpec>) -> Option<usize> {
    let me = ctx.server.ordinal?;
    let ring = &ctx.server.ring;
    tasks.filter(|t| !t.key.is_empty()).filter_map(|t| ring.owner(t.key.as_bytes())).find(|o| *o != me)
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
    if pm_task::pipeline::has_follow_ups(&spec.payload) {
        // Follow-ups are submitted by the scheduler later: refuse a bad one now, not when the task finishes.
        pm_task::pipeline::parse_task(&spec.payload).map_err(|e| e.to_string())?;
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
