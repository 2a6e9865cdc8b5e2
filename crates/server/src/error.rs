//! Errors of the server: bad configuration, and what the node driver
//! answers a request with.

use raftkv_raft::{DropReason, Error as RaftError};

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A flag or a combination of flags is invalid.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Why the node could not serve a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// No leader is known at the moment; the client may retry shortly.
    #[error("no leader")]
    NoLeader,
    /// Leadership changed while the request was in flight; its outcome is
    /// unknown or it was dropped. The client may retry.
    #[error("leader changed")]
    LeaderChanged,
    /// The Raft core refused the request.
    #[error("{0}")]
    Refused(String),
    /// The node stopped (shutdown or fatal error).
    #[error("server stopped")]
    Stopped,
    /// Storage failed; the node must stop and recover from disk on restart.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl From<RaftError> for NodeError {
    fn from(err: RaftError) -> Self {
        match err {
            RaftError::ProposalDropped(DropReason::NoLeader)
            | RaftError::ReadDropped(DropReason::NoLeader) => NodeError::NoLeader,
            other => NodeError::Refused(other.to_string()),
        }
    }
}

impl From<raftkv_storage::Error> for NodeError {
    fn from(err: raftkv_storage::Error) -> Self {
        NodeError::Fatal(err.to_string())
    }
}
