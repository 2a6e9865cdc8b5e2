//! The error type of the store.
//!
//! Errors fall in two groups, see [`MvccError::is_fatal`]:
//! - request errors (compacted, future revision, duplicate key, ...) answer one request; the
//!   batch it was part of goes on and the other requests still apply. Their `Display` text is
//!   etcd's exact message, because Go clients match errors by string.
//! - storage errors (redb failed, or bytes on disk do not decode) mean the node must stop: the
//!   batch is not committed and the state on disk is the one before it.

use thiserror::Error;

/// Everything that can go wrong in the store.
#[derive(Debug, Error)]
pub enum MvccError {
    /// The requested revision is below the compaction revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// A txn writes the same key twice in one branch (put/put or put/delete overlap).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A txn has more compares or ops at some level than the configured limit.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// An empty key was given.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` together with a non-empty value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a non-zero lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// The lease named by a put or a revoke does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A lease grant names an id that is already granted.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A write was attempted in a batch before any entry was accepted by
    /// [`crate::Batch::begin_entry`]; without an entry index it could be applied twice.
    #[error("mvcc: write outside of a raft entry")]
    NoEntry,
    /// A txn given to a read-only path contains a write.
    #[error("mvcc: txn is not read-only")]
    NotReadOnly,
    /// A read kept meeting a compaction or a snapshot install that committed after its read
    /// transaction began (each read retries a few times first); the caller may retry.
    #[error("mvcc: the store changed under the read; retry")]
    ReadRaced,
    /// The store file was written in a layout this version does not read.
    #[error("mvcc: store file has layout version {found}, this version reads only {expected}; save a snapshot with the version that wrote it (`etcdctl snapshot save`) and restore that")]
    Layout {
        /// The layout version found in the file.
        found: u64,
        /// The layout version this build reads and writes.
        expected: u64,
    },
    /// An invalid configuration value.
    #[error("mvcc: invalid config: {0}")]
    Config(String),
    /// The underlying redb database failed (boxed: redb's error is large).
    #[error("mvcc: storage error: {0}")]
    Storage(Box<redb::Error>),
    /// Bytes read from disk or from a snapshot stream are not what was written.
    #[error("mvcc: corruption: {0}")]
    Corruption(String),
    /// A durable commit made by [`crate::BackgroundSync`] failed: the store is no longer
    /// being made durable, so applying must stop as if the commit had failed inline.
    #[error("mvcc: background durable commit failed: {0}")]
    BackgroundSync(String),
    /// Batches were applied but lost before their commit (a commit or a later batch in the
    /// same transaction failed): the store is behind the applied index it reported, and
    /// refuses to apply more. The raft log still holds those batches; reopening replays them.
    #[error("mvcc: applied batches were lost before their commit; the store must be reopened")]
    UncommittedLost,
    /// An I/O error while reading or writing a snapshot stream.
    #[error("mvcc: snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl MvccError {
    /// True for errors after which the node must stop applying: storage failures and
    /// corruption. False for errors that only answer one request.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            MvccError::Storage(_)
                | MvccError::Corruption(_)
                | MvccError::Io(_)
                | MvccError::BackgroundSync(_)
                | MvccError::UncommittedLost
        )
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for MvccError {
            fn from(e: $t) -> Self {
                MvccError::Storage(Box::new(redb::Error::from(e)))
            }
        }
    )*};
}
impl From<redb::Error> for MvccError {
    fn from(e: redb::Error) -> Self {
        MvccError::Storage(Box::new(e))
    }
}

from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

/// The result type of the store.
pub type Result<T, E = MvccError> = std::result::Result<T, E>;
