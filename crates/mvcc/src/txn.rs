//! Transactions: static validation, compares, the duplicate-key rule and execution.
//!
//! Order of work, as in etcd: (1) static checks (op count per level against `max_txn_ops`,
//! empty keys, put flags); (2) the duplicate-key rule per branch; (3) all compares, nested
//! ones included, are evaluated against the state *before* the txn, fixing which branch of
//! every txn runs (the [`Plan`]); (4) every op of the chosen branches is checked against that
//! state (puts with `ignore_*` on missing keys, unknown leases, ranges at compacted or future
//! revisions); (5) only then are ops executed, so a txn either applies whole or not at all.
//!
//! Deliberate choice: a nested txn's compares see the state before the outer txn, not the
//! outer txn's earlier writes. This keeps validation and execution in agreement, so a txn
//! can never fail half-applied.

use std::collections::BTreeSet;

use redb::ReadableTable;

use crate::batch::{check_put_static, Batch};
use crate::error::{MvccError, Result};
use crate::key_range::KeyRange;
use crate::layout::ValuesKey;
use crate::read::{KvsKey, View};
use crate::types::{
    Compare, CompareResult, CompareTarget, KeyValue, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};

/// Which branch each txn (top-level and nested, in op order) takes.
struct Plan {
    succeeded: bool,
    nested: Vec<Plan>,
}

impl Plan {
    fn branch<'r>(&self, req: &'r TxnRequest) -> &'r [RequestOp] {
        if self.succeeded {
            &req.success
        } else {
            &req.failure
        }
    }
}

/// Applies a txn inside a request of `b` (the caller opens and closes the request).
pub(crate) fn apply_txn(b: &mut Batch<'_>, req: &TxnRequest) -> Result<TxnResponse> {
    validate(req, b.max_txn_ops)?;
    let plan = make_plan(&b.view(), req)?;
    precheck(b, req, &plan)?;
    execute(b, req, &plan)
}

/// Serves a txn whose ops are all ranges from a read view; no revision is created.
pub(crate) fn read_txn<K, V>(
    view: &View<'_, K, V>,
    req: &TxnRequest,
    max_txn_ops: usize,
) -> Result<TxnResponse>
where
    K: ReadableTable<KvsKey, &'static [u8]>,
    V: ReadableTable<ValuesKey, &'static [u8]>,
{
    if !is_read_only(req) {
        return Err(MvccError::NotReadOnly);
    }
    validate(req, max_txn_ops)?;
    let plan = make_plan(view, req)?;
    execute_read(view, req, &plan)
}

/// True when no op anywhere in the txn writes.
pub fn is_read_only(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).all(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Txn(t) => is_read_only(t),
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
    })
}

fn validate(req: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    check_static(req, max_txn_ops)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

/// etcd's `checkTxnRequest`: nested levels get the budget left by their parent.
fn check_static(req: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    let opc = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if opc > max_txn_ops {
        return Err(MvccError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) if r.key.is_empty() => return Err(MvccError::EmptyKey),
            RequestOp::Range(_) => {}
            RequestOp::Put(p) => check_put_static(p)?,
            RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(MvccError::EmptyKey),
            RequestOp::DeleteRange(_) => {}
            RequestOp::Txn(t) => check_static(t, max_txn_ops - opc)?,
        }
    }
    Ok(())
}

/// etcd's `checkIntervals`: within one branch (nested txns included) no key may be put twice
/// or both put and deleted. The same key in a nested txn's then- and else-branch is fine,
/// since only one of them runs. Returns the branch's puts and delete ranges.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<KeyRange>)> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(KeyRange::new(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[KeyRange], k: &[u8]| dels.iter().any(|d| d.contains(k));
    let mut puts = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(MvccError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

fn make_plan<K, V>(view: &View<'_, K, V>, req: &TxnRequest) -> Result<Plan>
where
    K: ReadableTable<KvsKey, &'static [u8]>,
    V: ReadableTable<ValuesKey, &'static [u8]>,
{
    let mut succeeded = true;
    for c in &req.compare {
        if !compare_holds(view, c)? {
            succeeded = false;
            break;
        }
    }
    let branch = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut nested = Vec::new();
    for op in branch {
        if let RequestOp::Txn(t) = op {
            nested.push(make_plan(view, t)?);
        }
    }
    Ok(Plan { succeeded, nested })
}

/// etcd's `applyCompare`: every key of the range must satisfy the compare; an empty range
/// compares a zero kv, except that a value compare on it fails.
fn compare_holds<K, V>(view: &View<'_, K, V>, c: &Compare) -> Result<bool>
where
    K: ReadableTable<KvsKey, &'static [u8]>,
    V: ReadableTable<ValuesKey, &'static [u8]>,
{
    let range = KeyRange::new(&c.key, &c.range_end);
    let with_value = matches!(c.target, CompareTarget::Value(_));
    let mut found = false;
    let mut all = true;
    view.for_each(&range, None, with_value, |kv| {
        found = true;
        all = all && compare_kv(c, &kv);
        Ok(())
    })?;
    if found {
        return Ok(all);
    }
    if with_value {
        return Ok(false);
    }
    Ok(compare_kv(c, &KeyValue::default()))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
        CompareResult::NotEqual => ord != Ordering::Equal,
    }
}

/// Checks every op of the chosen branches against the state before the txn.
fn precheck(b: &Batch<'_>, req: &TxnRequest, plan: &Plan) -> Result<()> {
    let mut nested = plan.nested.iter();
    for op in plan.branch(req) {
        match op {
            RequestOp::Range(r) => {
                b.view().resolve_rev(r.revision)?;
            }
            RequestOp::Put(p) => b.check_put(p)?,
            RequestOp::DeleteRange(_) => {}
            RequestOp::Txn(t) => {
                let p = nested
                    .next()
                    .ok_or_else(|| MvccError::Corruption("txn plan mismatch".into()))?;
                precheck(b, t, p)?;
            }
        }
    }
    Ok(())
}

fn execute(b: &mut Batch<'_>, req: &TxnRequest, plan: &Plan) -> Result<TxnResponse> {
    let mut nested = plan.nested.iter();
    let mut responses = Vec::new();
    for op in plan.branch(req) {
        let resp = match op {
            RequestOp::Range(r) => {
                let mut resp = b.view().range(r)?;
                resp.revision = 0;
                ResponseOp::Range(resp)
            }
            RequestOp::Put(p) => ResponseOp::Put(b.put_in_request(p)?),
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(
                b.delete_in_request(&KeyRange::new(&d.key, &d.range_end), d.prev_kv)?,
            ),
            RequestOp::Txn(t) => {
                let p = nested
                    .next()
                    .ok_or_else(|| MvccError::Corruption("txn plan mismatch".into()))?;
                ResponseOp::Txn(execute(b, t, p)?)
            }
        };
        responses.push(resp);
    }
    Ok(TxnResponse {
        revision: 0,
        succeeded: plan.succeeded,
        responses,
    })
}

fn execute_read<K, V>(view: &View<'_, K, V>, req: &TxnRequest, plan: &Plan) -> Result<TxnResponse>
where
    K: ReadableTable<KvsKey, &'static [u8]>,
    V: ReadableTable<ValuesKey, &'static [u8]>,
{
    let mut nested = plan.nested.iter();
    let mut responses = Vec::new();
    for op in plan.branch(req) {
        let resp = match op {
            RequestOp::Range(r) => {
                let mut resp = view.range(r)?;
                resp.revision = 0;
                ResponseOp::Range(resp)
            }
            RequestOp::Txn(t) => {
                let p = nested
                    .next()
                    .ok_or_else(|| MvccError::Corruption("txn plan mismatch".into()))?;
                ResponseOp::Txn(execute_read(view, t, p)?)
            }
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => return Err(MvccError::NotReadOnly),
        };
        responses.push(resp);
    }
    Ok(TxnResponse {
        revision: view.current,
        succeeded: plan.succeeded,
        responses,
    })
}
