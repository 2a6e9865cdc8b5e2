//! The Cluster service: MemberList, MemberAdd, MemberRemove, MemberUpdate
//! and MemberPromote.
//!
//! Adding, removing and promoting are Raft membership changes carrying the
//! member's record; updating peer URLs only changes the record, so it is an
//! ordinary replicated request. Like etcd, a learner is promoted only once
//! its log is within 90% of the leader's; a follower asked to promote hands
//! the request to the leader, the only member that knows how far the
//! learner has come.

use prost::Message as _;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcdserverpb::cluster_server::Cluster;
use raftkv_proto::raftkvpeer::Member;
use raftkv_raft::{ConfChange, ConfChangeStep, NodeId};
use tonic::{Request, Response, Status};

use super::ServiceContext;
use crate::replicated::replicated_request::Op;
use crate::status;

/// A learner may be promoted once its log matches this share of the
/// leader's (etcd's threshold).
const PROMOTE_READY_PERCENT: u64 = 90;

/// The Cluster service.
pub struct ClusterService {
    ctx: ServiceContext,
}

impl ClusterService {
    /// A Cluster service over `ctx`.
    pub fn new(ctx: ServiceContext) -> Self {
        Self { ctx }
    }

    /// The members as etcd lists them. This member's own name and client
    /// URLs come from its flags until its publish is applied: client
    /// requests wait for that (see `crate::http::ready`), but the Cluster
    /// service on the peer port answers a joining member before it.
    fn members_pb(&self) -> Vec<pb::Member> {
        let (own_name, own_urls) = &self.ctx.own_attributes;
        self.ctx
            .members
            .list()
            .into_iter()
            .map(|mut m| {
                if m.id == self.ctx.member_id && m.client_urls.is_empty() {
                    m.name.clone_from(own_name);
                    m.client_urls.clone_from(own_urls);
                }
                to_pb(m)
            })
            .collect()
    }

    fn header(&self) -> Result<Option<pb::ResponseHeader>, Status> {
        let revision = self
            .ctx
            .store
            .current_revision()
            .map_err(|e| status::from_mvcc(&e))?;
        Ok(self.ctx.header(revision))
    }

    async fn change(&self, change: ConfChange) -> Result<(), Status> {
        self.ctx
            .with_timeout(async {
                self.ctx
                    .node
                    .change_membership(change)
                    .await
                    .map_err(|e| status::from_node(&e))
            })
            .await
            .map(|_| ())
    }

    /// Checks URLs given for a member: well formed, and not another
    /// member's.
    fn check_peer_urls(&self, urls: &[String], except: Option<NodeId>) -> Result<(), Status> {
        if urls.is_empty() || !urls.iter().all(|url| valid_peer_url(url)) {
            return Err(status::member_bad_urls());
        }
        let taken = self
            .ctx
            .members
            .list()
            .into_iter()
            .filter(|m| Some(m.id) != except)
            .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)));
        if taken {
            return Err(status::peer_url_exists());
        }
        Ok(())
    }

    /// A fresh member id: a hash of the URLs, the cluster token and the
    /// time, as etcd makes them, so a member re-added at the same address
    /// gets a new id (a removed id never comes back).
    fn new_member_id(&self, peer_urls: &[String]) -> NodeId {
        let mut sorted = peer_urls.to_vec();
        sorted.sort();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut salt = 0u32;
        loop {
            let token = format!("{}{now}{salt}", self.ctx.cluster_token);
            let id = crate::config::member_id(&sorted, &token);
            if self.ctx.members.get(id).is_none() && !self.ctx.members.is_removed(id) {
                return id;
            }
            salt += 1;
        }
    }

    /// Whether the learner's log is close enough to the leader's. Only the
    /// leader knows; `None` when this member is not the leader.
    async fn learner_ready(&self, learner: NodeId) -> Result<Option<bool>, Status> {
        let node_status = self
            .ctx
            .node
            .status()
            .await
            .map_err(|e| status::from_node(&e))?;
        if node_status.leader_id != self.ctx.member_id || node_status.matched.is_empty() {
            return Ok(None);
        }
        let leader_match = node_status
            .matched
            .get(&self.ctx.member_id)
            .copied()
            .unwrap_or(node_status.commit_index);
        let learner_match = node_status.matched.get(&learner).copied().unwrap_or(0);
        Ok(Some(
            learner_match.saturating_mul(100) >= leader_match.saturating_mul(PROMOTE_READY_PERCENT),
        ))
    }

    /// Hands a promotion to the leader through its client URL.
    /// The client's token goes along: the leader checks it again.
    async fn forward_promote(
        &self,
        metadata: tonic::metadata::MetadataMap,
        request: pb::MemberPromoteRequest,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        if self.ctx.node.shared().leader_id() == self.ctx.member_id {
            // Leading after all (a change in between): the caller retries.
            return Err(status::from_node(&crate::error::NodeError::LeaderChanged));
        }
        let channel = self.ctx.leader_channel()?;
        self.ctx
            .with_timeout(async {
                let request = Request::from_parts(
                    crate::auth::forwarded_metadata(&metadata),
                    tonic::Extensions::default(),
                    request,
                );
                ClusterClient::new(channel).member_promote(request).await
            })
            .await
    }
}

fn to_pb(m: Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

/// `http(s)://host:port`, as etcd accepts for peer URLs.
fn valid_peer_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.ctx.require_admin_of(&request).await?;
        let request = request.into_inner();
        self.check_peer_urls(&request.peer_ur_ls, None)?;
        if request.is_learner {
            let learners = self
                .ctx
                .members
                .list()
                .iter()
                .filter(|m| m.is_learner)
                .count();
            if learners >= self.ctx.max_learners as usize {
                return Err(status::too_many_learners());
            }
        }
        let id = self.new_member_id(&request.peer_ur_ls);
        let record = Member {
            id,
            name: String::new(),
            peer_urls: request.peer_ur_ls.clone(),
            client_urls: Vec::new(),
            is_learner: request.is_learner,
        };
        let step = if request.is_learner {
            ConfChangeStep::AddLearner(id)
        } else {
            ConfChangeStep::AddVoter(id)
        };
        let change = ConfChange {
            context: record.encode_to_vec().into(),
            ..ConfChange::single(step)
        };
        self.change(change).await?;
        tracing::info!(
            member = format!("{id:x}"),
            peer_urls = ?request.peer_ur_ls,
            learner = request.is_learner,
            "member added"
        );
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header()?,
            member: Some(to_pb(record)),
            members: self.members_pb(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.ctx.require_admin_of(&request).await?;
        let id = request.into_inner().id;
        if self.ctx.members.get(id).is_none() {
            return Err(status::member_not_found());
        }
        self.change(ConfChange::single(ConfChangeStep::RemoveNode(id)))
            .await?;
        tracing::info!(member = format!("{id:x}"), "member removed");
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header()?,
            members: self.members_pb(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let (metadata, extensions, request) = request.into_parts();
        let caller = self.ctx.caller(&metadata, &extensions).await?;
        self.ctx.require_admin(&caller)?;
        if self.ctx.members.get(request.id).is_none() {
            return Err(status::member_not_found());
        }
        self.check_peer_urls(&request.peer_ur_ls, Some(request.id))?;
        self.ctx
            .propose(&caller, &metadata, Op::MemberUpdate(request))
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header()?,
            members: self.members_pb(),
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        // etcd 3.5's linearizable flag: answer only after catching up with
        // everything committed before the request.
        if request.into_inner().linearizable {
            self.ctx.linearizable_barrier().await?;
        }
        Ok(Response::new(pb::MemberListResponse {
            header: self.header()?,
            members: self.members_pb(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.ctx.require_admin_of(&request).await?;
        let (metadata, _, request) = request.into_parts();
        let id = request.id;
        let Some(member) = self.ctx.members.get(id) else {
            return Err(status::member_not_found());
        };
        if !member.is_learner {
            return Err(status::member_not_learner());
        }
        match self.learner_ready(id).await? {
            None => return self.forward_promote(metadata, request).await,
            Some(false) => return Err(status::learner_not_ready()),
            Some(true) => {}
        }
        self.change(ConfChange::single(ConfChangeStep::AddVoter(id)))
            .await?;
        tracing::info!(member = format!("{id:x}"), "learner promoted");
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header()?,
            members: self.members_pb(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::valid_peer_url;

    #[test]
    fn peer_urls_need_a_scheme_a_host_and_a_port() {
        assert!(valid_peer_url("http://127.0.0.1:2380"));
        assert!(valid_peer_url("https://node-1.example:2380/"));
        assert!(!valid_peer_url("127.0.0.1:2380"));
        assert!(!valid_peer_url("http://127.0.0.1"));
        assert!(!valid_peer_url("http://:2380"));
        assert!(!valid_peer_url("http://h:0"));
        assert!(!valid_peer_url("unix://h:1"));
    }
}
