//! Remaining lease TTLs, checkpointed through Raft.
//!
//! Only the leader keeps lease clocks. Left alone, a new leader would start
//! every clock from the full TTL, so a lease could outlive its TTL by up to
//! a TTL per election (etcd 3.4's behaviour). The leader therefore proposes
//! the time left on long leases every checkpoint interval; a new leader
//! starts each clock from the last checkpoint instead. A keep-alive on a
//! checkpointed lease clears its checkpoint through Raft before it is
//! answered, so a renewed lease is never cut short by an older checkpoint.
//!
//! Checkpoints live in the store's aux records, in the same transaction as
//! the entry that carried them, and travel in snapshots.

use std::collections::HashMap;

use raftkv_mvcc::{Batch, MvccError, Store};
use raftkv_proto::etcdserverpb as pb;

/// Namespace of the checkpoints in the store's aux records.
const REMAINING: &str = "lease_remaining";

/// Records checkpoints: a positive remaining TTL is stored, zero clears it.
/// Checkpoints of leases that no longer exist are ignored. Returns what was
/// applied, as (lease, remaining seconds).
pub fn apply(
    batch: &mut Batch<'_>,
    request: &pb::LeaseCheckpointRequest,
) -> Result<Vec<(i64, i64)>, MvccError> {
    let mut applied = Vec::with_capacity(request.checkpoints.len());
    for checkpoint in &request.checkpoints {
        let id = checkpoint.id;
        let Some(ttl) = batch.lease_ttl(id)? else {
            continue;
        };
        let remaining = checkpoint.remaining_ttl.min(ttl);
        if remaining > 0 && remaining < ttl {
            batch.aux_put(REMAINING, &id.to_be_bytes(), &remaining.to_be_bytes())?;
        } else {
            batch.aux_delete(REMAINING, &id.to_be_bytes())?;
        }
        applied.push((id, remaining));
    }
    Ok(applied)
}

/// Forgets the checkpoint of a revoked lease.
pub fn forget(batch: &mut Batch<'_>, id: i64) -> Result<(), MvccError> {
    batch.aux_delete(REMAINING, &id.to_be_bytes())?;
    Ok(())
}

/// Every checkpointed lease's remaining TTL in seconds.
pub fn remaining(store: &Store) -> Result<HashMap<i64, i64>, MvccError> {
    Ok(store
        .aux_scan(REMAINING)?
        .into_iter()
        .filter_map(|(key, value)| {
            let id = i64::from_be_bytes(key.as_slice().try_into().ok()?);
            let left = i64::from_be_bytes(value.as_slice().try_into().ok()?);
            Some((id, left))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(id: i64, remaining_ttl: i64) -> pb::LeaseCheckpointRequest {
        pb::LeaseCheckpointRequest {
            checkpoints: vec![pb::LeaseCheckpoint { id, remaining_ttl }],
        }
    }

    #[test]
    fn checkpoints_are_kept_cleared_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(raftkv_mvcc::Config::new(dir.path().join("kv.redb"))).unwrap();
        store
            .apply(|batch| {
                batch.begin_entry(1, 1);
                batch.lease_grant(7, 100)?;
                batch.lease_grant(8, 100)?;
                let applied = apply(batch, &checkpoint(7, 40))?;
                assert_eq!(applied, vec![(7, 40)]);
                apply(batch, &checkpoint(8, 60))?;
                // A lease that does not exist is not checkpointed.
                assert!(apply(batch, &checkpoint(9, 5))?.is_empty());
                Ok(())
            })
            .unwrap();
        assert_eq!(
            remaining(&store).unwrap(),
            HashMap::from([(7, 40), (8, 60)])
        );
        store
            .apply(|batch| {
                batch.begin_entry(2, 1);
                // A renewal clears the checkpoint; a revocation forgets it.
                apply(batch, &checkpoint(7, 0))?;
                forget(batch, 8)
            })
            .unwrap();
        assert!(remaining(&store).unwrap().is_empty());
    }
}
