//! The data the Raft core exchanges with the outside world: log entries, the
//! durable hard state, snapshots, cluster configurations and messages.
//!
//! These are plain values. Encoding them for a disk or a wire is the job of the
//! crates that own the disk and the wire; the core never serializes anything.

use std::collections::BTreeSet;

use bytes::Bytes;

/// Identifies a member of the cluster. Zero is reserved for "nobody".
pub type NodeId = u64;
/// A Raft term. Terms start at 1 once a node has heard of any election.
pub type Term = u64;
/// A position in the Raft log. The first real entry has index 1.
pub type Index = u64;

/// "No node": used for an absent vote or an unknown leader.
pub const NO_NODE: NodeId = 0;

/// What an entry carries, which decides who interprets its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data, opaque to the core. An empty normal entry is the
    /// no-op a new leader appends to commit entries of earlier terms.
    Normal,
    /// A membership change; the payload is a [`ConfChange`] encoded by the
    /// application, and the core learns of it through
    /// [`crate::RawNode::apply_conf_change`].
    ConfChange,
}

/// One record of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// How the payload is to be interpreted.
    pub kind: EntryKind,
    /// The payload.
    pub data: Bytes,
}

impl Entry {
    /// The size the core charges this entry against its byte limits: the
    /// payload plus a fixed overhead for the header.
    pub fn size_bytes(&self) -> u64 {
        ENTRY_OVERHEAD_BYTES + self.data.len() as u64
    }
}

/// Accounting overhead of one entry's header (term, index, kind, length).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// The part of a node's state that must be durable before the node speaks
/// about it (see the persistence contract in the crate docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Whom this node voted for in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    /// The highest index this node knows to be committed. Persisting it is
    /// not required for safety, only for restarting without re-learning it.
    pub commit: Index,
}

/// A cluster configuration: who votes and who only learns.
///
/// While a joint change is in progress `voters_outgoing` holds the old voter
/// set and decisions need a majority of both `voters` and `voters_outgoing`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// The (incoming) voters.
    pub voters: BTreeSet<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: BTreeSet<NodeId>,
    /// The outgoing voters of a joint configuration; empty otherwise.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration that become learners when the
    /// joint configuration is left (they cannot be learners and voters at once).
    pub learners_next: BTreeSet<NodeId>,
    /// Leave the joint configuration automatically once it is committed.
    pub auto_leave: bool,
}

impl ConfState {
    /// A plain configuration of voters and no learners.
    pub fn from_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            voters: voters.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Whether a joint change is in progress.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Every node that takes part in the configuration in any role.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(&self.voters_outgoing);
        all.extend(&self.learners);
        all.extend(&self.learners_next);
        all
    }
}

/// Describes the state a snapshot captures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last log index the snapshot includes.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The configuration in force at `index`.
    pub conf_state: ConfState,
}

/// A point-in-time image of the application state, with its position in the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Where in the log the image was taken.
    pub meta: SnapshotMeta,
    /// The application's state, opaque to the core.
    pub data: Bytes,
}

/// One step of a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeStep {
    /// Make the node a voter (adding it, or promoting a learner).
    AddVoter(NodeId),
    /// Make the node a learner (adding it, or demoting a voter).
    AddLearner(NodeId),
    /// Remove the node from the configuration.
    RemoveNode(NodeId),
}

/// How a multi-step change moves between configurations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConfChangeTransition {
    /// A single step that changes at most one voter is applied directly;
    /// anything larger goes through a joint configuration left automatically.
    #[default]
    Auto,
    /// Always use a joint configuration, and leave it automatically.
    JointImplicit,
    /// Always use a joint configuration, and leave it only when the
    /// application proposes an empty change.
    JointExplicit,
}

/// A membership change as proposed and, once committed, applied.
///
/// An empty `steps` list while in a joint configuration means "leave the
/// joint configuration".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfChange {
    /// How to move between configurations.
    pub transition: ConfChangeTransition,
    /// The changes, applied in order.
    pub steps: Vec<ConfChangeStep>,
    /// Opaque application data carried with the change (for example the new
    /// member's addresses).
    pub context: Bytes,
}

impl ConfChange {
    /// A change of one step.
    pub fn single(step: ConfChangeStep) -> Self {
        Self {
            steps: vec![step],
            ..Self::default()
        }
    }

    /// The empty change that leaves a joint configuration.
    pub fn leave_joint() -> Self {
        Self::default()
    }

    /// Whether this change asks to leave a joint configuration.
    pub fn is_leave_joint(&self) -> bool {
        self.steps.is_empty()
    }

    /// Encodes the change as the payload of a [`EntryKind::ConfChange`] entry.
    ///
    /// The core owns this format because it writes such entries itself (to
    /// leave a joint configuration automatically). Layout, little endian:
    /// version `u8`, transition `u8`, step count `u32`, each step as kind `u8`
    /// and node id `u64`, then context length `u32` and the context bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(10 + self.steps.len() * 9 + self.context.len());
        out.push(CONF_CHANGE_FORMAT_VERSION);
        out.push(match self.transition {
            ConfChangeTransition::Auto => 0,
            ConfChangeTransition::JointImplicit => 1,
            ConfChangeTransition::JointExplicit => 2,
        });
        out.extend_from_slice(&(self.steps.len() as u32).to_le_bytes());
        for step in &self.steps {
            let (kind, id) = match *step {
                ConfChangeStep::AddVoter(id) => (0u8, id),
                ConfChangeStep::AddLearner(id) => (1, id),
                ConfChangeStep::RemoveNode(id) => (2, id),
            };
            out.push(kind);
            out.extend_from_slice(&id.to_le_bytes());
        }
        out.extend_from_slice(&(self.context.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.context);
        Bytes::from(out)
    }

    /// Decodes a payload written by [`ConfChange::encode`].
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = ByteReader { data, pos: 0 };
        let version = reader.u8()?;
        if version != CONF_CHANGE_FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let transition = match reader.u8()? {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::JointImplicit,
            2 => ConfChangeTransition::JointExplicit,
            other => return Err(DecodeError::UnknownTag(other)),
        };
        let step_count = reader.u32()? as usize;
        // Every step takes 9 bytes: refuse counts the payload cannot hold
        // before allocating for them.
        if step_count > reader.remaining() / 9 {
            return Err(DecodeError::Truncated);
        }
        let mut steps = Vec::with_capacity(step_count);
        for _ in 0..step_count {
            let kind = reader.u8()?;
            let id = reader.u64()?;
            steps.push(match kind {
                0 => ConfChangeStep::AddVoter(id),
                1 => ConfChangeStep::AddLearner(id),
                2 => ConfChangeStep::RemoveNode(id),
                other => return Err(DecodeError::UnknownTag(other)),
            });
        }
        let context_len = reader.u32()? as usize;
        let context = Bytes::copy_from_slice(reader.take(context_len)?);
        if reader.remaining() != 0 {
            return Err(DecodeError::TrailingBytes(reader.remaining()));
        }
        Ok(Self {
            transition,
            steps,
            context,
        })
    }
}

const CONF_CHANGE_FORMAT_VERSION: u8 = 1;

/// Why a [`ConfChange`] payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended before a field did.
    #[error("conf change payload is truncated")]
    Truncated,
    /// The payload was written by an unknown format version.
    #[error("conf change payload has unknown format version {0}")]
    UnknownVersion(u8),
    /// A transition or step kind has an unknown tag.
    #[error("conf change payload has unknown tag {0}")]
    UnknownTag(u8),
    /// Bytes follow the last field.
    #[error("conf change payload has {0} trailing bytes")]
    TrailingBytes(usize),
}

struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::Truncated);
        }
        let slice = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(raw))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }
}

/// A message between two Raft nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The sender's term. Zero for messages that are not bound to a term
    /// (forwarded proposals and read requests).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message and their contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// A request for a vote (or, with `pre`, for a pre-vote that changes no
    /// state). `term` of the message is the term the candidate would use.
    RequestVote {
        /// Whether this is a pre-vote.
        pre: bool,
        /// Index of the candidate's last log entry.
        last_log_index: Index,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// Set when a leadership transfer caused the campaign: voters grant it
        /// even while they believe a leader is alive.
        transfer: bool,
    },
    /// The answer to [`MessageBody::RequestVote`].
    RequestVoteResponse {
        /// Whether this answers a pre-vote.
        pre: bool,
        /// Whether the vote was refused.
        reject: bool,
        /// The voter's commit index, with the term of its entry there. A
        /// candidate whose log holds that same entry may adopt the commit
        /// index: without it, a candidate that has not applied a committed
        /// membership change could wait forever for votes it no longer needs.
        commit: Index,
        /// The term of the voter's entry at `commit`.
        commit_term: Term,
    },
    /// Log entries (possibly none) following the entry at `prev_log_index`.
    Append {
        /// Index of the entry just before `entries`.
        prev_log_index: Index,
        /// Term of the entry at `prev_log_index`.
        prev_log_term: Term,
        /// The entries to append.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// The answer to [`MessageBody::Append`] (and to an installed snapshot).
    AppendResponse {
        /// On success, the last index now known to match the leader; on
        /// rejection, the `prev_log_index` that did not match.
        index: Index,
        /// Whether the append was refused because the logs did not match.
        reject: bool,
        /// On rejection: the largest index at or below the rejected one whose
        /// term is at most `hint_term`, so the leader can skip a whole term at once.
        reject_hint: Index,
        /// On rejection: the term of the follower's entry at `reject_hint`.
        hint_term: Term,
    },
    /// Keeps followers from starting elections and carries read-index rounds.
    Heartbeat {
        /// The commit index the follower may adopt (bounded by its match).
        commit: Index,
        /// The read-index round this heartbeat confirms leadership for; zero
        /// for none.
        read_round: u64,
    },
    /// The answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// The round echoed back.
        read_round: u64,
    },
    /// A full snapshot for a follower that fell behind the leader's log.
    InstallSnapshot {
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// A proposal forwarded from a follower to the leader.
    Propose {
        /// The entries to append; their term and index are assigned by the leader.
        entries: Vec<Entry>,
    },
    /// A read-index request forwarded from a follower to the leader.
    ReadIndex {
        /// The follower's opaque request context.
        context: Bytes,
    },
    /// The leader's answer to a forwarded [`MessageBody::ReadIndex`].
    ReadIndexResponse {
        /// The request context echoed back.
        context: Bytes,
        /// The index the follower must have applied before serving the read.
        index: Index,
    },
    /// A request, forwarded to the leader, to hand leadership to `target`.
    TransferLeader {
        /// The node that should become leader.
        target: NodeId,
    },
    /// Tells the leadership transfer target to campaign at once.
    TimeoutNow,
}

impl MessageBody {
    /// A short name of the message kind, for logs and transcripts.
    pub fn kind_name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre: true, .. } => "PreVote",
            MessageBody::RequestVote { pre: false, .. } => "Vote",
            MessageBody::RequestVoteResponse { pre: true, .. } => "PreVoteResp",
            MessageBody::RequestVoteResponse { pre: false, .. } => "VoteResp",
            MessageBody::Append { .. } => "App",
            MessageBody::AppendResponse { .. } => "AppResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
            MessageBody::InstallSnapshot { .. } => "Snap",
            MessageBody::Propose { .. } => "Prop",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
            MessageBody::TransferLeader { .. } => "TransferLeader",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }

    /// Approximate size in bytes, for the message size limit and flow control.
    pub fn size_bytes(&self) -> u64 {
        match self {
            MessageBody::Append { entries, .. } | MessageBody::Propose { entries } => {
                entries.iter().map(Entry::size_bytes).sum()
            }
            MessageBody::InstallSnapshot { snapshot } => snapshot.data.len() as u64,
            _ => 0,
        }
    }
}

/// A read that has become safe to serve once the local state machine has
/// applied up to `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index at the time leadership was confirmed.
    pub index: Index,
    /// The context given to [`crate::RawNode::read_index`].
    pub context: Bytes,
}
