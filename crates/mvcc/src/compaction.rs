//! Compaction: drop history at or below a revision.
//!
//! After `compact(C)`, for every key only its latest revision at or below `C` is kept, and
//! not even that if it is a tombstone; everything above `C` is untouched. Reads at
//! revisions `< C` then answer [`MvccError::Compacted`]; reads at `C` itself still work.
//!
//! The key index names what goes; the records are deleted from `kvs` (and the chunks of their
//! values from `values`) inside the batch's redb
//! transaction, so the compaction is atomic with the compaction revision and the applied
//! index. The index drops the same revisions only once that transaction is committed
//! (`Batch::compacted_to`): until then, readers of earlier transactions may need them.

use std::sync::PoisonError;

use crate::batch::Batch;
use crate::error::{MvccError, Result};

/// Compacts `b` at `rev`; returns the number of history entries removed.
pub(crate) fn compact(b: &mut Batch<'_>, rev: i64) -> Result<u64> {
    if rev <= b.compact {
        return Err(MvccError::Compacted);
    }
    if rev > b.current {
        return Err(MvccError::FutureRev);
    }
    let drops = b
        .index
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .compaction_drops(b.compacted_to.unwrap_or(i64::MIN), rev);
    for &revision in &drops {
        if !crate::layout::remove_change(&mut b.kvs, &mut b.values, revision)? {
            return Err(MvccError::Corruption(format!(
                "compaction: revision {}.{} is in the key index but not stored",
                revision.0, revision.1
            )));
        }
    }
    tracing::info!(
        revision = rev,
        previous = b.compact,
        removed = drops.len(),
        "compacted history"
    );
    b.compact = rev;
    b.compacted_to = Some(rev);
    Ok(drops.len() as u64)
}
