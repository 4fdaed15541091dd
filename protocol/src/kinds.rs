//! One table of the message kinds: each kind's stable name, who sends it, which roles may send it, and whether
//! it carries a `request_id` (its reply, or an `Error` about it, quotes the same id).
//!
//! Servers enforce the roles from this table (a kind sent by a role it does not list is answered with
//! `ROLE_NOT_ALLOWED`; a kind only servers send closes the connection), and clients name kinds from it in
//! logs. `Hello` is the handshake: sent once, first, by every role.

use crate::pb::envelope::Kind;
use crate::pb::Role;

/// Who sends a kind of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Clients (producers, agents, admins, peer nodes) to a server.
    ToServer,
    /// A server to its clients.
    ToClient,
    /// Either side (`Ping`, `Pong`).
    Both,
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// No role: only servers send the kind.
    pub const NONE: Roles = Roles(0);
    /// `ROLE_PRODUCER`.
    pub const PRODUCER: Roles = Roles(1 << Role::Producer as u8);
    /// `ROLE_AGENT`.
    pub const AGENT: Roles = Roles(1 << Role::Agent as u8);
    /// `ROLE_ADMIN`.
    pub const ADMIN: Roles = Roles(1 << Role::Admin as u8);
    /// `ROLE_PEER` (another scheduler node).
    pub const PEER: Roles = Roles(1 << Role::Peer as u8);
    /// Every role.
    pub const ANY: Roles = Roles(Roles::PRODUCER.0 | Roles::AGENT.0 | Roles::ADMIN.0 | Roles::PEER.0);

    /// Both sets.
    pub const fn or(self, other: Roles) -> Roles {
        Roles(self.0 | other.0)
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        role != Role::Unspecified && self.0 & (1 << role as u8) != 0
    }
}

/// What the table says of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// Short stable name, for logs and metric labels.
    pub name: &'static str,
    /// Who sends it.
    pub direction: Direction,
    /// Which roles may send it to a server (`NONE` for kinds only servers send).
    pub roles: Roles,
    /// Whether it carries a `request_id`.
    pub request_id: bool,
}

const fn info(name: &'static str, direction: Direction, roles: Roles, request_id: bool) -> KindInfo {
    KindInfo { name, direction, roles, request_id }
}

use Direction::{Both, ToClient, ToServer};

const PRODUCERS: Roles = Roles::PRODUCER.or(Roles::ADMIN);
const AGENTS: Roles = Roles::AGENT.or(Roles::PEER);
const SERVER: Roles = Roles::NONE;

impl Kind {
    /// The table's row for this kind.
    pub fn info(&self) -> KindInfo {
        match self {
            Kind::Hello(_) => info("hello", ToServer, Roles::ANY, false),
            Kind::Welcome(_) => info("welcome", ToClient, SERVER, false),
            Kind::Error(_) => info("error", ToClient, SERVER, true),
            Kind::Ping(_) => info("ping", Both, Roles::ANY, false),
            Kind::Pong(_) => info("pong", Both, Roles::ANY, false),
            Kind::Redirect(_) => info("redirect", ToClient, SERVER, true),
            // Producers.
            Kind::Submit(_) => info("submit", ToServer, PRODUCERS, true),
            Kind::SubmitTemplate(_) => info("submit_template", ToServer, PRODUCERS, true),
            Kind::SubmitAck(_) => info("submit_ack", ToClient, SERVER, true),
            Kind::Cancel(_) => info("cancel", ToServer, PRODUCERS, true),
            Kind::CancelReply(_) => info("cancel_reply", ToClient, SERVER, true),
            Kind::Status(_) => info("status", ToServer, PRODUCERS, true),
            Kind::StatusReply(_) => info("status_reply", ToClient, SERVER, true),
            Kind::Watch(_) => info("watch", ToServer, PRODUCERS, true),
            Kind::WatchReply(_) => info("watch_reply", ToClient, SERVER, true),
            Kind::Completed(_) => info("completed", ToClient, SERVER, false),
            Kind::AppRequest(_) => info("app_request", ToServer, PRODUCERS.or(Roles::PEER), true),
            Kind::AppReply(_) => info("app_reply", ToClient, SERVER, true),
            // Agents (and peer nodes taking work for their agents).
            Kind::Credit(_) => info("credit", ToServer, AGENTS, false),
            Kind::Leased(_) => info("leased", ToClient, SERVER, false),
            Kind::Ack(_) => info("ack", ToServer, AGENTS, true),
            Kind::Nack(_) => info("nack", ToServer, AGENTS, true),
            Kind::Extend(_) => info("extend", ToServer, AGENTS, true),
            Kind::LeaseReply(_) => info("lease_reply", ToClient, SERVER, true),
            Kind::Revoke(_) => info("revoke", ToClient, SERVER, false),
            Kind::Reclaim(_) => info("reclaim", ToServer, Roles::AGENT, true),
            Kind::ReclaimReply(_) => info("reclaim_reply", ToClient, SERVER, true),
            // Operators: producers may read (stats, listings, dead letters), admins may also act.
            // Agents too: an agent serving `myapp/*` learns the queue names and their backlogs from it.
            Kind::StatsRequest(_) => info("stats_request", ToServer, PRODUCERS.or(Roles::PEER).or(Roles::AGENT), true),
            Kind::StatsReply(_) => info("stats_reply", ToClient, SERVER, true),
            Kind::DeadLetterList(_) => info("dead_letter_list", ToServer, PRODUCERS, true),
            Kind::DeadLetterListReply(_) => info("dead_letter_list_reply", ToClient, SERVER, true),
            Kind::DeadLetterRedrive(_) => info("dead_letter_redrive", ToServer, Roles::ADMIN, true),
            Kind::DeadLetterRedriveReply(_) => info("dead_letter_redrive_reply", ToClient, SERVER, true),
            Kind::DeadLetterDelete(_) => info("dead_letter_delete", ToServer, Roles::ADMIN, true),
            Kind::DeadLetterDeleteReply(_) => info("dead_letter_delete_reply", ToClient, SERVER, true),
            Kind::QueueControl(_) => info("queue_control", ToServer, Roles::ADMIN, true),
            Kind::QueueControlReply(_) => info("queue_control_reply", ToClient, SERVER, true),
            Kind::TaskList(_) => info("task_list", ToServer, PRODUCERS, true),
            Kind::TaskListReply(_) => info("task_list_reply", ToClient, SERVER, true),
            // Replication: raft messages between nodes, one way.
            Kind::RaftBatch(_) => info("raft_batch", ToServer, Roles::PEER, false),
        }
    }

    /// Short stable name of the message kind, for logs and metric labels.
    pub fn name(&self) -> &'static str {
        self.info().name
    }

    /// The `request_id` it carries (0 for a kind that carries none).
    pub fn request_id(&self) -> u64 {
        match self {
            Kind::Error(m) => m.request_id,
            Kind::Redirect(m) => m.request_id,
            Kind::Submit(m) => m.request_id,
            Kind::SubmitTemplate(m) => m.request_id,
            Kind::SubmitAck(m) => m.request_id,
            Kind::Cancel(m) => m.request_id,
            Kind::CancelReply(m) => m.request_id,
            Kind::Status(m) => m.request_id,
            Kind::StatusReply(m) => m.request_id,
            Kind::Watch(m) => m.request_id,
            Kind::WatchReply(m) => m.request_id,
            Kind::AppRequest(m) => m.request_id,
            Kind::AppReply(m) => m.request_id,
            Kind::Ack(m) => m.request_id,
            Kind::Nack(m) => m.request_id,
            Kind::Extend(m) => m.request_id,
            Kind::LeaseReply(m) => m.request_id,
            Kind::Reclaim(m) => m.request_id,
            Kind::ReclaimReply(m) => m.request_id,
            Kind::StatsRequest(m) => m.request_id,
            Kind::StatsReply(m) => m.request_id,
            Kind::DeadLetterList(m) => m.request_id,
            Kind::DeadLetterListReply(m) => m.request_id,
            Kind::DeadLetterRedrive(m) => m.request_id,
            Kind::DeadLetterRedriveReply(m) => m.request_id,
            Kind::DeadLetterDelete(m) => m.request_id,
            Kind::DeadLetterDeleteReply(m) => m.request_id,
            Kind::QueueControl(m) => m.request_id,
            Kind::QueueControlReply(m) => m.request_id,
            Kind::TaskList(m) => m.request_id,
            Kind::TaskListReply(m) => m.request_id,
            Kind::Hello(_)
            | Kind::Welcome(_)
            | Kind::Ping(_)
            | Kind::Pong(_)
            | Kind::Completed(_)
            | Kind::Credit(_)
            | Kind::Leased(_)
            | Kind::Revoke(_)
            | Kind::RaftBatch(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    /// One default message of every kind (a new kind must be added here, and to the table).
    fn every_kind() -> Vec<Kind> {
        vec![
            Kind::Hello(pb::Hello::default()),
            Kind::Welcome(pb::Welcome::default()),
            Kind::Error(pb::Error::default()),
            Kind::Submit(pb::Submit::default()),
            Kind::SubmitAck(pb::SubmitAck::default()),
            Kind::Credit(pb::Credit::default()),
            Kind::Leased(pb::Leased::default()),
            Kind::Ack(pb::Ack::default()),
            Kind::Nack(pb::Nack::default()),
            Kind::Extend(pb::Extend::default()),
            Kind::LeaseReply(pb::LeaseReply::default()),
            Kind::StatsRequest(pb::StatsRequest::default()),
            Kind::StatsReply(pb::StatsReply::default()),
            Kind::DeadLetterList(pb::DeadLetterList::default()),
            Kind::DeadLetterListReply(pb::DeadLetterListReply::default()),
            Kind::DeadLetterRedrive(pb::DeadLetterRedrive::default()),
            Kind::DeadLetterRedriveReply(pb::DeadLetterRedriveReply::default()),
            Kind::DeadLetterDelete(pb::DeadLetterDelete::default()),
            Kind::DeadLetterDeleteReply(pb::DeadLetterDeleteReply::default()),
            Kind::QueueControl(pb::QueueControl::default()),
            Kind::QueueControlReply(pb::QueueControlReply::default()),
            Kind::TaskList(pb::TaskList::default()),
            Kind::TaskListReply(pb::TaskListReply::default()),
            Kind::Ping(pb::Ping::default()),
            Kind::Pong(pb::Pong::default()),
            Kind::Redirect(pb::Redirect::default()),
            Kind::Cancel(pb::Cancel::default()),
            Kind::CancelReply(pb::CancelReply::default()),
            Kind::Revoke(pb::Revoke::default()),
            Kind::Reclaim(pb::Reclaim::default()),
            Kind::ReclaimReply(pb::ReclaimReply::default()),
            Kind::Status(pb::Status::default()),
            Kind::StatusReply(pb::StatusReply::default()),
            Kind::Watch(pb::Watch::default()),
            Kind::WatchReply(pb::WatchReply::default()),
            Kind::Completed(pb::Completed::default()),
            Kind::AppRequest(pb::AppRequest::default()),
            Kind::AppReply(pb::AppReply::default()),
            Kind::SubmitTemplate(pb::SubmitTemplate::default()),
            Kind::RaftBatch(pb::RaftBatch::default()),
        ]
    }

    #[test]
    fn the_table_says_which_kinds_carry_a_request_id() {
        for mut kind in every_kind() {
            let info = kind.info();
            set_request_id(&mut kind, 42);
            assert_eq!(kind.request_id() == 42, info.request_id, "{}", info.name);
        }
    }

    #[test]
    fn names_are_unique_and_only_client_kinds_name_roles() {
        let kinds = every_kind();
        let mut names: Vec<&str> = kinds.iter().map(Kind::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), kinds.len());
        for k in &kinds {
            let i = k.info();
            assert_eq!(i.direction == Direction::ToClient, i.roles == Roles::NONE, "{}", i.name);
        }
    }

    #[test]
    fn roles_are_checked_as_the_server_enforces_them() {
        let submit = Kind::Submit(pb::Submit::default()).info().roles;
        assert!(submit.contains(Role::Producer) && submit.contains(Role::Admin));
        assert!(!submit.contains(Role::Agent) && !submit.contains(Role::Peer));
        let reclaim = Kind::Reclaim(pb::Reclaim::default()).info().roles;
        assert!(reclaim.contains(Role::Agent) && !reclaim.contains(Role::Peer));
        assert!(!Roles::ANY.contains(Role::Unspecified));
    }

    /// Sets the `request_id` field of the kinds that have one (written out field by field: prost has no
    /// reflection).
    fn set_request_id(kind: &mut Kind, id: u64) {
        match kind {
            Kind::Error(m) => m.request_id = id,
            Kind::Redirect(m) => m.request_id = id,
            Kind::Submit(m) => m.request_id = id,
            Kind::SubmitTemplate(m) => m.request_id = id,
            Kind::SubmitAck(m) => m.request_id = id,
            Kind::Cancel(m) => m.request_id = id,
            Kind::CancelReply(m) => m.request_id = id,
            Kind::Status(m) => m.request_id = id,
            Kind::StatusReply(m) => m.request_id = id,
            Kind::Watch(m) => m.request_id = id,
            Kind::WatchReply(m) => m.request_id = id,
            Kind::AppRequest(m) => m.request_id = id,
            Kind::AppReply(m) => m.request_id = id,
            Kind::Ack(m) => m.request_id = id,
            Kind::Nack(m) => m.request_id = id,
            Kind::Extend(m) => m.request_id = id,
            Kind::LeaseReply(m) => m.request_id = id,
            Kind::Reclaim(m) => m.request_id = id,
            Kind::ReclaimReply(m) => m.request_id = id,
            Kind::StatsRequest(m) => m.request_id = id,
            Kind::StatsReply(m) => m.request_id = id,
            Kind::DeadLetterList(m) => m.request_id = id,
            Kind::DeadLetterListReply(m) => m.request_id = id,
            Kind::DeadLetterRedrive(m) => m.request_id = id,
            Kind::DeadLetterRedriveReply(m) => m.request_id = id,
            Kind::DeadLetterDelete(m) => m.request_id = id,
            Kind::DeadLetterDeleteReply(m) => m.request_id = id,
            Kind::QueueControl(m) => m.request_id = id,
            Kind::QueueControlReply(m) => m.request_id = id,
            Kind::TaskList(m) => m.request_id = id,
            Kind::TaskListReply(m) => m.request_id = id,
            _ => {}
        }
    }
}
