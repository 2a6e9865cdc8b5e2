//! Which permission each request needs, as etcd decides it: the one list
//! both the serving member (before proposing) and every member (when
//! applying) consult.
//!
//! - Range, and every compare and range of a txn: READ on the range.
//! - Put: WRITE on the key; READ too with `prev_kv`; with a lease, WRITE on
//!   every key already attached to it (so no one can tie a key to a lease
//!   whose revocation would delete keys they cannot write).
//! - DeleteRange: WRITE on the range; READ too with `prev_kv`.
//! - Txn: each op of both branches, nested txns included.
//! - LeaseRevoke: WRITE on every key attached to the lease.
//! - Compact: any existing user (raftkv's rule; etcd 3.4 lets anyone).
//! - Auth changes and MemberUpdate: root. Authenticate, LeaseGrant and
//!   Alarm: anyone, as in etcd.

use raftkv_mvcc::MvccError;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::request_op::Request as RequestOp;

use super::{Access, AuthError, AuthState, Caller};
use crate::replicated::replicated_request::Op;

/// Whether `caller` may make the write `op`. `lease_keys` reads the keys
/// attached to a lease (from the store, or from the applying batch).
pub fn authorize(
    state: &AuthState,
    caller: &Caller,
    op: &Op,
    lease_keys: &dyn Fn(i64) -> Result<Vec<Vec<u8>>, MvccError>,
) -> Result<Result<(), AuthError>, MvccError> {
    let user = match caller {
        Caller::Server => return Ok(Ok(())),
        Caller::Client { user } => user.as_deref(),
    };
    if !state.enabled() {
        return Ok(Ok(()));
    }
    let check = Checker {
        state,
        user,
        lease_keys,
    };
    match op {
        Op::Put(req) => check.put(req),
        Op::DeleteRange(req) => Ok(check.delete(req)),
        Op::Txn(req) => check.txn(req),
        Op::Compaction(_) => Ok(state.check_user(user)),
        Op::LeaseRevoke(req) => check.lease_keys_writable(req.id),
        Op::LeaseGrant(_) | Op::Alarm(_) | Op::Authenticate(_) => Ok(Ok(())),
        // Administration; the bookkeeping ops are made by the server only,
        // so a client naming them is refused as any non-root would be.
        Op::MemberUpdate(_)
        | Op::MemberPublish(_)
        | Op::LeaseCheckpoint(_)
        | Op::ForgetOutcomes(_)
        | Op::AuthEnable(_)
        | Op::AuthDisable(_)
        | Op::UserAdd(_)
        | Op::UserDelete(_)
        | Op::UserChangePassword(_)
        | Op::UserGrantRole(_)
        | Op::UserRevokeRole(_)
        | Op::RoleAdd(_)
        | Op::RoleDelete(_)
        | Op::RoleGrantPermission(_)
        | Op::RoleRevokePermission(_) => Ok(state.check_admin(user)),
    }
}

/// Whether `caller` may read `(key, range_end)` (a Range, a watch).
pub fn authorize_read(
    state: &AuthState,
    caller: &Caller,
    key: &[u8],
    range_end: &[u8],
) -> Result<(), AuthError> {
    match caller {
        Caller::Server => Ok(()),
        Caller::Client { user } => state.check(user.as_deref(), Access::Read, key, range_end),
    }
}

/// Whether `caller` may make an administrative call (root only).
pub fn authorize_admin(state: &AuthState, caller: &Caller) -> Result<(), AuthError> {
    match caller {
        Caller::Server => Ok(()),
        Caller::Client { user } => state.check_admin(user.as_deref()),
    }
}

struct Checker<'a> {
    state: &'a AuthState,
    user: Option<&'a str>,
    lease_keys: &'a dyn Fn(i64) -> Result<Vec<Vec<u8>>, MvccError>,
}

impl Checker<'_> {
    fn key(&self, access: Access, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.state.check(self.user, access, key, range_end)
    }

    fn put(&self, req: &pb::PutRequest) -> Result<Result<(), AuthError>, MvccError> {
        if let Err(e) = self.key(Access::Write, &req.key, &[]) {
            return Ok(Err(e));
        }
        if req.lease != 0 {
            if let Err(e) = self.lease_keys_writable(req.lease)? {
                return Ok(Err(e));
            }
        }
        if req.prev_kv {
            return Ok(self.key(Access::Read, &req.key, &[]));
        }
        Ok(Ok(()))
    }

    fn delete(&self, req: &pb::DeleteRangeRequest) -> Result<(), AuthError> {
        self.key(Access::Write, &req.key, &req.range_end)?;
        if req.prev_kv {
            self.key(Access::Read, &req.key, &req.range_end)?;
        }
        Ok(())
    }

    fn txn(&self, req: &pb::TxnRequest) -> Result<Result<(), AuthError>, MvccError> {
        for compare in &req.compare {
            if let Err(e) = self.key(Access::Read, &compare.key, &compare.range_end) {
                return Ok(Err(e));
            }
        }
        for op in req.success.iter().chain(&req.failure) {
            let verdict = match &op.request {
                None => Ok(()),
                Some(RequestOp::RequestRange(range)) => {
                    self.key(Access::Read, &range.key, &range.range_end)
                }
                Some(RequestOp::RequestPut(put)) => self.put(put)?,
                Some(RequestOp::RequestDeleteRange(delete)) => self.delete(delete),
                Some(RequestOp::RequestTxn(nested)) => self.txn(nested)?,
            };
            if let Err(e) = verdict {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    fn lease_keys_writable(&self, lease: i64) -> Result<Result<(), AuthError>, MvccError> {
        for key in (self.lease_keys)(lease)? {
            if let Err(e) = self.key(Access::Write, &key, &[]) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }
}
