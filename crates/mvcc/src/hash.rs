//! etcd's Hash: one checksum of the store's whole logical content.
//!
//! CRC-32C (Castagnoli) over, in this order: the current and compaction revisions, every
//! stored change (revision, record bytes with the key, tombstones included) in revision
//! order, then every lease (id, ttl) by id. Each field is length-prefixed or fixed-width,
//! so different contents cannot produce the same byte stream. Two members that applied the
//! same writes hash equal whatever their file layout, defragmented or not.
//!
//! Left out, because members may legitimately differ on them: the applied raft index (a
//! log position, as etcd leaves out its consistent index) and the server's records (the
//! exactly-once table is swept by each member on its own schedule).

use redb::ReadableTable;

use crate::error::Result;
use crate::layout::{whole_record, LEASES, VALUES};
use crate::store::Store;

/// A hash of the whole store and the revision it was taken at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreHash {
    /// CRC-32C of the content.
    pub hash: u32,
    /// The store revision of the state hashed.
    pub revision: i64,
}

fn put_bytes(h: u32, b: &[u8]) -> u32 {
    let h = crc32c::crc32c_append(h, &(b.len() as u64).to_le_bytes());
    crc32c::crc32c_append(h, b)
}

impl Store {
    /// Hashes the last committed state (see the module doc), from one read transaction.
    pub fn hash(&self) -> Result<StoreHash> {
        let txn = self.begin_read()?;
        let t = Self::tables_in(&txn)?;
        let mut h = crc32c::crc32c(&t.current.to_le_bytes());
        h = crc32c::crc32c_append(h, &t.compact.to_le_bytes());
        let values = txn.open_table(VALUES)?;
        for e in t.kvs.iter()? {
            let (k, v) = e?;
            let (main, sub) = k.value();
            h = crc32c::crc32c_append(h, &main.to_le_bytes());
            h = crc32c::crc32c_append(h, &sub.to_le_bytes());
            // The whole record, as a file that keeps values whole stores it.
            h = put_bytes(h, &whole_record(&values, (main, sub), v.value())?);
        }
        for e in txn.open_table(LEASES)?.iter()? {
            let (id, ttl) = e?;
            h = crc32c::crc32c_append(h, &id.value().to_le_bytes());
            h = crc32c::crc32c_append(h, &ttl.value().to_le_bytes());
        }
        Ok(StoreHash {
            hash: h,
            revision: t.current,
        })
    }
}
