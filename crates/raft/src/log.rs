//! The node's copy of the replicated log, held in memory since the last
//! snapshot, with the marks that say how much of it is durable, committed
//! and applied.
//!
//! ```text
//!   snapshot          first                   stable   committed     last
//!      │   compacted    │                        │         │          │
//!  ────┴────────────────┼────────────────────────┼─────────┼──────────┤
//!                       │  durable (persisted)   │  not yet persisted │
//!                       └───────── entries held in memory ────────────┘
//! ```
//!
//! `applied ≤ committed ≤ last` always holds; `committed` may run ahead of
//! `stable` on a follower because commitment is decided by a quorum, but no
//! entry is handed out for applying before it is handed out for persisting.

use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::types::{Entry, Index, Snapshot, SnapshotMeta, Term};

/// The in-memory log and its marks.
#[derive(Clone, Debug)]
pub struct RaftLog {
    /// The position of the latest snapshot (index 0, term 0 if none).
    snapshot_index: Index,
    snapshot_term: Term,
    /// Entries `snapshot_index + 1 ..= last`.
    entries: VecDeque<Entry>,
    /// The last index known to be durable.
    stable: Index,
    /// A snapshot received from the leader and not yet persisted.
    pending_snapshot: Option<Snapshot>,
    /// The highest index known to be committed.
    pub committed: Index,
    /// The highest index handed out for applying and acknowledged.
    pub applied: Index,
}

impl RaftLog {
    /// A log restored from durable state: the latest snapshot's position and
    /// the entries after it, all of them durable.
    pub fn restore_from(
        snapshot: &SnapshotMeta,
        entries: Vec<Entry>,
        commit: Index,
    ) -> Result<Self> {
        let mut expected = snapshot.index + 1;
        for entry in &entries {
            if entry.index != expected {
                return Err(Error::InitialState(format!(
                    "entry at position of index {expected} has index {}",
                    entry.index
                )));
            }
            expected += 1;
        }
        let last = expected - 1;
        if commit > last {
            return Err(Error::InitialState(format!(
                "commit index {commit} is beyond the last entry {last}"
            )));
        }
        Ok(Self {
            snapshot_index: snapshot.index,
            snapshot_term: snapshot.term,
            entries: entries.into(),
            stable: last,
            pending_snapshot: None,
            committed: commit.max(snapshot.index),
            applied: snapshot.index,
        })
    }

    /// The first index held in memory (one past the snapshot).
    pub fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    /// The last index of the log.
    pub fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as Index
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// The position of the latest snapshot.
    pub fn snapshot_position(&self) -> (Index, Term) {
        (self.snapshot_index, self.snapshot_term)
    }

    /// The last durable index.
    pub fn stable_index(&self) -> Index {
        self.stable
    }

    /// The term of the entry at `index`, if the log knows it (the snapshot's
    /// own position counts; anything before it or after the end does not).
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        self.entry(index).map(|e| e.term)
    }

    fn entry(&self, index: Index) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    /// Whether the entry at `index` has `term`.
    pub fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up
    /// to date as this one (Raft §5.4.1): a later last term wins, and with
    /// equal terms the longer log.
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends entries the leader created; they must follow the last entry.
    pub fn append_as_leader(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            debug_assert_eq!(
                entry.index,
                self.last_index() + 1,
                "leader entries follow the log"
            );
            self.entries.push_back(entry);
        }
    }

    /// Handles an append from the leader: if the entry at `prev_index` has
    /// `prev_term`, the entries are merged in (replacing a conflicting
    /// suffix) and the commit index follows the leader's as far as this
    /// append proves the logs match. Returns the last index of the append,
    /// or `None` if the logs did not match at `prev_index`.
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        leader_commit: Index,
        entries: Vec<Entry>,
    ) -> Option<Index> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as Index;
        let conflict = entries
            .iter()
            .position(|e| !self.match_term(e.index, e.term));
        if let Some(position) = conflict {
            let first_conflict = entries[position].index;
            if first_conflict <= self.committed {
                // Log matching guarantees this cannot happen; a leader
                // asking for it has a broken log. Refuse rather than lose a
                // committed entry.
                tracing::error!(
                    first_conflict,
                    committed = self.committed,
                    "refusing an append that conflicts with committed entries"
                );
                debug_assert!(false, "append conflicts with a committed entry");
                return None;
            }
            self.truncate_and_append(entries.into_iter().skip(position));
        }
        // Only the prefix this append proved equal to the leader's log may be
        // marked committed: entries past `last_new` may still be stale.
        self.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    fn truncate_and_append(&mut self, entries: impl Iterator<Item = Entry>) {
        let mut entries = entries.peekable();
        let Some(first) = entries.peek() else { return };
        let keep = first.index - self.first_index();
        self.entries.truncate(keep as usize);
        // The replaced entries must be rewritten, so durability ends before them.
        self.stable = self.stable.min(first.index - 1);
        self.entries.extend(entries);
    }

    /// Finds, at or below `index`, the last entry whose term is at most
    /// `term`, and returns its index and term. Used on both sides of a
    /// rejected append to skip a whole term of mismatching entries at once.
    /// Below the snapshot the answer is the snapshot position (term known) or
    /// the index with term 0 (unknown).
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Some(t) if t > term => index -= 1,
                Some(t) => return (index, t),
                None => return (index, 0),
            }
        }
    }

    /// Marks everything up to `index` committed. Never moves backwards.
    pub fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            debug_assert!(index <= self.last_index(), "commit {index} beyond the log");
            self.committed = index.min(self.last_index());
        }
    }

    /// Commits up to `index` if the entry there is of `term` (a leader only
    /// commits entries of its own term by counting replicas, Raft §5.4.2).
    pub fn maybe_commit(&mut self, index: Index, term: Term) -> bool {
        if index > self.committed && self.term(index) == Some(term) {
            self.commit_to(index);
            return true;
        }
        false
    }

    /// Entries `low..high`, at most `max_bytes` in total but at least one.
    pub fn slice(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(Error::Compacted(self.snapshot_index));
        }
        let high = high.min(self.last_index() + 1);
        let mut out = Vec::new();
        let mut size = 0;
        for index in low..high {
            let Some(entry) = self.entry(index) else {
                break;
            };
            size += entry.size_bytes();
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    /// Entries not yet handed out for persisting.
    pub fn unstable_entries(&self) -> Vec<Entry> {
        let skip = (self.stable.max(self.snapshot_index) - self.snapshot_index) as usize;
        self.entries.iter().skip(skip).cloned().collect()
    }

    /// Whether anything waits to be persisted.
    pub fn has_unstable(&self) -> bool {
        self.stable < self.last_index() || self.pending_snapshot.is_some()
    }

    /// Records that entries up to `index` with `term` at `index` are durable.
    /// Ignored if the log changed at `index` since it was handed out.
    pub fn stable_to(&mut self, index: Index, term: Term) {
        if index > self.stable && self.term(index) == Some(term) {
            self.stable = index;
        }
    }

    /// The snapshot waiting to be persisted and applied.
    pub fn pending_snapshot(&self) -> Option<&Snapshot> {
        self.pending_snapshot.as_ref()
    }

    /// Records that the pending snapshot at `index` is durable and applied.
    pub fn snapshot_applied(&mut self, index: Index) {
        if self
            .pending_snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == index)
        {
            self.pending_snapshot = None;
            self.applied = self.applied.max(index);
        }
    }

    /// Committed entries ready to be applied, within the given limits.
    pub fn next_committed_entries(&self, max_count: usize, max_bytes: u64) -> Vec<Entry> {
        if self.pending_snapshot.is_some() || self.committed <= self.applied {
            return Vec::new();
        }
        let mut out = self
            .slice(self.applied + 1, self.committed + 1, max_bytes)
            .unwrap_or_default();
        out.truncate(max_count);
        out
    }

    /// Whether committed entries wait to be applied.
    pub fn has_next_committed_entries(&self) -> bool {
        self.pending_snapshot.is_none() && self.committed > self.applied
    }

    /// Records that entries up to `index` were applied.
    pub fn applied_to(&mut self, index: Index) {
        debug_assert!(index <= self.committed, "applied {index} beyond commit");
        self.applied = self.applied.max(index);
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub fn restore_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot_index = snapshot.meta.index;
        self.snapshot_term = snapshot.meta.term;
        self.entries.clear();
        self.committed = snapshot.meta.index;
        self.stable = snapshot.meta.index;
        self.pending_snapshot = Some(snapshot);
    }

    /// Drops entries up to `index` from memory after the application has
    /// made a snapshot covering them.
    pub fn compact_to(&mut self, index: Index) -> Result<()> {
        if index <= self.snapshot_index {
            return Err(Error::SnapshotOutOfDate {
                given: index,
                current: self.snapshot_index,
            });
        }
        if index > self.applied {
            return Err(Error::Compacted(index));
        }
        let Some(term) = self.term(index) else {
            return Err(Error::Compacted(index));
        };
        let drop = (index - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        Ok(())
    }

    /// Sum of the sizes of entries in `low..=high` (for size accounting).
    pub fn size_bytes_between(&self, low: Index, high: Index) -> u64 {
        (low.max(self.first_index())..=high.min(self.last_index()))
            .filter_map(|i| self.entry(i))
            .map(Entry::size_bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::types::EntryKind;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(i as Index + 1, t))
            .collect();
        RaftLog::restore_from(&SnapshotMeta::default(), entries, 0).expect("valid log")
    }

    #[test]
    fn append_replaces_only_the_conflicting_suffix() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        // The leader sends 3..=5 in term 3; index 3 conflicts.
        let last = log.maybe_append(2, 1, 0, vec![entry(3, 3), entry(4, 3), entry(5, 3)]);
        assert_eq!(last, Some(5));
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.stable_index(), 2, "rewritten entries are not durable");
        assert_eq!(log.unstable_entries().len(), 3);
    }

    #[test]
    fn stale_append_does_not_truncate_matching_entries() {
        let mut log = log_with_terms(&[1, 1, 1, 1]);
        // A delayed append carrying only entry 2 must not cut 3 and 4.
        assert_eq!(log.maybe_append(1, 1, 0, vec![entry(2, 1)]), Some(2));
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    fn commit_follows_leader_only_as_far_as_the_append_proves() {
        let mut log = log_with_terms(&[1, 1, 1, 1, 1]);
        // The leader has committed 10 but this append proves only up to 3.
        assert_eq!(log.maybe_append(2, 1, 10, vec![entry(3, 1)]), Some(3));
        assert_eq!(log.committed, 3);
    }

    #[test]
    fn mismatched_prev_is_rejected() {
        let mut log = log_with_terms(&[1, 1, 2]);
        assert_eq!(log.maybe_append(3, 3, 0, vec![entry(4, 3)]), None);
        assert_eq!(log.maybe_append(5, 2, 0, vec![]), None, "beyond the end");
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4, 4]);
        assert_eq!(log.find_conflict_by_term(7, 3), (5, 2));
        assert_eq!(log.find_conflict_by_term(7, 4), (7, 4));
        assert_eq!(log.find_conflict_by_term(5, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(100, 0), (0, 0));
    }

    #[test]
    fn leader_commits_only_its_own_term() {
        let mut log = log_with_terms(&[1, 2, 2]);
        assert!(!log.maybe_commit(3, 3), "entry 3 is of term 2, not 3");
        assert!(log.maybe_commit(3, 2));
        assert_eq!(log.committed, 3);
    }

    #[test]
    fn up_to_date_compares_term_then_length() {
        let log = log_with_terms(&[1, 2, 2]);
        assert!(log.is_up_to_date(1, 3));
        assert!(log.is_up_to_date(3, 2));
        assert!(!log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(10, 1));
    }

    #[test]
    fn compaction_keeps_terms_at_the_boundary() {
        let mut log = log_with_terms(&[1, 1, 2, 3]);
        log.commit_to(4);
        log.applied_to(3);
        assert!(
            log.compact_to(4).is_err(),
            "cannot compact unapplied entries"
        );
        log.compact_to(3).expect("applied entries compact");
        assert_eq!(log.first_index(), 4);
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.term(2), None);
        assert!(matches!(
            log.slice(2, 4, u64::MAX),
            Err(Error::Compacted(3))
        ));
    }

    #[test]
    fn committed_entries_respect_limits() {
        let mut log = log_with_terms(&[1, 1, 1, 1, 1]);
        log.commit_to(5);
        assert_eq!(log.next_committed_entries(2, u64::MAX).len(), 2);
        assert_eq!(
            log.next_committed_entries(10, 1).len(),
            1,
            "at least one entry"
        );
        log.applied_to(5);
        assert!(log.next_committed_entries(10, u64::MAX).is_empty());
    }

    #[test]
    fn restore_refuses_gaps_and_commit_beyond_end() {
        let gap = vec![entry(1, 1), entry(3, 1)];
        assert!(RaftLog::restore_from(&SnapshotMeta::default(), gap, 0).is_err());
        assert!(RaftLog::restore_from(&SnapshotMeta::default(), vec![entry(1, 1)], 2).is_err());
    }

    #[test]
    fn stable_to_ignores_replaced_entries() {
        let mut log = log_with_terms(&[1]);
        log.append_as_leader(vec![entry(2, 1)]);
        log.maybe_append(1, 1, 0, vec![entry(2, 2)]);
        log.stable_to(2, 1);
        assert_eq!(log.stable_index(), 1, "entry 2 of term 1 was replaced");
        log.stable_to(2, 2);
        assert_eq!(log.stable_index(), 2);
    }
}
