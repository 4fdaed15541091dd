//! Raft messages on the wire between nodes: raft-rs's `eraftpb` types to and from our prost mirror
//! (`proto/pm/v1/pm.proto`, `RaftMessage`), field by field.
//!
//! Peer bytes are decoded by prost, as every other frame of the protocol is, and never by raft-rs's
//! protobuf 2 runtime (whose parser has a published flaw on hostile input). Converting back checks what
//! prost cannot: the enum values, and that a message names a raft id on both ends.

use pm_protocol::pb;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata};

/// Why a peer's raft message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A message type raft-rs does not have.
    #[error("unknown raft message type {0}")]
    MessageType(u32),
    /// An entry type raft-rs does not have.
    #[error("unknown raft entry type {0}")]
    EntryType(u32),
    /// Raft ids are never 0.
    #[error("raft message from {from} to {to}: ids are never 0")]
    ZeroId {
        /// Sender.
        from: u64,
        /// Addressee.
        to: u64,
    },
}

/// raft-rs's message as our wire message.
pub fn to_wire(m: &Message) -> pb::RaftMessage {
    pb::RaftMessage {
        msg_type: m.get_msg_type() as u32,
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m.entries.iter().map(entry_to_wire).collect(),
        commit: m.commit,
        snapshot: m.snapshot.as_ref().map(snapshot_to_wire),
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: m.context.clone(),
        request_snapshot: m.request_snapshot,
        deprecated_priority: m.deprecated_priority,
        commit_term: m.commit_term,
        priority: m.priority,
    }
}

/// Our wire message as raft-rs's, checked.
pub fn from_wire(w: pb::RaftMessage) -> Result<Message, WireError> {
    if w.from == 0 || w.to == 0 {
        return Err(WireError::ZeroId { from: w.from, to: w.to });
    }
    let msg_type = message_type(w.msg_type)?;
    let entries = w.entries.into_iter().map(entry_from_wire).collect::<Result<Vec<_>, _>>()?;
    let mut m = Message {
        to: w.to,
        from: w.from,
        term: w.term,
        log_term: w.log_term,
        index: w.index,
        entries: entries.into(),
        commit: w.commit,
        reject: w.reject,
        reject_hint: w.reject_hint,
        context: w.context,
        request_snapshot: w.request_snapshot,
        deprecated_priority: w.deprecated_priority,
        commit_term: w.commit_term,
        priority: w.priority,
        ..Message::default()
    };
    m.set_msg_type(msg_type);
    if let Some(s) = w.snapshot {
        m.set_snapshot(snapshot_from_wire(s));
    }
    Ok(m)
}

fn entry_to_wire(e: &Entry) -> pb::RaftEntry {
    pb::RaftEntry {
        entry_type: e.get_entry_type() as u32,
        term: e.term,
        index: e.index,
        data: e.data.clone(),
        sync_log: e.sync_log,
        context: e.context.clone(),
    }
}

fn entry_from_wire(w: pb::RaftEntry) -> Result<Entry, WireError> {
    let kind = match w.entry_type {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        other => return Err(WireError::EntryType(other)),
    };
    let mut e = Entry {
        term: w.term,
        index: w.index,
        data: w.data,
        context: w.context,
        sync_log: w.sync_log,
        ..Entry::default()
    };
    e.set_entry_type(kind);
    Ok(e)
}

fn snapshot_to_wire(s: &Snapshot) -> pb::RaftSnapshot {
    pb::RaftSnapshot {
        data: s.data.clone(),
        metadata: s.metadata.as_ref().map(|m| pb::RaftSnapshotMetadata {
            conf_state: m.conf_state.as_ref().map(|c| pb::RaftConfState {
                voters: c.voters.clone(),
                learners: c.learners.clone(),
                voters_outgoing: c.voters_outgoing.clone(),
                learners_next: c.learners_next.clone(),
                auto_leave: c.auto_leave,
            }),
            index: m.index,
            term: m.term,
        }),
    }
}

fn snapshot_from_wire(w: pb::RaftSnapshot) -> Snapshot {
    let mut s = Snapshot { data: w.data, ..Snapshot::default() };
    if let Some(m) = w.metadata {
        let mut meta = SnapshotMetadata { index: m.index, term: m.term, ..SnapshotMetadata::default() };
        if let Some(c) = m.conf_state {
            meta.set_conf_state(ConfState {
                voters: c.voters,
                learners: c.learners,
                voters_outgoing: c.voters_outgoing,
                learners_next: c.learners_next,
                auto_leave: c.auto_leave,
                ..ConfState::default()
            });
        }
        s.set_metadata(meta);
    }
    s
}

fn message_type(t: u32) -> Result<MessageType, WireError> {
    use MessageType::*;
    const ALL: [MessageType; 19] = [
        MsgHup,
        MsgBeat,
        MsgPropose,
        MsgAppend,
        MsgAppendResponse,
        MsgRequestVote,
        MsgRequestVoteResponse,
        MsgSnapshot,
        MsgHeartbeat,
        MsgHeartbeatResponse,
        MsgUnreachable,
        MsgSnapStatus,
        MsgCheckQuorum,
        MsgTransferLeader,
        MsgTimeoutNow,
        MsgReadIndex,
        MsgReadIndexResp,
        MsgRequestPreVote,
        MsgRequestPreVoteResponse,
    ];
    ALL.iter().copied().find(|m| *m as u32 == t).ok_or(WireError::MessageType(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use protobuf::Message as _;

    fn sample() -> Message {
        let mut e = Entry { term: 4, index: 9, data: bytes::Bytes::from_static(b"round"), ..Entry::default() };
        e.set_entry_type(EntryType::EntryConfChangeV2);
        let mut m = Message {
            to: 2,
            from: 1,
            term: 4,
            log_term: 3,
            index: 8,
            entries: vec![e, Entry { term: 4, index: 10, ..Entry::default() }].into(),
            commit: 7,
            reject: true,
            reject_hint: 5,
            context: bytes::Bytes::from_static(b"ctx"),
            request_snapshot: 6,
            commit_term: 3,
            priority: -2,
            ..Message::default()
        };
        m.set_msg_type(MessageType::MsgAppend);
        let mut meta = SnapshotMetadata { index: 7, term: 3, ..SnapshotMetadata::default() };
        meta.set_conf_state(ConfState { voters: vec![1, 2, 3], auto_leave: true, ..ConfState::default() });
        m.set_snapshot(Snapshot {
            data: bytes::Bytes::from_static(b"snap"),
            metadata: Some(meta).into(),
            ..Snapshot::default()
        });
        m
    }

    #[test]
    fn a_message_crosses_the_wire_unchanged_and_in_raft_rs_bytes() {
        let m = sample();
        let wire = to_wire(&m);
        let bytes = wire.encode_to_vec();
        let back = from_wire(pb::RaftMessage::decode(bytes.as_slice()).expect("prost decodes")).expect("valid");
        assert_eq!(back, m);
        // The mirror is raft-rs's message on the wire: each side reads the other's bytes (field order and
        // packing of repeated ids differ, which protobuf readers accept).
        let theirs = m.write_to_bytes().expect("protobuf encodes");
        let read = from_wire(pb::RaftMessage::decode(theirs.as_slice()).expect("prost reads raft-rs")).expect("valid");
        assert_eq!(read, m);
        assert_eq!(Message::parse_from_bytes(&bytes).expect("raft-rs reads ours"), m);
        for t in 0..19u32 {
            assert_eq!(message_type(t).map(|m| m as u32), Ok(t));
        }
    }

    #[test]
    fn unknown_types_and_zero_ids_are_refused() {
        let mut w = to_wire(&sample());
        w.msg_type = 19;
        assert_eq!(from_wire(w.clone()), Err(WireError::MessageType(19)));
        w.msg_type = 3;
        w.entries[0].entry_type = 7;
        assert_eq!(from_wire(w.clone()), Err(WireError::EntryType(7)));
        w.entries[0].entry_type = 0;
        w.from = 0;
        assert_eq!(from_wire(w), Err(WireError::ZeroId { from: 0, to: 2 }));
    }
}
