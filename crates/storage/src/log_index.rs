//! The in-memory index of the live log: for every entry after the snapshot,
//! its term and where its record lies on disk.
//!
//! The rules for how appends, truncations and snapshot markers change the
//! log live here once, and are used both when writing and when replaying
//! segments on recovery, so that a reopened WAL holds exactly the log the
//! writer held.

use std::collections::VecDeque;

use raftkv_raft::{Index, Term};

/// Where one entry's record is, and its term.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryLoc {
    /// Sequence number of the segment holding the record.
    pub(crate) seq: u64,
    /// Byte offset of the record in that segment.
    pub(crate) offset: u64,
    /// Encoded length of the record.
    pub(crate) len: u32,
    /// The entry's term.
    pub(crate) term: Term,
}

/// The live log: entries `offset + 1 ..= offset + locs.len()`.
#[derive(Debug, Default)]
pub(crate) struct LogIndex {
    offset: Index,
    locs: VecDeque<EntryLoc>,
}

impl LogIndex {
    /// An empty log whose next entry has index `first_index` (at least 1).
    pub(crate) fn new(first_index: Index) -> Self {
        Self {
            offset: first_index.saturating_sub(1),
            locs: VecDeque::new(),
        }
    }

    /// Index of the first live entry (one past the last if there is none).
    pub(crate) fn first(&self) -> Index {
        self.offset + 1
    }

    /// Index of the last live entry (`first() - 1` if there is none).
    pub(crate) fn last(&self) -> Index {
        self.offset + self.locs.len() as u64
    }

    /// The location of entry `index`, if it is live.
    pub(crate) fn get(&self, index: Index) -> Option<&EntryLoc> {
        if index <= self.offset {
            return None;
        }
        usize::try_from(index - self.offset - 1)
            .ok()
            .and_then(|i| self.locs.get(i))
    }

    /// Adds entry `index`, which must directly follow the last one.
    pub(crate) fn append(&mut self, index: Index, loc: EntryLoc) -> Result<(), String> {
        if index != self.last() + 1 {
            return Err(format!(
                "entry {index} does not follow the last entry {}",
                self.last()
            ));
        }
        if let Some(prev) = self.locs.back() {
            if loc.term < prev.term {
                return Err(format!(
                    "entry {index} has term {} below its predecessor's {}",
                    loc.term, prev.term
                ));
            }
        }
        self.locs.push_back(loc);
        Ok(())
    }

    /// Discards entries `index` and above; the next entry appended has
    /// `index`. `index` may lie below the live entries (a truncation written
    /// before the segments holding them were released), never above
    /// `last() + 1`.
    pub(crate) fn truncate(&mut self, index: Index) -> Result<(), String> {
        if index == 0 || index > self.last() + 1 {
            return Err(format!(
                "truncation at {index} outside the log ending at {}",
                self.last()
            ));
        }
        if index <= self.offset {
            self.locs.clear();
            self.offset = index - 1;
        } else {
            // index - offset - 1 <= locs.len(), so this fits.
            let keep = (index - self.offset - 1) as usize;
            self.locs.truncate(keep);
        }
        Ok(())
    }

    /// Applies a snapshot marker: entries up to `index` are covered by the
    /// snapshot. If the log holds entry `index` with the same `term`, the
    /// entries after it stay; otherwise the log disagrees with the snapshot
    /// (or is behind it) and is emptied, to continue at `index + 1`. A
    /// marker at or below the first live entry's predecessor changes nothing.
    ///
    /// Returns whether the entries after `index` (if any) were kept.
    pub(crate) fn apply_snapshot(&mut self, index: Index, term: Term) -> bool {
        if index <= self.offset {
            return true;
        }
        let matches = self.get(index).is_some_and(|loc| loc.term == term);
        if matches {
            let drop = (index - self.offset) as usize;
            self.locs.drain(..drop);
        } else {
            self.locs.clear();
        }
        self.offset = index;
        matches
    }

    /// The smallest segment sequence number holding a live entry.
    pub(crate) fn oldest_seq(&self) -> Option<u64> {
        // Entries are written in index order into non-decreasing segments,
        // and a truncation only removes a suffix, so the first is the oldest.
        self.locs.front().map(|loc| loc.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(term: Term) -> EntryLoc {
        EntryLoc {
            seq: 0,
            offset: 0,
            len: 0,
            term,
        }
    }

    #[test]
    fn append_requires_the_next_index() {
        let mut log = LogIndex::new(1);
        log.append(1, loc(1)).unwrap();
        assert!(log.append(3, loc(1)).is_err());
        assert!(log.append(2, loc(0)).is_err());
        log.append(2, loc(2)).unwrap();
        assert_eq!((log.first(), log.last()), (1, 2));
    }

    #[test]
    fn truncate_drops_the_suffix() {
        let mut log = LogIndex::new(1);
        for i in 1..=5 {
            log.append(i, loc(1)).unwrap();
        }
        log.truncate(3).unwrap();
        assert_eq!(log.last(), 2);
        assert!(log.truncate(4).is_err());
    }

    #[test]
    fn snapshot_keeps_a_matching_suffix_and_resets_otherwise() {
        let mut log = LogIndex::new(1);
        for i in 1..=5 {
            log.append(i, loc(i)).unwrap();
        }
        log.apply_snapshot(3, 3);
        assert_eq!((log.first(), log.last()), (4, 5));
        log.apply_snapshot(4, 99);
        assert_eq!((log.first(), log.last()), (5, 4));
        log.apply_snapshot(10, 1);
        assert_eq!((log.first(), log.last()), (11, 10));
    }
}
