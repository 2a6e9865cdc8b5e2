//! What goes into the Raft log for a client's write, and what applying it
//! yields. Both are protobuf messages of our own, wrapping etcd's, so the
//! log stays readable by future versions.
//!
//! A request may carry a client id and a sequence number (from the gRPC
//! metadata described in [`crate::grpc::kv`]); the state machine remembers
//! the outcome of recent requests per client, so a retried write is answered
//! with its first outcome instead of being applied again.

use raftkv_proto::etcdserverpb as pb;

/// A client write as replicated.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReplicatedRequest {
    /// The client's id for exactly-once retries; 0 for none.
    #[prost(uint64, tag = "1")]
    pub client_id: u64,
    /// The client's sequence number of this request.
    #[prost(uint64, tag = "2")]
    pub sequence: u64,
    /// The proposer's reading of the cluster clock, in milliseconds (see
    /// [`crate::outcomes`]); not a wall-clock time.
    #[prost(uint64, tag = "3")]
    pub proposed_at_ms: u64,
    /// The user the proposer authenticated the client as ("" for none);
    /// the write is checked against this user's permissions when applied.
    #[prost(string, tag = "4")]
    pub user: String,
    /// Proposed by the server itself (lease expiry, automatic compaction,
    /// checkpoints), not for a client: no permission applies.
    #[prost(bool, tag = "5")]
    pub internal: bool,
    /// The operation.
    #[prost(
        oneof = "replicated_request::Op",
        tags = "10, 11, 12, 13, 14, 15, 16, 30, 31, 32, 33, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51"
    )]
    pub op: Option<replicated_request::Op>,
}

/// The operations of [`ReplicatedRequest`].
pub mod replicated_request {
    use super::pb;

    /// One etcd write.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Op {
        /// A put.
        #[prost(message, tag = "10")]
        Put(pb::PutRequest),
        /// A delete.
        #[prost(message, tag = "11")]
        DeleteRange(pb::DeleteRangeRequest),
        /// A transaction with writes.
        #[prost(message, tag = "12")]
        Txn(pb::TxnRequest),
        /// A compaction.
        #[prost(message, tag = "13")]
        Compaction(pb::CompactionRequest),
        /// A lease grant (the id is chosen before proposing).
        #[prost(message, tag = "14")]
        LeaseGrant(pb::LeaseGrantRequest),
        /// A lease revocation, by a client or by expiry.
        #[prost(message, tag = "15")]
        LeaseRevoke(pb::LeaseRevokeRequest),
        /// An alarm raised or cleared (ACTIVATE or DEACTIVATE).
        #[prost(message, tag = "16")]
        Alarm(pb::AlarmRequest),
        /// New peer URLs for a member.
        #[prost(message, tag = "30")]
        MemberUpdate(pb::MemberUpdateRequest),
        /// A running member's name and client URLs.
        #[prost(message, tag = "31")]
        MemberPublish(raftkv_proto::raftkvpeer::Member),
        /// The leader's record of leases' time left.
        #[prost(message, tag = "32")]
        LeaseCheckpoint(pb::LeaseCheckpointRequest),
        /// The leader's order to forget expired outcomes.
        #[prost(message, tag = "33")]
        ForgetOutcomes(super::ForgetOutcomes),
        /// AuthEnable.
        #[prost(message, tag = "40")]
        AuthEnable(pb::AuthEnableRequest),
        /// AuthDisable.
        #[prost(message, tag = "41")]
        AuthDisable(pb::AuthDisableRequest),
        /// A password checked by the proposer: the token to give out.
        #[prost(message, tag = "42")]
        Authenticate(super::Authenticate),
        /// UserAdd, with the password only as its hash.
        #[prost(message, tag = "43")]
        UserAdd(pb::AuthUserAddRequest),
        /// UserDelete.
        #[prost(message, tag = "44")]
        UserDelete(pb::AuthUserDeleteRequest),
        /// UserChangePassword, with the password only as its hash.
        #[prost(message, tag = "45")]
        UserChangePassword(pb::AuthUserChangePasswordRequest),
        /// UserGrantRole.
        #[prost(message, tag = "46")]
        UserGrantRole(pb::AuthUserGrantRoleRequest),
        /// UserRevokeRole.
        #[prost(message, tag = "47")]
        UserRevokeRole(pb::AuthUserRevokeRoleRequest),
        /// RoleAdd.
        #[prost(message, tag = "48")]
        RoleAdd(pb::AuthRoleAddRequest),
        /// RoleDelete.
        #[prost(message, tag = "49")]
        RoleDelete(pb::AuthRoleDeleteRequest),
        /// RoleGrantPermission.
        #[prost(message, tag = "50")]
        RoleGrantPermission(pb::AuthRoleGrantPermissionRequest),
        /// RoleRevokePermission.
        #[prost(message, tag = "51")]
        RoleRevokePermission(pb::AuthRoleRevokePermissionRequest),
    }
}

/// Forget the exactly-once outcomes older than a TTL by the replicated
/// cluster clock (see [`crate::outcomes`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ForgetOutcomes {
    /// The proposing leader's TTL, in milliseconds.
    #[prost(uint64, tag = "1")]
    pub ttl_ms: u64,
}

/// A user whose password the proposer checked, and the random prefix of
/// the simple token every member gives that user when this is applied
/// (the token is `<prefix>.<log index>`; see [`crate::auth::tokens`]).
/// The password itself never enters the log.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Authenticate {
    /// The user.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The token's random prefix.
    #[prost(string, tag = "2")]
    pub token_prefix: String,
}

/// What applying a request yielded; also what the exactly-once table stores.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Outcome {
    /// The store revision after the request was applied.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// The user the request was applied as: a retry is answered with this
    /// outcome only for the same user.
    #[prost(string, tag = "3")]
    pub user: String,
    /// The response or the error.
    #[prost(
        oneof = "outcome::Result",
        tags = "10, 11, 12, 13, 14, 15, 16, 20, 30, 31, 32, 40, 41"
    )]
    pub result: Option<outcome::Result>,
}

/// The results of [`Outcome`].
pub mod outcome {
    use super::pb;

    /// A response or an error.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Result {
        /// A put's response.
        #[prost(message, tag = "10")]
        Put(pb::PutResponse),
        /// A delete's response.
        #[prost(message, tag = "11")]
        DeleteRange(pb::DeleteRangeResponse),
        /// A transaction's response.
        #[prost(message, tag = "12")]
        Txn(pb::TxnResponse),
        /// A compaction's response.
        #[prost(message, tag = "13")]
        Compaction(pb::CompactionResponse),
        /// A lease grant's response.
        #[prost(message, tag = "14")]
        LeaseGrant(pb::LeaseGrantResponse),
        /// A lease revocation's response.
        #[prost(message, tag = "15")]
        LeaseRevoke(pb::LeaseRevokeResponse),
        /// An alarm change's response: the alarm that changed, if any.
        #[prost(message, tag = "16")]
        Alarm(pb::AlarmResponse),
        /// A member's record changed (update or publish).
        #[prost(message, tag = "30")]
        MemberUpdate(pb::MemberUpdateResponse),
        /// A lease checkpoint's response.
        #[prost(message, tag = "31")]
        LeaseCheckpoint(pb::LeaseCheckpointResponse),
        /// How many outcomes a [`super::ForgetOutcomes`] forgot.
        #[prost(uint64, tag = "32")]
        Forgotten(u64),
        /// The token an applied [`super::Authenticate`] gave out.
        #[prost(message, tag = "40")]
        Authenticated(pb::AuthenticateResponse),
        /// An auth change made: the auth revision after it.
        #[prost(uint64, tag = "41")]
        AuthChanged(u64),
        /// The request failed as etcd would answer it.
        #[prost(message, tag = "20")]
        Error(super::ErrorOutcome),
    }
}

/// A request's failure: a gRPC code and etcd's message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorOutcome {
    /// The gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
}

impl Outcome {
    /// An outcome that is an error.
    pub fn error(revision: i64, status: &tonic::Status) -> Self {
        Self {
            revision,
            user: String::new(),
            result: Some(outcome::Result::Error(ErrorOutcome {
                code: status.code() as i32,
                message: status.message().to_string(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// A oneof variant missing from its `tags` list would decode as nothing.
    #[test]
    fn every_operation_and_result_survives_the_log() {
        let ops = vec![
            replicated_request::Op::Put(Default::default()),
            replicated_request::Op::DeleteRange(Default::default()),
            replicated_request::Op::Txn(Default::default()),
            replicated_request::Op::Compaction(Default::default()),
            replicated_request::Op::LeaseGrant(Default::default()),
            replicated_request::Op::LeaseRevoke(Default::default()),
            replicated_request::Op::MemberUpdate(Default::default()),
            replicated_request::Op::MemberPublish(Default::default()),
            replicated_request::Op::LeaseCheckpoint(Default::default()),
            replicated_request::Op::Alarm(Default::default()),
            replicated_request::Op::ForgetOutcomes(Default::default()),
            replicated_request::Op::AuthEnable(Default::default()),
            replicated_request::Op::AuthDisable(Default::default()),
            replicated_request::Op::Authenticate(Default::default()),
            replicated_request::Op::UserAdd(Default::default()),
            replicated_request::Op::UserDelete(Default::default()),
            replicated_request::Op::UserChangePassword(Default::default()),
            replicated_request::Op::UserGrantRole(Default::default()),
            replicated_request::Op::UserRevokeRole(Default::default()),
            replicated_request::Op::RoleAdd(Default::default()),
            replicated_request::Op::RoleDelete(Default::default()),
            replicated_request::Op::RoleGrantPermission(Default::default()),
            replicated_request::Op::RoleRevokePermission(Default::default()),
        ];
        for op in ops {
            let request = ReplicatedRequest {
                client_id: 1,
                sequence: 2,
                proposed_at_ms: 3,
                user: "u".into(),
                internal: true,
                op: Some(op),
            };
            let decoded = ReplicatedRequest::decode(request.encode_to_vec().as_slice()).unwrap();
            assert_eq!(decoded, request);
        }
        let results = vec![
            outcome::Result::Put(Default::default()),
            outcome::Result::DeleteRange(Default::default()),
            outcome::Result::Txn(Default::default()),
            outcome::Result::Compaction(Default::default()),
            outcome::Result::LeaseGrant(Default::default()),
            outcome::Result::LeaseRevoke(Default::default()),
            outcome::Result::MemberUpdate(Default::default()),
            outcome::Result::LeaseCheckpoint(Default::default()),
            outcome::Result::Alarm(Default::default()),
            outcome::Result::Forgotten(0),
            outcome::Result::Error(Default::default()),
            outcome::Result::Authenticated(Default::default()),
            outcome::Result::AuthChanged(7),
        ];
        for result in results {
            let outcome = Outcome {
                revision: 4,
                user: "u".into(),
                result: Some(result),
            };
            let decoded = Outcome::decode(outcome.encode_to_vec().as_slice()).unwrap();
            assert_eq!(decoded, outcome);
        }
    }
}
