//! raftkv's MVCC key-value store: the applied state machine of the Raft log, following
//! etcd's model (revisions, create/mod revision and version per key, reads at past
//! revisions, txns, compaction) on top of the embedded database redb.
//!
//! Code map:
//! - [`types`]: request/response structs mirroring etcd's messages;
//! - [`key_range`]: etcd's `(key, range_end)` conventions;
//! - `layout`: the redb tables and record encodings (why changes are keyed by revision);
//! - `index`: the key index in memory: each key's revisions;
//! - `read`: point and range reads, latest and historical;
//! - [`batch`]: the write path, one redb transaction per batch of raft entries;
//! - `txn`: txn validation, compares and execution;
//! - `compaction`: dropping history;
//! - [`snapshot`]: streaming a full snapshot out and installing one;
//! - [`defrag`]: rebuilding the file without its free space, online;
//! - [`hash`]: a checksum of the whole content (etcd's Hash);
//! - [`store`]: open, commit policy and crash semantics, read entry points;
//! - [`error`]: [`MvccError`], with etcd's exact messages.
//!
//! ```
//! use raftkv_mvcc::{Config, PutRequest, RangeRequest, Store};
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(Config::new(dir.path().join("kv.redb"))).unwrap();
//! assert_eq!(store.current_revision().unwrap(), 1);
//! store
//!     .apply(|b| {
//!         b.begin_entry(1, 1);
//!         b.put(&PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() })
//!     })
//!     .unwrap();
//! let resp = store.range(&RangeRequest { key: b"k".to_vec(), ..Default::default() }).unwrap();
//! assert_eq!(resp.kvs[0].mod_revision, 2);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod background_sync;
pub mod batch;
mod compaction;
pub mod defrag;
pub mod error;
pub mod hash;
mod index;
pub mod key_range;
mod layout;
mod read;
mod rebuild;
pub mod snapshot;
pub mod store;
mod txn;
pub mod types;

pub use background_sync::BackgroundSync;
pub use batch::Batch;
pub use defrag::DefragReport;
pub use error::{MvccError, Result};
pub use hash::StoreHash;
pub use key_range::{prefix_range_end, KeyRange};
pub use snapshot::{SnapshotMeta, SnapshotReader};
pub use store::{CommitObserver, Config, DiskUsage, EventPage, EventPageLimits, Store};
pub use txn::is_read_only;
pub use types::*;
