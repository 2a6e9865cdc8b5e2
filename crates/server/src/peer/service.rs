//! The receiving side: the `raftkvpeer.Peer` service on the peer URL.

use raftkv_proto::raftkvpeer::peer_server::Peer;
use raftkv_proto::raftkvpeer::{Ack, Batch};
use tonic::{Request, Response, Status, Streaming};

use super::codec;
use crate::node::NodeHandle;
use crate::replicated::Outcome;

/// Hands messages from peers to the node driver.
pub struct PeerService {
    cluster_id: u64,
    node: NodeHandle<Outcome>,
}

impl PeerService {
    /// A peer service for the member of `cluster_id` driven by `node`.
    pub fn new(cluster_id: u64, node: NodeHandle<Outcome>) -> Self {
        Self { cluster_id, node }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(&self, request: Request<Streaming<Batch>>) -> Result<Response<Ack>, Status> {
        let mut batches = request.into_inner();
        while let Some(batch) = batches.message().await? {
            if batch.cluster_id != self.cluster_id {
                return Err(Status::failed_precondition(format!(
                    "peer belongs to cluster {:x}, this member to {:x}",
                    batch.cluster_id, self.cluster_id
                )));
            }
            for message in batch.messages {
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
}
