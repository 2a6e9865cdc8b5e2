//! Reads: point and range reads at the latest or a past revision, over any pair of readable
//! `hist`/`live` tables, so the same code serves read transactions and reads inside a write
//! batch (which see the batch's own writes).

use std::cmp::Ordering;
use std::ops::Bound;

use redb::ReadableTable;

use crate::error::{MvccError, Result};
use crate::key_range::KeyRange;
use crate::layout::{decode_hist, decode_live};
use crate::types::{KeyValue, RangeRequest, RangeResponse, SortOrder, SortTarget};

/// Key type of the `hist` table.
pub(crate) type HistKey = (&'static [u8], i64, i64);

/// A consistent view of the key space: the two tables plus the revisions they are at.
pub(crate) struct View<'a, H, L> {
    /// The `hist` table.
    pub hist: &'a H,
    /// The `live` table.
    pub live: &'a L,
    /// Current store revision (including the writes of the request in progress, if any).
    pub current: i64,
    /// Compaction revision.
    pub compact: i64,
}

/// One kv found by a scan, not yet decoded.
enum Raw<'g> {
    Live(&'g [u8], &'g [u8]),
    Hist(&'g [u8], i64, &'g [u8]),
}

impl Raw<'_> {
    fn decode(&self, with_value: bool) -> Result<KeyValue> {
        match self {
            Raw::Live(k, v) => decode_live(k, v, with_value),
            Raw::Hist(k, main, v) => decode_hist(k, *main, v, with_value)?
                .ok_or_else(|| MvccError::Corruption("scan yielded a tombstone".into())),
        }
    }
}

impl<H, L> View<'_, H, L>
where
    H: ReadableTable<HistKey, &'static [u8]>,
    L: ReadableTable<&'static [u8], &'static [u8]>,
{
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

    /// The kv of `key` at the latest revision.
    pub fn get_latest(&self, key: &[u8], with_value: bool) -> Result<Option<KeyValue>> {
        match self.live.get(key)? {
            Some(g) => Ok(Some(decode_live(key, g.value(), with_value)?)),
            None => Ok(None),
        }
    }

    /// The kv of `key` at `rev` (`None` = latest).
    pub fn get(&self, key: &[u8], rev: Option<i64>, with_value: bool) -> Result<Option<KeyValue>> {
        let Some(rev) = rev else {
            return self.get_latest(key, with_value);
        };
        let lo: (&[u8], i64, i64) = (key, i64::MIN, i64::MIN);
        let hi: (&[u8], i64, i64) = (key, rev, i64::MAX);
        match self.hist.range(lo..=hi)?.next_back() {
            Some(e) => {
                let (k, v) = e?;
                let (_, main, _) = k.value();
                decode_hist(key, main, v.value(), with_value)
            }
            None => Ok(None),
        }
    }

    /// Calls `f` for every existing key of `range` at `rev` (`None` = latest), in key order,
    /// until `f` returns false.
    fn scan(
        &self,
        range: &KeyRange,
        rev: Option<i64>,
        mut f: impl FnMut(Raw<'_>) -> Result<bool>,
    ) -> Result<()> {
        let (start, end): (&[u8], Option<&[u8]>) = match range {
            KeyRange::Empty => return Ok(()),
            KeyRange::Single(k) => {
                // A single key: no scan needed.
                if let Some(kv) = self.get(k, rev, true)? {
                    let live = crate::layout::encode_live(&kv);
                    f(Raw::Live(k, &live))?;
                }
                return Ok(());
            }
            KeyRange::From(s) => (s, None),
            KeyRange::Between(s, e) => (s, Some(e)),
        };
        match rev {
            None => {
                let end_bound = end.map_or(Bound::Unbounded, Bound::Excluded);
                for e in self
                    .live
                    .range::<&[u8]>((Bound::Included(start), end_bound))?
                {
                    let (k, v) = e?;
                    if !f(Raw::Live(k.value(), v.value()))? {
                        break;
                    }
                }
            }
            Some(rev) => {
                let lo: (&[u8], i64, i64) = (start, i64::MIN, i64::MIN);
                let iter = match end {
                    Some(e) => {
                        let hi: (&[u8], i64, i64) = (e, i64::MIN, i64::MIN);
                        self.hist.range(lo..hi)?
                    }
                    None => self.hist.range(lo..)?,
                };
                // Per key, the last entry at or below `rev` wins; emit it when the key changes.
                let mut pending: Option<(Vec<u8>, i64, Vec<u8>)> = None;
                let mut emit = |p: Option<(Vec<u8>, i64, Vec<u8>)>| -> Result<bool> {
                    match p {
                        Some((k, main, v)) if decode_hist(&k, main, &v, false)?.is_some() => {
                            f(Raw::Hist(&k, main, &v))
                        }
                        _ => Ok(true),
                    }
                };
                for e in iter {
                    let (k, v) = e?;
                    let (key, main, _) = k.value();
                    let same_key = pending.as_ref().is_some_and(|p| p.0 == key);
                    if !same_key && !emit(pending.take())? {
                        return Ok(());
                    }
                    if main <= rev {
                        pending = Some((key.to_vec(), main, v.value().to_vec()));
                    }
                }
                emit(pending.take())?;
            }
        }
        Ok(())
    }

    /// Calls `f` with every existing kv of `range` at `rev`, decoded with values.
    pub fn for_each(
        &self,
        range: &KeyRange,
        rev: Option<i64>,
        with_value: bool,
        mut f: impl FnMut(KeyValue) -> Result<()>,
    ) -> Result<()> {
        self.scan(range, rev, |raw| {
            f(raw.decode(with_value)?)?;
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
        self.scan(&range, rev, |raw| {
            count += 1;
            if req.count_only || kvs.len() >= stop {
                return Ok(true);
            }
            let kv = raw.decode(with_value)?;
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
