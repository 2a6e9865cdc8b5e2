//! Alarms and the backend quota, as etcd has them.
//!
//! An alarm is a (member, type) pair in a replicated list: raised and cleared through the
//! Raft log (`Alarm` ACTIVATE / DEACTIVATE), kept in the store's server records (namespace
//! [`ALARMS`]), so every member agrees on it, it survives restarts and travels in
//! snapshots.
//!
//! NOSPACE: a member whose store file reaches `--quota-backend-bytes` raises a NOSPACE
//! alarm for itself, when a write it is asked for would cross the quota and from a
//! periodic check (which catches members that only apply). While any member's NOSPACE is
//! raised, every member refuses at apply time, deterministically, the writes that make the
//! store grow (Put, a txn with a write, LeaseGrant) with `etcdserver: mvcc: database space
//! exceeded`; reads, deletes, lease revocations and compaction go on, so an operator can
//! compact, defragment (`Defragment`) and then disarm (`Alarm` DEACTIVATE). Disarming is
//! always explicit, as in etcd: a store that shrank does not clear the alarm by itself.

use std::time::Duration;

use raftkv_mvcc::{Batch, MvccError, Store};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
use tonic::Status;

use crate::grpc::ServiceContext;
use crate::replicated::replicated_request::Op;

/// Namespace of the alarm list in the store's server records.
pub const ALARMS: &str = "alarm";

/// etcd's estimate of what a key costs on top of its key and value bytes.
const KV_OVERHEAD_BYTES: u64 = 256;
/// etcd's estimate of what a lease costs.
const LEASE_OVERHEAD_BYTES: u64 = 64;

/// How often each member compares its store's size with the quota on its own.
pub const QUOTA_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// `etcdserver: mvcc: database space exceeded` (ResourceExhausted).
pub fn no_space() -> Status {
    Status::resource_exhausted("etcdserver: mvcc: database space exceeded")
}

/// The record key of an alarm: member id, then type, both big endian (so the list reads
/// in member order).
fn record_key(member_id: u64, alarm: i32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&member_id.to_be_bytes());
    key[8..].copy_from_slice(&alarm.to_be_bytes());
    key
}

fn decode_key(key: &[u8]) -> Option<pb::AlarmMember> {
    let member_id = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let alarm = i32::from_be_bytes(key.get(8..12)?.try_into().ok()?);
    Some(pb::AlarmMember { member_id, alarm })
}

fn decode_all(records: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<pb::AlarmMember> {
    records
        .into_iter()
        .filter_map(|(key, _)| decode_key(&key))
        .collect()
}

/// The raised alarms, as last applied, in member order.
pub fn list(store: &Store) -> Result<Vec<pb::AlarmMember>, MvccError> {
    Ok(decode_all(store.aux_scan(ALARMS)?))
}

/// The raised alarms including this batch's changes.
pub fn list_in(batch: &Batch<'_>) -> Result<Vec<pb::AlarmMember>, MvccError> {
    Ok(decode_all(batch.aux_scan(ALARMS)?))
}

/// True when some member's NOSPACE alarm is raised.
pub fn any_nospace(alarms: &[pb::AlarmMember]) -> bool {
    alarms
        .iter()
        .any(|a| a.alarm == pb::AlarmType::Nospace as i32)
}

/// The alarms of `alarm` type, or all of them for NONE (etcd's GET).
pub fn filter(alarms: Vec<pb::AlarmMember>, alarm: i32) -> Vec<pb::AlarmMember> {
    if alarm == pb::AlarmType::None as i32 {
        return alarms;
    }
    alarms.into_iter().filter(|a| a.alarm == alarm).collect()
}

/// Applies a replicated ACTIVATE or DEACTIVATE. As etcd answers: the alarm that changed,
/// or nothing if it was already in the state asked for.
pub fn apply(
    batch: &mut Batch<'_>,
    req: &pb::AlarmRequest,
) -> Result<pb::AlarmResponse, MvccError> {
    let key = record_key(req.member_id, req.alarm);
    let member = pb::AlarmMember {
        member_id: req.member_id,
        alarm: req.alarm,
    };
    let changed = match AlarmAction::try_from(req.action) {
        Ok(AlarmAction::Activate) if req.alarm != pb::AlarmType::None as i32 => {
            let raised = batch.aux_get(ALARMS, &key)?.is_some();
            if !raised {
                batch.aux_put(ALARMS, &key, &[])?;
                tracing::warn!(
                    member = format!("{:x}", req.member_id),
                    alarm = req.alarm,
                    "alarm raised"
                );
            }
            !raised
        }
        Ok(AlarmAction::Deactivate) => {
            let cleared = batch.aux_delete(ALARMS, &key)?;
            if cleared {
                tracing::info!(
                    member = format!("{:x}", req.member_id),
                    alarm = req.alarm,
                    "alarm cleared"
                );
            }
            cleared
        }
        _ => false,
    };
    Ok(pb::AlarmResponse {
        header: None,
        alarms: if changed { vec![member] } else { Vec::new() },
    })
}

/// How an alarm appears in Status's `errors`: etcd prints the message in protobuf's
/// compact text form, trailing space included.
pub fn status_error(alarm: &pb::AlarmMember) -> String {
    let name = pb::AlarmType::try_from(alarm.alarm)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| alarm.alarm.to_string());
    format!("memberID:{} alarm:{} ", alarm.member_id, name)
}

/// What a put adds to the store, by etcd's estimate.
pub fn put_cost(req: &pb::PutRequest) -> u64 {
    KV_OVERHEAD_BYTES + req.key.len() as u64 + req.value.len() as u64
}

/// What a txn adds: its costlier branch's puts (deletes and reads cost nothing).
pub fn txn_cost(req: &pb::TxnRequest) -> u64 {
    let branch = |ops: &[pb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(pb::request_op::Request::RequestPut(put)) => put_cost(put),
                _ => 0,
            })
            .sum()
    };
    branch(&req.success).max(branch(&req.failure))
}

/// What a lease grant adds.
pub fn lease_cost() -> u64 {
    LEASE_OVERHEAD_BYTES
}

/// Raises this member's NOSPACE alarm unless it is raised already.
async fn raise_nospace(ctx: &ServiceContext) -> Result<(), Status> {
    let raised = list(&ctx.store)
        .map_err(|e| crate::status::from_mvcc(&e))?
        .iter()
        .any(|a| a.member_id == ctx.member_id && a.alarm == pb::AlarmType::Nospace as i32);
    if raised {
        return Ok(());
    }
    tracing::warn!(
        quota_bytes = ctx.quota_backend_bytes,
        "the store reached the backend quota; raising NOSPACE"
    );
    let request = pb::AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: ctx.member_id,
        alarm: pb::AlarmType::Nospace as i32,
    };
    ctx.propose(
        &crate::auth::Caller::Server,
        &tonic::metadata::MetadataMap::new(),
        Op::Alarm(request),
    )
    .await
    .map(|_| ())
}

/// etcd's quota check before a write that adds `cost` bytes: refused with NOSPACE (and
/// this member's alarm raised) when the store plus the cost would reach the quota. The
/// store counts the pages it has written, not its file's length (issue 16: redb doubles the
/// file ahead of its pages). A write
/// that adds nothing always passes; the apply-time rule handles raised alarms.
pub async fn check_quota(ctx: &ServiceContext, cost: u64) -> Result<(), Status> {
    if cost == 0 {
        return Ok(());
    }
    let size = ctx
        .store
        .occupied_bytes()
        .map_err(|e| crate::status::from_mvcc(&e))?;
    if size.saturating_add(cost) < ctx.quota_backend_bytes {
        return Ok(());
    }
    if let Err(err) = raise_nospace(ctx).await {
        tracing::warn!(%err, "could not raise the NOSPACE alarm");
    }
    Err(no_space())
}

/// Every `interval`, raises this member's NOSPACE alarm if its store reached the quota:
/// a follower that only applies writes would otherwise never notice. Runs until aborted.
pub async fn run_quota_monitor(ctx: ServiceContext, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let size = match ctx.store.occupied_bytes() {
            Ok(size) => size,
            Err(err) => {
                tracing::warn!(%err, "cannot measure the store");
                continue;
            }
        };
        if size < ctx.quota_backend_bytes {
            continue;
        }
        if let Err(err) = raise_nospace(&ctx).await {
            tracing::debug!(%err, "NOSPACE not raised yet; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_etcds_estimates() {
        let put = pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![0; 100],
            ..Default::default()
        };
        assert_eq!(put_cost(&put), 357);
        let op = |put: &pb::PutRequest| pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put.clone())),
        };
        let delete = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(
                Default::default(),
            )),
        };
        let txn = pb::TxnRequest {
            success: vec![op(&put), delete.clone()],
            failure: vec![op(&put), op(&put)],
            ..Default::default()
        };
        assert_eq!(txn_cost(&txn), 714);
        let deletes_only = pb::TxnRequest {
            success: vec![delete],
            ..Default::default()
        };
        assert_eq!(txn_cost(&deletes_only), 0);
    }

    #[test]
    fn status_errors_read_like_etcds() {
        let alarm = pb::AlarmMember {
            member_id: 42,
            alarm: pb::AlarmType::Nospace as i32,
        };
        assert_eq!(status_error(&alarm), "memberID:42 alarm:NOSPACE ");
        assert_eq!(record_key(42, 1).len(), 12);
        assert_eq!(decode_key(&record_key(42, 1)), Some(alarm));
    }
}
