//! The write path: a [`Batch`] is one redb write transaction applying any number of raft
//! entries, each made of requests (put, delete, txn, compact, lease grant/revoke).
//!
//! Revision rule (etcd's): every request that changes something gets exactly one new
//! revision, `current + 1`, shared by all its changes with sub-revisions 0, 1, 2, ...; a
//! request that changes nothing leaves the revision alone.
//!
//! Idempotence: [`Batch::begin_entry`] refuses an index at or below the applied index, and the
//! applied index is written in the same redb transaction as the data, so an entry is applied
//! exactly once however often the raft log is replayed.

use std::sync::{PoisonError, RwLock};

use redb::{ReadableTable, Table, WriteTransaction};

use crate::error::{MvccError, Result};
use crate::index::{Generation, KeyIndex};
use crate::key_range::KeyRange;
use crate::layout::{
    encode_tombstone, store_put, ValuesKey, AUX, KVS, LEASES, LEASE_KEYS, META, META_APPLIED_INDEX,
    META_APPLIED_TERM, META_COMPACT, META_INSTALLS, META_REV, VALUES,
};
use crate::read::{KvsKey, View};
use crate::types::{
    AppliedIndex, DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyValue, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

/// Reads a `meta` counter, 0 when absent.
pub(crate) fn meta_get<T: ReadableTable<&'static str, u64>>(t: &T, name: &str) -> Result<u64> {
    Ok(t.get(name)?.map(|g| g.value()).unwrap_or(0))
}

/// Converts a stored u64 counter to a revision.
pub(crate) fn to_rev(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| MvccError::Corruption(format!("revision {v} out of range")))
}

type KvsTable<'t> = Table<'t, KvsKey, &'static [u8]>;
type ValuesTable<'t> = Table<'t, ValuesKey, &'static [u8]>;

/// One change to store: a put (the kv written and what it makes of its key), or the
/// deletion of a key.
enum Change<'a> {
    Put(&'a KeyValue, Generation),
    Delete(&'a [u8]),
}

/// Writes applied in one redb transaction. Obtained from [`crate::Store::apply`].
///
/// Each change goes to `kvs` and, right after, to the store's key index, so that later
/// requests of the batch see it; readers of older transactions do not, as they read the
/// index at their own revision. If the batch is not committed, the store rebuilds the index.
/// A compaction's changes to the index wait for the commit (the batch's `compacted_to`),
/// since readers of older transactions may still need what it drops.
pub struct Batch<'t> {
    pub(crate) kvs: KvsTable<'t>,
    pub(crate) values: ValuesTable<'t>,
    pub(crate) index: &'t RwLock<KeyIndex>,
    pub(crate) leases: Table<'t, i64, i64>,
    pub(crate) lease_keys: Table<'t, (i64, &'static [u8]), ()>,
    aux: Table<'t, (&'static str, &'static [u8]), &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    /// Revision of the last finished request.
    pub(crate) current: i64,
    pub(crate) compact: i64,
    installs: u64,
    applied: AppliedIndex,
    entry_open: bool,
    /// Changes made so far by the request in progress (its next sub-revision).
    pub(crate) sub: i64,
    pub(crate) max_txn_ops: usize,
    events: Option<Vec<Event>>,
    /// Whether recorded events carry the kv before each change (it costs a read per put).
    /// Set only by [`Batch::record_events`], so it implies `events` is on.
    events_prev_kv: bool,
    fatal: Option<String>,
    /// Whether the key index was changed (it must be rebuilt if the batch is dropped).
    pub(crate) index_changed: bool,
    /// The revision this batch compacted to, for the index to follow after the commit.
    pub(crate) compacted_to: Option<i64>,
}

impl<'t> Batch<'t> {
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        index: &'t RwLock<KeyIndex>,
        max_txn_ops: usize,
    ) -> Result<Batch<'t>> {
        let meta = txn.open_table(META)?;
        let current = to_rev(meta_get(&meta, META_REV)?)?;
        let compact = to_rev(meta_get(&meta, META_COMPACT)?)?;
        let applied = AppliedIndex {
            index: meta_get(&meta, META_APPLIED_INDEX)?,
            term: meta_get(&meta, META_APPLIED_TERM)?,
        };
        let installs = meta_get(&meta, META_INSTALLS)?;
        Ok(Batch {
            kvs: txn.open_table(KVS)?,
            values: txn.open_table(VALUES)?,
            index,
            leases: txn.open_table(LEASES)?,
            lease_keys: txn.open_table(LEASE_KEYS)?,
            aux: txn.open_table(AUX)?,
            meta,
            current,
            compact,
            installs,
            applied,
            entry_open: false,
            sub: 0,
            max_txn_ops,
            events: None,
            events_prev_kv: false,
            fatal: None,
            index_changed: false,
            compacted_to: None,
        })
    }

    /// Starts raft entry `index`. Returns false (and refuses writes until the next accepted
    /// entry) when the entry is already applied, which is how replay after a crash skips
    /// entries. Entries that carry no KV request (no-ops, conf changes) should be begun too,
    /// so the applied index covers them.
    pub fn begin_entry(&mut self, index: u64, term: u64) -> bool {
        if index <= self.applied.index {
            tracing::debug!(
                index,
                applied = self.applied.index,
                "skipping applied entry"
            );
            self.entry_open = false;
            return false;
        }
        self.applied = AppliedIndex { index, term };
        self.entry_open = true;
        true
    }

    /// The applied index including entries begun in this batch.
    pub fn applied_index(&self) -> AppliedIndex {
        self.applied
    }

    /// The store revision including this batch's writes so far.
    pub fn current_revision(&self) -> i64 {
        self.current
    }

    /// The compaction revision including this batch's compactions.
    pub fn compact_revision(&self) -> i64 {
        self.compact
    }

    /// Starts recording [`Event`]s for watchers (off by default: it copies every kv).
    /// With `prev_kv` false, events leave [`Event::prev_kv`] out: a put then reads no
    /// record but its own key's index entry.
    pub fn record_events(&mut self, prev_kv: bool) {
        if self.events.is_none() {
            self.events = Some(Vec::new());
        }
        self.events_prev_kv |= prev_kv;
    }

    /// Takes the events recorded so far, in revision order.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// A read view that sees this batch's writes.
    pub(crate) fn view(&self) -> View<'_, KvsTable<'t>, ValuesTable<'t>> {
        View {
            kvs: &self.kvs,
            values: &self.values,
            index: self.index,
            current: self.writing_rev_if_changed(),
            compact: self.compact,
            installs: self.installs,
        }
    }

    /// Stores one change: a put's record in `kvs` (and its value's chunks in `values`) or a
    /// tombstone, then its revision in the key index.
    fn store_change(&mut self, (main, sub): KvsKey, change: Change<'_>) -> Result<()> {
        let (key, put) = match change {
            Change::Put(kv, generation) => {
                store_put(&mut self.kvs, &mut self.values, (main, sub), kv)?;
                (kv.key.as_slice(), Some(generation))
            }
            Change::Delete(key) => {
                self.kvs
                    .insert((main, sub), encode_tombstone(key).as_slice())?;
                (key, None)
            }
        };
        self.index_changed = true;
        self.index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .record(key, main, sub, put);
        Ok(())
    }

    /// What the key's last change made of it, if it exists: from the index, which the
    /// batch keeps up to date with its own writes.
    fn last_put(&self, key: &[u8]) -> Option<Generation> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last_put(key)
    }

    /// The revision of the request in progress, or the current one if it changed nothing yet.
    fn writing_rev_if_changed(&self) -> i64 {
        if self.sub > 0 {
            self.current + 1
        } else {
            self.current
        }
    }

    /// Remembers a fatal error so that the batch cannot be committed after it.
    pub(crate) fn check<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            if e.is_fatal() {
                self.fatal = Some(e.to_string());
            }
        }
        r
    }

    fn require_entry(&self) -> Result<()> {
        if self.entry_open {
            Ok(())
        } else {
            Err(MvccError::NoEntry)
        }
    }

    /// Starts a request: its changes will share revision `current + 1`.
    pub(crate) fn begin_request(&mut self) -> Result<()> {
        self.require_entry()?;
        self.sub = 0;
        Ok(())
    }

    /// Ends a request: bumps the revision if it changed anything.
    pub(crate) fn end_request(&mut self) {
        if self.sub > 0 {
            self.current += 1;
            self.sub = 0;
        }
    }

    /// Reads inside the batch (sees its writes).
    pub fn range(&mut self, req: &RangeRequest) -> Result<RangeResponse> {
        let r = self.view().range(req);
        self.check(r)
    }

    /// etcd's Put: one new revision.
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        self.begin_request()?;
        let r = self.check_put(req).and_then(|()| self.put_in_request(req));
        self.end_request();
        let mut resp = self.check(r)?;
        resp.revision = self.current;
        Ok(resp)
    }

    /// etcd's DeleteRange: one new revision if anything was deleted.
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.begin_request()?;
        let r = if req.key.is_empty() {
            Err(MvccError::EmptyKey)
        } else {
            self.delete_in_request(&KeyRange::new(&req.key, &req.range_end), req.prev_kv)
        };
        self.end_request();
        let mut resp = self.check(r)?;
        resp.revision = self.current;
        Ok(resp)
    }

    /// etcd's Txn: one new revision if any branch op changed something.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        self.begin_request()?;
        let r = crate::txn::apply_txn(self, req);
        self.end_request();
        let mut resp = self.check(r)?;
        resp.revision = self.current;
        Ok(resp)
    }

    /// etcd's Compact: drops history below `revision` (see the `compaction` module). Does not
    /// change the store revision. Returns the number of history entries removed.
    pub fn compact(&mut self, revision: i64) -> Result<u64> {
        self.require_entry()?;
        let r = crate::compaction::compact(self, revision);
        self.check(r)
    }

    /// Reads a server record written in this or an earlier batch.
    pub fn aux_get(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.aux.get((namespace, key))?.map(|v| v.value().to_vec()))
    }

    /// Writes a server record as part of the current entry. Records make no
    /// revision and are not visible to KV reads; they travel in snapshots.
    pub fn aux_put(&mut self, namespace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.require_entry()?;
        let r = self
            .aux
            .insert((namespace, key), value)
            .map(|_| ())
            .map_err(MvccError::from);
        self.check(r)
    }

    /// Deletes a server record as part of the current entry; returns
    /// whether it existed.
    pub fn aux_delete(&mut self, namespace: &str, key: &[u8]) -> Result<bool> {
        self.require_entry()?;
        let r = self
            .aux
            .remove((namespace, key))
            .map(|v| v.is_some())
            .map_err(MvccError::from);
        self.check(r)
    }

    /// Every record of a namespace, in key order.
    pub fn aux_scan(&self, namespace: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        crate::store::scan_aux(&self.aux, namespace)
    }

    /// The TTL lease `id` was granted with, if it exists.
    pub fn lease_ttl(&self, id: i64) -> Result<Option<i64>> {
        Ok(self.leases.get(id)?.map(|ttl| ttl.value()))
    }

    /// Grants lease `id` with `ttl` seconds.
    pub fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<()> {
        self.require_entry()?;
        let r = (|| {
            if self.leases.get(id)?.is_some() {
                return Err(MvccError::LeaseExists);
            }
            self.leases.insert(id, ttl)?;
            Ok(())
        })();
        self.check(r)
    }

    /// Revokes lease `id`, deleting all its keys at one revision (none if it has no keys).
    pub fn lease_revoke(&mut self, id: i64) -> Result<DeleteRangeResponse> {
        self.begin_request()?;
        let r = self.lease_revoke_in_request(id);
        self.end_request();
        let mut resp = self.check(r)?;
        resp.revision = self.current;
        Ok(resp)
    }

    /// The keys attached to lease `id` including this batch's changes, in
    /// key order.
    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>> {
        let lo: (i64, &[u8]) = (id, &[]);
        let mut keys = Vec::new();
        for e in self.lease_keys.range(lo..)? {
            let (k, _) = e?;
            let (lease, key) = k.value();
            if lease != id {
                break;
            }
            keys.push(key.to_vec());
        }
        Ok(keys)
    }

    fn lease_revoke_in_request(&mut self, id: i64) -> Result<DeleteRangeResponse> {
        if self.leases.remove(id)?.is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        let keys = self.lease_keys(id)?;
        let mut resp = DeleteRangeResponse::default();
        for key in keys {
            let r = self.delete_in_request(&KeyRange::Single(key), false)?;
            resp.deleted += r.deleted;
        }
        Ok(resp)
    }

    /// Validates a put against the state before it (etcd's order of checks).
    pub(crate) fn check_put(&self, req: &PutRequest) -> Result<()> {
        check_put_static(req)?;
        if (req.ignore_value || req.ignore_lease) && self.last_put(&req.key).is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if req.lease != 0 && self.leases.get(req.lease)?.is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    /// Writes a validated put at the revision of the request in progress.
    pub(crate) fn put_in_request(&mut self, req: &PutRequest) -> Result<PutResponse> {
        let before = self.last_put(&req.key);
        // The record before is read only when something asks for its value.
        let prev = if before.is_some() && (req.prev_kv || req.ignore_value || self.events_prev_kv) {
            self.view().get_latest(&req.key, true)?
        } else {
            None
        };
        let main = self.current + 1;
        let sub = self.sub;
        let (create_revision, version) = match before {
            Some(b) => (b.create_revision, b.version + 1),
            None => (main, 1),
        };
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let prev_lease = before.map_or(0, |b| b.lease);
        let lease = if req.ignore_lease {
            prev_lease
        } else {
            req.lease
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision,
            mod_revision: main,
            version,
            value,
            lease,
        };
        let key = req.key.as_slice();
        let generation = Generation {
            create_revision,
            version,
            lease,
        };
        self.store_change((main, sub), Change::Put(&kv, generation))?;
        if prev_lease != lease {
            if prev_lease != 0 {
                self.lease_keys.remove((prev_lease, key))?;
            }
            if lease != 0 {
                self.lease_keys.insert((lease, key), ())?;
            }
        }
        self.sub += 1;
        let prev_kv = if req.prev_kv { prev.clone() } else { None };
        if let Some(events) = &mut self.events {
            events.push(Event {
                kind: EventKind::Put,
                kv,
                prev_kv: prev,
            });
        }
        Ok(PutResponse {
            revision: 0,
            prev_kv,
        })
    }

    /// Deletes every existing key of `range` at the revision of the request in progress.
    pub(crate) fn delete_in_request(
        &mut self,
        range: &KeyRange,
        want_prev: bool,
    ) -> Result<DeleteRangeResponse> {
        let with_value = want_prev || self.events_prev_kv;
        let mut victims = Vec::new();
        self.view().for_each(range, None, with_value, |kv| {
            victims.push(kv);
            Ok(())
        })?;
        let main = self.current + 1;
        for kv in &victims {
            let key = kv.key.as_slice();
            let sub = self.sub;
            self.store_change((main, sub), Change::Delete(key))?;
            if kv.lease != 0 {
                self.lease_keys.remove((kv.lease, key))?;
            }
            self.sub += 1;
            if let Some(events) = &mut self.events {
                events.push(Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: kv.key.clone(),
                        mod_revision: main,
                        ..KeyValue::default()
                    },
                    prev_kv: self.events_prev_kv.then(|| kv.clone()),
                });
            }
        }
        Ok(DeleteRangeResponse {
            revision: 0,
            deleted: victims.len() as i64,
            prev_kvs: if want_prev { victims } else { Vec::new() },
        })
    }

    /// Writes the counters; called once before commit.
    pub(crate) fn finish(mut self) -> Result<()> {
        if let Some(msg) = self.fatal.take() {
            return Err(MvccError::Corruption(format!(
                "batch not committed after a fatal error: {msg}"
            )));
        }
        debug_assert_eq!(self.sub, 0, "a request was left open");
        self.meta.insert(META_REV, rev_to_u64(self.current))?;
        self.meta.insert(META_COMPACT, rev_to_u64(self.compact))?;
        self.meta.insert(META_APPLIED_INDEX, self.applied.index)?;
        self.meta.insert(META_APPLIED_TERM, self.applied.term)?;
        Ok(())
    }
}

fn rev_to_u64(rev: i64) -> u64 {
    // Revisions start at 1 and only grow: never negative.
    debug_assert!(rev >= 0);
    rev.max(0) as u64
}

/// The checks of a put that need no state (etcd's `checkPutRequest`).
pub(crate) fn check_put_static(req: &PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}
