//! The errors of this crate, split by what the caller can do about them.
//!
//! Every fallible function returns [`Error`]. Its variants fall into two
//! groups, told apart by [`Error::is_fatal`]:
//!
//! - **The caller can act** ([`Error::InvalidConfig`], [`Error::InvalidArgument`],
//!   [`Error::Unavailable`]): the request was wrong or asked for data that is
//!   not there. Nothing was written, the WAL or store is unchanged and stays
//!   usable; fix the request and go on.
//! - **The node must stop** ([`Error::Io`], [`Error::Corruption`],
//!   [`Error::Poisoned`]): the disk failed or holds data that cannot be
//!   trusted. After such an error from a write or a sync the [`crate::Wal`]
//!   is poisoned and refuses every later call; the process should stop and,
//!   for corruption, an operator has to look at the file and offset named in
//!   the error before the node may start again.

use std::path::PathBuf;

use raftkv_raft::Index;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the WAL and the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ----- the caller can act -----
    /// A configuration value is out of range. Nothing was opened.
    #[error("invalid storage configuration: {0}")]
    InvalidConfig(String),
    /// The call broke a precondition (for example entries that do not follow
    /// the log, or a truncation below the snapshot). Nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The requested entries are not in the log: they are below its first
    /// index (released after a snapshot) or above its last index.
    #[error("entries [{lo}, {hi}) unavailable: the log holds [{first}, {last}]")]
    Unavailable {
        /// First requested index.
        lo: Index,
        /// One past the last requested index.
        hi: Index,
        /// First index the log holds.
        first: Index,
        /// Last index the log holds.
        last: Index,
    },

    // ----- the node must stop -----
    /// An operating-system call failed on `path`. When this comes from a
    /// write or a sync the WAL is poisoned: what reached the disk is unknown.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Stored data is damaged somewhere a crash cannot explain (not a torn
    /// tail of the last segment): a bad checksum, a missing segment, a gap in
    /// the log. The node must not start on this data.
    #[error("corruption in {} at byte {offset}: {reason}", path.display())]
    Corruption {
        /// The damaged file (or the directory, for a missing segment).
        path: PathBuf,
        /// Byte offset in `path` where the damage was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write or sync failed, so the WAL no longer knows what is on
    /// disk; it refuses every call. Restart the process, which recovers from
    /// what the disk actually holds. The string is the original failure.
    #[error("WAL is poisoned by an earlier failure: {0}")]
    Poisoned(String),
}

impl Error {
    /// Whether the node must stop: `true` for I/O errors, corruption and a
    /// poisoned WAL; `false` for errors the caller can correct and retry.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::InvalidConfig(_) | Error::InvalidArgument(_) | Error::Unavailable { .. } => {
                false
            }
            Error::Io { .. } | Error::Corruption { .. } | Error::Poisoned(_) => true,
        }
    }

    /// Whether this is [`Error::Corruption`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
