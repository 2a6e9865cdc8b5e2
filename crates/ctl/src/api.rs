//! Typed calls of etcd's unary RPCs on a [`Client`], with the retry policy
//! each one needs.
//!
//! Writes (`put`, `delete_range`, `txn` with writes, `compact`,
//! `lease_grant`, `lease_revoke`) take the [`RequestId`] to send with every
//! attempt; pass [`Client::next_request_id`] for a new request, or an id
//! used before to ask for a write's first outcome again. Reads retry
//! without one. Membership changes and maintenance calls are not retried
//! once sent ([`Client::unary_once_renewing`]), since the server gives them no
//! exactly-once protection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), raftkv_ctl::error::ClientError> {
//! use raftkv_ctl::client::{Client, ClientConfig};
//! use raftkv_proto::etcdserverpb::PutRequest;
//! let client = Client::new(ClientConfig::default())?;
//! let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
//! let id = client.next_request_id();
//! let first = client.put(put.clone(), id).await?;
//! // Sent again with the same id, the write is not applied twice:
//! let again = client.put(put, id).await?;
//! assert_eq!(first.header, again.header);
//! # Ok(()) }
//! ```

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::auth_client::AuthClient;
use raftkv_proto::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

use crate::client::{request, Client, RequestId, Target};
use crate::error::ClientError;

impl Client {
    /// KV.Range, retried anywhere.
    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, ClientError> {
        self.range_at(Target::Any, req).await
    }

    /// KV.Range against `target`.
    pub async fn range_at(
        &self,
        target: Target,
        req: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, ClientError> {
        self.unary(target, None, |ch, id| {
            let req = req.clone();
            async move { KvClient::new(ch).range(request(req, id)).await }
        })
        .await
    }

    /// KV.Put with `id` on every attempt.
    pub async fn put(
        &self,
        req: pb::PutRequest,
        id: RequestId,
    ) -> Result<pb::PutResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move { KvClient::new(ch).put(request(req, id)).await }
        })
        .await
    }

    /// KV.DeleteRange with `id` on every attempt.
    pub async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
        id: RequestId,
    ) -> Result<pb::DeleteRangeResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move { KvClient::new(ch).delete_range(request(req, id)).await }
        })
        .await
    }

    /// KV.Txn; `id` is for a txn that may write (a read-only txn needs none).
    pub async fn txn(
        &self,
        req: pb::TxnRequest,
        id: Option<RequestId>,
    ) -> Result<pb::TxnResponse, ClientError> {
        self.unary(Target::Any, id, |ch, id| {
            let req = req.clone();
            async move { KvClient::new(ch).txn(request(req, id)).await }
        })
        .await
    }

    /// KV.Compact with `id` on every attempt.
    pub async fn compact(
        &self,
        req: pb::CompactionRequest,
        id: RequestId,
    ) -> Result<pb::CompactionResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| async move {
            KvClient::new(ch).compact(request(req, id)).await
        })
        .await
    }

    /// Lease.LeaseGrant with `id` on every attempt.
    pub async fn lease_grant(
        &self,
        req: pb::LeaseGrantRequest,
        id: RequestId,
    ) -> Result<pb::LeaseGrantResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| async move {
            LeaseClient::new(ch).lease_grant(request(req, id)).await
        })
        .await
    }

    /// Lease.LeaseRevoke with `id` on every attempt.
    pub async fn lease_revoke(
        &self,
        req: pb::LeaseRevokeRequest,
        id: RequestId,
    ) -> Result<pb::LeaseRevokeResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| async move {
            LeaseClient::new(ch).lease_revoke(request(req, id)).await
        })
        .await
    }

    /// Lease.LeaseTimeToLive.
    pub async fn lease_time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, ClientError> {
        self.unary(Target::Any, None, |ch, id| async move {
            LeaseClient::new(ch)
                .lease_time_to_live(request(req, id))
                .await
        })
        .await
    }

    /// Lease.LeaseLeases.
    pub async fn lease_leases(&self) -> Result<pb::LeaseLeasesResponse, ClientError> {
        self.unary(Target::Any, None, |ch, id| async move {
            LeaseClient::new(ch)
                .lease_leases(request(pb::LeaseLeasesRequest {}, id))
                .await
        })
        .await
    }

    /// Cluster.MemberList.
    pub async fn member_list(&self) -> Result<pb::MemberListResponse, ClientError> {
        self.unary(Target::Any, None, |ch, id| async move {
            ClusterClient::new(ch)
                .member_list(request(pb::MemberListRequest::default(), id))
                .await
        })
        .await
    }

    /// Cluster.MemberAdd.
    pub async fn member_add(
        &self,
        req: pb::MemberAddRequest,
    ) -> Result<pb::MemberAddResponse, ClientError> {
        self.unary_once_renewing(Target::Any, |ch| {
            let req = req.clone();
            async move { ClusterClient::new(ch).member_add(request(req, None)).await }
        })
        .await
    }

    /// Cluster.MemberRemove.
    pub async fn member_remove(
        &self,
        req: pb::MemberRemoveRequest,
    ) -> Result<pb::MemberRemoveResponse, ClientError> {
        self.unary_once_renewing(Target::Any, |ch| async move {
            ClusterClient::new(ch)
                .member_remove(request(req, None))
                .await
        })
        .await
    }

    /// Cluster.MemberUpdate.
    pub async fn member_update(
        &self,
        req: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, ClientError> {
        self.unary_once_renewing(Target::Any, |ch| {
            let req = req.clone();
            async move {
                ClusterClient::new(ch)
                    .member_update(request(req, None))
                    .await
            }
        })
        .await
    }

    /// Cluster.MemberPromote.
    pub async fn member_promote(
        &self,
        req: pb::MemberPromoteRequest,
    ) -> Result<pb::MemberPromoteResponse, ClientError> {
        self.unary_once_renewing(Target::Any, |ch| async move {
            ClusterClient::new(ch)
                .member_promote(request(req, None))
                .await
        })
        .await
    }

    /// Maintenance.Status of one endpoint.
    pub async fn status(&self, target: Target) -> Result<pb::StatusResponse, ClientError> {
        self.unary(target, None, |ch, id| async move {
            MaintenanceClient::new(ch)
                .status(request(pb::StatusRequest {}, id))
                .await
        })
        .await
    }

    /// Maintenance.Alarm against `target`.
    pub async fn alarm(
        &self,
        target: Target,
        req: pb::AlarmRequest,
    ) -> Result<pb::AlarmResponse, ClientError> {
        self.unary(target, None, |ch, id| async move {
            MaintenanceClient::new(ch).alarm(request(req, id)).await
        })
        .await
    }

    /// Maintenance.Defragment of one endpoint.
    pub async fn defragment(&self, target: Target) -> Result<pb::DefragmentResponse, ClientError> {
        self.unary_once_renewing(target, |ch| async move {
            MaintenanceClient::new(ch)
                .defragment(request(pb::DefragmentRequest {}, None))
                .await
        })
        .await
    }

    /// Maintenance.MoveLeader, sent to `target` (the leader).
    pub async fn move_leader(
        &self,
        target: Target,
        req: pb::MoveLeaderRequest,
    ) -> Result<pb::MoveLeaderResponse, ClientError> {
        self.unary_once_renewing(target, |ch| async move {
            MaintenanceClient::new(ch)
                .move_leader(request(req, None))
                .await
        })
        .await
    }
    // The auth calls that change something carry a request id like any
    // write, so a server that remembers ids answers a retry with the first
    // outcome (etcd ignores it; there a retried `user add` whose first
    // answer was lost reports "user name already exists"). Reads retry
    // without one.

    /// Auth.AuthEnable.
    pub async fn auth_enable(
        &self,
        req: pb::AuthEnableRequest,
        id: RequestId,
    ) -> Result<pb::AuthEnableResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| async move {
            AuthClient::new(ch).auth_enable(request(req, id)).await
        })
        .await
    }

    /// Auth.AuthDisable.
    pub async fn auth_disable(
        &self,
        req: pb::AuthDisableRequest,
        id: RequestId,
    ) -> Result<pb::AuthDisableResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| async move {
            AuthClient::new(ch).auth_disable(request(req, id)).await
        })
        .await
    }

    /// Auth.AuthStatus (etcd 3.5; etcd 3.4 answers Unimplemented).
    pub async fn auth_status(
        &self,
        req: pb::AuthStatusRequest,
    ) -> Result<pb::AuthStatusResponse, ClientError> {
        self.unary(Target::Any, None, |ch, id| async move {
            AuthClient::new(ch).auth_status(request(req, id)).await
        })
        .await
    }

    /// Auth.UserAdd.
    pub async fn user_add(
        &self,
        req: pb::AuthUserAddRequest,
        id: RequestId,
    ) -> Result<pb::AuthUserAddResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move { AuthClient::new(ch).user_add(request(req, id)).await }
        })
        .await
    }

    /// Auth.UserGet.
    pub async fn user_get(
        &self,
        req: pb::AuthUserGetRequest,
    ) -> Result<pb::AuthUserGetResponse, ClientError> {
        self.unary(Target::Any, None, |ch, id| {
            let req = req.clone();
            async move { AuthClient::new(ch).user_get(request(req, id)).await }
        })
        .await
    }

    /// Auth.UserList.
    pub async fn user_list(
        &self,
        req: pb::AuthUserListRequest,
    ) -> Result<pb::AuthUserListResponse, ClientError> {
        self.unary(Target::Any, None, |ch, id| async move {
            AuthClient::new(ch).user_list(request(req, id)).await
        })
        .await
    }

    /// Auth.UserDelete.
    pub async fn user_delete(
        &self,
        req: pb::AuthUserDeleteRequest,
        id: RequestId,
    ) -> Result<pb::AuthUserDeleteResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move { AuthClient::new(ch).user_delete(request(req, id)).await }
        })
        .await
    }

    /// Auth.UserChangePassword.
    pub async fn user_change_password(
        &self,
        req: pb::AuthUserChangePasswordRequest,
        id: RequestId,
    ) -> Result<pb::AuthUserChangePasswordResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move {
                AuthClient::new(ch)
                    .user_change_password(request(req, id))
                    .await
            }
        })
        .await
    }

    /// Auth.UserGrantRole.
    pub async fn user_grant_role(
        &self,
        req: pb::AuthUserGrantRoleRequest,
        id: RequestId,
    ) -> Result<pb::AuthUserGrantRoleResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move { AuthClient::new(ch).user_grant_role(request(req, id)).await }
        })
        .await
    }

    /// Auth.UserRevokeRole.
    pub async fn user_revoke_role(
        &self,
        req: pb::AuthUserRevokeRoleRequest,
        id: RequestId,
    ) -> Result<pb::AuthUserRevokeRoleResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move { AuthClient::new(ch).user_revoke_role(request(req, id)).await }
        })
        .await
    }

    /// Auth.RoleAdd.
    pub async fn role_add(
        &self,
        req: pb::AuthRoleAddRequest,
        id: RequestId,
    ) -> Result<pb::AuthRoleAddResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move { AuthClient::new(ch).role_add(request(req, id)).await }
        })
        .await
    }

    /// Auth.RoleGet.
    pub async fn role_get(
        &self,
        req: pb::AuthRoleGetRequest,
    ) -> Result<pb::AuthRoleGetResponse, ClientError> {
        self.unary(Target::Any, None, |ch, id| {
            let req = req.clone();
            async move { AuthClient::new(ch).role_get(request(req, id)).await }
        })
        .await
    }

    /// Auth.RoleList.
    pub async fn role_list(
        &self,
        req: pb::AuthRoleListRequest,
    ) -> Result<pb::AuthRoleListResponse, ClientError> {
        self.unary(Target::Any, None, |ch, id| async move {
            AuthClient::new(ch).role_list(request(req, id)).await
        })
        .await
    }

    /// Auth.RoleDelete.
    pub async fn role_delete(
        &self,
        req: pb::AuthRoleDeleteRequest,
        id: RequestId,
    ) -> Result<pb::AuthRoleDeleteResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move { AuthClient::new(ch).role_delete(request(req, id)).await }
        })
        .await
    }

    /// Auth.RoleGrantPermission.
    pub async fn role_grant_permission(
        &self,
        req: pb::AuthRoleGrantPermissionRequest,
        id: RequestId,
    ) -> Result<pb::AuthRoleGrantPermissionResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move {
                AuthClient::new(ch)
                    .role_grant_permission(request(req, id))
                    .await
            }
        })
        .await
    }

    /// Auth.RoleRevokePermission.
    pub async fn role_revoke_permission(
        &self,
        req: pb::AuthRoleRevokePermissionRequest,
        id: RequestId,
    ) -> Result<pb::AuthRoleRevokePermissionResponse, ClientError> {
        self.unary(Target::Any, Some(id), |ch, id| {
            let req = req.clone();
            async move {
                AuthClient::new(ch)
                    .role_revoke_permission(request(req, id))
                    .await
            }
        })
        .await
    }
}
