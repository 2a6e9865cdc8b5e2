//! Compaction: drop history at or below a revision.
//!
//! After `compact(C)`, for every key only its latest revision at or below `C` is kept, and
//! not even that if it is a tombstone; everything above `C` is untouched. Reads at
//! revisions `< C` then answer [`MvccError::Compacted`]; reads at `C` itself still work.
//!
//! Invariant used to keep the work proportional to what changed: after a compaction at `old`,
//! every key has at most one entry `<= old`. So compacting to `C` only needs to visit keys
//! with a change in `(old, C]`, found in the revision-ordered `revs` table. The whole
//! compaction runs inside the batch's redb transaction, so it is atomic with the compaction
//! revision and the applied index.

use std::collections::BTreeSet;

use redb::ReadableTable;

use crate::batch::Batch;
use crate::error::{MvccError, Result};
use crate::layout::hist_is_tombstone;

/// Distinct keys gathered from `revs` before they are compacted, bounding memory.
const KEYS_PER_CHUNK: usize = 4096;

/// Compacts `b` at `rev`; returns the number of history entries removed.
pub(crate) fn compact(b: &mut Batch<'_>, rev: i64) -> Result<u64> {
    if rev <= b.compact {
        return Err(MvccError::Compacted);
    }
    if rev > b.current {
        return Err(MvccError::FutureRev);
    }
    let mut removed = 0u64;
    let mut from: (i64, i64) = (b.compact + 1, i64::MIN);
    loop {
        let mut keys = BTreeSet::new();
        let mut next = None;
        for e in b.revs.range(from..=(rev, i64::MAX))? {
            let (k, v) = e?;
            let (main, sub) = k.value();
            keys.insert(v.value().to_vec());
            if keys.len() >= KEYS_PER_CHUNK {
                next = Some((main, sub.saturating_add(1)));
                break;
            }
        }
        for key in &keys {
            removed += compact_key(b, key, rev)?;
        }
        match next {
            Some(n) => from = n,
            None => break,
        }
    }
    tracing::info!(
        revision = rev,
        previous = b.compact,
        removed,
        "compacted history"
    );
    b.compact = rev;
    Ok(removed)
}

/// Removes the entries of `key` at or below `rev` except the last, and the last too if it is
/// a tombstone.
fn compact_key(b: &mut Batch<'_>, key: &[u8], rev: i64) -> Result<u64> {
    let lo: (&[u8], i64, i64) = (key, i64::MIN, i64::MIN);
    let hi: (&[u8], i64, i64) = (key, rev, i64::MAX);
    let mut entries = Vec::new();
    for e in b.hist.range(lo..=hi)? {
        let (k, v) = e?;
        let (_, main, sub) = k.value();
        entries.push((main, sub, hist_is_tombstone(v.value())?));
    }
    let keep_last = entries.last().is_some_and(|&(_, _, tomb)| !tomb);
    if keep_last {
        entries.pop();
    }
    for &(main, sub, _) in &entries {
        b.hist.remove((key, main, sub))?;
        b.revs.remove((main, sub))?;
    }
    Ok(entries.len() as u64)
}
