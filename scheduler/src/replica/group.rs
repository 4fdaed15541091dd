//! One partition's consensus group on this node: a raft-rs `RawNode` driven in its asynchronous mode.
//!
//! raft-rs leaves I/O to its user through `Ready`s. Handling one here ([`Group::ready`]) never blocks:
//!
//! 1. messages the leader may send at once (appends to followers go out while its own write runs);
//! 2. new entries and hard state go into the in-memory [`PartitionStorage`] (raft must be able to read them
//!    back) and are encoded as frames for the node's raft log writer ([`ToPersist`]);
//! 3. messages that may only leave once those frames are durable (a follower's append response, a vote)
//!    travel with them, and go out when the writer reports the sync ([`Group::persisted`]);
//! 4. committed entries go to the state machine.
//!
//! The caller persists [`ToPersist`]s in the order the group returned them and reports each one back; raft
//! then counts this node's copy towards the quorum. Many partitions' frames share one `fdatasync`.

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, Message};
use raft::{Config, RawNode, StateRole};

use super::codec::{self, Frame};
use super::storage::{LogState, LogStateError, PartitionStorage};

/// Timing of every group, in ticks of the node's raft clock.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A follower that hears nothing for a random 1–2× this many ticks starts an election.
    pub election_ticks: usize,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: usize,
    /// A leader that is not its partition's preferred replica hands the lead over once the preferred one has
    /// been active and holding every entry for this many ticks in a row (`u32::MAX`: never).
    pub balance_ticks: u32,
}

impl Default for Timing {
    /// With the node's default 50 ms tick: elections after 0.5–1 s of silence, heartbeats every 100 ms.
    fn default() -> Self {
        Timing { election_ticks: 10, heartbeat_ticks: 2, balance_ticks: BALANCE_AFTER_TICKS }
    }
}

/// Frames to make durable, then report with [`Group::persisted`] and send `after`.
#[derive(Debug)]
pub(crate) struct ToPersist {
    /// The ready's number, for [`Group::persisted`].
    pub number: u64,
    /// Encoded frames (may be empty: the messages still wait for the writes before them).
    pub bytes: Vec<u8>,
    /// Messages to send once the frames are durable.
    pub after: Vec<Message>,
}

/// What handling a ready produced.
#[derive(Debug, Default)]
pub(crate) struct Work {
    /// Messages to send now.
    pub send: Vec<Message>,
    /// Frames to persist (in order with earlier ones).
    pub persist: Option<ToPersist>,
    /// Committed entries to apply, in index order.
    pub committed: Vec<Entry>,
    /// The leader changed: the new one's id (0 while there is none).
    pub leader_changed: Option<u64>,
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead the partition; `leader` does (0: unknown, an election is under way).
    #[error("not the partition's leader (leader: {leader})")]
    NotLeader {
        /// The leader's raft id, 0 if unknown.
        leader: u64,
    },
    /// raft refused it (too many uncommitted entries, a leadership transfer...).
    #[error("proposal dropped: {0}")]
    Dropped(String),
}

/// Ticks the preferred replica must have been ready in a row before a leader hands it the lead: long enough
/// that a replica that just came back has settled (2 s with the default 50 ms tick).
const BALANCE_AFTER_TICKS: u32 = 40;

/// One partition's group.
pub(crate) struct Group {
    partition: u32,
    node: RawNode<PartitionStorage>,
    storage: PartitionStorage,
    leader: u64,
    /// The replica that should lead when it can (the first in the partition's rendezvous order).
    preferred: u64,
    /// Ticks the preferred replica has been, without a break, heard from and holding every entry while this
    /// node led (0 otherwise).
    ready_ticks: u32,
    /// Ticks of this group's clock so far.
    ticks: u64,
    /// The tick at which a message from the preferred replica was last taken.
    heard_preferred: u64,
    /// [`Timing::balance_ticks`].
    balance_ticks: u32,
    /// [`Timing::heartbeat_ticks`].
    heartbeat_ticks: u64,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("partition", &self.partition).field("leader", &self.leader).finish()
    }
}

/// The frame that records a new group's voters; persist it before the group starts.
pub(crate) fn bootstrap(partition: u32, state: &mut LogState, voters: &[u64]) -> Option<Vec<u8>> {
    if !state.conf.voters.is_empty() {
        return None;
    }
    let conf = ConfState { voters: voters.to_vec(), ..ConfState::default() };
    state.conf = conf.clone();
    let mut bytes = Vec::new();
    codec::encode(&mut bytes, &Frame::ConfState { partition, state: conf });
    Some(bytes)
}

impl Group {
    /// The group of `partition` as member `id`, from the state its log holds (voters already set), with
    /// the state machine holding every entry up to `applied`; `preferred` should lead when it can.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        partition: u32,
        id: u64,
        preferred: u64,
        state: LogState,
        applied: u64,
        timing: Timing,
        logger: &slog::Logger,
    ) -> raft::Result<Group> {
        let mut state = state;
        let applied = applied.max(state.compacted_index);
        if applied > state.last_index() {
            return Err(raft::Error::ConfigInvalid(format!(
                "the state machine holds entry {applied}, past the raft log's last entry {}",
                state.last_index()
            )));
        }
        // The state machine applies committed entries before the hard state naming the new commit index is
        // durable: after a crash it may be ahead of it, and what it applied was committed.
        state.hard.commit = state.hard.commit.max(applied);
        let storage = PartitionStorage::new(state);
        let config = Config {
            id,
            election_tick: timing.election_ticks,
            heartbeat_tick: timing.heartbeat_ticks,
            // Entries up to here are in the state machine already: raft hands out only those after.
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            // A leader cut off from its quorum steps down after an election timeout, and a returning node
            // asks before it disrupts a healthy leader with a higher term.
            check_quorum: true,
            pre_vote: true,
            ..Config::default()
        };
        let logger = logger.new(slog::o!("partition" => partition));
        let node = RawNode::new(&config, storage.clone(), &logger)?;
        Ok(Group {
            partition,
            node,
            storage,
            leader: 0,
            preferred,
            ready_ticks: 0,
            ticks: 0,
            heard_preferred: 0,
            balance_ticks: timing.balance_ticks,
            heartbeat_ticks: timing.heartbeat_ticks as u64,
        })
    }

    /// The partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The leader's id as last seen (0: none known).
    pub fn leader(&self) -> u64 {
        self.leader
    }

    /// Whether this node leads the partition now.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// Highest index known committed.
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// Advances the group's clock by one tick, and hands the lead to the preferred replica when it is time.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.node.tick();
        self.balance();
    }

    /// Leaders spread by the partitions' rendezvous order, not by which member started first or survived
    /// last: a leader that is not the preferred replica hands over once that replica has been heard from and
    /// holding every entry for [`Timing::balance_ticks`] in a row (raft's leadership transfer: the leader
    /// stops taking proposals, brings the transferee up to date and tells it to campaign at once). A replica
    /// that keeps restarting never stays ready that long, so it does not pull the lead back each time.
    fn balance(&mut self) {
        let raft = &self.node.raft;
        if !self.is_leader() || self.preferred == raft.id || raft.lead_transferee.is_some() {
            self.ready_ticks = 0;
            return;
        }
        // Heard from within two heartbeats (raft's own `recent_active` is cleared at every quorum check, so
        // it cannot say "for 2 s in a row").
        let heard = self.ticks.saturating_sub(self.heard_preferred) <= 2 * self.heartbeat_ticks + 1;
        let last = raft.raft_log.last_index();
        let ready = heard && raft.prs().get(self.preferred).is_some_and(|p| p.matched == last);
        self.ready_ticks = if ready { self.ready_ticks.saturating_add(1) } else { 0 };
        if self.ready_ticks >= self.balance_ticks {
            tracing::debug!(
                partition = self.partition,
                to = self.preferred,
                "handing the lead to the preferred replica"
            );
            self.node.transfer_leader(self.preferred);
            self.ready_ticks = 0;
        }
    }

    /// Takes a message from a peer of this group, if it is one raft exchanges between replicas and its
    /// sender is a voter of the group. Returns false for a message refused here: proposals, snapshots,
    /// transfer and read requests never cross the wire in this design, and a heartbeat that claims a commit
    /// index past this log's end would make raft-rs abort the process. Raft tolerates lost and repeated
    /// messages, so dropping is always safe.
    pub fn step(&mut self, msg: Message) -> bool {
        use raft::eraftpb::MessageType::*;
        let kind = msg.get_msg_type();
        let allowed = matches!(
            kind,
            MsgAppend
                | MsgAppendResponse
                | MsgRequestVote
                | MsgRequestVoteResponse
                | MsgRequestPreVote
                | MsgRequestPreVoteResponse
                | MsgHeartbeat
                | MsgHeartbeatResponse
                | MsgTimeoutNow
        );
        let voter = self.has_voter(msg.from);
        let beyond = kind == MsgHeartbeat && msg.commit > self.node.raft.raft_log.last_index();
        if !allowed || !voter || msg.from == self.node.raft.id || beyond {
            tracing::debug!(partition = self.partition, ?kind, from = msg.from, "raft message refused");
            return false;
        }
        if msg.from == self.preferred {
            self.heard_preferred = self.ticks;
        }
        if let Err(e) = self.node.step(msg) {
            tracing::debug!(partition = self.partition, error = %e, "raft message refused");
        }
        true
    }

    /// Whether `id` votes in this group.
    pub fn has_voter(&self, id: u64) -> bool {
        self.node.raft.prs().conf().voters().contains(id)
    }

    /// Proposes `data` as the next entry; returns its index and term, which its commit will carry.
    pub fn propose(&mut self, data: Bytes) -> Result<(u64, u64), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader { leader: self.node.raft.leader_id });
        }
        let before = self.node.raft.raft_log.last_index();
        self.node.propose(Vec::new(), data.to_vec()).map_err(|e| ProposeError::Dropped(e.to_string()))?;
        let index = self.node.raft.raft_log.last_index();
        if index == before {
            return Err(ProposeError::Dropped("no entry was appended".into()));
        }
        Ok((index, self.node.raft.term))
    }

    /// Handles the group's ready, if it has one (see the module doc). An error means raft handed out entries
    /// that do not follow its own log: the node must stop persisting.
    pub fn ready(&mut self) -> Result<Option<Work>, LogStateError> {
        if !self.node.has_ready() {
            return Ok(None);
        }
        let mut rd = self.node.ready();
        let mut work = Work { send: rd.take_messages(), ..Work::default() };
        if let Some(ss) = rd.ss() {
            if ss.leader_id != self.leader {
                self.leader = ss.leader_id;
                work.leader_changed = Some(ss.leader_id);
            }
        }
        let entries = rd.take_entries();
        let mut bytes = Vec::new();
        {
            let mut state = self.storage.state().write();
            if !entries.is_empty() {
                // raft hands out consecutive entries that follow what it read from this storage; if not, the
                // frame must not be written (the log would not read back).
                state.append(&entries)?;
                codec::encode(&mut bytes, &Frame::Entries { partition: self.partition, entries });
            }
            if let Some(hs) = rd.hs() {
                state.hard = hs.clone();
                codec::encode(&mut bytes, &Frame::HardState { partition: self.partition, state: hs.clone() });
            }
        }
        let after = rd.take_persisted_messages();
        if !bytes.is_empty() || !after.is_empty() {
            work.persist = Some(ToPersist { number: rd.number(), bytes, after });
        }
        work.committed = rd.take_committed_entries();
        self.node.advance_append_async(rd);
        Ok(Some(work))
    }

    /// The frames of ready `number` (and every earlier one) are durable.
    pub fn persisted(&mut self, number: u64) {
        self.node.on_persist_ready(number);
    }

    /// The state machine applied every committed entry up to `index`.
    pub fn applied(&mut self, index: u64) {
        self.node.advance_apply_to(index);
    }

    /// A peer could not be reached: raft stops streaming appends to it until it answers again.
    pub fn unreachable(&mut self, id: u64) {
        self.node.report_unreachable(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(last: u64, commit: u64) -> LogState {
        let mut state = LogState::default();
        let entries: Vec<Entry> = (1..=last).map(|index| Entry { index, term: 1, ..Entry::default() }).collect();
        state.append(&entries).expect("append");
        state.hard.term = 1;
        state.hard.commit = commit;
        state.conf.voters = vec![1];
        state
    }

    #[test]
    fn a_state_machine_ahead_of_the_durable_commit_index_raises_it_and_one_past_the_log_is_refused() {
        let logger = super::super::logger::logger();
        let g = Group::new(0, 1, 1, log(5, 2), 4, Timing::default(), &logger).expect("group");
        assert_eq!(g.commit_index(), 4, "what the state machine applied was committed");
        let g = Group::new(0, 1, 1, log(5, 3), 0, Timing::default(), &logger).expect("group");
        assert_eq!(g.commit_index(), 3);
        assert!(Group::new(0, 1, 1, log(5, 5), 9, Timing::default(), &logger).is_err());
    }

    #[test]
    fn messages_raft_never_sends_between_replicas_or_from_strangers_are_refused() {
        use raft::eraftpb::MessageType;
        let logger = super::super::logger::logger();
        let mut state = log(5, 2);
        state.conf.voters = vec![1, 2, 3];
        let mut g = Group::new(0, 1, 1, state, 0, Timing::default(), &logger).expect("group");
        let msg = |kind: MessageType, from: u64, commit: u64| {
            let mut m = Message { to: 1, from, term: 1, commit, ..Message::default() };
            m.set_msg_type(kind);
            m
        };
        assert!(!g.step(msg(MessageType::MsgPropose, 2, 0)), "a proposal from the wire");
        assert!(!g.step(msg(MessageType::MsgSnapshot, 2, 0)), "a snapshot (none are made yet)");
        assert!(!g.step(msg(MessageType::MsgTransferLeader, 2, 0)));
        assert!(!g.step(msg(MessageType::MsgHeartbeat, 7, 0)), "a sender that is no voter");
        assert!(!g.step(msg(MessageType::MsgHeartbeat, 1, 0)), "a message from ourselves");
        assert!(!g.step(msg(MessageType::MsgHeartbeat, 2, 99)), "a commit past this log's end would abort");
        assert!(g.step(msg(MessageType::MsgHeartbeat, 2, 3)), "a voter's heartbeat");
        assert_eq!(g.leader(), 0, "leaders are learnt from readies");
    }
}
