//! An operator's requests: stats, task listings, queue control (pause, resume, purge), and dead letters (list,
//! redrive, delete). A request about one queue goes to the shard that owns it; the others to every shard,
//! each answering a part.

use std::sync::atomic::Ordering;

use pm_protocol::pb::{self, QueueAction, TaskState};
use pm_protocol::ErrorCode;
use pm_task::pipeline::validate_queue_name;

use super::ctx::ConnCtx;
use crate::outbox::{Merge, Outbound, Part, Reply};
use crate::shard::{shard_of_queue, ListQuery, ShardHandle, ShardMsg, DEFAULT_LIMIT, MAX_LIMIT};

/// Default and largest number of dead letters listed at once.
const DEAD_LIST_DEFAULT: usize = 100;
const DEAD_LIST_MAX: usize = 10_000;

fn begin(ctx: &ConnCtx, request_id: u64, reply: Reply) {
    begin_parts(ctx, request_id, reply, ctx.server.shards.len());
}

fn begin_parts(ctx: &ConnCtx, request_id: u64, reply: Reply, parts: usize) {
    let merge = Merge { parts, reply, holds_slot: false };
    let _ = ctx.out.send(Outbound::Begin { request_id, merge });
}

/// The shards a request filtered by `queue` concerns: the queue's owner, or every shard when it is empty.
fn shards_of(ctx: &ConnCtx, queue: &str) -> Vec<ShardHandle> {
    let shards = &ctx.server.shards;
    if queue.is_empty() {
        shards.clone()
    } else {
        vec![shards[shard_of_queue(queue, shards.len())].clone()]
    }
}

/// Checks a queue filter (empty: none); answers the error itself.
fn valid_queue_filter(ctx: &ConnCtx, request_id: u64, queue: &str) -> bool {
    match validate_queue_name(queue) {
        Err(e) if !queue.is_empty() => {
            ctx.error(ErrorCode::InvalidTask, request_id, format!("queue: {e}"));
            false
        }
        _ => true,
    }
}

/// A page of tasks, newest first: every shard concerned answers its own page, merged in the reply.
pub fn task_list(ctx: &mut ConnCtx, req: pb::TaskList) {
    let request_id = req.request_id;
    if !valid_queue_filter(ctx, request_id, &req.queue) {
        return;
    }
    let limit = match req.limit as usize {
        0 => DEFAULT_LIMIT,
        n if n > MAX_LIMIT => {
            ctx.error(ErrorCode::InvalidTask, request_id, format!("limit: at most {MAX_LIMIT} tasks a page"));
            return;
        }
        n => n,
    };
    let Ok(state) = TaskState::try_from(req.state) else {
        ctx.error(ErrorCode::InvalidTask, request_id, format!("state: no state {}", req.state));
        return;
    };
    let query = ListQuery { queue: req.queue, state, key: req.key, flow_id: req.flow_id, limit, before: req.before };
    let shards = shards_of(ctx, &query.queue);
    begin_parts(ctx, request_id, Reply::TaskList(Vec::new(), limit), shards.len());
    for s in shards {
        s.send(ShardMsg::TaskList { out: ctx.out.clone(), request_id, query: query.clone() });
    }
}

/// Pause, resume or purge a queue. A pause or resume is written to the paused-queues file before its shard
/// is told (see [`crate::paused`]); a purge is a round of the shard's own.
pub fn queue_control(ctx: &mut ConnCtx, req: pb::QueueControl) {
    let request_id = req.request_id;
    if let Err(e) = validate_queue_name(&req.queue) {
        ctx.error(ErrorCode::InvalidTask, request_id, format!("queue: {e}"));
        return;
    }
    let action = QueueAction::try_from(req.action).unwrap_or(QueueAction::Unspecified);
    if action == QueueAction::Unspecified {
        ctx.error(ErrorCode::InvalidTask, request_id, "action: pause, resume or purge");
        return;
    }
    let reply = pb::QueueControlReply { code: ErrorCode::Ok as i32, ..Default::default() };
    begin_parts(ctx, request_id, Reply::QueueControl(reply), 1);
    let shard = shards_of(ctx, &req.queue).remove(0);
    let out = ctx.out.clone();
    let msg = ShardMsg::QueueControl { out: out.clone(), request_id, queue: req.queue.clone(), action };
    if action == QueueAction::Purge {
        shard.send(msg);
        return;
    }
    let paused = ctx.server.paused.clone();
    tokio::spawn(async move {
        let written = paused.set(&req.queue, action == QueueAction::Pause, || {
            shard.send(msg);
        });
        if let Err(e) = written.await {
            let part = Part::QueueControl(Err((ErrorCode::StoreFailed, e.to_string())));
            let _ = out.send(Outbound::Part { request_id, part });
        }
    });
}

/// Deletes dead letters: those named, or all of the queue filter with `all` (nothing else).
pub fn dead_delete(ctx: &mut ConnCtx, req: pb::DeadLetterDelete) {
    let request_id = req.request_id;
    if !valid_queue_filter(ctx, request_id, &req.queue) {
        return;
    }
    let reply = pb::DeadLetterDeleteReply { code: ErrorCode::Ok as i32, ..Default::default() };
    if req.task_ids.is_empty() && !req.all {
        let _ = ctx.out.send(Outbound::Frame(pb::DeadLetterDeleteReply { request_id, ..reply }.into()));
        return;
    }
    let shards = shards_of(ctx, &req.queue);
    begin_parts(ctx, request_id, Reply::DeadDelete(reply), shards.len());
    for s in shards {
        s.send(ShardMsg::DeadDelete {
            out: ctx.out.clone(),
            request_id,
            queue: req.queue.clone(),
            task_ids: req.task_ids.clone(),
            all: req.all,
        });
    }
}

/// Queue counters of every shard, plus node-wide figures.
pub fn stats(ctx: &mut ConnCtx, req: pb::StatsRequest) {
    // Peer nodes and agents ask every second or more often and only look at the queues: spare them the
    // directory scan.
    let quick = matches!(ctx.role, pm_protocol::Role::Peer | pm_protocol::Role::Agent);
    let (disk, segments) = if quick { (0, 0) } else { dir_usage(&ctx.server.data_dir) };
    let reply = pb::StatsReply {
        request_id: req.request_id,
        queues: Vec::new(),
        connections: ctx.server.connections.load(Ordering::Relaxed),
        store_disk_bytes: disk,
        store_segments: segments,
        node_id: ctx.server.node_id.clone(),
        ring_epoch: ctx.server.ring.epoch(),
        members: ctx.server.ring.members().to_vec(),
        advertise: ctx.server.ordinal.map(|i| ctx.server.ring.members()[i].clone()).unwrap_or_default(),
        redirects: ctx.server.redirects.load(Ordering::Relaxed),
        partitions: ctx.server.replicas.as_ref().map(partition_states).unwrap_or_default(),
    };
    begin(ctx, req.request_id, Reply::Stats(Box::new(reply)));
    for s in &ctx.server.shards {
        s.send(ShardMsg::Stats { out: ctx.out.clone(), request_id: req.request_id });
    }
}

/// The partitions this node replicates, as its driver last published them.
fn partition_states(replicas: &crate::replica::ReplicaHandle) -> Vec<pb::PartitionState> {
    replicas
        .published()
        .into_iter()
        .map(|p| pb::PartitionState { partition: p.partition, leader: p.leader, term: p.term, commit: p.commit })
        .collect()
}

/// Dead letters, oldest first.
pub fn dead_list(ctx: &mut ConnCtx, req: pb::DeadLetterList) {
    let limit = match req.limit as usize {
        0 => DEAD_LIST_DEFAULT,
        n => n.min(DEAD_LIST_MAX),
    };
    if !valid_queue_filter(ctx, req.request_id, &req.queue) {
        return;
    }
    let shards = shards_of(ctx, &req.queue);
    begin_parts(ctx, req.request_id, Reply::DeadList(Vec::new(), limit), shards.len());
    for s in shards {
        s.send(ShardMsg::DeadList {
            out: ctx.out.clone(),
            request_id: req.request_id,
            queue: req.queue.clone(),
            limit,
            after: req.after,
        });
    }
}

/// Makes dead letters ready again.
pub fn redrive(ctx: &mut ConnCtx, req: pb::DeadLetterRedrive) {
    begin(ctx, req.request_id, Reply::Redrive(0));
    for s in &ctx.server.shards {
        s.send(ShardMsg::Redrive {
            out: ctx.out.clone(),
            request_id: req.request_id,
            queue: req.queue.clone(),
            task_ids: req.task_ids.clone(),
        });
    }
}

/// Bytes and files in the data directory (recursively, one level of subdirectories).
fn dir_usage(dir: &std::path::Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let Ok(rd) = std::fs::read_dir(dir) else { return (0, 0) };
    for e in rd.flatten() {
        let Ok(md) = e.metadata() else { continue };
        if md.is_dir() {
            let (b, f) = dir_usage(&e.path());
            bytes += b;
            files += f;
        } else {
            bytes += md.len();
            files += 1;
        }
    }
    (bytes, files)
}
