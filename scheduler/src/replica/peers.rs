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
        let opts = opts.client_id(format!("raft:{name}")).reconnect(true);
        for (ordinal, addr) in ring.members().iter().enumerate().filter(|(i, _)| *i != me) {
            tokio::spawn(connect(raft_id(ordinal), addr.clone(), opts.clone(), slots.clone(), shutdown.clone()));
        }
        PeerTransport { slots, pending: Mutex::new(BTreeMap::new()) }
    }
}

impl Transport for PeerTransport {
    fn send(&self, partition: u32, msg: Message) {
        let item = pb::RaftItem { partition, message: Some(wire::to_wire(&msg)) };
        self.pending.lock().entry(msg.to).or_default().push(item);
    }

    fn flush(&self) {
        let batches = std::mem::take(&mut *self.pending.lock());
        if batches.is_empty() {
            return;
        }
        let slots = self.slots.lock();
        for (to, items) in batches {
            match slots.get(&to) {
                Some(client) => {
                    if !client.push(pb::RaftBatch { items }.into()) {
                        tracing::debug!(peer = to, "raft messages dropped: the peer's connection is backed up");
                    }
                }
                None => tracing::trace!(peer = to, "raft messages dropped: the peer is not connected"),
            }
        }
    }
}

/// Connects to one peer until it answers, then keeps the client (it reconnects by itself).
async fn connect(id: u64, addr: String, opts: ConnectOptions, slots: Slots, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(20);
    loop {
        tokio::select! {
            r = Client::connect(&addr, opts.clone()) => match r {
                Ok(client) => {
                    tracing::info!(peer = %addr, "raft connection to peer open");
                    slots.lock().insert(id, client);
                    return;
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
