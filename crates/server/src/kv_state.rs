//! The replicated state machine: committed writes applied to the MVCC
//! store, with the exactly-once table of recent outcomes per client.

use std::sync::Arc;

use prost::Message as _;
use raftkv_mvcc::{Batch, MvccError, Store};
use raftkv_raft::{ConfChange, ConfState, Index};

use crate::alarm;
use crate::convert;
use crate::error::NodeError;
use crate::lease_checkpoint;
use crate::lessor::Lessor;
use crate::members::{self, MemberDirectory};
use crate::node::{Committed, StateMachine};
use crate::replicated::{outcome, replicated_request::Op, Outcome, ReplicatedRequest};
use crate::status;
use crate::watch::WatchHub;

/// Namespace of the exactly-once table in the store's aux records.
pub(crate) const OUTCOMES: &str = "outcome";
/// Outcomes kept per client: a client may have this many writes in flight
/// and still retry each of them exactly once.
pub const OUTCOMES_PER_CLIENT: u64 = 64;
/// How often (in applied entries) expired outcomes are swept.
const SWEEP_EVERY_ENTRIES: u64 = 4096;

/// Applies committed writes to the store and publishes what changed to the
/// watch hub.
pub struct KvStateMachine {
    store: Arc<Store>,
    hub: WatchHub,
    lessor: Arc<Lessor>,
    applied: Index,
    outcome_ttl_ms: u64,
    since_sweep: u64,
    members: Arc<MemberDirectory>,
    /// Whether some member's NOSPACE alarm is raised (see [`crate::alarm`]): replicated
    /// state, cached because every write consults it.
    nospace: bool,
}

impl KvStateMachine {
    /// Wraps `store`; outcomes older than `outcome_ttl_ms` are forgotten.
    /// `members` is refreshed whenever the membership changes.
    pub fn new(
        store: Arc<Store>,
        hub: WatchHub,
        lessor: Arc<Lessor>,
        members: Arc<MemberDirectory>,
        outcome_ttl_ms: u64,
    ) -> Result<Self, NodeError> {
        let applied = store.applied_index().map_err(fatal)?.index;
        members.load(&store).map_err(fatal)?;
        let nospace = alarm::any_nospace(&alarm::list(&store).map_err(fatal)?);
        Ok(Self {
            members,
            store,
            hub,
            lessor,
            applied,
            outcome_ttl_ms,
            since_sweep: 0,
            nospace,
        })
    }
}

fn fatal(err: MvccError) -> NodeError {
    NodeError::Fatal(format!("key-value store: {err}"))
}

/// The exactly-once slot of a request: per client, a ring of
/// [`OUTCOMES_PER_CLIENT`] slots indexed by sequence number.
fn outcome_slot(client_id: u64, sequence: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&client_id.to_be_bytes());
    key[8..].copy_from_slice(&(sequence % OUTCOMES_PER_CLIENT).to_be_bytes());
    key
}

/// A stored outcome: sequence, time, then the encoded [`Outcome`].
fn encode_stored(sequence: u64, at_ms: u64, outcome: &Outcome) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + outcome.encoded_len());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&at_ms.to_le_bytes());
    outcome.encode(&mut out).unwrap_or_default();
    out
}

fn decode_stored(bytes: &[u8]) -> Option<(u64, u64, Outcome)> {
    let sequence = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let at_ms = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    let outcome = Outcome::decode(bytes.get(16..)?).ok()?;
    Some((sequence, at_ms, outcome))
}

impl StateMachine for KvStateMachine {
    type Output = Outcome;

    fn applied_index(&self) -> Index {
        self.applied
    }

    fn apply(&mut self, proposals: &[Committed<'_>]) -> Result<Vec<Outcome>, NodeError> {
        let Some(last) = proposals.last() else {
            return Ok(Vec::new());
        };
        let ttl_ms = self.outcome_ttl_ms;
        let sweep = self.since_sweep + proposals.len() as u64 >= SWEEP_EVERY_ENTRIES;
        let mut lease_changes = Vec::new();
        let mut members_changed = false;
        let nospace = &mut self.nospace;
        let nospace_before = *nospace;
        let (outcomes, revision, events) = self
            .store
            .apply(|batch| {
                lease_changes.clear();
                members_changed = false;
                *nospace = nospace_before;
                batch.record_events();
                let mut outcomes = Vec::with_capacity(proposals.len());
                let mut clock_ms = 0;
                for proposal in proposals {
                    if !batch.begin_entry(proposal.index, proposal.term) {
                        // Replayed after a restart: already in the store.
                        outcomes.push(Outcome::default());
                        continue;
                    }
                    let (outcome, at_ms) = apply_one(
                        batch,
                        proposal.payload,
                        &mut lease_changes,
                        &mut members_changed,
                        nospace,
                    )?;
                    clock_ms = clock_ms.max(at_ms);
                    outcomes.push(outcome);
                }
                if sweep && clock_ms > ttl_ms {
                    sweep_outcomes(batch, clock_ms - ttl_ms)?;
                }
                Ok((outcomes, batch.current_revision(), batch.take_events()))
            })
            .map_err(fatal)?;
        // Published only once the batch is committed to the store, so a
        // watcher never sees a change a reader could not.
        self.hub.publish(revision, events);
        // The leader's lease clocks follow every grant and revocation,
        // whichever member the client asked.
        for change in lease_changes {
            match change {
                LeaseChange::Granted { id, ttl } => self.lessor.granted(id, ttl),
                LeaseChange::Revoked(id) => self.lessor.revoked(id),
                LeaseChange::Checkpointed { id, remaining } => {
                    self.lessor.checkpointed(id, remaining)
                }
            }
        }
        if members_changed {
            self.members.load(&self.store).map_err(fatal)?;
        }
        self.since_sweep = if sweep {
            0
        } else {
            self.since_sweep + proposals.len() as u64
        };
        self.applied = self.applied.max(last.index);
        Ok(outcomes)
    }

    fn apply_membership(
        &mut self,
        index: Index,
        term: u64,
        change: &ConfChange,
        _conf_state: &ConfState,
    ) -> Result<(), NodeError> {
        // The store's applied index covers the change too, so a restart
        // does not replay it into the member records.
        self.store
            .apply(|batch| {
                if batch.begin_entry(index, term) {
                    members::apply_conf_change(batch, change)?;
                }
                Ok(())
            })
            .map_err(fatal)?;
        self.members.load(&self.store).map_err(fatal)?;
        self.applied = self.applied.max(index);
        Ok(())
    }

    fn persist(&mut self) -> Result<Index, NodeError> {
        Ok(self.store.sync().map_err(fatal)?.index)
    }

    fn snapshot(&self) -> Result<bytes::Bytes, NodeError> {
        // The whole image is held in memory while it is sent; streaming it
        // in chunks is left for when stores outgrow memory.
        Ok(bytes::Bytes::from(self.read_image()?))
    }

    fn restore(&mut self, image: &[u8]) -> Result<Index, NodeError> {
        let meta = self.store.install_snapshot(image).map_err(fatal)?;
        self.members.load(&self.store).map_err(fatal)?;
        self.applied = meta.applied.index;
        self.nospace = alarm::any_nospace(&alarm::list(&self.store).map_err(fatal)?);
        Ok(self.applied)
    }
}

impl KvStateMachine {
    fn read_image(&self) -> Result<Vec<u8>, NodeError> {
        let mut image = Vec::new();
        for chunk in self.store.snapshot().map_err(fatal)? {
            image.extend_from_slice(&chunk.map_err(fatal)?);
        }
        Ok(image)
    }
}

/// A lease change applied in a batch, for the lessor.
enum LeaseChange {
    Granted { id: i64, ttl: i64 },
    Revoked(i64),
    Checkpointed { id: i64, remaining: i64 },
}

/// Applies one replicated request; returns its outcome and its proposal time.
fn apply_one(
    batch: &mut Batch<'_>,
    payload: &[u8],
    lease_changes: &mut Vec<LeaseChange>,
    members_changed: &mut bool,
    nospace: &mut bool,
) -> Result<(Outcome, u64), MvccError> {
    let request = match ReplicatedRequest::decode(payload) {
        Ok(request) => request,
        Err(err) => {
            let status = tonic::Status::internal(format!("etcdserver: undecodable request: {err}"));
            return Ok((Outcome::error(batch.current_revision(), &status), 0));
        }
    };
    let at_ms = request.proposed_at_ms;
    let slot = (request.client_id != 0).then(|| outcome_slot(request.client_id, request.sequence));
    if let Some(slot) = &slot {
        if let Some((sequence, _, first)) = batch
            .aux_get(OUTCOMES, slot)?
            .as_deref()
            .and_then(decode_stored)
        {
            if sequence == request.sequence {
                tracing::debug!(
                    client = request.client_id,
                    sequence,
                    "retried request answered with its first outcome"
                );
                return Ok((first, at_ms));
            }
        }
    }
    *members_changed |= matches!(request.op, Some(Op::MemberUpdate(_) | Op::MemberPublish(_)));
    let outcome = execute(batch, request.op, lease_changes, nospace)?;
    if let Some(slot) = &slot {
        batch.aux_put(
            OUTCOMES,
            slot,
            &encode_stored(request.sequence, at_ms, &outcome),
        )?;
    }
    Ok((outcome, at_ms))
}

/// True for the operations refused while NOSPACE is raised: those that make
/// the store grow (etcd's capped applier). A txn counts if any of its ops is
/// not a read, whichever branch would run.
fn grows_store(op: &Op) -> bool {
    match op {
        Op::Put(_) | Op::LeaseGrant(_) => true,
        Op::Txn(txn) => !convert::txn_from_pb(txn).is_ok_and(|t| raftkv_mvcc::is_read_only(&t)),
        // Membership and lease bookkeeping must go on so an operator can
        // repair the cluster.
        Op::DeleteRange(_)
        | Op::Compaction(_)
        | Op::LeaseRevoke(_)
        | Op::Alarm(_)
        | Op::MemberUpdate(_)
        | Op::MemberPublish(_)
        | Op::LeaseCheckpoint(_) => false,
    }
}

/// Runs the operation; request errors become error outcomes, store failures
/// stop the batch.
fn execute(
    batch: &mut Batch<'_>,
    op: Option<Op>,
    lease_changes: &mut Vec<LeaseChange>,
    nospace: &mut bool,
) -> Result<Outcome, MvccError> {
    if *nospace && op.as_ref().is_some_and(grows_store) {
        return Ok(Outcome::error(batch.current_revision(), &alarm::no_space()));
    }
    let result = match op {
        Some(Op::Put(req)) => batch
            .put(&convert::put_from_pb(&req))
            .map(|resp| outcome::Result::Put(convert::put_to_pb(resp))),
        Some(Op::DeleteRange(req)) => batch
            .delete_range(&convert::delete_from_pb(&req))
            .map(|resp| outcome::Result::DeleteRange(convert::delete_to_pb(resp))),
        Some(Op::Txn(req)) => match convert::txn_from_pb(&req) {
            Ok(txn) => batch
                .txn(&txn)
                .map(|resp| outcome::Result::Txn(convert::txn_to_pb(resp))),
            Err(status) => return Ok(Outcome::error(batch.current_revision(), &status)),
        },
        Some(Op::Compaction(req)) => batch
            .compact(req.revision)
            .map(|_| outcome::Result::Compaction(Default::default())),
        Some(Op::LeaseGrant(req)) => batch.lease_grant(req.id, req.ttl).map(|()| {
            lease_changes.push(LeaseChange::Granted {
                id: req.id,
                ttl: req.ttl,
            });
            outcome::Result::LeaseGrant(raftkv_proto::etcdserverpb::LeaseGrantResponse {
                header: None,
                id: req.id,
                ttl: req.ttl,
                error: String::new(),
            })
        }),
        Some(Op::LeaseRevoke(req)) => batch.lease_revoke(req.id).and_then(|_| {
            lease_checkpoint::forget(batch, req.id)?;
            lease_changes.push(LeaseChange::Revoked(req.id));
            Ok(outcome::Result::LeaseRevoke(Default::default()))
        }),
        Some(Op::LeaseCheckpoint(req)) => lease_checkpoint::apply(batch, &req).map(|applied| {
            lease_changes.extend(
                applied
                    .into_iter()
                    .map(|(id, remaining)| LeaseChange::Checkpointed { id, remaining }),
            );
            outcome::Result::LeaseCheckpoint(Default::default())
        }),
        Some(Op::MemberUpdate(req)) => {
            let found = members::update_peer_urls(batch, req.id, req.peer_ur_ls)?;
            return Ok(member_outcome(batch, found));
        }
        Some(Op::MemberPublish(member)) => {
            let found = members::publish(batch, member.id, member.name, member.client_urls)?;
            return Ok(member_outcome(batch, found));
        }
        Some(Op::Alarm(req)) => alarm::apply(batch, &req).and_then(|resp| {
            *nospace = alarm::any_nospace(&alarm::list_in(batch)?);
            Ok(outcome::Result::Alarm(resp))
        }),
        None => {
            let status = tonic::Status::invalid_argument("etcdserver: empty request");
            return Ok(Outcome::error(batch.current_revision(), &status));
        }
    };
    match result {
        Ok(result) => Ok(Outcome {
            revision: batch.current_revision(),
            result: Some(result),
        }),
        Err(err) if err.is_fatal() => Err(err),
        Err(err) => Ok(Outcome::error(
            batch.current_revision(),
            &status::from_mvcc(&err),
        )),
    }
}

fn member_outcome(batch: &Batch<'_>, found: bool) -> Outcome {
    if found {
        Outcome {
            revision: batch.current_revision(),
            result: Some(outcome::Result::MemberUpdate(Default::default())),
        }
    } else {
        Outcome::error(batch.current_revision(), &status::member_not_found())
    }
}

/// Forgets outcomes recorded before `before_ms`.
fn sweep_outcomes(batch: &mut Batch<'_>, before_ms: u64) -> Result<(), MvccError> {
    let expired: Vec<Vec<u8>> = batch
        .aux_scan(OUTCOMES)?
        .into_iter()
        .filter(|(_, stored)| decode_stored(stored).is_some_and(|(_, at_ms, _)| at_ms < before_ms))
        .map(|(key, _)| key)
        .collect();
    for key in &expired {
        batch.aux_delete(OUTCOMES, key)?;
    }
    if !expired.is_empty() {
        tracing::debug!(expired = expired.len(), "forgot expired request outcomes");
    }
    Ok(())
}
