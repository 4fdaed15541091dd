//! The node's replica driver: one thread that runs every partition group this node is a replica of.
//!
//! Everything that changes a group arrives as an [`Event`] on one channel: a peer's message, a proposal, the
//! raft log writer's report that a ready is durable, and the clock's ticks (the channel's receive deadline).
//! After each event the groups it touched hand over their readies ([`Group::ready`]); their frames go to the
//! one raft log writer ([`super::writer`]), so the partitions of a node share each `fdatasync`.
//!
//! A proposal's reply waits until its entry is committed, i.e. held durably by a majority of the partition's
//! replicas, and applied to the state machine on this node. Only a committed entry of another term at its
//! index proves it never will be ([`ReplicateError::Superseded`]). When the partition's leader or term changes
//! first, the reply says the outcome is unknown ([`ReplicateError::Unknown`]): the entry may still commit
//! through a replica that holds it, so the caller must treat it as "maybe done" (as a producer treats a
//! timeout), never as "not done". Every reply is called exactly once: a proposal dropped anywhere (a driver
//! that stopped with it queued) answers `Closed`, which is "maybe done" too.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::RwLock;
use raft::eraftpb::{Entry, EntryType, Message};

use super::group::{self, Group, ProposeError, Timing};
use super::log_file::{LogFileError, LogFiles};
use super::writer::{WriteError, Writer, WriterHandle};

/// Where a node's groups send messages to their peers.
pub trait Transport: Send + 'static {
    /// Sends `msg` (whose `to` names the peer's raft id) for `partition`. Best effort: raft retries.
    fn send(&self, partition: u32, msg: Message);
    /// The driver finished a round: write what `send` gathered. Returns the peers whose messages could not be
    /// handed to a connection (down, or backed up), so their groups' leaders stop streaming to them.
    fn flush(&self) -> Vec<u64> {
        Vec::new()
    }
}

/// What committed entries are applied to.
pub trait StateMachine: Send + 'static {
    /// Highest index of `partition` the state machine holds (0: none), read once at start.
    fn applied(&self, partition: u32) -> u64;
    /// Applies one committed entry carrying data, in index order.
    fn apply(&mut self, partition: u32, entry: &Entry);
    /// The partition's leader changed (0: none known now); `term` is this node's current term.
    fn leader(&mut self, partition: u32, leader: u64, term: u64);
}

/// What the driver is given to start.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This node's raft id (its ordinal + 1: raft ids are never 0).
    pub id: u64,
    /// The partitions this node is a replica of, with their voters' raft ids in preference order (the first
    /// leads when it can).
    pub partitions: Vec<(u32, Vec<u64>)>,
    /// The raft log's directory.
    pub dir: PathBuf,
    /// The raft log's segment size.
    pub segment_bytes: u64,
    /// Length of one tick of the groups' clock.
    pub tick: Duration,
    /// Election and heartbeat ticks.
    pub timing: Timing,
    /// What the groups were made for (the member list's epoch, the factor, the partition count): kept in
    /// the raft log's directory at its first start, and checked at every later one. Raft ids are member
    /// ordinals and each group's voters are fixed when it is made, so a node started with another member list
    /// or factor would count votes of other members: it must not start.
    pub identity: String,
}

/// Why a proposal did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicateError {
    /// This node does not replicate the partition.
    #[error("partition {0} has no replica on this node")]
    NoSuchPartition(u32),
    /// Not the leader, or raft dropped it.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// Another leader's entry committed at the proposal's index: it will never commit.
    #[error("a new leader's entry committed in its place")]
    Superseded,
    /// The partition's leader or term changed before the entry committed: it may still commit, or not.
    #[error("the partition's leadership changed before the entry committed; it may still commit")]
    Unknown,
    /// The raft log could not be written; the node must restart.
    #[error("the raft log failed: {0}")]
    LogFailed(String),
    /// The driver stopped before the entry committed (it may still commit through the other replicas).
    #[error("the replica driver has stopped")]
    Closed,
}

/// Called once with a proposal's outcome, on the driver's thread: keep it cheap.
pub type ReplyFn = Box<dyn FnOnce(Result<(), ReplicateError>) + Send>;

/// A proposal's reply, called exactly once: with its outcome, or with `Closed` if it is dropped unanswered.
pub struct Reply(Option<ReplyFn>);

impl Reply {
    /// Wraps the function to call.
    pub fn new(f: ReplyFn) -> Reply {
        Reply(Some(f))
    }

    /// Answers.
    pub fn send(mut self, result: Result<(), ReplicateError>) {
        if let Some(f) = self.0.take() {
            f(result);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(ReplicateError::Closed));
        }
    }
}

/// A partition's state as the driver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: u32,
    /// Its leader's raft id (0: none known).
    pub leader: u64,
    /// This node's term.
    pub term: u64,
    /// Highest committed index known here.
    pub commit: u64,
}

/// The driver's input.
pub enum Event {
    /// A peer's message for a partition.
    Message {
        /// The partition.
        partition: u32,
        /// The message.
        msg: Message,
    },
    /// Data to replicate as the partition's next entry.
    Propose {
        /// The partition.
        partition: u32,
        /// The entry's data.
        data: Bytes,
        /// Called once it committed and was applied here, or failed.
        reply: Reply,
    },
    /// The partitions' states, sent to the channel.
    Status(Sender<Vec<PartitionStatus>>),
    /// The writer made ready `number` of `partition` durable (or failed).
    Persisted {
        /// The partition.
        partition: u32,
        /// The ready's number.
        number: u64,
        /// Messages to send now.
        after: Vec<Message>,
        /// The writer's outcome.
        result: Result<(), WriteError>,
    },
}

/// Errors starting the driver.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The raft log did not open.
    #[error(transparent)]
    Log(#[from] LogFileError),
    /// raft-rs refused a group's state.
    #[error("partition {partition}: {source}")]
    Raft {
        /// The partition.
        partition: u32,
        /// raft-rs's error.
        #[source]
        source: raft::Error,
    },
    /// A thread did not start, or the identity file could not be read or written.
    #[error("starting replication: {0}")]
    Io(#[from] std::io::Error),
    /// The raft log was made for another cluster shape.
    #[error(
        "the raft log in {dir} was made for {found:?}, this node is started as {expected:?}; the member list, \
         --replication-factor and --partitions cannot change yet"
    )]
    Identity {
        /// The raft log's directory.
        dir: String,
        /// What its identity file says.
        found: String,
        /// What this start says.
        expected: String,
    },
}

/// Sends events to the driver; cheap to clone.
#[derive(Clone, Debug)]
pub struct ReplicaHandle {
    tx: Sender<Event>,
    /// The partitions' states as of the driver's last tick or leader change.
    published: Arc<RwLock<Vec<PartitionStatus>>>,
}

impl ReplicaHandle {
    /// Hands the driver an event (dropped if it has stopped; a proposal's reply then says `Closed`).
    pub fn send(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    /// Proposes `data` to `partition`; `reply` is called once it committed, or failed.
    pub fn propose(&self, partition: u32, data: Bytes, reply: ReplyFn) {
        self.send(Event::Propose { partition, data, reply: Reply::new(reply) });
    }

    /// The partitions' states as the driver published them at its last tick (or leader change): never
    /// waits, so it may be called from any thread, async tasks included.
    pub fn published(&self) -> Vec<PartitionStatus> {
        self.published.read().clone()
    }

    /// The partitions' states now, asked of the driver (blocks until it answers; empty if it has stopped).
    /// Never call it from the driver's own thread (a transport, state machine or reply callback): it would
    /// wait for itself; use [`ReplicaHandle::published`] there.
    pub fn status(&self) -> Vec<PartitionStatus> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.tx.send(Event::Status(tx)).is_err() {
            return Vec::new();
        }
        rx.recv().unwrap_or_default()
    }
}

/// The running driver. Dropping it stops the driver and the writer, and fails waiting proposals with
/// `Closed`.
#[derive(Debug)]
pub struct Replicas {
    handle: ReplicaHandle,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Replicas {
    /// Opens the raft log, starts a group per partition and the driver thread (`pm-replicas`).
    pub fn start<T: Transport, S: StateMachine>(
        config: ReplicaConfig,
        transport: T,
        sm: S,
    ) -> Result<Replicas, StartError> {
        let (mut files, mut states) = LogFiles::open(&config.dir, config.segment_bytes)?;
        check_identity(&config)?;
        let logger = super::logger::logger();
        let mut boot = Vec::new();
        for (partition, voters) in &config.partitions {
            if let Some(bytes) = group::bootstrap(*partition, states.entry(*partition).or_default(), voters) {
                boot.extend_from_slice(&bytes);
            }
        }
        if !boot.is_empty() {
            files.append(&boot)?;
            files.sync()?;
        }
        let mut groups = BTreeMap::new();
        for (partition, _) in &config.partitions {
            let state = states.remove(partition).unwrap_or_default();
            let preferred = voters_of(&config, *partition).first().copied().unwrap_or(config.id);
            let group =
                Group::new(*partition, config.id, preferred, state, sm.applied(*partition), config.timing, &logger)
                    .map_err(|source| StartError::Raft { partition: *partition, source })?;
            groups.insert(*partition, group);
        }
        let writer = Writer::start(files)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let published = Arc::new(RwLock::new(Vec::new()));
        let handle = ReplicaHandle { tx: tx.clone(), published: published.clone() };
        let mut driver = Driver {
            groups,
            pending: HashMap::new(),
            transport,
            sm,
            writer: writer.handle(),
            events: tx,
            tick: config.tick,
            failed: None,
            published,
        };
        let thread = thread::Builder::new().name("pm-replicas".into()).spawn(move || {
            driver.run(&rx, &stop_rx);
            drop(driver);
            drop(writer);
        })?;
        Ok(Replicas { handle, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// A handle to send events.
    pub fn handle(&self) -> ReplicaHandle {
        self.handle.clone()
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes the identity at the log's first start, else checks it (see [`ReplicaConfig::identity`]).
fn check_identity(config: &ReplicaConfig) -> Result<(), StartError> {
    let path = config.dir.join("identity");
    match std::fs::read_to_string(&path) {
        Ok(found) if found.trim() == config.identity => Ok(()),
        Ok(found) => Err(StartError::Identity {
            dir: config.dir.display().to_string(),
            found: found.trim().to_string(),
            expected: config.identity.clone(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::durable_file::write_durably(&path, &config.dir, format!("{}\n", config.identity).as_bytes())?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn voters_of(config: &ReplicaConfig, partition: u32) -> &[u64] {
    config.partitions.iter().find(|(p, _)| *p == partition).map_or(&[], |(_, v)| v.as_slice())
}

struct Driver<T, S> {
    groups: BTreeMap<u32, Group>,
    /// Proposals waiting for their entry: (partition, index) → (term, reply).
    pending: HashMap<(u32, u64), (u64, Reply)>,
    transport: T,
    sm: S,
    writer: WriterHandle,
    /// The driver's own channel, for the writer's reports.
    events: Sender<Event>,
    tick: Duration,
    /// Set once the raft log failed: nothing more is persisted, every proposal fails.
    failed: Option<String>,
    /// Where [`ReplicaHandle::published`] reads.
    published: Arc<RwLock<Vec<PartitionStatus>>>,
}

/// Most events handled before the touched groups hand over their readies.
const MAX_EVENTS_PER_ROUND: usize = 1024;

impl<T: Transport, S: StateMachine> Driver<T, S> {
    fn run(&mut self, rx: &Receiver<Event>, stop: &Receiver<()>) {
        let mut next_tick = Instant::now() + self.tick;
        let mut touched: Vec<u32> = Vec::new();
        let mut publish = true;
        loop {
            crossbeam_channel::select! {
                recv(stop) -> _ => break,
                recv(rx) -> ev => {
                    let Ok(ev) = ev else { break };
                    self.handle(ev, &mut touched);
                    for _ in 1..MAX_EVENTS_PER_ROUND {
                        match rx.try_recv() {
                            Ok(ev) => self.handle(ev, &mut touched),
                            Err(_) => break,
                        }
                    }
                }
                default(next_tick.saturating_duration_since(Instant::now())) => {}
            }
            if Instant::now() >= next_tick {
                for g in self.groups.values_mut() {
                    g.tick();
                }
                touched.extend(self.groups.keys().copied());
                publish = true;
                next_tick += self.tick;
                if next_tick < Instant::now() {
                    next_tick = Instant::now() + self.tick;
                }
            }
            touched.sort_unstable();
            touched.dedup();
            for p in touched.drain(..) {
                publish |= self.process(p);
            }
            for peer in self.transport.flush() {
                for g in self.groups.values_mut() {
                    if g.is_leader() && g.has_voter(peer) {
                        g.unreachable(peer);
                    }
                }
            }
            if std::mem::take(&mut publish) {
                *self.published.write() = self.status();
            }
        }
        for (_, (_, reply)) in self.pending.drain() {
            reply.send(Err(ReplicateError::Closed));
        }
    }

    fn handle(&mut self, ev: Event, touched: &mut Vec<u32>) {
        match ev {
            Event::Message { partition, msg } => {
                if let Some(g) = self.groups.get_mut(&partition) {
                    if g.step(msg) {
                        touched.push(partition);
                    }
                }
            }
            Event::Propose { partition, data, reply } => {
                if let Some(reason) = &self.failed {
                    return reply.send(Err(ReplicateError::LogFailed(reason.clone())));
                }
                let Some(g) = self.groups.get_mut(&partition) else {
                    return reply.send(Err(ReplicateError::NoSuchPartition(partition)));
                };
                match g.propose(data) {
                    Ok((index, term)) => {
                        // An entry still waiting at this index is gone from this log; another replica may
                        // still hold it.
                        if let Some((_, old)) = self.pending.insert((partition, index), (term, reply)) {
                            old.send(Err(ReplicateError::Unknown));
                        }
                        touched.push(partition);
                    }
                    Err(e) => reply.send(Err(e.into())),
                }
            }
            Event::Status(tx) => {
                let _ = tx.send(self.status());
            }
            // Once the log failed, nothing is reported persisted any more: a later job's success says nothing
            // of the bytes that were lost before it.
            Event::Persisted { .. } if self.failed.is_some() => {}
            Event::Persisted { partition, number, after, result } => match result {
                Ok(()) => {
                    if let Some(g) = self.groups.get_mut(&partition) {
                        g.persisted(number);
                        for msg in after {
                            self.transport.send(partition, msg);
                        }
                        touched.push(partition);
                    }
                }
                Err(e) => {
                    if self.failed.is_none() {
                        tracing::error!(error = %e, "raft log failed: this node no longer persists or votes; restart it");
                        self.failed = Some(e.to_string());
                        for (_, (_, reply)) in self.pending.drain() {
                            reply.send(Err(ReplicateError::LogFailed(e.to_string())));
                        }
                    }
                }
            },
        }
    }

    fn status(&self) -> Vec<PartitionStatus> {
        self.groups
            .values()
            .map(|g| PartitionStatus {
                partition: g.partition(),
                leader: g.leader(),
                term: g.term(),
                commit: g.commit_index(),
            })
            .collect()
    }

    /// Hands over the group's readies: messages out, frames to the writer, committed entries applied. True if
    /// the leader changed.
    fn process(&mut self, partition: u32) -> bool {
        let mut changed = false;
        if self.failed.is_some() {
            return changed;
        }
        let Some(g) = self.groups.get_mut(&partition) else { return changed };
        loop {
            let work = match g.ready() {
                Ok(Some(work)) => work,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(partition, error = %e, "raft handed out entries that do not fit its log");
                    self.failed = Some(e.to_string());
                    for (_, (_, reply)) in self.pending.drain() {
                        reply.send(Err(ReplicateError::LogFailed(e.to_string())));
                    }
                    return changed;
                }
            };
            for msg in work.send {
                self.transport.send(partition, msg);
            }
            if let Some(p) = work.persist {
                let events = self.events.clone();
                let (number, after) = (p.number, p.after);
                self.writer.submit(
                    p.bytes,
                    Box::new(move |result| {
                        let _ = events.send(Event::Persisted { partition, number, after, result });
                    }),
                );
            }
            if let Some(leader) = work.leader_changed {
                tracing::info!(partition, leader, term = g.term(), "partition leader changed");
                self.sm.leader(partition, leader, g.term());
                changed = true;
                // Waiting entries of the partition may now commit through another leader, or be replaced.
                let stale: Vec<(u32, u64)> = self.pending.keys().filter(|(p, _)| *p == partition).copied().collect();
                for key in stale {
                    if let Some((_, reply)) = self.pending.remove(&key) {
                        reply.send(Err(ReplicateError::Unknown));
                    }
                }
            }
            let mut last = None;
            for e in &work.committed {
                if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                    self.sm.apply(partition, e);
                }
                if let Some((term, reply)) = self.pending.remove(&(partition, e.index)) {
                    reply.send(if term == e.term { Ok(()) } else { Err(ReplicateError::Superseded) });
                }
                last = Some(e.index);
            }
            if let Some(index) = last {
                g.applied(index);
            }
        }
        changed
    }
}
