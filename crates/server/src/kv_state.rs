//! The replicated state machine: committed writes applied to the MVCC
//! store, with the exactly-once table of recent outcomes per client.

use std::sync::Arc;

use prost::Message as _;
use raftkv_mvcc::{BackgroundSync, Batch, MvccError, Store};
use raftkv_proto::etcdserverpb as pb;
use raftkv_raft::{ConfChange, ConfState, Index};

use crate::alarm;
use crate::auth::state::Applied;
use crate::auth::{self, Auth, AuthChange, AuthState, Caller};
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
    /// This member's auth: the auth store as of the applied index (only
    /// this thread publishes it), and the tokens.
    auth: Arc<Auth>,
}

impl KvStateMachine {
    /// Wraps `store`. `members` is refreshed whenever the membership
    /// changes; `cluster_clock` learns every replicated clock value applied;
    /// `auth` is given the auth store as applied, and the tokens
    /// `Authenticate` entries give out.
    pub fn new(
        store: Arc<Store>,
        hub: WatchHub,
        lessor: Arc<Lessor>,
        members: Arc<MemberDirectory>,
        cluster_clock: Arc<ClusterClock>,
        auth: Arc<Auth>,
    ) -> Result<Self, NodeError> {
        let applied = store.applied_index().map_err(fatal)?.index;
        members.load(&store).map_err(fatal)?;
        auth.publish(Arc::new(AuthState::load(&store).map_err(fatal)?));
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
            auth,
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
    /// The auth store as of the entry being applied.
    auth: Arc<AuthState>,
    auth_changed: bool,
    /// Tokens given out and forgotten, in log order.
    token_changes: Vec<TokenChange>,
}

/// A change of this member's tokens, made once its batch is committed.
enum TokenChange {
    Assign { token: String, user: String },
    InvalidateUser(String),
    Clear,
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
        let auth_at_start = self.auth.state();
        let (outcomes, revision, events, effects) = self
            .store
            .apply(|batch| {
                // Built afresh on every attempt: a failed attempt changes nothing.
                let mut effects = Effects {
                    lease_changes: Vec::new(),
                    members_changed: false,
                    nospace: self.nospace,
                    clock_ms: self.clock_ms,
                    auth: auth_at_start.clone(),
                    auth_changed: false,
                    token_changes: Vec::new(),
                };
                batch.record_events(with_prev_kv);
                let mut outcomes = Vec::with_capacity(proposals.len());
                for proposal in proposals {
                    if !batch.begin_entry(proposal.index, proposal.term) {
                        // Replayed after a restart: already in the store.
                        outcomes.push(Outcome::default());
                        continue;
                    }
                    outcomes.push(apply_one(
                        batch,
                        proposal.index,
                        proposal.payload,
                        &mut effects,
                    )?);
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
        if effects.auth_changed {
            self.auth.publish(effects.auth);
        }
        for change in effects.token_changes {
            match change {
                TokenChange::Assign { token, user } => self.auth.tokens.assign(token, user),
                TokenChange::InvalidateUser(user) => self.auth.tokens.invalidate_user(&user),
                TokenChange::Clear => self.auth.tokens.clear(),
            }
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

    fn snapshot(&self) -> Result<crate::node::SnapshotImage, NodeError> {
        // One read transaction, opened here (it sees every batch applied so
        // far, so the image covers the snapshot's index); the sender reads
        // it in chunks on its own thread while batches go on applying.
        Ok(Box::new(self.store.snapshot().map_err(fatal)?))
    }

    fn restore(&mut self, image: &mut dyn std::io::Read) -> Result<Index, NodeError> {
        let meta = self.store.install_snapshot(image).map_err(fatal)?;
        self.members.load(&self.store).map_err(fatal)?;
        self.auth
            .publish(Arc::new(AuthState::load(&self.store).map_err(fatal)?));
        // The image may hold password changes and deletions whose tokens
        // this member cannot tell apart any more: clients authenticate anew.
        self.auth.tokens.clear();
        self.applied = meta.applied.index;
        self.nospace = alarm::any_nospace(&alarm::list(&self.store).map_err(fatal)?);
        self.clock_ms = outcomes::load_clock(&self.store).map_err(fatal)?;
        self.cluster_clock.observe(self.clock_ms);
        Ok(self.applied)
    }
}

/// A lease change applied in a batch, for the lessor.
enum LeaseChange {
    Granted { id: i64, ttl: i64 },
    Revoked(i64),
    Checkpointed { id: i64, remaining: i64 },
}

/// Applies one replicated request (at log `index`) and returns its outcome;
/// a retried request gets its first outcome back instead, if it is made as
/// the same user and that user may still make it.
fn apply_one(
    batch: &mut Batch<'_>,
    index: Index,
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
    let caller = if request.internal {
        Caller::Server
    } else {
        Caller::Client {
            user: (!request.user.is_empty()).then(|| request.user.clone()),
        }
    };
    // Checked before the exactly-once table is asked, so a retry is judged
    // by the permissions of now, not of its first attempt.
    if let Some(op) = &request.op {
        let lease_keys = |id: i64| batch.lease_keys(id);
        if let Err(refused) = auth::request::authorize(&effects.auth, &caller, op, &lease_keys)? {
            return Ok(Outcome::error(
                batch.current_revision(),
                &tonic::Status::from(refused),
            ));
        }
    }
    let identified = request.client_id != 0;
    if identified {
        match outcomes::lookup(batch, request.client_id, request.sequence)? {
            Seen::New => {}
            Seen::Applied(first) if first.user != request.user => {
                // Another user's request under the same id: its outcome is
                // not this caller's to learn, and this request is not new.
                return Ok(Outcome::error(
                    batch.current_revision(),
                    &tonic::Status::from(auth::AuthError::PermissionDenied),
                ));
            }
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
    let mut outcome = execute(batch, index, request.op, effects)?;
    outcome.user = request.user;
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
        | Op::ForgetOutcomes(_)
        | Op::AuthEnable(_)
        | Op::AuthDisable(_)
        | Op::Authenticate(_)
        | Op::UserAdd(_)
        | Op::UserDelete(_)
        | Op::UserChangePassword(_)
        | Op::UserGrantRole(_)
        | Op::UserRevokeRole(_)
        | Op::RoleAdd(_)
        | Op::RoleDelete(_)
        | Op::RoleGrantPermission(_)
        | Op::RoleRevokePermission(_) => false,
    }
}

/// The auth change an operation makes, if it is one.
fn auth_change(op: Op) -> Result<AuthChange, Op> {
    Ok(match op {
        Op::AuthEnable(_) => AuthChange::Enable,
        Op::AuthDisable(_) => AuthChange::Disable,
        Op::UserAdd(req) => AuthChange::UserAdd(req),
        Op::UserDelete(req) => AuthChange::UserDelete(req),
        Op::UserChangePassword(req) => AuthChange::UserChangePassword(req),
        Op::UserGrantRole(req) => AuthChange::UserGrantRole(req),
        Op::UserRevokeRole(req) => AuthChange::UserRevokeRole(req),
        Op::RoleAdd(req) => AuthChange::RoleAdd(req),
        Op::RoleDelete(req) => AuthChange::RoleDelete(req),
        Op::RoleGrantPermission(req) => AuthChange::RoleGrantPermission(req),
        Op::RoleRevokePermission(req) => AuthChange::RoleRevokePermission(req),
        other => return Err(other),
    })
}

/// Applies an auth change to the batch's copy of the auth store.
fn execute_auth_change(
    batch: &mut Batch<'_>,
    change: AuthChange,
    effects: &mut Effects,
) -> Result<Outcome, MvccError> {
    let state = Arc::make_mut(&mut effects.auth);
    match state.apply(batch, &change)? {
        Ok(applied) => {
            effects.auth_changed = true;
            match applied {
                Applied::Changed => {}
                Applied::InvalidateUser(user) => effects
                    .token_changes
                    .push(TokenChange::InvalidateUser(user)),
                Applied::Disabled => effects.token_changes.push(TokenChange::Clear),
            }
            Ok(Outcome {
                revision: batch.current_revision(),
                user: String::new(),
                result: Some(outcome::Result::AuthChanged(state.revision())),
            })
        }
        Err(refused) => Ok(Outcome::error(
            batch.current_revision(),
            &tonic::Status::from(refused),
        )),
    }
}

/// Applies an `Authenticate` whose password the proposer checked: the user
/// gets the token `<prefix>.<index>` on every member, if auth is still
/// enabled and the user still authenticates by password.
fn execute_authenticate(
    batch: &Batch<'_>,
    index: Index,
    req: crate::replicated::Authenticate,
    effects: &mut Effects,
) -> Outcome {
    if let Err(refused) = effects.auth.password_hash(&req.name) {
        let refused = match refused {
            auth::AuthError::NoPasswordUser => auth::AuthError::AuthFailed,
            other => other,
        };
        return Outcome::error(batch.current_revision(), &tonic::Status::from(refused));
    }
    let token = format!("{}.{}", req.token_prefix, index);
    effects.token_changes.push(TokenChange::Assign {
        token: token.clone(),
        user: req.name,
    });
    Outcome {
        revision: batch.current_revision(),
        user: String::new(),
        result: Some(outcome::Result::Authenticated(pb::AuthenticateResponse {
            header: None,
            token,
        })),
    }
}

/// Runs the operation (at log `index`); request errors become error
/// outcomes, store failures stop the batch.
fn execute(
    batch: &mut Batch<'_>,
    index: Index,
    op: Option<Op>,
    effects: &mut Effects,
) -> Result<Outcome, MvccError> {
    if effects.nospace && op.as_ref().is_some_and(grows_store) {
        return Ok(Outcome::error(batch.current_revision(), &alarm::no_space()));
    }
    let op = match op.map(auth_change) {
        Some(Ok(change)) => return execute_auth_change(batch, change, effects),
        Some(Err(Op::Authenticate(req))) => {
            return Ok(execute_authenticate(batch, index, req, effects))
        }
        Some(Err(op)) => Some(op),
        None => None,
    };
    let lease_changes = &mut effects.lease_changes;
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
        // Taken out above.
        Some(
            Op::AuthEnable(_)
            | Op::AuthDisable(_)
            | Op::Authenticate(_)
            | Op::UserAdd(_)
            | Op::UserDelete(_)
            | Op::UserChangePassword(_)
            | Op::UserGrantRole(_)
            | Op::UserRevokeRole(_)
            | Op::RoleAdd(_)
            | Op::RoleDelete(_)
            | Op::RoleGrantPermission(_)
            | Op::RoleRevokePermission(_),
        ) => {
            let status = tonic::Status::internal("etcdserver: auth request misrouted");
            return Ok(Outcome::error(batch.current_revision(), &status));
        }
        None => {
            let status = tonic::Status::invalid_argument("etcdserver: empty request");
            return Ok(Outcome::error(batch.current_revision(), &status));
        }
    };
    match result {
        Ok(result) => Ok(Outcome {
            revision: batch.current_revision(),
            user: String::new(),
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
            user: String::new(),
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
            Auth::new(
                AuthState::default(),
                std::time::Duration::from_secs(300),
                None,
                false,
                4,
            ),
        )
        .expect("state machine")
    }

    fn request(client_id: u64, proposed_at_ms: u64, op: Op) -> Vec<u8> {
        ReplicatedRequest {
            client_id,
            sequence: 1,
            proposed_at_ms,
            op: Some(op),
            ..Default::default()
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
                ..Default::default()
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

    fn as_user(user: &str, sequence: u64, op: Op) -> Vec<u8> {
        ReplicatedRequest {
            // One client per user.
            client_id: 70 + user.len() as u64,
            sequence,
            user: user.into(),
            op: Some(op),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn error_message(outcome: &Outcome) -> Option<&str> {
        match &outcome.result {
            Some(outcome::Result::Error(e)) => Some(&e.message),
            _ => None,
        }
    }

    /// Auth on, with root (role root) and `writer` (readwrite on `k/`).
    fn enable_auth(machine: &mut KvStateMachine) -> Index {
        let hash = "JDJhJDA0JHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eA==".to_string();
        let steps = vec![
            Op::UserAdd(pb::AuthUserAddRequest {
                name: "root".into(),
                hashed_password: hash.clone(),
                ..Default::default()
            }),
            Op::UserAdd(pb::AuthUserAddRequest {
                name: "writer".into(),
                hashed_password: hash,
                ..Default::default()
            }),
            Op::RoleAdd(pb::AuthRoleAddRequest { name: "rw".into() }),
            Op::RoleGrantPermission(pb::AuthRoleGrantPermissionRequest {
                name: "rw".into(),
                perm: Some(raftkv_proto::authpb::Permission {
                    perm_type: raftkv_proto::authpb::permission::Type::Readwrite as i32,
                    key: b"k/".to_vec(),
                    range_end: b"k0".to_vec(),
                }),
            }),
            Op::UserGrantRole(pb::AuthUserGrantRoleRequest {
                user: "root".into(),
                role: "root".into(),
            }),
            Op::UserGrantRole(pb::AuthUserGrantRoleRequest {
                user: "writer".into(),
                role: "rw".into(),
            }),
            Op::AuthEnable(pb::AuthEnableRequest {}),
        ];
        let mut index = 0;
        for op in steps {
            index += 1;
            let outcome = apply(machine, index, &request(0, 1, op));
            assert_eq!(error_message(&outcome), None, "{outcome:?}");
        }
        assert!(machine.auth.state().enabled());
        index
    }

    /// Every member checks a write again when it applies it, against the
    /// auth store as of that entry: a write proposed before its user lost
    /// the permission (or by a member that did not check) is refused.
    #[test]
    fn writes_are_checked_again_when_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut machine = machine(&dir);
        let mut index = enable_auth(&mut machine);
        let mut next = || {
            index += 1;
            index
        };
        let allowed = apply(&mut machine, next(), &as_user("writer", 1, put("k/a")));
        assert_eq!(error_message(&allowed), None);
        let outside = apply(&mut machine, next(), &as_user("writer", 2, put("other")));
        assert_eq!(
            error_message(&outside),
            Some("etcdserver: permission denied")
        );
        let anonymous = apply(&mut machine, next(), &as_user("", 3, put("k/b")));
        assert_eq!(
            error_message(&anonymous),
            Some("etcdserver: user name is empty")
        );
        // The server's own requests are not a client's.
        let internal = ReplicatedRequest {
            internal: true,
            op: Some(Op::Compaction(pb::CompactionRequest {
                revision: 1,
                physical: false,
            })),
            ..Default::default()
        };
        let compacted = apply(&mut machine, next(), &internal.encode_to_vec());
        assert_eq!(error_message(&compacted), None);
        // A non-root user cannot change the auth store.
        let grab = Op::UserGrantRole(pb::AuthUserGrantRoleRequest {
            user: "writer".into(),
            role: "root".into(),
        });
        let grabbed = apply(&mut machine, next(), &as_user("writer", 4, grab));
        assert_eq!(
            error_message(&grabbed),
            Some("etcdserver: permission denied")
        );
        assert!(!machine.auth.state().has_role("writer", "root"));
        // Revoked between proposal and apply: the retry of an applied write
        // is refused too, not answered from the table.
        let revoke = Op::UserRevokeRole(pb::AuthUserRevokeRoleRequest {
            name: "writer".into(),
            role: "rw".into(),
        });
        let revoked = apply(&mut machine, next(), &as_user("root", 1, revoke));
        assert_eq!(error_message(&revoked), None);
        let retry = apply(&mut machine, next(), &as_user("writer", 1, put("k/a")));
        assert_eq!(error_message(&retry), Some("etcdserver: permission denied"));
    }

    /// An applied Authenticate gives every member the token
    /// `<prefix>.<index>`; a deleted user's tokens are forgotten.
    #[test]
    fn authenticate_gives_out_the_token_and_deletion_forgets_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut machine = machine(&dir);
        let index = enable_auth(&mut machine);
        let login = Op::Authenticate(crate::replicated::Authenticate {
            name: "writer".into(),
            token_prefix: "abcdefghijklmnop".into(),
        });
        let outcome = apply(&mut machine, index + 1, &request(0, 1, login));
        let token = format!("abcdefghijklmnop.{}", index + 1);
        assert_eq!(
            outcome.result,
            Some(outcome::Result::Authenticated(pb::AuthenticateResponse {
                header: None,
                token: token.clone(),
            }))
        );
        assert_eq!(machine.auth.tokens.user(&token).as_deref(), Some("writer"));
        let delete = Op::UserDelete(pb::AuthUserDeleteRequest {
            name: "writer".into(),
        });
        let deleted = apply(&mut machine, index + 2, &as_user("root", 1, delete));
        assert_eq!(error_message(&deleted), None);
        assert_eq!(machine.auth.tokens.user(&token), None);
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
