//! The Cluster service: MemberList. Membership changes answer Unimplemented
//! until they land.

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use super::ServiceContext;
use crate::status;

/// A member as MemberList reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
    /// Its client URLs (known for this member; others' are learned later).
    pub client_urls: Vec<String>,
}

/// The Cluster service.
pub struct ClusterService {
    ctx: ServiceContext,
}

impl ClusterService {
    /// A Cluster service over `ctx`.
    pub fn new(ctx: ServiceContext) -> Self {
        Self { ctx }
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("etcdserver: {what} is not supported yet"))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(unimplemented("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _r: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(unimplemented("MemberRemove"))
    }

    async fn member_update(
        &self,
        _r: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(unimplemented("MemberUpdate"))
    }

    async fn member_list(
        &self,
        _r: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let revision = self
            .ctx
            .store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))?;
        let members = self
            .ctx
            .members
            .iter()
            .map(|m| pb::Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: m.client_urls.clone(),
                is_learner: false,
            })
            .collect();
        Ok(Response::new(pb::MemberListResponse {
            header: self.ctx.header(revision),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _r: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(unimplemented("MemberPromote"))
    }
}
