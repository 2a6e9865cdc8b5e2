//! The key index: for every key, the revisions at which it changed, kept in memory.
//!
//! `kvs` holds changes by revision (see `layout`); this index answers which revision of a
//! key is visible at a given store revision, and which keys a range holds. It keeps no
//! values, only each change's revision and whether it was a deletion, plus the create
//! revision, version and lease of each key's last put, so that a put finds what it needs
//! to write its record without reading the one before (as etcd's key index does). It is built by one
//! scan of `kvs` when the store opens or installs a snapshot, then kept in step by the write
//! path.
//!
//! Readers look at it together with a redb read transaction whose revision may be older
//! than the index: every lookup takes the revision to answer at, and changes above it are
//! not seen. What the index may lose is what compaction drops, and what an install replaces;
//! [`KeyIndex::serves`] tells a reader whether its transaction still matches the index.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::ReadableTable;

use crate::error::Result;
use crate::layout::record_generation;

/// One change of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub main: i64,
    pub sub: i64,
    pub tombstone: bool,
}

impl Change {
    fn revision(&self) -> (i64, i64) {
        (self.main, self.sub)
    }
}

/// What a key's last put made of it: what the next put of the key carries on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Generation {
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// One key's changes, oldest first.
#[derive(Debug)]
struct KeyHistory {
    changes: Vec<Change>,
    /// Of the last change, when that is a put.
    last_put: Generation,
}

/// Every key's changes.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    keys: BTreeMap<Vec<u8>, KeyHistory>,
    /// The compaction revision the index has been compacted to.
    compacted: i64,
    /// The `meta` install count of the state the index describes.
    installs: u64,
}

/// A key visible at some revision, and the revision of its visible change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Visible {
    pub key: Vec<u8>,
    pub main: i64,
    pub sub: i64,
}

impl KeyIndex {
    /// Builds the index of every change in `kvs`, in one scan.
    pub fn build<T>(kvs: &T, compacted: i64, installs: u64) -> Result<KeyIndex>
    where
        T: ReadableTable<(i64, i64), &'static [u8]>,
    {
        let mut index = KeyIndex {
            keys: BTreeMap::new(),
            compacted,
            installs,
        };
        for e in kvs.iter()? {
            let (k, v) = e?;
            let (main, sub) = k.value();
            let (key, put) = record_generation(v.value())?;
            index.record(key, main, sub, put);
        }
        Ok(index)
    }

    /// Number of keys with at least one change kept.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when a reader whose transaction has compaction revision `compact` and install
    /// count `installs` may use this index: same installed state, and nothing that reader
    /// may ask about (revisions at or above its compaction) compacted away.
    pub fn serves(&self, compact: i64, installs: u64) -> bool {
        self.installs == installs && self.compacted <= compact
    }

    /// Adds a change of `key`: a put making it `put`, or a deletion (`None`). Revisions
    /// only grow.
    pub fn record(&mut self, key: &[u8], main: i64, sub: i64, put: Option<Generation>) {
        let change = Change {
            main,
            sub,
            tombstone: put.is_none(),
        };
        let last_put = put.unwrap_or_default();
        match self.keys.get_mut(key) {
            Some(history) => {
                debug_assert!(history
                    .changes
                    .last()
                    .is_none_or(|c| c.revision() < change.revision()));
                history.changes.push(change);
                history.last_put = last_put;
            }
            None => {
                let history = KeyHistory {
                    changes: vec![change],
                    last_put,
                };
                self.keys.insert(key.to_vec(), history);
            }
        }
    }

    /// The change of `key` visible at `rev`: its last change at or below `rev`, if that is
    /// not a deletion.
    pub fn get(&self, key: &[u8], rev: i64) -> Option<(i64, i64)> {
        visible(&self.keys.get(key)?.changes, rev)
    }

    /// What the last change of `key` made of it, if that was a put: the key as the next
    /// write finds it. (For readers at an older revision, use [`KeyIndex::get`].)
    pub fn last_put(&self, key: &[u8]) -> Option<Generation> {
        let history = self.keys.get(key)?;
        let last = history.changes.last()?;
        (!last.tombstone).then_some(history.last_put)
    }

    /// The last change of `key` before revision `(main, sub)`, deletions included.
    pub fn before(&self, key: &[u8], main: i64, sub: i64) -> Option<Change> {
        self.keys
            .get(key)?
            .changes
            .iter()
            .rev()
            .find(|c| c.revision() < (main, sub))
            .copied()
    }

    /// Every key whose last change is a put, with that change's revision, in key order.
    pub fn latest(&self) -> impl Iterator<Item = (&[u8], i64, i64)> + '_ {
        self.keys.iter().filter_map(|(key, history)| {
            let last = history.changes.last()?;
            (!last.tombstone).then_some((key.as_slice(), last.main, last.sub))
        })
    }

    /// Up to `max` keys of `[start, end)` (`end` `None`: no end) visible at `rev`, in key
    /// order, beginning after `after` when given (to go on from an earlier call).
    pub fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        after: Option<&[u8]>,
        rev: i64,
        max: usize,
    ) -> Vec<Visible> {
        let lower = match after {
            Some(a) if a >= start => Bound::Excluded(a),
            _ => Bound::Included(start),
        };
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        if let (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) = (lower, upper) {
            if l >= u {
                return Vec::new();
            }
        }
        let mut out = Vec::new();
        for (key, history) in self.keys.range::<[u8], _>((lower, upper)) {
            if out.len() >= max {
                break;
            }
            if let Some((main, sub)) = visible(&history.changes, rev) {
                out.push(Visible {
                    key: key.clone(),
                    main,
                    sub,
                });
            }
        }
        out
    }

    /// What compaction at `rev` drops: of each key's changes at or below `rev`, all but the
    /// last, and the last too if it is a deletion; less what a compaction at `after`, not
    /// yet made in the index, drops (`i64::MIN`: none). The revisions, for the caller to
    /// delete from `kvs`; the index itself is changed by [`KeyIndex::compact`].
    pub fn compaction_drops(&self, after: i64, rev: i64) -> Vec<(i64, i64)> {
        let mut dropped = Vec::new();
        for KeyHistory { changes, .. } in self.keys.values() {
            let from = dropped_by_compaction(changes, after);
            let to = dropped_by_compaction(changes, rev);
            dropped.extend(changes[from..to.max(from)].iter().map(Change::revision));
        }
        dropped
    }

    /// Drops from the index what [`KeyIndex::compaction_drops`] names; returns how many.
    pub fn compact(&mut self, rev: i64) -> usize {
        let mut dropped = 0;
        self.keys.retain(|_, KeyHistory { changes, .. }| {
            let n = dropped_by_compaction(changes, rev);
            changes.drain(..n);
            dropped += n;
            !changes.is_empty()
        });
        self.compacted = self.compacted.max(rev);
        dropped
    }
}

/// How many of a key's first changes compaction at `rev` drops.
fn dropped_by_compaction(changes: &[Change], rev: i64) -> usize {
    let at_or_below = changes.partition_point(|c| c.main <= rev);
    let keep_last = at_or_below > 0 && !changes[at_or_below - 1].tombstone;
    if keep_last {
        at_or_below - 1
    } else {
        at_or_below
    }
}

fn visible(changes: &[Change], rev: i64) -> Option<(i64, i64)> {
    let n = changes.partition_point(|c| c.main <= rev);
    let last = changes[..n].last()?;
    (!last.tombstone).then_some(last.revision())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(create_revision: i64, version: i64) -> Option<Generation> {
        Some(Generation {
            create_revision,
            version,
            lease: 0,
        })
    }

    fn index() -> KeyIndex {
        let mut i = KeyIndex::default();
        i.record(b"a", 2, 0, put(2, 1));
        i.record(b"b", 3, 0, put(3, 1));
        i.record(b"a", 4, 0, put(2, 2));
        i.record(b"a", 5, 0, None);
        i.record(b"c", 5, 1, put(5, 1));
        i.record(b"a", 6, 0, put(6, 1));
        i
    }

    #[test]
    fn the_last_put_of_a_key_is_what_a_write_finds() {
        let mut i = index();
        assert_eq!(i.last_put(b"a"), put(6, 1));
        assert_eq!(i.last_put(b"b"), put(3, 1));
        assert_eq!(i.last_put(b"zz"), None);
        i.record(b"b", 7, 0, None);
        assert_eq!(i.last_put(b"b"), None, "deleted");
        // Compaction keeps each key's last put, and what it says.
        i.compact(6);
        assert_eq!(i.last_put(b"a"), put(6, 1));
        assert_eq!(i.last_put(b"c"), put(5, 1));
    }

    #[test]
    fn a_key_is_seen_as_of_a_revision() {
        let i = index();
        assert_eq!(i.get(b"a", 1), None);
        assert_eq!(i.get(b"a", 3), Some((2, 0)));
        assert_eq!(i.get(b"a", 4), Some((4, 0)));
        assert_eq!(i.get(b"a", 5), None, "deleted at 5");
        assert_eq!(i.get(b"a", 9), Some((6, 0)));
        assert_eq!(i.get(b"zz", 9), None);
        assert_eq!(i.before(b"a", 6, 0).map(|c| c.tombstone), Some(true));
        assert_eq!(i.before(b"a", 2, 0), None);
    }

    #[test]
    fn ranges_go_in_key_order_and_resume() {
        let i = index();
        let keys = |v: Vec<Visible>| v.into_iter().map(|v| v.key).collect::<Vec<_>>();
        assert_eq!(
            keys(i.range(b"a", None, None, 5, 10)),
            vec![b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            keys(i.range(b"a", Some(b"c"), None, 9, 10)),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(keys(i.range(b"a", None, None, 9, 1)), vec![b"a".to_vec()]);
        assert_eq!(
            keys(i.range(b"a", None, Some(b"a"), 9, 1)),
            vec![b"b".to_vec()]
        );
        assert!(i.range(b"c", Some(b"b"), None, 9, 10).is_empty());
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_above_it_need() {
        let mut i = index();
        let dropped = i.compaction_drops(i64::MIN, 5);
        assert_eq!(i.compact(5), dropped.len());
        // a: 2 and 4 go, the deletion at 5 is its last change at or below 5 and goes too.
        assert_eq!(dropped, vec![(2, 0), (4, 0), (5, 0)]);
        assert_eq!(i.get(b"a", 5), None);
        assert_eq!(i.get(b"a", 6), Some((6, 0)));
        assert_eq!(i.get(b"b", 5), Some((3, 0)));
        assert!(i.serves(5, 0) && !i.serves(4, 0) && !i.serves(5, 1));
        assert_eq!(
            i.compaction_drops(i64::MIN, 6),
            vec![],
            "one change per key is left"
        );
        let mut j = KeyIndex::default();
        j.record(b"x", 2, 0, None);
        assert_eq!(j.compaction_drops(i64::MIN, 3), vec![(2, 0)]);
        assert_eq!(j.compaction_drops(3, 4), vec![], "dropped at 3 already");
        j.compact(3);
        assert_eq!(j.len(), 0);
    }
}
