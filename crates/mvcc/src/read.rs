//! Reads: point and range reads at the latest or a past revision. A [`View`] pairs the key
//! index with readable `kvs` and `values` tables, so the same code serves read transactions
//! and reads inside a write batch (which see the batch's own writes).

use std::cmp::Ordering;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use redb::ReadableTable;

use crate::error::{MvccError, Result};
use crate::index::{KeyIndex, Visible};
use crate::key_range::KeyRange;
use crate::layout::{decode_stored, ValuesKey};
use crate::types::{KeyValue, RangeRequest, RangeResponse, SortOrder, SortTarget};

/// Key type of the `kvs` table: (main, sub) revision.
pub(crate) type KvsKey = (i64, i64);

/// Keys taken from the index per lock: a long scan lets writers in between chunks.
const KEYS_PER_CHUNK: usize = 256;

/// A consistent view of the key space: `kvs` and `values`, the key index, and the revisions
/// they are at.
pub(crate) struct View<'a, K, V> {
    /// The `kvs` table.
    pub kvs: &'a K,
    /// The `values` table (chunks of split values).
    pub values: &'a V,
    /// The store's key index.
    pub index: &'a RwLock<KeyIndex>,
    /// Current store revision (including the writes of the request in progress, if any).
    pub current: i64,
    /// Compaction revision.
    pub compact: i64,
    /// Snapshot installs of the state read (see [`KeyIndex::serves`]).
    pub installs: u64,
}

/// Reads the key index, poisoning ignored: a panic cannot leave a half-made change in it
/// (each change is one push or one removal).
pub(crate) fn read_index(index: &RwLock<KeyIndex>) -> RwLockReadGuard<'_, KeyIndex> {
    index.read().unwrap_or_else(PoisonError::into_inner)
}

impl<K, V> View<'_, K, V>
where
    K: ReadableTable<KvsKey, &'static [u8]>,
    V: ReadableTable<ValuesKey, &'static [u8]>,
{
    /// The index, if it still describes this view's state; else [`MvccError::ReadRaced`]
    /// (a compaction or an install committed after the view was taken: read again).
    pub(crate) fn index(&self) -> Result<RwLockReadGuard<'_, KeyIndex>> {
        let index = read_index(self.index);
        if index.serves(self.compact, self.installs) {
            Ok(index)
        } else {
            Err(MvccError::ReadRaced)
        }
    }

    /// Checks a requested revision: `<= 0` is latest (`None`), else must be uncompacted and
    /// not in the future. The current revision itself is served as latest.
    pub fn resolve_rev(&self, revision: i64) -> Result<Option<i64>> {
        if revision <= 0 || revision == self.current {
            return Ok(None);
        }
        if revision > self.current {
            return Err(MvccError::FutureRev);
        }
        if revision < self.compact {
            return Err(MvccError::Compacted);
        }
        Ok(Some(revision))
    }

    /// The kv stored at revision `(main, sub)`, which the index says is a put.
    pub fn fetch(&self, main: i64, sub: i64, with_value: bool) -> Result<KeyValue> {
        let record = self.kvs.get((main, sub))?.ok_or_else(|| {
            MvccError::Corruption(format!(
                "the key index names revision {main}.{sub}, not stored"
            ))
        })?;
        decode_stored(self.values, (main, sub), record.value(), with_value)?.ok_or_else(|| {
            MvccError::Corruption(format!(
                "the key index names a deletion at {main}.{sub} as a put"
            ))
        })
    }

    /// The kv of `key` at the latest revision.
    pub fn get_latest(&self, key: &[u8], with_value: bool) -> Result<Option<KeyValue>> {
        self.get(key, None, with_value)
    }

    /// The kv of `key` at `rev` (`None` = latest).
    pub fn get(&self, key: &[u8], rev: Option<i64>, with_value: bool) -> Result<Option<KeyValue>> {
        let at = rev.unwrap_or(self.current);
        let found = self.index()?.get(key, at);
        match found {
            Some((main, sub)) => Ok(Some(self.fetch(main, sub, with_value)?)),
            None => Ok(None),
        }
    }

    /// Calls `f` for every existing key of `range` at `rev` (`None` = latest), in key order,
    /// until `f` returns false.
    fn scan(
        &self,
        range: &KeyRange,
        rev: Option<i64>,
        mut f: impl FnMut(Visible) -> Result<bool>,
    ) -> Result<()> {
        let at = rev.unwrap_or(self.current);
        let (start, end): (&[u8], Option<&[u8]>) = match range {
            KeyRange::Empty => return Ok(()),
            KeyRange::Single(k) => {
                let found = self.index()?.get(k, at);
                if let Some((main, sub)) = found {
                    f(Visible {
                        key: k.clone(),
                        main,
                        sub,
                    })?;
                }
                return Ok(());
            }
            KeyRange::From(s) => (s, None),
            KeyRange::Between(s, e) => (s, Some(e)),
        };
        let mut after: Option<Vec<u8>> = None;
        loop {
            let chunk = self
                .index()?
                .range(start, end, after.as_deref(), at, KEYS_PER_CHUNK);
            let full = chunk.len() == KEYS_PER_CHUNK;
            after = chunk.last().map(|v| v.key.clone());
            for visible in chunk {
                if !f(visible)? {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Calls `f` with every existing kv of `range` at `rev`, decoded with values.
    pub fn for_each(
        &self,
        range: &KeyRange,
        rev: Option<i64>,
        with_value: bool,
        mut f: impl FnMut(KeyValue) -> Result<()>,
    ) -> Result<()> {
        self.scan(range, rev, |v| {
            f(self.fetch(v.main, v.sub, with_value)?)?;
            Ok(true)
        })
    }

    /// etcd's Range.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        if req.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        let rev = self.resolve_rev(req.revision)?;
        let range = KeyRange::new(&req.key, &req.range_end);
        let target = req.sort_target;
        // etcd: NONE means key order for the key target and ascending for any other.
        let order = match req.sort_order {
            SortOrder::None => SortOrder::Ascend,
            o => o,
        };
        let key_ascending = target == SortTarget::Key && order == SortOrder::Ascend;
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let limit = usize::try_from(req.limit.max(0)).unwrap_or(usize::MAX);
        // Past `stop` kvs nothing more is kept; only the count goes on.
        let stop = if key_ascending && !filtered && limit > 0 {
            limit.saturating_add(1)
        } else {
            usize::MAX
        };
        let with_value = !req.keys_only || target == SortTarget::Value;
        let mut count: i64 = 0;
        let mut kvs = Vec::new();
        self.scan(&range, rev, |v| {
            count += 1;
            if req.count_only || kvs.len() >= stop {
                return Ok(true);
            }
            let kv = self.fetch(v.main, v.sub, with_value)?;
            if passes_filters(req, &kv) {
                kvs.push(kv);
            }
            Ok(true)
        })?;
        if req.count_only {
            return Ok(RangeResponse {
                revision: self.current,
                kvs: Vec::new(),
                more: false,
                count,
            });
        }
        sort_kvs(&mut kvs, target, order);
        let mut more = false;
        if limit > 0 && kvs.len() > limit {
            kvs.truncate(limit);
            more = true;
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        Ok(RangeResponse {
            revision: self.current,
            kvs,
            more,
            count,
        })
    }
}

fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
}

/// Sorts kvs (given in key order) by `target`; ties keep key order (a stable sort), so results
/// are deterministic across nodes.
pub(crate) fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match (target, order) {
        (SortTarget::Key, SortOrder::Descend) => kvs.reverse(),
        (SortTarget::Key, _) => {}
        (_, SortOrder::Descend) => kvs.sort_by(|a, b| cmp(b, a)),
        _ => kvs.sort_by(cmp),
    }
}
