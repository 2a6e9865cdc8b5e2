//! A bounded in-memory copy of the most recent entries, so that reading the
//! tail of the log (what the leader sends to followers) costs no disk read.

use std::collections::VecDeque;

use raftkv_raft::{Entry, Index};

/// The newest entries of the log, contiguous, at most `max_bytes` of
/// [`Entry::size_bytes`] in total.
#[derive(Debug)]
pub(crate) struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: u64,
    max_bytes: u64,
}

impl EntryCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes: max_bytes as u64,
        }
    }

    /// Adds the entry after the newest one, evicting the oldest entries
    /// beyond the byte budget. An entry that does not follow the newest
    /// empties the cache first, so it always holds a contiguous range.
    pub(crate) fn push(&mut self, entry: &Entry) {
        if self
            .entries
            .back()
            .is_some_and(|e| e.index + 1 != entry.index)
        {
            self.clear();
        }
        if entry.size_bytes() > self.max_bytes {
            self.clear();
            return;
        }
        self.bytes += entry.size_bytes();
        self.entries.push_back(entry.clone());
        while self.bytes > self.max_bytes {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= old.size_bytes(),
                None => break,
            }
        }
    }

    /// Drops entries with index `index` and above.
    pub(crate) fn truncate_from(&mut self, index: Index) {
        while self.entries.back().is_some_and(|e| e.index >= index) {
            if let Some(old) = self.entries.pop_back() {
                self.bytes -= old.size_bytes();
            }
        }
    }

    /// Drops entries with index `index` and below.
    pub(crate) fn drop_through(&mut self, index: Index) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.size_bytes();
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The cached entry `index`, if any.
    pub(crate) fn get(&self, index: Index) -> Option<&Entry> {
        let first = self.entries.front()?.index;
        let i = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(i)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use raftkv_raft::EntryKind;

    use super::*;

    fn entry(index: Index) -> Entry {
        Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![0u8; 76]),
        }
    }

    #[test]
    fn keeps_the_newest_entries_within_budget() {
        let mut cache = EntryCache::new(300);
        for i in 1..=10 {
            cache.push(&entry(i));
        }
        // Each entry is charged 100 bytes: the newest three fit.
        assert!(cache.get(7).is_none());
        assert_eq!(cache.get(8).map(|e| e.index), Some(8));
        assert_eq!(cache.get(10).map(|e| e.index), Some(10));
        cache.truncate_from(9);
        assert!(cache.get(9).is_none());
        cache.push(&entry(9));
        assert_eq!(cache.get(9).map(|e| e.index), Some(9));
        cache.drop_through(8);
        assert!(cache.get(8).is_none());
    }
}
