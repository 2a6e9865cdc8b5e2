//! The receiving side: the `raftkvpeer.Peer` service on the peer URL.

use std::sync::Arc;

use raftkv_proto::raftkvpeer::peer_server::Peer;
use raftkv_proto::raftkvpeer::{
    Ack, Batch, MembersRequest, MembersResponse, SnapshotAck, SnapshotChunk,
};
use tonic::{Request, Response, Status, Streaming};

use super::codec;
use super::snapshot::SnapshotReceiver;
use crate::members::MemberDirectory;
use crate::node::NodeHandle;
use crate::replicated::Outcome;

/// Hands messages and snapshots from peers to the node driver, and tells
/// joining members who is in the cluster.
pub struct PeerService {
    cluster_id: u64,
    node: NodeHandle<Outcome>,
    members: Arc<MemberDirectory>,
    snapshots: Arc<SnapshotReceiver>,
}

impl PeerService {
    /// A peer service for the member of `cluster_id` driven by `node`,
    /// receiving snapshots with `snapshots`.
    pub fn new(
        cluster_id: u64,
        node: NodeHandle<Outcome>,
        members: Arc<MemberDirectory>,
        snapshots: Arc<SnapshotReceiver>,
    ) -> Self {
        Self {
            cluster_id,
            node,
            members,
            snapshots,
        }
    }
}

/// The status a removed member's stream is refused with; its transport
/// recognises the code and the member stops.
pub(crate) fn removed(id: u64) -> Status {
    Status::permission_denied(format!(
        "member {id:x} was removed from the cluster and may not rejoin"
    ))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(&self, request: Request<Streaming<Batch>>) -> Result<Response<Ack>, Status> {
        let mut batches = request.into_inner();
        while let Some(batch) = batches.message().await.inspect_err(warn_if_refused)? {
            if batch.cluster_id != self.cluster_id {
                return Err(Status::failed_precondition(format!(
                    "peer belongs to cluster {:x}, this member to {:x}",
                    batch.cluster_id, self.cluster_id
                )));
            }
            for message in batch.messages {
                if self.members.is_removed(message.from) {
                    return Err(removed(message.from));
                }
                match codec::from_wire(message) {
                    // Waiting here when the driver is busy slows the sender
                    // down instead of queueing without bound.
                    Ok(message) => {
                        if self.node.step(message).await.is_err() {
                            return Err(Status::unavailable("member stopped"));
                        }
                    }
                    Err(err) => tracing::warn!(%err, "dropping a malformed peer message"),
                }
            }
        }
        Ok(Response::new(Ack {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        self.snapshots
            .receive(&self.node, &self.members, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersResponse>, Status> {
        Ok(Response::new(MembersResponse {
            cluster_id: self.cluster_id,
            members: self.members.list(),
        }))
    }
}

/// A stream that broke because this side refused a message (too large for
/// the decoder, say) is worth a warning: the sender will keep trying and
/// the member it is for will not catch up. A peer going away is not.
fn warn_if_refused(status: &Status) {
    if is_refusal(status.code()) {
        tracing::warn!(%status, "refused a message on a peer stream");
    } else {
        tracing::debug!(%status, "peer stream ended");
    }
}

/// Codes that mean a message was refused rather than the connection lost.
pub(crate) fn is_refusal(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::OutOfRange
            | tonic::Code::ResourceExhausted
            | tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::DataLoss
    )
}
