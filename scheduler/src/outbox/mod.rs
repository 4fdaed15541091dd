//! What handlers and shards send to a connection, below both of them.
//!
//! A shard answers requests and pushes leases without knowing connections: it holds an [`OutTx`] and queues
//! [`Outbound`] messages in it. The connection task (in [`crate::connection`]) takes them, merges the parts
//! of replies that come back from several shards ([`Merge`]), and writes them. Keeping these types here, under
//! the shards rather than beside the socket code, lets every arrow between modules point downward:
//! connection → handlers → shard → outbox.
//!
//! - [`channel`](channel()): the per-connection outbox and the node's [`Registry`] of connections (idle timeout,
//!   shutdown).
//! - [`Outbound`], [`Part`], [`Reply`], [`Merge`]: what is queued, and how a reply in parts is put together.

mod channel;
mod reply;

pub use channel::{channel, OutRx, OutTx, Registry};
pub use reply::{Merge, Outbound, Part, Reply};

/// Connection id, unique within a node's lifetime.
pub type ConnId = u64;
