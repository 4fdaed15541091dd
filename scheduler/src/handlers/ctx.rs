//! What every handler works with: the connection's state ([`ConnCtx`]) and the two ways a request reaches
//! the shards (split by owning shard, or sent to every shard when ids do not name theirs).

use std::sync::Arc;

use pm_protocol::pb;
use pm_protocol::{ErrorCode, Role};

use crate::context::ServerCtx;
use crate::holdings::Holdings;
use crate::outbox::{ConnId, Merge, OutTx, Outbound, Reply};
use crate::shard::{Executors, ShardMsg};

/// State of one connection, as seen by the handlers.
pub struct ConnCtx {
    /// This connection.
    pub id: ConnId,
    /// Fixed by Hello.
    pub role: Role,
    /// Agents: the executors declared in Hello (`None`: declared none, runs anything).
    pub executors: Option<Executors>,
    /// Agents: the credits and leases held across the node, bounded by `--max-leases-per-conn` (`None`: no
    /// bound, or not an agent).
    pub holdings: Option<Arc<Holdings>>,
    /// The connection's outbox.
    pub out: OutTx,
    /// Node-wide state.
    pub server: Arc<ServerCtx>,
    /// Submits in flight on this connection: a handler taking a slot sets [`Merge::holds_slot`], and the slot is
    /// given back when the reply is written. At `--max-inflight-per-conn` the connection stops reading.
    pub inflight: usize,
}

impl ConnCtx {
    /// Sends an error answering `request_id` (0 = connection-level).
    pub fn error(&self, code: ErrorCode, request_id: u64, msg: impl Into<String>) {
        let _ = self.out.send(Outbound::Frame(pb::Error::new(code, request_id, msg).into()));
    }
}

/// Groups `items` by shard index; returns only non-empty groups.
pub(super) fn by_shard<T>(n: usize, items: impl IntoIterator<Item = (usize, T)>) -> Vec<(usize, Vec<T>)> {
    let mut groups: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (shard, item) in items {
        groups[shard].push(item);
    }
    groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()).collect()
}

/// Sends a request about task ids to every shard: an id does not name its shard (tasks are placed by queue), so
/// each shard answers for the ids it owns and the merged `reply` keeps its defaults for the rest. Refuses more
/// than `--max-batch` items; an empty request is answered at once with `reply`.
pub(super) fn to_every_shard<T: Clone>(
    ctx: &mut ConnCtx,
    request_id: u64,
    what: &str,
    items: Vec<T>,
    reply: Reply,
    msg: impl Fn(&ConnCtx, Vec<(usize, T)>) -> ShardMsg,
) {
    let max = ctx.server.cfg.max_batch;
    if items.len() > max {
        let msg = format!("{} {what} in one request; the limit is {max} (--max-batch)", items.len());
        ctx.error(ErrorCode::LimitExceeded, request_id, msg);
        return;
    }
    let parts = if items.is_empty() { 0 } else { ctx.server.shards.len() };
    let merge = Merge { parts, reply, holds_slot: false };
    let _ = ctx.out.send(Outbound::Begin { request_id, merge });
    if items.is_empty() {
        return;
    }
    let items: Vec<(usize, T)> = items.into_iter().enumerate().collect();
    for s in &ctx.server.shards {
        s.send(msg(ctx, items.clone()));
    }
}
