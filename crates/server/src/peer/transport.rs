//! The sending side: one queue and one connection task per peer.
//!
//! The node driver hands messages to [`PeerTransport::send`], which never
//! blocks: a message for a peer whose queue is full is dropped (Raft
//! retransmits) and the peer is reported unreachable, so the leader falls
//! back to probing it instead of streaming into the void. The connection
//! task batches what is queued into one stream message, and reconnects with
//! backoff when the stream breaks.
//!
//! Peers are found in the [`MemberDirectory`]: a connection task starts the
//! first time a message goes to a member, looks its peer URL up again at
//! every reconnection (so a MemberUpdate takes effect), and ends once the
//! member is gone from the directory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use raftkv_proto::raftkvpeer::peer_client::PeerClient;
use raftkv_proto::raftkvpeer::{Batch, RaftMessage};
use raftkv_raft::{Message, NodeId};
use tokio::sync::mpsc;

use super::codec;
use super::dial::PeerDialer;
use super::snapshot::SnapshotSender;
use crate::members::MemberDirectory;
use crate::node::{SnapshotDone, SnapshotImage, Transport};

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
    cluster_id: u64,
    queues: HashMap<NodeId, mpsc::Sender<RaftMessage>>,
    members: Arc<MemberDirectory>,
    unreachable: UnreachableReport,
    dialer: PeerDialer,
    /// The driver thread sends from outside the runtime.
    runtime: tokio::runtime::Handle,
    snapshots: SnapshotSender,
}

impl PeerTransport {
    /// A transport to the members of `members`. Connection tasks are
    /// spawned on the tokio runtime current when this is called.
    pub fn new(
        cluster_id: u64,
        members: Arc<MemberDirectory>,
        unreachable: UnreachableReport,
        dialer: PeerDialer,
    ) -> Self {
        let runtime = tokio::runtime::Handle::current();
        Self {
            cluster_id,
            queues: HashMap::new(),
            snapshots: SnapshotSender::new(
                cluster_id,
                members.clone(),
                dialer.clone(),
                runtime.clone(),
            ),
            members,
            unreachable,
            dialer,
            runtime,
        }
    }

    /// The queue towards `peer`, starting its connection task if needed.
    fn queue(&mut self, peer: NodeId) -> Option<&mpsc::Sender<RaftMessage>> {
        if self.queues.get(&peer).is_some_and(|q| q.is_closed()) {
            self.queues.remove(&peer);
        }
        if !self.queues.contains_key(&peer) {
            self.members.peer_url(peer)?;
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MESSAGES);
            self.runtime.spawn(run_peer(
                self.cluster_id,
                peer,
                self.members.clone(),
                receiver,
                self.unreachable.clone(),
                self.dialer.clone(),
            ));
            self.queues.insert(peer, sender);
        }
        self.queues.get(&peer)
    }
}

impl Transport for PeerTransport {
    fn send(&mut self, messages: Vec<Message>) {
        for msg in messages {
            let to = msg.to;
            let Some(queue) = self.queue(to) else {
                tracing::debug!(
                    to = format!("{to:x}"),
                    "no address for peer; message dropped"
                );
                continue;
            };
            if queue.try_send(codec::to_wire(msg)).is_err() {
                (self.unreachable)(to);
            }
        }
    }

    fn send_snapshot(&mut self, message: Message, image: SnapshotImage, done: SnapshotDone) {
        self.snapshots.send(message, image, done);
    }
}

async fn run_peer(
    cluster_id: u64,
    peer: NodeId,
    members: Arc<MemberDirectory>,
    mut queue: mpsc::Receiver<RaftMessage>,
    unreachable: UnreachableReport,
    dialer: PeerDialer,
) {
    loop {
        let Some(url) = members.peer_url(peer) else {
            tracing::debug!(
                peer = format!("{peer:x}"),
                "no longer a member; closing its queue"
            );
            return;
        };
        let client = match dialer.connect(&url).await {
            Ok(channel) => PeerClient::new(channel),
            Err(err) => {
                tracing::debug!(peer = format!("{peer:x}"), %url, %err, "peer unreachable");
                if !drop_queued(&mut queue, peer, &unreachable).await {
                    return;
                }
                continue;
            }
        };
        match stream_to(client, cluster_id, peer, &mut queue).await {
            StreamEnd::TransportGone => return,
            StreamEnd::Removed => {
                tracing::warn!(
                    peer = format!("{peer:x}"),
                    "peer says this member was removed from the cluster"
                );
                members.mark_self_removed();
                return;
            }
            StreamEnd::Broken => {}
        }
        tracing::debug!(
            peer = format!("{peer:x}"),
            "peer stream ended; reconnecting"
        );
        unreachable(peer);
        tokio::time::sleep(RECONNECT_BACKOFF).await;
    }
}

/// Why a stream to a peer ended.
enum StreamEnd {
    /// It broke; reconnect.
    Broken,
    /// The transport was dropped.
    TransportGone,
    /// The peer refused us as a removed member.
    Removed,
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

/// Streams batches to a connected peer until the stream ends.
async fn stream_to(
    mut client: PeerClient<tonic::transport::Channel>,
    cluster_id: u64,
    peer: NodeId,
    queue: &mut mpsc::Receiver<RaftMessage>,
) -> StreamEnd {
    let (batches, outgoing) = mpsc::channel::<Batch>(16);
    let call = client.stream(tokio_stream::wrappers::ReceiverStream::new(outgoing));
    tokio::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => {
                if let Err(status) = result {
                    if status.code() == tonic::Code::PermissionDenied {
                        return StreamEnd::Removed;
                    }
                    if super::service::is_refusal(status.code()) {
                        tracing::warn!(peer = format!("{peer:x}"), %status, "peer refused a message");
                    } else {
                        tracing::debug!(peer = format!("{peer:x}"), %status, "peer stream failed");
                    }
                }
                return StreamEnd::Broken;
            }
            first = queue.recv() => {
                let Some(first) = first else { return StreamEnd::TransportGone };
                let mut messages = vec![first];
                while messages.len() < BATCH_MESSAGES_MAX {
                    match queue.try_recv() {
                        Ok(msg) => messages.push(msg),
                        Err(_) => break,
                    }
                }
                if batches.send(Batch { cluster_id, messages }).await.is_err() {
                    return StreamEnd::Broken;
                }
            }
        }
    }
}
