//! etcd's v3 gRPC services.
//!
//! - [`kv`] serves Range, Put, DeleteRange, Txn and Compact.
//! - [`maintenance`] serves Status, HashKV, MoveLeader and Alarm (the other
//!   maintenance calls answer Unimplemented until they land).
//! - [`cluster`] serves MemberList.
//! - [`watch`] serves Watch.
//!
//! Lease, Auth, Lock and Election are not served yet; clients calling them
//! get gRPC's Unimplemented.

pub mod cluster;
pub mod kv;
pub mod maintenance;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use raftkv_mvcc::Store;
use raftkv_proto::etcdserverpb::ResponseHeader;

use crate::node::NodeHandle;
use crate::replicated::Outcome;

/// What every service needs: the node, the store, the ids and the limits.
#[derive(Clone)]
pub struct ServiceContext {
    /// The node driver.
    pub node: NodeHandle<Outcome>,
    /// The applied state, for reads.
    pub store: Arc<Store>,
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: u64,
    /// Most operations at one level of a txn.
    pub max_txn_ops: u32,
    /// How long a request may wait for the cluster.
    pub request_timeout: Duration,
    /// The members, for MemberList.
    pub members: Arc<Vec<cluster::MemberInfo>>,
}

impl ServiceContext {
    /// A response header as etcd fills it.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.node.shared().term(),
        })
    }
}
