//! The stealing planner: when this node's agents idle, find peers with a backlog and set credits there.
//!
//! Every `--steal-interval` it asks each shard which queues have agents with idle credits and no ready work.
//! When some do, it asks peers for their ready backlog and sets its credits at each (`Credit{set}`) in
//! proportion to it, withdrawing them where there is none. While no peer has a backlog for its idle agents it
//! asks less often: every 2, 4, 8, then 16 ticks.
//!
//! **Some peers per tick, not all.** Asking every peer each tick costs the cluster members × (members − 1)
//! requests a tick, whatever the load. With 54 nodes on one 2-core host that took a 5,000 tasks/s load's p99
//! from 2.6 to 45 ms (docs/scaling.md). So a tick asks at most [`PEERS_PER_TICK`] peers, a window that moves
//! round the ring; a cluster of up to `PEERS_PER_TICK + 1` members asks everyone, as before. Credits set at a
//! peer stay until that peer is asked again, and the back-off starts only once a whole round found nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pm_client::Client;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::shard::{ShardHandle, ShardMsg};

/// The peers' connections (ordinal → client), filled in as they connect.
pub(super) type Peers = Arc<Mutex<Vec<Option<Client>>>>;

/// Most peers asked for their backlog in one tick.
pub const PEERS_PER_TICK: usize = 8;

/// The window of `n` connected peers asked this tick: `PEERS_PER_TICK` of them from `start` on, wrapping
/// (all of them when there are no more than that). Returns the positions and where the next window starts.
fn window(n: usize, start: usize) -> (Vec<usize>, usize) {
    if n <= PEERS_PER_TICK {
        return ((0..n).collect(), 0);
    }
    let start = start % n;
    ((0..PEERS_PER_TICK).map(|k| (start + k) % n).collect(), (start + PEERS_PER_TICK) % n)
}

/// The planner: every `interval`, sets this node's credits at each peer for the queues whose agents idle.
pub(super) async fn plan(interval: Duration, shards: Vec<ShardHandle>, peers: Peers, shutdown: CancellationToken) {
    // (peer, queue) → credits last set there.
    let mut granted: HashMap<(usize, String), u32> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // While the peers have no backlog for our idle agents, ask them less and less often (up to 16 ticks).
    let (mut skip, mut quiet_polls) = (0u32, 0u32);
    // Where the next window of peers starts, and how many peers the current round has asked without
    // finding a backlog.
    let (mut next, mut quiet_asked) = (0usize, 0usize);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let clients: Vec<(usize, Client)> =
            peers.lock().iter().enumerate().filter_map(|(i, c)| c.clone().map(|c| (i, c))).collect();
        if clients.is_empty() {
            continue;
        }
        let hungry = hungry_queues(&shards).await;
        if !hungry.is_empty() && granted.is_empty() && skip > 0 {
            skip -= 1;
            continue;
        }
        let mut want: HashMap<(usize, String), u32> = HashMap::new();
        // The peers whose credits this tick decides: those asked, or every one when nothing is hungry.
        let mut decided: HashSet<usize> = clients.iter().map(|(p, _)| *p).collect();
        if !hungry.is_empty() {
            let (positions, after) = window(clients.len(), next);
            next = after;
            let asked: Vec<(usize, Client)> = positions.iter().map(|&i| clients[i].clone()).collect();
            decided = asked.iter().map(|(p, _)| *p).collect();
            let backlog = backlogs(&asked, interval).await;
            for (queue, idle) in &hungry {
                let owners: Vec<(usize, u64)> =
                    backlog.iter().filter_map(|(p, b)| b.get(queue).filter(|r| **r > 0).map(|r| (*p, *r))).collect();
                let total: u64 = owners.iter().map(|(_, r)| r).sum();
                for (peer, ready) in owners {
                    // A share of the idle credits in proportion to the peer's backlog, at least 1, at most it.
                    let share = idle.saturating_mul(ready).div_ceil(total.max(1)).clamp(1, ready);
                    want.insert((peer, queue.clone()), share.min(u64::from(u32::MAX)) as u32);
                }
            }
            if want.is_empty() {
                quiet_asked += asked.len();
                // Back off only once a whole round of peers had nothing.
                if quiet_asked >= clients.len() {
                    quiet_asked = 0;
                    quiet_polls = (quiet_polls + 1).min(4);
                    skip = (1u32 << quiet_polls) - 1;
                }
            } else {
                quiet_polls = 0;
                quiet_asked = 0;
            }
        }
        for (peer, client) in &clients {
            let mut sets = Vec::new();
            for ((p, queue), n) in &want {
                if p == peer {
                    sets.push((queue.clone(), *n));
                }
            }
            for ((p, queue), n) in &granted {
                if p == peer && *n > 0 && decided.contains(p) && !want.contains_key(&(*p, queue.clone())) {
                    sets.push((queue.clone(), 0));
                }
            }
            for (queue, n) in sets {
                if client.set_credit(&queue, n).await.is_ok() {
                    granted.insert((*peer, queue), n);
                }
            }
        }
        granted.retain(|_, n| *n > 0);
    }
}

/// Queues whose agents have idle credits and no ready work, with those credits (minus stolen tasks still
/// waiting for an agent), over all shards.
async fn hungry_queues(shards: &[ShardHandle]) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for s in shards {
        let (tx, rx) = oneshot::channel();
        if !s.send(ShardMsg::Hungry { reply: tx }) {
            continue;
        }
        if let Ok(list) = rx.await {
            for (q, n) in list {
                *out.entry(q).or_default() += n;
            }
        }
    }
    out
}

/// Ready tasks per queue at each peer (peers that do not answer within `wait` are left out).
async fn backlogs(clients: &[(usize, Client)], wait: Duration) -> Vec<(usize, HashMap<String, u64>)> {
    let asks = clients.iter().map(|(p, c)| async move {
        let stats = tokio::time::timeout(wait.max(Duration::from_millis(100)), c.stats()).await;
        let ready = match stats {
            Ok(Ok(s)) => s.queues.into_iter().map(|q| (q.queue, q.ready)).collect(),
            _ => HashMap::new(),
        };
        (*p, ready)
    });
    futures::future::join_all(asks).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_cluster_asks_every_peer_each_tick() {
        assert_eq!(window(3, 0), (vec![0, 1, 2], 0));
        assert_eq!(window(PEERS_PER_TICK, 5), ((0..PEERS_PER_TICK).collect(), 0));
    }

    #[test]
    fn a_large_cluster_asks_a_moving_window_that_covers_every_peer() {
        let n = 53;
        let (mut start, mut seen) = (0, vec![0u32; n]);
        for _ in 0..n.div_ceil(PEERS_PER_TICK) {
            let (asked, next) = window(n, start);
            assert_eq!(asked.len(), PEERS_PER_TICK);
            for i in asked {
                seen[i] += 1;
            }
            start = next;
        }
        assert!(seen.iter().all(|&c| c >= 1), "every peer asked within one round: {seen:?}");
        assert!(seen.iter().all(|&c| c <= 2), "{seen:?}");
    }
}
