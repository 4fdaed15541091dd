//! Node-wide state as the connections see it: the limits in force, the shard handles, the cluster view,
//! credentials and the registry of open connections. Built once by [`crate::node::Node::start`] and shared
//! (behind an `Arc`) by the listener, every connection and the HTTP gateway.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use pm_task::ring::Ring;
use tokio_util::sync::CancellationToken;

use crate::cluster::catalog_sync::CatalogPeers;
use crate::outbox::Registry;
use crate::shard::ShardHandle;
use crate::stolen::StealHandle;

/// Limits the connection code needs (copied out of [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame in either direction.
    pub max_frame_bytes: usize,
    /// Most tasks per Submit.
    pub max_batch: usize,
    /// Largest payload.
    pub max_payload_bytes: usize,
    /// Largest template parameter value.
    pub max_param_bytes: usize,
    /// Most open connections.
    pub max_connections: usize,
    /// Submits in flight per connection.
    pub max_inflight_per_conn: usize,
    /// Credits plus unacked leases one agent connection may hold across its queues (0 = no limit).
    pub max_leases_per_conn: u32,
    /// Time allowed for Hello.
    pub handshake_timeout: Duration,
    /// Silence allowed after Hello.
    pub idle_timeout: Duration,
    /// Unwritten output allowed per connection, bytes (0 = no limit)...
    pub max_write_buffer_bytes: usize,
    /// ...for this long with the socket taking nothing.
    pub write_stall_timeout: Duration,
}

/// Open connections per source address, for `--max-connections-per-ip`.
#[derive(Debug)]
pub struct PerIp {
    max: u32,
    open: parking_lot::Mutex<std::collections::HashMap<IpAddr, u32>>,
}

impl PerIp {
    /// A limit of `max` connections per address.
    pub fn new(max: usize) -> PerIp {
        PerIp { max: u32::try_from(max).unwrap_or(u32::MAX), open: Default::default() }
    }

    /// Counts a connection from `ip`; false (nothing counted) when `ip` is at the limit.
    pub(crate) fn acquire(&self, ip: IpAddr) -> bool {
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    /// Counts a connection from `ip` until the returned slot is dropped; `None` when `ip` is at the limit.
    pub(crate) fn slot(self: &Arc<Self>, ip: IpAddr) -> Option<PerIpSlot> {
        self.acquire(ip).then(|| PerIpSlot(self.clone(), ip))
    }

    pub(crate) fn release(&self, ip: IpAddr) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// A connection's place in [`PerIp`], given back when dropped (however the connection's task ends, a panic
/// included).
#[derive(Debug)]
pub(crate) struct PerIpSlot(Arc<PerIp>, IpAddr);

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// Node-wide state shared by all connections.
pub struct ServerCtx {
    /// Limits in force.
    pub cfg: Limits,
    /// The shard actors.
    pub shards: Vec<ShardHandle>,
    /// Next connection id.
    pub next_conn: AtomicU64,
    /// Open connections.
    pub connections: AtomicU64,
    /// Submits answered with a Redirect since the node started (`StatsReply.redirects`).
    pub redirects: AtomicU64,
    /// Node name.
    pub node_id: String,
    /// Cluster mode: the ring of all members (empty for a single node).
    pub ring: Ring,
    /// This node's ordinal in `ring` (`None` for a single node).
    pub ordinal: Option<usize>,
    /// Cluster mode: the work stealer, which forwards acks of stolen tasks to their owners.
    pub steal: Option<StealHandle>,
    /// Replicated cluster: the driver of this node's partition groups (`None` with `--replication-factor 1`).
    pub replicas: Option<crate::replica::ReplicaHandle>,
    /// Tokens per role.
    pub auth: Arc<crate::auth::Auth>,
    /// TLS on the listener (`None`: plain TCP).
    pub tls: Option<crate::tls::Tls>,
    /// Refusals of the connection limits in their TLS handshake now (at most [`crate::server::MAX_TLS_REFUSALS`]).
    pub refusing: AtomicUsize,
    /// `--max-connections-per-ip` (`None`: no limit).
    pub per_ip: Option<Arc<PerIp>>,
    /// Data directory (for stats).
    pub data_dir: PathBuf,
    /// Applications and their pipeline templates.
    pub catalog: Arc<crate::catalog::Catalog>,
    /// Cluster mode: the other members, to copy applications to.
    pub catalog_peers: Option<Arc<CatalogPeers>>,
    /// The queues an operator paused (kept across restarts).
    pub paused: Arc<crate::paused::PausedQueues>,
    /// Cancelled when connections must close (end of shutdown).
    pub shutdown: CancellationToken,
    /// Open connections, for the idle sweep and shutdown.
    pub conns: Arc<Registry>,
}
