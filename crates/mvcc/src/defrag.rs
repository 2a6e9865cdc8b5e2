//! Defragmentation: rebuilding the store's file without its free space, online.
//!
//! redb reuses freed pages but never gives them back to the file system, so after deletes
//! and a compaction the file keeps its size. [`Store::defragment`] copies every table, in
//! key order, into a new file next to the old one (`<path>.defrag`), which packs the
//! B-trees densely, then renames it over the old path and swaps the open database.
//!
//! redb's own `Database::compact` was not used: it needs `&mut Database` and no read
//! transaction anywhere, which would mean stopping every reader (watch catch-up, snapshot
//! streams) for the whole run. Here readers never stop, and writers stop at most for one
//! copy:
//!
//! ```text
//! 1. under the write gate: note the generation, begin a read transaction   (instant)
//! 2. copy that read transaction into <path>.defrag                        (writers run)
//! 3. under the write gate: generation unchanged? swap. Otherwise copy again
//!    with writers shut out (the gate held), then swap.
//! ```
//!
//! So an idle store is defragmented without stopping anything, and a busy one stops its
//! writers for one copy, as etcd does for its whole defragmentation. A crash at any point
//! leaves either the old file whole at `path` (the leftover `.defrag` file is removed at the
//! next open) or the new one, durable before the rename.

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::error::Result;
use crate::layout::{AUX, KVS, LEASES, LEASE_KEYS, META, VALUES};
use crate::rebuild::{remove_if_exists, Rebuild};
use crate::store::{lock, Store};

/// What a defragmentation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefragReport {
    /// File size before, in bytes.
    pub before_bytes: u64,
    /// File size after, in bytes.
    pub after_bytes: u64,
    /// Bytes of disk the file occupied before (see [`Store::occupied_bytes`]).
    pub before_occupied_bytes: u64,
    /// Bytes of disk the file occupies after.
    pub after_occupied_bytes: u64,
    /// Records copied (all tables).
    pub records: u64,
    /// True when writes raced the first copy and a second one ran with writers stopped.
    pub stopped_writes: bool,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

impl Store {
    /// Rewrites the store's file without free space (see the module doc). Reads go on
    /// throughout; writes go on too unless they race the copy, in which case they wait for
    /// a second copy. Concurrent calls run one after the other.
    pub fn defragment(&self) -> Result<DefragReport> {
        let _one = lock(&self.defrag_gate);
        let started = Instant::now();
        let path = self.config.path.clone();
        let tmp = Rebuild::Defragment.path(&path);
        let before = crate::store::measure_file(&path)?;
        let (generation, txn) = {
            let mut gate = self.write_gate();
            let txn = self.begin_read_gated(&mut gate)?;
            (self.generation(), txn)
        };
        let (mut fresh, mut records) = self.copy_to(&txn, &tmp)?;
        drop(txn);
        let mut gate = self.write_gate();
        let stopped_writes = self.generation() != generation;
        if stopped_writes {
            drop(fresh);
            let txn = self.begin_read_gated(&mut gate)?;
            (fresh, records) = self.copy_to(&txn, &tmp)?;
        }
        self.replace_with(&tmp, fresh)?;
        drop(gate);
        let after = crate::store::measure_file(&path)?;
        let report = DefragReport {
            before_bytes: before.0,
            after_bytes: after.0,
            before_occupied_bytes: before.1,
            after_occupied_bytes: after.1,
            records,
            stopped_writes,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            before_bytes = report.before_bytes,
            after_bytes = report.after_bytes,
            before_occupied_bytes = report.before_occupied_bytes,
            after_occupied_bytes = report.after_occupied_bytes,
            records = report.records,
            stopped_writes = report.stopped_writes,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "defragmented the store"
        );
        Ok(report)
    }

    /// Copies every table of `src` into a new database at `to`, committed durably.
    fn copy_to(&self, src: &ReadTransaction, to: &Path) -> Result<(Database, u64)> {
        // A file left by a failed run (or the first copy) would be opened, not replaced.
        remove_if_exists(to)?;
        let db = Database::builder()
            .set_cache_size(self.config.cache_size_bytes)
            .create(to)?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let mut records = 0;
        records += copy_table(src, &txn, KVS)?;
        records += copy_table(src, &txn, VALUES)?;
        records += copy_table(src, &txn, LEASES)?;
        records += copy_table(src, &txn, LEASE_KEYS)?;
        records += copy_table(src, &txn, AUX)?;
        records += copy_table(src, &txn, META)?;
        txn.commit()?;
        Ok((db, records))
    }
}

/// Copies one table in key order; returns the records copied.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64> {
    let from = src.open_table(table)?;
    let mut to = dst.open_table(table)?;
    let mut n = 0;
    for entry in from.iter()? {
        let (k, v) = entry?;
        to.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}
