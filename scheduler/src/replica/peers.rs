//! The wire between the replica drivers of a cluster: raft messages to the other members, over the same
//! framed protocol as everything else.
//!
//! Each peer gets one `ROLE_PEER` connection of its own (kept and reconnected by `pm_client`), so raft traffic
//! never waits behind work stealing or catalog copies. The driver hands over messages one by one
//! ([`Transport::send`]); they are gathered per peer and written as one `RaftBatch` frame per peer when the
//! driver finishes a round ([`Transport::flush`]). A message for a peer that is not connected is dropped:
//! raft sends again (heartbeats, append retries), which is the contract of its transport.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pm_client::{Client, ConnectOptions};
use pm_protocol::pb;
use pm_task::ring::Ring;
use raft::eraftpb::Message;
use tokio_util::sync::CancellationToken;

use super::driver::Transport;
use super::wire;

/// A member's raft id: its ordinal + 1 (raft ids are never 0).
pub fn raft_id(ordinal: usize) -> u64 {
    ordinal as u64 + 1
}

/// The connections to the other members, by raft id.
type Slots = Arc<Mutex<BTreeMap<u64, Client>>>;

/// [`Transport`] over peer connections.
pub struct PeerTransport {
    slots: Slots,
    /// Messages gathered since the last flush, per peer.
    pending: Mutex<BTreeMap<u64, Vec<pb::RaftItem>>>,
}

impl PeerTransport {
    /// Connects (in the background, for as long as `shutdown` is not cancelled) to every member of `ring` but
    /// `me`, with `opts` (`ConnectOptions::peer()` with the node's peer token and TLS).
    pub fn start(ring: &Ring, me: usize, opts: ConnectOptions, shutdown: &CancellationToken) -> PeerTransport {
        let slots = Slots::default();
        let name = ring.members().get(me).cloned().unwrap_or_default();
        // A peer that comes back is found within half a second: its groups wait for it to catch up.
        let opts = opts.client_id(format!("raft:{name}")).reconnect(true).max_backoff(Duration::from_millis(500));
        for (ordinal, addr) in ring.members().iter().enumerate().filter(|(i, _)| *i != me) {
            let (id, addr, epoch) = (raft_id(ordinal), addr.clone(), ring.epoch());
            tokio::spawn(connect(id, addr, epoch, opts.clone(), slots.clone(), shutdown.clone()));
        }
        PeerTransport { slots, pending: Mutex::new(BTreeMap::new()) }
    }
}

/// Largest `RaftBatch` frame body sent: well under the smallest `--max-frame-bytes` a peer may have (64 KiB
/// is the floor, 4 MiB the default). A round's messages for one peer go in as many frames as they need; a
/// single message is at most raft's `max_size_per_msg` (1 MiB) of entries plus its header.
const MAX_BATCH_BYTES: usize = 1 << 20;

impl Transport for PeerTransport {
    fn send(&self, partition: u32, msg: Message) {
        let item = pb::RaftItem { partition, message: Some(wire::to_wire(&msg)) };
        self.pending.lock().entry(msg.to).or_default().push(item);
    }

    fn flush(&self) -> Vec<u64> {
        let batches = std::mem::take(&mut *self.pending.lock());
        let mut unreachable = Vec::new();
        if batches.is_empty() {
            return unreachable;
        }
        let slots = self.slots.lock();
        for (to, items) in batches {
            let Some(client) = slots.get(&to).filter(|c| !c.is_closed()) else {
                unreachable.push(to);
                continue;
            };
            for items in split(items) {
                if !client.push(pb::RaftBatch { items }.into()) {
                    tracing::debug!(peer = to, "raft messages dropped: the peer's connection is backed up");
                    unreachable.push(to);
                    break;
                }
            }
        }
        unreachable
    }
}

/// Splits a peer's messages into batches of at most [`MAX_BATCH_BYTES`] (a larger message goes alone).
fn split(items: Vec<pb::RaftItem>) -> Vec<Vec<pb::RaftItem>> {
    use prost::Message as _;
    let mut out: Vec<Vec<pb::RaftItem>> = Vec::new();
    let mut size = 0;
    for item in items {
        let len = item.encoded_len() + 8;
        match out.last_mut() {
            Some(last) if size + len <= MAX_BATCH_BYTES => {
                last.push(item);
                size += len;
            }
            _ => {
                out.push(vec![item]);
                size = len;
            }
        }
    }
    out
}

/// Connects to one peer until it answers with the same ring, then keeps the client (it reconnects by itself).
/// A peer with another member list maps raft ids to other members: it gets no message.
async fn connect(id: u64, addr: String, epoch: u64, opts: ConnectOptions, slots: Slots, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(20);
    loop {
        tokio::select! {
            r = Client::connect(&addr, opts.clone()) => match r {
                Ok(client) if client.welcome().ring_epoch == epoch => {
                    tracing::info!(peer = %addr, "raft connection to peer open");
                    slots.lock().insert(id, client);
                    return;
                }
                Ok(client) => {
                    tracing::error!(
                        peer = %addr,
                        theirs = client.welcome().ring_epoch,
                        ours = epoch,
                        "a member holds another member list: no raft messages go to it until both agree"
                    );
                    backoff = Duration::from_secs(5);
                }
                Err(e) => tracing::debug!(peer = %addr, "raft peer not reachable yet: {e}"),
            },
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(bytes: usize) -> pb::RaftItem {
        let entry = pb::RaftEntry { data: vec![7u8; bytes].into(), ..pb::RaftEntry::default() };
        pb::RaftItem {
            partition: 1,
            message: Some(pb::RaftMessage { entries: vec![entry], ..pb::RaftMessage::default() }),
        }
    }

    #[test]
    fn a_round_for_one_peer_is_split_into_frames_under_the_bound() {
        use prost::Message as _;
        let batches = split((0..10).map(|_| item(300 << 10)).chain([item(3 << 20), item(10)]).collect());
        let sizes: Vec<usize> = batches.iter().map(|b| pb::RaftBatch { items: b.clone() }.encoded_len()).collect();
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 12, "nothing lost or repeated");
        assert!(
            sizes.iter().filter(|s| **s > MAX_BATCH_BYTES).count() == 1,
            "only the oversize message goes alone: {sizes:?}"
        );
        assert_eq!(batches.len(), 6, "3 + 3 + 3 + 1, the oversize one, the last: {sizes:?}");
        assert!(split(Vec::new()).is_empty());
    }
}
