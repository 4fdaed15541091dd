//! Admin requests: stats, dead-letter list and redrive. Every shard answers a part.

use std::sync::atomic::Ordering;

use pm_protocol::pb;

use super::ctx::ConnCtx;
use crate::outbox::{Merge, Outbound, Reply};
use crate::shard::ShardMsg;

/// Default and largest number of dead letters listed at once.
const DEAD_LIST_DEFAULT: usize = 100;
const DEAD_LIST_MAX: usize = 10_000;

fn begin(ctx: &ConnCtx, request_id: u64, reply: Reply) {
    let merge = Merge { parts: ctx.server.shards.len(), reply, holds_slot: false };
    let _ = ctx.out.send(Outbound::Begin { request_id, merge });
}

/// Queue counters of every shard, plus node-wide figures.
pub fn stats(ctx: &mut ConnCtx, req: pb::StatsRequest) {
    // Peer nodes ask many times a second and only look at the queues: spare them the directory scan.
    let (disk, segments) = if ctx.role == pm_protocol::Role::Peer { (0, 0) } else { dir_usage(&ctx.server.data_dir) };
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
    };
    begin(ctx, req.request_id, Reply::Stats(Box::new(reply)));
    for s in &ctx.server.shards {
        s.send(ShardMsg::Stats { out: ctx.out.clone(), request_id: req.request_id });
    }
}

/// Dead letters, oldest first.
pub fn dead_list(ctx: &mut ConnCtx, req: pb::DeadLetterList) {
    let limit = match req.limit as usize {
        0 => DEAD_LIST_DEFAULT,
        n => n.min(DEAD_LIST_MAX),
    };
    begin(ctx, req.request_id, Reply::DeadList(Vec::new(), limit));
    for s in &ctx.server.shards {
        s.send(ShardMsg::DeadList {
            out: ctx.out.clone(),
            request_id: req.request_id,
            queue: req.queue.clone(),
            limit,
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
