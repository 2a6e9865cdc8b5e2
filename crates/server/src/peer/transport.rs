//! The sending side: one queue and one connection task per peer.
//!
//! The node driver hands messages to [`PeerTransport::send`], which never
//! blocks: a message for a peer whose queue is full is dropped (Raft
//! retransmits) and the peer is reported unreachable, so the leader falls
//! back to probing it instead of streaming into the void. The connection
//! task batches what is queued into one stream message, and reconnects with
//! backoff when the stream breaks.

use std::collections::HashMap;
use std::time::Duration;

use raftkv_proto::raftkvpeer::peer_client::PeerClient;
use raftkv_proto::raftkvpeer::{Batch, RaftMessage};
use raftkv_raft::{Message, NodeId};
use tokio::sync::mpsc;

use super::codec;
use crate::node::Transport;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE_MESSAGES: usize = 4096;
/// Most messages in one stream batch.
const BATCH_MESSAGES_MAX: usize = 256;
/// Wait between reconnection attempts.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Called (from any thread) when a peer could not be reached.
pub type UnreachableReport = std::sync::Arc<dyn Fn(NodeId) + Send + Sync>;

/// Queues towards every peer.
pub struct PeerTransport {
    queues: HashMap<NodeId, mpsc::Sender<RaftMessage>>,
    unreachable: UnreachableReport,
}

impl PeerTransport {
    /// Starts one connection task per peer (`id`, peer URL). Must be called
    /// inside a tokio runtime.
    pub fn start(
        cluster_id: u64,
        peers: Vec<(NodeId, String)>,
        unreachable: UnreachableReport,
    ) -> Self {
        let mut queues = HashMap::new();
        for (id, url) in peers {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES);
            queues.insert(id, sender);
            tokio::spawn(run_peer(cluster_id, id, url, receiver, unreachable.clone()));
        }
        Self {
            queues,
            unreachable,
        }
    }
}

impl Transport for PeerTransport {
    fn send(&mut self, messages: Vec<Message>) {
        for msg in messages {
            let to = msg.to;
            let Some(queue) = self.queues.get(&to) else {
                tracing::warn!(to, "no route to peer; message dropped");
                continue;
            };
            if queue.try_send(codec::to_wire(msg)).is_err() {
                (self.unreachable)(to);
            }
        }
    }
}

async fn run_peer(
    cluster_id: u64,
    peer: NodeId,
    url: String,
    mut queue: mpsc::Receiver<RaftMessage>,
    unreachable: UnreachableReport,
) {
    loop {
        let client = match PeerClient::connect(url.clone()).await {
            Ok(client) => client,
            Err(err) => {
                tracing::debug!(peer = format!("{peer:x}"), %url, %err, "peer unreachable");
                if !drop_queued(&mut queue, peer, &unreachable).await {
                    return;
                }
                continue;
            }
        };
        if !stream_to(client, cluster_id, peer, &mut queue).await {
            return;
        }
        tracing::debug!(
            peer = format!("{peer:x}"),
            "peer stream ended; reconnecting"
        );
        unreachable(peer);
        tokio::time::sleep(RECONNECT_BACKOFF).await;
    }
}

/// While a peer cannot be reached, what is queued for it is dropped (Raft
/// resends what matters). Returns false once the transport is gone.
async fn drop_queued(
    queue: &mut mpsc::Receiver<RaftMessage>,
    peer: NodeId,
    unreachable: &UnreachableReport,
) -> bool {
    let deadline = tokio::time::sleep(RECONNECT_BACKOFF);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return true,
            msg = queue.recv() => match msg {
                Some(_) => unreachable(peer),
                None => return false,
            },
        }
    }
}

/// Streams batches to a connected peer until the stream breaks (true) or
/// the transport is dropped (false).
async fn stream_to(
    mut client: PeerClient<tonic::transport::Channel>,
    cluster_id: u64,
    peer: NodeId,
    queue: &mut mpsc::Receiver<RaftMessage>,
) -> bool {
    let (batches, outgoing) = mpsc::channel::<Batch>(16);
    let call = client.stream(tokio_stream::wrappers::ReceiverStream::new(outgoing));
    tokio::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => {
                if let Err(status) = result {
                    tracing::debug!(peer = format!("{peer:x}"), %status, "peer stream failed");
                }
                return true;
            }
            first = queue.recv() => {
                let Some(first) = first else { return false };
                let mut messages = vec![first];
                while messages.len() < BATCH_MESSAGES_MAX {
                    match queue.try_recv() {
                        Ok(msg) => messages.push(msg),
                        Err(_) => break,
                    }
                }
                if batches.send(Batch { cluster_id, messages }).await.is_err() {
                    return true;
                }
            }
        }
    }
}
