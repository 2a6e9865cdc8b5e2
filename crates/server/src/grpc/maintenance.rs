//! The Maintenance service: Status, HashKV, MoveLeader and an empty alarm
//! list. Defragment, Hash, Snapshot and Downgrade answer Unimplemented until
//! they land.

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::maintenance_server::Maintenance;
use tonic::{Request, Response, Status};

use super::ServiceContext;
use crate::status;

/// The version string reported by Status. Kubernetes enables its watch
/// progress feature for 3.5.13 and later, so raftkv reports an etcd version
/// at least that new.
pub const ETCD_VERSION: &str = "3.5.13";

/// The Maintenance service.
pub struct MaintenanceService {
    ctx: ServiceContext,
}

impl MaintenanceService {
    /// A Maintenance service over `ctx`.
    pub fn new(ctx: ServiceContext) -> Self {
        Self { ctx }
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("etcdserver: {what} is not supported yet"))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        _request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let revision = self
            .ctx
            .store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))?;
        Ok(Response::new(pb::AlarmResponse {
            header: self.ctx.header(revision),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let store = &self.ctx.store;
        let revision = store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))?;
        let usage = store.disk_usage().map_err(|e| status::from_mvcc(&e))?;
        let shared = self.ctx.node.shared();
        let node = self
            .ctx
            .node
            .status()
            .await
            .map_err(|e| status::from_node(&e))?;
        let mut errors = Vec::new();
        if shared.leader_id() == 0 {
            errors.push("etcdserver: no leader".to_string());
        }
        Ok(Response::new(pb::StatusResponse {
            header: self.ctx.header(revision),
            version: ETCD_VERSION.to_string(),
            db_size: usage.file_bytes as i64,
            leader: shared.leader_id(),
            raft_index: shared.commit_index(),
            raft_term: shared.term(),
            raft_applied_index: shared.applied_index(),
            errors,
            db_size_in_use: usage.stored_bytes as i64,
            is_learner: node.conf_state.learners.contains(&self.ctx.member_id),
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(unimplemented("Defragment"))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Err(unimplemented("Hash"))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let hash = self
            .ctx
            .store
            .hash_kv(request.into_inner().revision)
            .map_err(|e| status::from_mvcc(&e))?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.ctx.header(hash.hash_revision),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.hash_revision,
        }))
    }

    type SnapshotStream = tokio_stream::Once<Result<pb::SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Snapshot"))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        self.ctx
            .node
            .transfer_leader(target)
            .await
            .map_err(|_| Status::failed_precondition("etcdserver: bad leader transferee"))?;
        let revision = self
            .ctx
            .store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: self.ctx.header(revision),
        }))
    }

    async fn downgrade(
        &self,
        _request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}
