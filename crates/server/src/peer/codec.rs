//! Raft messages to and from the peer protocol's protobuf messages.

use bytes::Bytes;
use raftkv_proto::raftkvpeer as wire;
use raftkv_proto::raftkvpeer::raft_message::Body;
use raftkv_raft::{ConfState, Entry, EntryKind, Message, MessageBody, Snapshot, SnapshotMeta};

/// Why a message from a peer could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The message has no body.
    #[error("peer message without a body")]
    MissingBody,
    /// An entry has an unknown kind.
    #[error("entry of unknown kind {0}")]
    UnknownEntryKind(u32),
}

fn entry_to_wire(entry: Entry) -> wire::Entry {
    wire::Entry {
        term: entry.term,
        index: entry.index,
        kind: match entry.kind {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        },
        data: entry.data.to_vec(),
    }
}

fn entry_from_wire(entry: wire::Entry) -> Result<Entry, CodecError> {
    Ok(Entry {
        term: entry.term,
        index: entry.index,
        kind: match entry.kind {
            0 => EntryKind::Normal,
            1 => EntryKind::ConfChange,
            other => return Err(CodecError::UnknownEntryKind(other)),
        },
        data: Bytes::from(entry.data),
    })
}

fn conf_state_to_wire(cs: ConfState) -> wire::ConfState {
    wire::ConfState {
        voters: cs.voters.into_iter().collect(),
        learners: cs.learners.into_iter().collect(),
        voters_outgoing: cs.voters_outgoing.into_iter().collect(),
        learners_next: cs.learners_next.into_iter().collect(),
        auto_leave: cs.auto_leave,
    }
}

fn conf_state_from_wire(cs: wire::ConfState) -> ConfState {
    ConfState {
        voters: cs.voters.into_iter().collect(),
        learners: cs.learners.into_iter().collect(),
        voters_outgoing: cs.voters_outgoing.into_iter().collect(),
        learners_next: cs.learners_next.into_iter().collect(),
        auto_leave: cs.auto_leave,
    }
}

fn entries_to_wire(entries: Vec<Entry>) -> Vec<wire::Entry> {
    entries.into_iter().map(entry_to_wire).collect()
}

fn entries_from_wire(entries: Vec<wire::Entry>) -> Result<Vec<Entry>, CodecError> {
    entries.into_iter().map(entry_from_wire).collect()
}

/// A Raft message as sent to a peer.
pub fn to_wire(msg: Message) -> wire::RaftMessage {
    let body = match msg.body {
        MessageBody::RequestVote {
            pre,
            last_log_index,
            last_log_term,
            transfer,
        } => Body::RequestVote(wire::RequestVote {
            pre,
            last_log_index,
            last_log_term,
            transfer,
        }),
        MessageBody::RequestVoteResponse {
            pre,
            reject,
            commit,
            commit_term,
        } => Body::RequestVoteResponse(wire::RequestVoteResponse {
            pre,
            reject,
            commit,
            commit_term,
        }),
        MessageBody::Append {
            prev_log_index,
            prev_log_term,
            entries,
            commit,
        } => Body::Append(wire::Append {
            prev_log_index,
            prev_log_term,
            entries: entries_to_wire(entries),
            commit,
        }),
        MessageBody::AppendResponse {
            index,
            reject,
            reject_hint,
            hint_term,
        } => Body::AppendResponse(wire::AppendResponse {
            index,
            reject,
            reject_hint,
            hint_term,
        }),
        MessageBody::Heartbeat { commit, read_round } => {
            Body::Heartbeat(wire::Heartbeat { commit, read_round })
        }
        MessageBody::HeartbeatResponse { read_round } => {
            Body::HeartbeatResponse(wire::HeartbeatResponse { read_round })
        }
        MessageBody::InstallSnapshot { snapshot } => Body::InstallSnapshot(wire::InstallSnapshot {
            meta: Some(wire::SnapshotMeta {
                index: snapshot.meta.index,
                term: snapshot.meta.term,
                conf_state: Some(conf_state_to_wire(snapshot.meta.conf_state)),
            }),
            data: snapshot.data.to_vec(),
        }),
        MessageBody::Propose { entries } => Body::Propose(wire::Propose {
            entries: entries_to_wire(entries),
        }),
        MessageBody::ReadIndex { context } => Body::ReadIndex(wire::ReadIndex {
            context: context.to_vec(),
        }),
        MessageBody::ReadIndexResponse { context, index } => {
            Body::ReadIndexResponse(wire::ReadIndexResponse {
                context: context.to_vec(),
                index,
            })
        }
        MessageBody::TransferLeader { target } => {
            Body::TransferLeader(wire::TransferLeader { target })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(wire::TimeoutNow {}),
    };
    wire::RaftMessage {
        from: msg.from,
        to: msg.to,
        term: msg.term,
        body: Some(body),
    }
}

/// A Raft message received from a peer.
pub fn from_wire(msg: wire::RaftMessage) -> Result<Message, CodecError> {
    let body = match msg.body.ok_or(CodecError::MissingBody)? {
        Body::RequestVote(v) => MessageBody::RequestVote {
            pre: v.pre,
            last_log_index: v.last_log_index,
            last_log_term: v.last_log_term,
            transfer: v.transfer,
        },
        Body::RequestVoteResponse(v) => MessageBody::RequestVoteResponse {
            pre: v.pre,
            reject: v.reject,
            commit: v.commit,
            commit_term: v.commit_term,
        },
        Body::Append(a) => MessageBody::Append {
            prev_log_index: a.prev_log_index,
            prev_log_term: a.prev_log_term,
            entries: entries_from_wire(a.entries)?,
            commit: a.commit,
        },
        Body::AppendResponse(r) => MessageBody::AppendResponse {
            index: r.index,
            reject: r.reject,
            reject_hint: r.reject_hint,
            hint_term: r.hint_term,
        },
        Body::Heartbeat(h) => MessageBody::Heartbeat {
            commit: h.commit,
            read_round: h.read_round,
        },
        Body::HeartbeatResponse(h) => MessageBody::HeartbeatResponse {
            read_round: h.read_round,
        },
        Body::InstallSnapshot(s) => {
            let meta = s.meta.unwrap_or_default();
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: meta.index,
                        term: meta.term,
                        conf_state: conf_state_from_wire(meta.conf_state.unwrap_or_default()),
                    },
                    data: Bytes::from(s.data),
                },
            }
        }
        Body::Propose(p) => MessageBody::Propose {
            entries: entries_from_wire(p.entries)?,
        },
        Body::ReadIndex(r) => MessageBody::ReadIndex {
            context: Bytes::from(r.context),
        },
        Body::ReadIndexResponse(r) => MessageBody::ReadIndexResponse {
            context: Bytes::from(r.context),
            index: r.index,
        },
        Body::TransferLeader(t) => MessageBody::TransferLeader { target: t.target },
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
    };
    Ok(Message {
        from: msg.from,
        to: msg.to,
        term: msg.term,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: MessageBody) {
        let msg = Message {
            from: 1,
            to: 2,
            term: 7,
            body,
        };
        assert_eq!(from_wire(to_wire(msg.clone())), Ok(msg));
    }

    #[test]
    fn every_message_kind_survives_the_wire() {
        let entry = Entry {
            term: 3,
            index: 9,
            kind: EntryKind::ConfChange,
            data: Bytes::from_static(b"cc"),
        };
        round_trip(MessageBody::RequestVote {
            pre: true,
            last_log_index: 5,
            last_log_term: 2,
            transfer: true,
        });
        round_trip(MessageBody::RequestVoteResponse {
            pre: false,
            reject: true,
            commit: 12,
            commit_term: 3,
        });
        round_trip(MessageBody::Append {
            prev_log_index: 8,
            prev_log_term: 3,
            entries: vec![entry.clone()],
            commit: 8,
        });
        round_trip(MessageBody::AppendResponse {
            index: 9,
            reject: true,
            reject_hint: 4,
            hint_term: 2,
        });
        round_trip(MessageBody::Heartbeat {
            commit: 4,
            read_round: 11,
        });
        round_trip(MessageBody::HeartbeatResponse { read_round: 11 });
        round_trip(MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 100,
                    term: 4,
                    conf_state: ConfState::from_voters([1, 2, 3]),
                },
                data: Bytes::from_static(b"state"),
            },
        });
        round_trip(MessageBody::Propose {
            entries: vec![entry],
        });
        round_trip(MessageBody::ReadIndex {
            context: Bytes::from_static(b"ctx"),
        });
        round_trip(MessageBody::ReadIndexResponse {
            context: Bytes::from_static(b"ctx"),
            index: 12,
        });
        round_trip(MessageBody::TransferLeader { target: 3 });
        round_trip(MessageBody::TimeoutNow);
    }

    #[test]
    fn malformed_messages_are_refused() {
        let empty = wire::RaftMessage::default();
        assert_eq!(from_wire(empty), Err(CodecError::MissingBody));
        let bad_kind = wire::RaftMessage {
            body: Some(Body::Propose(wire::Propose {
                entries: vec![wire::Entry {
                    kind: 9,
                    ..Default::default()
                }],
            })),
            ..Default::default()
        };
        assert_eq!(from_wire(bad_kind), Err(CodecError::UnknownEntryKind(9)));
    }
}
