//! What a connection hands its owner besides replies: the tasks pushed to an agent ([`Leases`] of
//! [`AgentEvent`]s) and the tasks a producer watches finish ([`Completions`]).

use pm_protocol::pb::{self, LeasedTask};
use tokio::sync::mpsc;

/// What the server pushes to an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// A task to run.
    Leased(LeasedTask),
    /// A task this agent holds was cancelled: stop it at once, and neither ack nor nack it (its lease is gone).
    /// Always arrives after the `Leased` event of the same lease.
    Revoked(pb::Revoke),
    /// After a reconnect, the answer to the reclaim of the tasks listed by the [`ConnectOptions::reclaim`](crate::ConnectOptions::reclaim)
    /// provider: one result per task, in the provider's order. `OK`: the task is this agent's again, as the
    /// result's `lease_id` (quote it from now on). Any other code (`STALE_LEASE`, `NOT_FOUND`): it is not
    /// this agent's any more; stop it and neither ack nor nack it. Pushed before any other event of the new
    /// connection, and before any reply to a request sent on it.
    Reclaimed(Vec<pb::ReclaimResult>),
}

impl AgentEvent {
    /// The leased task, if this is one.
    pub fn into_leased(self) -> Option<LeasedTask> {
        match self {
            AgentEvent::Leased(t) => Some(t),
            AgentEvent::Revoked(_) | AgentEvent::Reclaimed(_) => None,
        }
    }
}

/// Tasks that finished, as the server reports them (`Completed`) to a client made with
/// [`Client::connect_watching`](crate::Client::connect_watching): for each task watched ([`Client::watch`](crate::Client::watch)) or submitted with
/// [`Client::submit_notify`](crate::Client::submit_notify) on the current connection. Registrations end with the connection: after a
/// reconnect, watch again (a task reported twice is harmless).
#[derive(Debug)]
pub struct Completions {
    pub(crate) rx: mpsc::UnboundedReceiver<pb::TaskStatus>,
}

impl Completions {
    /// The next finished task, or `None` once the client is gone.
    pub async fn next(&mut self) -> Option<pb::TaskStatus> {
        self.rx.recv().await
    }
}

/// Events pushed to an agent (leased tasks, revocations, reclaim results), in arrival order. Ends when the connection is
/// closed for good.
#[derive(Debug)]
pub struct Leases {
    pub(crate) rx: mpsc::UnboundedReceiver<AgentEvent>,
}

impl Leases {
    /// The next event, or `None` once the client is gone.
    pub async fn next(&mut self) -> Option<AgentEvent> {
        self.rx.recv().await
    }

    /// An event already received, without waiting.
    pub fn try_next(&mut self) -> Option<AgentEvent> {
        self.rx.try_recv().ok()
    }
}
