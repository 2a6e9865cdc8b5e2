//! Errors the core reports to its caller.
//!
//! None of them means the node is broken: each says a request was refused
//! and why, so the caller can retry elsewhere or tell its client. The core
//! never performs I/O, so it has no "the node must stop" errors of its own.

use crate::types::{Index, NodeId};

/// Why the core refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A proposal was not appended; the client may retry (elsewhere).
    #[error("proposal dropped: {0}")]
    ProposalDropped(DropReason),
    /// A read-index request was not accepted; the client may retry.
    #[error("read dropped: {0}")]
    ReadDropped(DropReason),
    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    ConfChange(#[from] ConfChangeError),
    /// The configuration given to the core is invalid.
    #[error("invalid raft config: {0}")]
    Config(String),
    /// The state given at start-up is inconsistent.
    #[error("invalid initial state: {0}")]
    InitialState(String),
    /// A leadership transfer was refused.
    #[error("leadership transfer to {target} refused: {reason}")]
    Transfer {
        /// The requested new leader.
        target: NodeId,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The log below the requested index was compacted away.
    #[error("log compacted up to index {0}")]
    Compacted(Index),
    /// A snapshot older than what the core already has was given to it.
    #[error("snapshot at index {given} is older than the current one at {current}")]
    SnapshotOutOfDate {
        /// The index of the rejected snapshot.
        given: Index,
        /// The index the core already has.
        current: Index,
    },
}

/// Why a proposal was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// No leader is known, so the proposal cannot be forwarded.
    #[error("no leader")]
    NoLeader,
    /// This node is not the leader and forwarding is disabled.
    #[error("not leader and forwarding is disabled")]
    NotLeader,
    /// The leader is handing over leadership and accepts no new entries.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// The uncommitted tail of the log would exceed its size limit.
    #[error("too many uncommitted bytes")]
    UncommittedSizeLimit,
    /// This node is not a member of the cluster.
    #[error("not a member of the cluster")]
    NotMember,
}

/// Why a membership change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// An earlier change is not yet applied; only one may be in flight.
    #[error("a previous membership change is not yet applied")]
    Pending,
    /// A joint configuration cannot be entered from a joint configuration.
    #[error("already in a joint configuration")]
    AlreadyJoint,
    /// Only a joint configuration can be left.
    #[error("not in a joint configuration")]
    NotJoint,
    /// A direct change may alter at most one voter.
    #[error("more than one voter changed without a joint configuration")]
    TooManyVoterChanges,
    /// A direct change is not allowed during a joint change.
    #[error("a direct change is not allowed in a joint configuration")]
    SimpleWhileJoint,
    /// The change would leave no voters.
    #[error("the change removes every voter")]
    ZeroVoters,
    /// Node id 0 is reserved.
    #[error("node id 0 is reserved")]
    ZeroNodeId,
    /// The resulting configuration would break a structural rule.
    #[error("the resulting configuration is invalid: {0}")]
    Invariant(String),
}

/// Shorthand for results of the core.
pub type Result<T> = std::result::Result<T, Error>;
