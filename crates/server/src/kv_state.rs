//! The replicated state machine: committed writes applied to the MVCC
//! store, with the exactly-once table of recent outcomes per client.

use std::sync::Arc;

use prost::Message as _;
use raftkv_mvcc::{BackgroundSync, Batch, MvccError, Store};
use raftkv_raft::{ConfChange, ConfState, Index};

use crate::alarm;
use crate::convert;
use crate::error::NodeError;
use crate::lease_checkpoint;
use crate::lessor::Lessor;
use crate::members::{self, MemberDirectory};
use crate::node::{Committed, StateMachine};
use crate::outcomes::{self, ClusterClock, Seen};
use crate::replicated::{outcome, replicated_request::Op, Outcome, ReplicatedRequest};
use crate::status;
use crate::watch::WatchHub;

/// Applies committed writes to the store and publishes what changed to the
/// watch hub.
pub struct KvStateMachine {
    store: Arc<Store>,
    hub: WatchHub,
    lessor: Arc<Lessor>,
    applied: Index,
    members: Arc<MemberDirectory>,
    /// Whether some member's NOSPACE alarm is raised (see [`crate::alarm`]): replicated
    /// state, cached because every write consults it.
    nospace: bool,
    /// The replicated cluster clock as of the applied index (see
    /// [`crate::outcomes`]), cached like `nospace`.
    clock_ms: u64,
    /// This member's reading of the cluster clock, moved on by every apply.
    cluster_clock: Arc<ClusterClock>,
    /// Makes the store's durable commits off this thread, when set.
    background_sync: Option<BackgroundSync>,
}

impl KvStateMachine {
    /// Wraps `store`. `members` is refreshed whenever the membership
    /// changes; `cluster_clock` learns every replicated clock value applied.
    pub fn new(
        store: Arc<Store>,
        hub: WatchHub,
        lessor: Arc<Lessor>,
        members: Arc<MemberDirectory>,
        cluster_clock: Arc<ClusterClock>,
    ) -> Result<Self, NodeError> {
        let applied = store.applied_index().map_err(fatal)?.index;
        members.load(&store).map_err(fatal)?;
        let nospace = alarm::any_nospace(&alarm::list(&store).map_err(fatal)?);
        let clock_ms = outcomes::load_clock(&store).map_err(fatal)?;
        cluster_clock.observe(clock_ms);
        Ok(Self {
            members,
            store,
            hub,
            lessor,
            applied,
            nospace,
            clock_ms,
            cluster_clock,
            background_sync: None,
        })
    }

    /// Has `sync` make the store's durable commits, so that the node's driver, which applies,
    /// never waits for their fsync (see [`raftkv_mvcc::background_sync`]).
    pub fn with_background_sync(mut self, sync: BackgroundSync) -> Self {
        self.background_sync = Some(sync);
        self
    }

    /// Tells the sync thread, if any, that the store committed a batch.
    fn batch_applied(&self) -> Result<(), NodeError> {
        match &self.background_sync {
            Some(sync) => sync.batch_applied().map_err(fatal),
            None => Ok(()),
        }
    }
}

fn fatal(err: MvccError) -> NodeError {
    NodeError::Fatal(format!("key-value store: {err}"))
}

/// What applying a batch changed besides the store, acted on once the
/// batch is committed.
struct Effects {
    lease_changes: Vec<LeaseChange>,
    members_changed: bool,
    /// Replicated state carried from batch to batch.
    nospace: bool,
    clock_ms: u64,
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
        let with_prev_kv = self.hub.wants_prev_kv();
        let (outcomes, revision, events, effects) = self
            .store
            .apply(|batch| {
                // Built afresh on every attempt: a failed attempt changes nothing.
                let mut effects = Effects {
                    lease_changes: Vec::new(),
                    members_changed: false,
                    nospace: self.nospace,
                    clock_ms: self.clock_ms,
                };
                batch.record_events(with_prev_kv);
                let mut outcomes = Vec::with_capacity(proposals.len());
                for proposal in proposals {
                    if !batch.begin_entry(proposal.index, proposal.term) {
                        // Replayed after a restart: already in the store.
                        outcomes.push(Outcome::default());
                        continue;
                    }
                    outcomes.push(apply_one(batch, proposal.payload, &mut effects)?);
                }
                // Replayed entries are a prefix of the batch, so an entry
                // that moved the clock leaves the last entry open.
                if effects.clock_ms != self.clock_ms {
                    outcomes::store_clock(batch, effects.clock_ms)?;
                }
                Ok((
                    outcomes,
                    batch.current_revision(),
                    batch.take_events(),
                    effects,
                ))
            })
            .map_err(fatal)?;
        self.batch_applied()?;
        // Published only once the batch is committed to the store, so a
        // watcher never sees a change a reader could not.
        self.hub.publish(revision, events, with_prev_kv);
        // The leader's lease clocks follow every grant and revocation,
        // whichever member the client asked.
        for change in effects.lease_changes {
            match change {
                LeaseChange::Granted { id, ttl } => self.lessor.granted(id, ttl),
                LeaseChange::Revoked(id) => self.lessor.revoked(id),
                LeaseChange::Checkpointed { id, remaining } => {
                    self.lessor.checkpointed(id, remaining)
                }
            }
        }
        if effects.members_changed {
            self.members.load(&self.store).map_err(fatal)?;
        }
        self.nospace = effects.nospace;
        self.clock_ms = effects.clock_ms;
        self.cluster_clock.observe(self.clock_ms);
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
        self.batch_applied()?;
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
        self.clock_ms = outcomes::load_clock(&self.store).map_err(fatal)?;
        self.cluster_clock.observe(self.clock_ms);
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

/// Applies one replicated request and returns its outcome; a retried
/// request gets its first outcome back instead.
fn apply_one(
    batch: &mut Batch<'_>,
    payload: &[u8],
    effects: &mut Effects,
) -> Result<Outcome, MvccError> {
    let request = match ReplicatedRequest::decode(payload) {
        Ok(request) => request,
        Err(err) => {
            let status = tonic::Status::internal(format!("etcdserver: undecodable request: {err}"));
            return Ok(Outcome::error(batch.current_revision(), &status));
        }
    };
    effects.clock_ms = effects.clock_ms.max(request.proposed_at_ms);
    let identified = request.client_id != 0;
    if identified {
        match outcomes::lookup(batch, request.client_id, request.sequence)? {
            Seen::New => {}
            Seen::Applied(first) => {
                tracing::debug!(
                    client = request.client_id,
                    sequence = request.sequence,
                    "retried request answered with its first outcome"
                );
                return Ok(first);
            }
            Seen::Superseded => {
                tracing::debug!(
                    client = request.client_id,
                    sequence = request.sequence,
                    "refused a request older than the client's remembered ones"
                );
                return Ok(Outcome::error(
                    batch.current_revision(),
                    &status::request_superseded(),
                ));
            }
        }
    }
    effects.members_changed |=
        matches!(request.op, Some(Op::MemberUpdate(_) | Op::MemberPublish(_)));
    let outcome = execute(batch, request.op, effects)?;
    if identified {
        outcomes::record(
            batch,
            request.client_id,
            request.sequence,
            effects.clock_ms,
            &outcome,
        )?;
    }
    Ok(outcome)
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
        | Op::LeaseCheckpoint(_)
        | Op::ForgetOutcomes(_) => false,
    }
}

/// Runs the operation; request errors become error outcomes, store failures
/// stop the batch.
fn execute(
    batch: &mut Batch<'_>,
    op: Option<Op>,
    effects: &mut Effects,
) -> Result<Outcome, MvccError> {
    let lease_changes = &mut effects.lease_changes;
    if effects.nospace && op.as_ref().is_some_and(grows_store) {
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
        Some(Op::ForgetOutcomes(req)) => outcomes::forget(batch, &req, effects.clock_ms)
            .map(|forgotten| outcome::Result::Forgotten(forgotten as u64)),
        Some(Op::Alarm(req)) => alarm::apply(batch, &req).and_then(|resp| {
            effects.nospace = alarm::any_nospace(&alarm::list_in(batch)?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicated::ForgetOutcomes;
    use raftkv_proto::etcdserverpb as pb;

    fn machine(dir: &tempfile::TempDir) -> KvStateMachine {
        let store = Arc::new(
            Store::open(raftkv_mvcc::Config::new(dir.path().join("kv.redb"))).expect("store"),
        );
        KvStateMachine::new(
            store,
            WatchHub::new(),
            Arc::new(Lessor::default()),
            MemberDirectory::new(1),
            ClusterClock::new(0),
        )
        .expect("state machine")
    }

    fn request(client_id: u64, proposed_at_ms: u64, op: Op) -> Vec<u8> {
        ReplicatedRequest {
            client_id,
            sequence: 1,
            proposed_at_ms,
            op: Some(op),
        }
        .encode_to_vec()
    }

    fn put(key: &str) -> Op {
        Op::Put(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    }

    fn apply(machine: &mut KvStateMachine, index: Index, payload: &[u8]) -> Outcome {
        let committed = Committed {
            index,
            term: 1,
            id: index,
            payload,
        };
        machine
            .apply(&[committed])
            .expect("apply")
            .pop()
            .expect("one outcome")
    }

    /// A proposer whose reading of the cluster clock lags (it was down, say)
    /// must not make its outcome look old: outcomes are aged from the
    /// replicated clock at their apply.
    #[test]
    fn a_lagging_proposer_does_not_shorten_its_outcomes_life() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut machine = machine(&dir);
        let a = apply(&mut machine, 1, &request(1, 100_000, put("a")));
        let b = apply(&mut machine, 2, &request(2, 50, put("b")));
        assert_eq!(
            machine.clock_ms, 100_000,
            "the lagging stamp does not move it back"
        );
        let forget = request(
            0,
            104_000,
            Op::ForgetOutcomes(ForgetOutcomes { ttl_ms: 5_000 }),
        );
        let forgot = apply(&mut machine, 3, &forget);
        assert_eq!(forgot.result, Some(outcome::Result::Forgotten(0)));
        // Both retries are still answered with their first outcomes.
        assert_eq!(apply(&mut machine, 4, &request(2, 50, put("b"))), b);
        assert_eq!(apply(&mut machine, 5, &request(1, 100_000, put("a"))), a);
        let forget = request(
            0,
            106_000,
            Op::ForgetOutcomes(ForgetOutcomes { ttl_ms: 5_000 }),
        );
        let forgot = apply(&mut machine, 6, &forget);
        assert_eq!(forgot.result, Some(outcome::Result::Forgotten(2)));
        let again = apply(&mut machine, 7, &request(2, 50, put("b")));
        assert!(again.revision > b.revision, "forgotten: applied anew");
    }

    /// A copy of a request that arrives after 64 later requests of its
    /// client (a delayed duplicate) is refused, not applied again: its slot
    /// no longer tells whether it was applied.
    #[test]
    fn a_request_older_than_the_remembered_ones_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut machine = machine(&dir);
        let with_sequence = |sequence: u64, key: &str| {
            ReplicatedRequest {
                client_id: 9,
                sequence,
                proposed_at_ms: 1,
                op: Some(put(key)),
            }
            .encode_to_vec()
        };
        let first = apply(&mut machine, 1, &with_sequence(1, "old"));
        let later = apply(&mut machine, 2, &with_sequence(65, "new"));
        assert!(later.revision > first.revision);
        let late_copy = apply(&mut machine, 3, &with_sequence(1, "old"));
        assert_eq!(late_copy.revision, later.revision, "nothing applied");
        assert!(
            matches!(&late_copy.result, Some(outcome::Result::Error(e))
                if e.code == tonic::Code::FailedPrecondition as i32),
            "{late_copy:?}"
        );
        // A new sequence in the same slot is applied as usual.
        let next = apply(&mut machine, 4, &with_sequence(129, "next"));
        assert!(next.revision > later.revision);
    }

    /// The replicated clock survives a restart, and this member's reading
    /// of the cluster clock starts from it.
    #[test]
    fn the_replicated_clock_is_kept_with_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut machine = machine(&dir);
            apply(&mut machine, 1, &request(0, 70_000, put("a")));
            machine.persist().expect("persist");
        }
        let machine = machine(&dir);
        assert_eq!(machine.clock_ms, 70_000);
        assert!(machine.cluster_clock.now_ms() >= 70_000);
    }
}
