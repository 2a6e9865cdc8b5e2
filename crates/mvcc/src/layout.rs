//! The storage layout in redb: table definitions and the byte encoding of records.
//!
//! ```text
//! hist       (key, main, sub) -> HistRecord   every revision of every key, tombstones included;
//!                                             the source of truth (past reads, hash, snapshot)
//! live       key -> LiveRecord                latest kv of each existing key (latest reads)
//! revs       (main, sub) -> key               revision order of hist (compaction, events)
//! leases     lease id -> ttl seconds
//! lease_keys (lease id, key) -> ()            keys attached to each lease (revoke)
//! meta       name -> u64                      current/compact revision, applied index/term
//! aux        (namespace, key) -> bytes        the server's own replicated records (request
//!                                             outcomes, members), outside the revision model
//! ```
//!
//! Why no in-memory key index (etcd's treeIndex): `live` answers latest point reads with one
//! B-tree lookup and latest range scans with one sequential scan, and `hist` is ordered by key
//! then revision, so a read at a past revision is one reverse seek per key. The store then
//! keeps no per-key memory at all (only redb's page cache), opens instantly whatever its size,
//! and cannot disagree with the disk. The price is that `live` duplicates the latest value of
//! each key on disk, and every change writes three tables.
//!
//! Record encodings (little endian):
//! - `LiveRecord`: create i64, mod i64, version i64, lease i64, then the value bytes;
//! - `HistRecord`: kind u8 (0 put, 1 tombstone), create i64, version i64, lease i64, value
//!   bytes; the mod revision is the `main` of the table key.

use redb::TableDefinition;

use crate::error::{MvccError, Result};
use crate::types::KeyValue;

/// Every revision of every key.
pub(crate) const HIST: TableDefinition<(&[u8], i64, i64), &[u8]> = TableDefinition::new("hist");
/// Latest kv of each existing key.
pub(crate) const LIVE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("live");
/// Revision -> key, the revision order of `hist`.
pub(crate) const REVS: TableDefinition<(i64, i64), &[u8]> = TableDefinition::new("revs");
/// Lease id -> ttl.
pub(crate) const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
/// (lease id, key) for each key attached to a lease.
pub(crate) const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");
/// Server records kept with the data: (namespace, key) -> value.
pub(crate) const AUX: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("aux");
/// Named counters.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `meta` name of the current store revision.
pub(crate) const META_REV: &str = "current_revision";
/// `meta` name of the compaction revision.
pub(crate) const META_COMPACT: &str = "compact_revision";
/// `meta` name of the applied raft index.
pub(crate) const META_APPLIED_INDEX: &str = "applied_index";
/// `meta` name of the applied raft term.
pub(crate) const META_APPLIED_TERM: &str = "applied_term";

const HEADER_LIVE: usize = 32;
const HEADER_HIST: usize = 25;

/// Encodes a live record.
pub(crate) fn encode_live(kv: &KeyValue) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LIVE + kv.value.len());
    b.extend_from_slice(&kv.create_revision.to_le_bytes());
    b.extend_from_slice(&kv.mod_revision.to_le_bytes());
    b.extend_from_slice(&kv.version.to_le_bytes());
    b.extend_from_slice(&kv.lease.to_le_bytes());
    b.extend_from_slice(&kv.value);
    b
}

fn i64_at(b: &[u8], at: usize) -> Result<i64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(i64::from_le_bytes)
        .ok_or_else(|| MvccError::Corruption(format!("record of {} bytes too short", b.len())))
}

/// Decodes a live record; `with_value` false leaves the value empty (keys_only, compares).
pub(crate) fn decode_live(key: &[u8], b: &[u8], with_value: bool) -> Result<KeyValue> {
    if b.len() < HEADER_LIVE {
        return Err(MvccError::Corruption(format!(
            "live record of {} bytes",
            b.len()
        )));
    }
    Ok(KeyValue {
        key: key.to_vec(),
        create_revision: i64_at(b, 0)?,
        mod_revision: i64_at(b, 8)?,
        version: i64_at(b, 16)?,
        lease: i64_at(b, 24)?,
        value: if with_value {
            b[HEADER_LIVE..].to_vec()
        } else {
            Vec::new()
        },
    })
}

/// Encodes a hist record of a put.
pub(crate) fn encode_hist_put(kv: &KeyValue) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_HIST + kv.value.len());
    b.push(0);
    b.extend_from_slice(&kv.create_revision.to_le_bytes());
    b.extend_from_slice(&kv.version.to_le_bytes());
    b.extend_from_slice(&kv.lease.to_le_bytes());
    b.extend_from_slice(&kv.value);
    b
}

/// The hist record of a tombstone.
pub(crate) fn encode_hist_tombstone() -> Vec<u8> {
    let mut b = vec![0u8; HEADER_HIST];
    b[0] = 1;
    b
}

/// Decodes a hist record at `(key, main)`: `None` for a tombstone.
pub(crate) fn decode_hist(
    key: &[u8],
    main: i64,
    b: &[u8],
    with_value: bool,
) -> Result<Option<KeyValue>> {
    if b.len() < HEADER_HIST {
        return Err(MvccError::Corruption(format!(
            "hist record of {} bytes",
            b.len()
        )));
    }
    match b[0] {
        0 => Ok(Some(KeyValue {
            key: key.to_vec(),
            create_revision: i64_at(b, 1)?,
            mod_revision: main,
            version: i64_at(b, 9)?,
            lease: i64_at(b, 17)?,
            value: if with_value {
                b[HEADER_HIST..].to_vec()
            } else {
                Vec::new()
            },
        })),
        1 => Ok(None),
        k => Err(MvccError::Corruption(format!("hist record kind {k}"))),
    }
}

/// True when the hist record is a tombstone (checked form of `decode_hist(..).is_none()`).
pub(crate) fn hist_is_tombstone(b: &[u8]) -> Result<bool> {
    match b.first() {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        _ => Err(MvccError::Corruption("bad hist record kind".into())),
    }
}
