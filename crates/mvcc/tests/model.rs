//! Model-based test: a plain in-memory model of etcd's revisions (one full map per revision)
//! against the store. Random puts, deletes, txns (with compares and nested txns), lease
//! revokes, compactions, reopens and reads (point and range, limit, sort, count, filters, at
//! random revisions including compacted and future ones) must give the same answers and the
//! same errors.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use raftkv_mvcc::*;

type Map = BTreeMap<Vec<u8>, KeyValue>;

/// The model: `history[r - 1]` is the key space at revision `r`.
struct Model {
    history: Vec<Map>,
    compact: i64,
    leases: BTreeSet<i64>,
}

type R<T> = std::result::Result<T, String>;
/// A delete's (key, range_end).
type Interval = (Vec<u8>, Vec<u8>);

fn range_of(key: &[u8], end: &[u8]) -> impl Fn(&[u8]) -> bool {
    let (key, end) = (key.to_vec(), end.to_vec());
    move |k: &[u8]| {
        if end.is_empty() {
            k == key.as_slice()
        } else if end == [0] {
            k >= key.as_slice()
        } else {
            k >= key.as_slice() && k < end.as_slice()
        }
    }
}

impl Model {
    fn new() -> Model {
        Model {
            history: vec![Map::new()],
            compact: 0,
            leases: [1, 2].into_iter().collect(),
        }
    }

    fn current(&self) -> i64 {
        self.history.len() as i64
    }

    fn latest(&self) -> &Map {
        self.history.last().unwrap()
    }

    fn range_in(&self, state: &Map, req: &RangeRequest, resp_rev: i64) -> R<RangeResponse> {
        let inr = range_of(&req.key, &req.range_end);
        let all: Vec<KeyValue> = state.values().filter(|kv| inr(&kv.key)).cloned().collect();
        let count = all.len() as i64;
        if req.count_only {
            return Ok(RangeResponse {
                revision: resp_rev,
                kvs: vec![],
                more: false,
                count,
            });
        }
        let mut kvs: Vec<KeyValue> = all
            .into_iter()
            .filter(|kv| {
                (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                    && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                    && (req.min_create_revision == 0
                        || kv.create_revision >= req.min_create_revision)
                    && (req.max_create_revision == 0
                        || kv.create_revision <= req.max_create_revision)
            })
            .collect();
        let field = |kv: &KeyValue| -> (i64, Vec<u8>) {
            match req.sort_target {
                SortTarget::Key => (0, kv.key.clone()),
                SortTarget::Version => (kv.version, vec![]),
                SortTarget::Create => (kv.create_revision, vec![]),
                SortTarget::Mod => (kv.mod_revision, vec![]),
                SortTarget::Value => (0, kv.value.clone()),
            }
        };
        if req.sort_order == SortOrder::Descend {
            if req.sort_target == SortTarget::Key {
                kvs.reverse();
            } else {
                kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv)));
            }
        } else {
            kvs.sort_by_key(field);
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse {
            revision: resp_rev,
            kvs,
            more,
            count,
        })
    }

    fn range(&self, req: &RangeRequest) -> R<RangeResponse> {
        if req.key.is_empty() {
            return Err(MvccError::EmptyKey.to_string());
        }
        let rev = if req.revision <= 0 {
            self.current()
        } else {
            req.revision
        };
        if rev > self.current() {
            return Err(MvccError::FutureRev.to_string());
        }
        if req.revision > 0 && rev < self.compact {
            return Err(MvccError::Compacted.to_string());
        }
        self.range_in(&self.history[rev as usize - 1], req, self.current())
    }

    fn check_put(&self, state: &Map, p: &PutRequest) -> R<()> {
        if p.key.is_empty() {
            return Err(MvccError::EmptyKey.to_string());
        }
        if p.ignore_value && !p.value.is_empty() {
            return Err(MvccError::ValueProvided.to_string());
        }
        if p.ignore_lease && p.lease != 0 {
            return Err(MvccError::LeaseProvided.to_string());
        }
        if (p.ignore_value || p.ignore_lease) && !state.contains_key(&p.key) {
            return Err(MvccError::KeyNotFound.to_string());
        }
        if p.lease != 0 && !self.leases.contains(&p.lease) {
            return Err(MvccError::LeaseNotFound.to_string());
        }
        Ok(())
    }

    fn do_put(state: &mut Map, rev: i64, p: &PutRequest) -> PutResponse {
        let prev = state.get(&p.key).cloned();
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |x| x.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |x| x.version + 1),
            value: match (&prev, p.ignore_value) {
                (Some(x), true) => x.value.clone(),
                _ => p.value.clone(),
            },
            lease: match (&prev, p.ignore_lease) {
                (Some(x), true) => x.lease,
                _ => p.lease,
            },
        };
        state.insert(p.key.clone(), kv);
        PutResponse {
            revision: 0,
            prev_kv: if p.prev_kv { prev } else { None },
        }
    }

    fn do_delete(state: &mut Map, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let inr = range_of(&d.key, &d.range_end);
        let victims: Vec<KeyValue> = state.values().filter(|kv| inr(&kv.key)).cloned().collect();
        for v in &victims {
            state.remove(&v.key);
        }
        DeleteRangeResponse {
            revision: 0,
            deleted: victims.len() as i64,
            prev_kvs: if d.prev_kv { victims } else { vec![] },
        }
    }

    /// Pushes `state` as a new revision if it differs from the latest.
    fn commit(&mut self, state: Map, changed: bool) {
        if changed {
            self.history.push(state);
        }
    }

    fn put(&mut self, p: &PutRequest) -> R<PutResponse> {
        self.check_put(self.latest(), p)?;
        let mut s = self.latest().clone();
        let mut resp = Self::do_put(&mut s, self.current() + 1, p);
        self.commit(s, true);
        resp.revision = self.current();
        Ok(resp)
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> R<DeleteRangeResponse> {
        if d.key.is_empty() {
            return Err(MvccError::EmptyKey.to_string());
        }
        let mut s = self.latest().clone();
        let mut resp = Self::do_delete(&mut s, d);
        self.commit(s, resp.deleted > 0);
        resp.revision = self.current();
        Ok(resp)
    }

    fn compare(state: &Map, c: &Compare) -> bool {
        let inr = range_of(&c.key, &c.range_end);
        let kvs: Vec<&KeyValue> = state.values().filter(|kv| inr(&kv.key)).collect();
        let one = |kv: &KeyValue| {
            let ord = match &c.target {
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::Create(v) => kv.create_revision.cmp(v),
                CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
                CompareTarget::Value(v) => kv.value.cmp(v),
                CompareTarget::Lease(v) => kv.lease.cmp(v),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
                CompareResult::NotEqual => ord.is_ne(),
            }
        };
        if kvs.is_empty() {
            return !matches!(c.target, CompareTarget::Value(_)) && one(&KeyValue::default());
        }
        kvs.into_iter().all(one)
    }

    /// Puts and delete ranges of a branch; Err on a duplicate (etcd's rule, written as sets).
    fn writes(ops: &[RequestOp]) -> R<(BTreeSet<Vec<u8>>, Vec<Interval>)> {
        let dup = || Err(MvccError::DuplicateKey.to_string());
        let mut dels: Vec<Interval> = vec![];
        for op in ops {
            if let RequestOp::DeleteRange(d) = op {
                dels.push((d.key.clone(), d.range_end.clone()));
            }
        }
        let hit =
            |dels: &[(Vec<u8>, Vec<u8>)], k: &[u8]| dels.iter().any(|(a, b)| range_of(a, b)(k));
        let mut puts = BTreeSet::new();
        for op in ops {
            if let RequestOp::Txn(t) = op {
                let (pt, dt) = Self::writes(&t.success)?;
                let (pe, de) = Self::writes(&t.failure)?;
                for k in &pt {
                    if puts.contains(k) || hit(&dels, k) {
                        return dup();
                    }
                }
                puts.extend(pt.iter().cloned());
                for k in &pe {
                    if (puts.contains(k) && !pt.contains(k)) || hit(&dels, k) {
                        return dup();
                    }
                }
                puts.extend(pe);
                dels.extend(dt);
                dels.extend(de);
            }
        }
        for op in ops {
            if let RequestOp::Put(p) = op {
                if !puts.insert(p.key.clone()) || hit(&dels, &p.key) {
                    return dup();
                }
            }
        }
        Ok((puts, dels))
    }

    fn txn_check(&self, pre: &Map, t: &TxnRequest) -> R<()> {
        let ok = t.compare.iter().all(|c| Self::compare(pre, c));
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Put(p) => self.check_put(pre, p)?,
                RequestOp::Txn(n) => self.txn_check(pre, n)?,
                RequestOp::Range(r) if r.revision > self.current() => {
                    return Err(MvccError::FutureRev.to_string())
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn txn_exec(&self, pre: &Map, s: &mut Map, rev: i64, t: &TxnRequest) -> (TxnResponse, bool) {
        let ok = t.compare.iter().all(|c| Self::compare(pre, c));
        let mut changed = false;
        let mut responses = vec![];
        for op in if ok { &t.success } else { &t.failure } {
            responses.push(match op {
                RequestOp::Put(p) => {
                    changed = true;
                    ResponseOp::Put(Self::do_put(s, rev, p))
                }
                RequestOp::DeleteRange(d) => {
                    let r = Self::do_delete(s, d);
                    changed |= r.deleted > 0;
                    ResponseOp::DeleteRange(r)
                }
                RequestOp::Range(r) => ResponseOp::Range(self.range_in(s, r, 0).unwrap()),
                RequestOp::Txn(n) => {
                    let (r, c) = self.txn_exec(pre, s, rev, n);
                    changed |= c;
                    ResponseOp::Txn(r)
                }
            });
        }
        (
            TxnResponse {
                revision: 0,
                succeeded: ok,
                responses,
            },
            changed,
        )
    }

    /// Checks needing no state, on every op of every branch (keys are never empty here).
    fn static_check(t: &TxnRequest) -> R<()> {
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Put(p) if p.ignore_value && !p.value.is_empty() => {
                    return Err(MvccError::ValueProvided.to_string())
                }
                RequestOp::Put(p) if p.ignore_lease && p.lease != 0 => {
                    return Err(MvccError::LeaseProvided.to_string())
                }
                RequestOp::Txn(n) => Self::static_check(n)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn txn(&mut self, t: &TxnRequest) -> R<TxnResponse> {
        Self::static_check(t)?;
        Self::writes(&t.success)?;
        Self::writes(&t.failure)?;
        let pre = self.latest().clone();
        self.txn_check(&pre, t)?;
        let mut s = pre.clone();
        let (mut resp, changed) = self.txn_exec(&pre, &mut s, self.current() + 1, t);
        // Deleting then re-putting can't happen (duplicate rule), so `changed` is exact.
        self.commit(s, changed);
        resp.revision = self.current();
        Ok(resp)
    }

    fn compact(&mut self, rev: i64) -> R<()> {
        if rev <= self.compact {
            return Err(MvccError::Compacted.to_string());
        }
        if rev > self.current() {
            return Err(MvccError::FutureRev.to_string());
        }
        self.compact = rev;
        Ok(())
    }

    fn revoke(&mut self, id: i64) -> R<DeleteRangeResponse> {
        if !self.leases.remove(&id) {
            return Err(MvccError::LeaseNotFound.to_string());
        }
        let mut s = self.latest().clone();
        let before = s.len();
        s.retain(|_, kv| kv.lease != id);
        let deleted = (before - s.len()) as i64;
        self.commit(s, deleted > 0);
        Ok(DeleteRangeResponse {
            revision: self.current(),
            deleted,
            prev_kvs: vec![],
        })
    }
}

#[derive(Clone, Debug)]
enum Write {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(u8),
    Revoke(i64),
}

#[derive(Clone, Debug)]
enum Op {
    /// Writes applied as consecutive raft entries in one batch.
    Batch(Vec<Write>),
    /// A read; `revision` is chosen relative to the current revision.
    Read(RangeRequest, u8),
    Reopen,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec!["a", "b", "c", "d", "e", "ab"])
            .prop_map(|s| s.as_bytes().to_vec()),
        Just(vec![0u8]),
    ]
}

fn range_end(k: Vec<u8>) -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        3 => Just(vec![]),
        1 => Just(vec![0]),
        2 => key(),
    ]
    .prop_map(move |e| (k.clone(), e))
}

fn key_and_end() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    key().prop_flat_map(range_end)
}

fn put() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        prop::sample::select(vec!["", "1", "2", "x"]),
        0i64..4,
        any::<bool>(),
        0u8..8,
    )
        .prop_map(|(key, v, lease, prev_kv, flags)| PutRequest {
            key,
            value: v.into(),
            lease: if lease == 3 { 0 } else { lease },
            prev_kv,
            ignore_value: flags == 1,
            ignore_lease: flags == 2,
        })
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (key_and_end(), any::<bool>()).prop_map(|((key, range_end), prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range() -> impl Strategy<Value = RangeRequest> {
    let sort = (
        prop::sample::select(vec![SortOrder::None, SortOrder::Ascend, SortOrder::Descend]),
        prop::sample::select(vec![
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ]),
    );
    (key_and_end(), 0i64..4, sort, 0u8..4, 0u8..6, 0i64..8).prop_map(
        |((key, range_end), limit, (sort_order, sort_target), flags, filt, f)| RangeRequest {
            key,
            range_end,
            limit,
            revision: 0,
            sort_order,
            sort_target,
            keys_only: flags == 1,
            count_only: flags == 2,
            min_mod_revision: if filt == 1 { f } else { 0 },
            max_mod_revision: if filt == 2 { f } else { 0 },
            min_create_revision: if filt == 3 { f } else { 0 },
            max_create_revision: if filt == 4 { f } else { 0 },
        },
    )
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (0i64..4).prop_map(CompareTarget::Version),
        (0i64..8).prop_map(CompareTarget::Create),
        (0i64..8).prop_map(CompareTarget::Mod),
        prop::sample::select(vec!["", "1", "2", "x"]).prop_map(|v| CompareTarget::Value(v.into())),
        (0i64..3).prop_map(CompareTarget::Lease),
    ];
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ]);
    (key_and_end(), target, result).prop_map(|((key, range_end), target, result)| Compare {
        result,
        target,
        key,
        range_end,
    })
}

fn leaf_op() -> BoxedStrategy<RequestOp> {
    prop_oneof![
        3 => put().prop_map(RequestOp::Put),
        2 => delete().prop_map(RequestOp::DeleteRange),
        1 => range().prop_map(RequestOp::Range),
    ]
    .boxed()
}

fn txn_with(op: BoxedStrategy<RequestOp>) -> impl Strategy<Value = TxnRequest> {
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

fn txn() -> impl Strategy<Value = TxnRequest> {
    let op = prop_oneof![4 => leaf_op(), 1 => txn_with(leaf_op()).prop_map(RequestOp::Txn)].boxed();
    txn_with(op)
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        6 => put().prop_map(Write::Put),
        2 => delete().prop_map(Write::Delete),
        4 => txn().prop_map(Write::Txn),
        1 => any::<u8>().prop_map(Write::Compact),
        1 => (1i64..3).prop_map(Write::Revoke),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(write(), 1..4).prop_map(Op::Batch),
        5 => (range(), any::<u8>()).prop_map(|(r, rev)| Op::Read(r, rev)),
        1 => Just(Op::Reopen),
    ]
}

fn err_str<T>(r: Result<T>) -> R<T> {
    r.map_err(|e| e.to_string())
}

fn run(ops: Vec<Op>, durable_every: u64) -> std::result::Result<(), TestCaseError> {
    let mut t = TestStore::with_durable_every(durable_every);
    let mut m = Model::new();
    t.entry(|b| {
        b.lease_grant(1, 10)?;
        b.lease_grant(2, 10)
    })
    .unwrap();
    for op in ops {
        match op {
            Op::Batch(writes) => {
                let mut got = vec![];
                let start = t.index.load(std::sync::atomic::Ordering::SeqCst);
                t.s()
                    .apply(|b| {
                        for (i, w) in writes.iter().enumerate() {
                            assert!(b.begin_entry(start + 1 + i as u64, 3));
                            got.push(match w {
                                Write::Put(p) => format!("{:?}", err_str(b.put(p))),
                                Write::Delete(d) => format!("{:?}", err_str(b.delete_range(d))),
                                Write::Txn(x) => format!("{:?}", err_str(b.txn(x))),
                                Write::Compact(c) => {
                                    let rev = *c as i64 % (b.current_revision() + 2);
                                    format!("{:?}", err_str(b.compact(rev).map(|_| ())))
                                }
                                Write::Revoke(id) => format!("{:?}", err_str(b.lease_revoke(*id))),
                            });
                        }
                        Ok(())
                    })
                    .unwrap();
                t.index
                    .fetch_add(writes.len() as u64, std::sync::atomic::Ordering::SeqCst);
                for (w, g) in writes.iter().zip(got) {
                    let want = match w {
                        Write::Put(p) => format!("{:?}", m.put(p)),
                        Write::Delete(d) => format!("{:?}", m.delete(d)),
                        Write::Txn(x) => format!("{:?}", m.txn(x)),
                        Write::Compact(c) => {
                            let rev = *c as i64 % (m.current() + 2);
                            format!("{:?}", m.compact(rev))
                        }
                        Write::Revoke(id) => format!("{:?}", m.revoke(*id)),
                    };
                    prop_assert_eq!(g, want, "write {:?}", w);
                }
            }
            Op::Read(mut r, rev) => {
                r.revision = rev as i64 % (m.current() + 3) - 1;
                prop_assert_eq!(err_str(t.s().range(&r)), m.range(&r), "read {:?}", r);
            }
            Op::Reopen => t.reopen(),
        }
        prop_assert_eq!(t.s().current_revision().unwrap(), m.current());
        prop_assert_eq!(t.s().compact_revision().unwrap(), m.compact);
    }
    // Every uncompacted revision reads the same in full.
    for rev in m.compact.max(1)..=m.current() {
        let mut r = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        };
        prop_assert_eq!(
            err_str(t.s().range(&r)),
            m.range(&r),
            "full read at {}",
            rev
        );
        r.revision = 0;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops, 1)?;
    }

    /// The same with the commits of most batches deferred to the next read.
    #[test]
    fn store_matches_model_with_deferred_commits(ops in prop::collection::vec(op(), 1..40)) {
        run(ops, 4)?;
    }
}
