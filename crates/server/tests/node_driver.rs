//! The node driver on real write-ahead logs, in-process clusters wired by
//! channels, driven by real time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raftkv_raft::{ConfChange, ConfState, Config, Index, Message, NodeId, Role};
use raftkv_server::error::NodeError;
use raftkv_server::node::{self, Committed, NodeHandle, NodeOptions, StateMachine, Transport};

/// `(index, payload)` of each applied proposal.
type AppliedLog = Arc<Mutex<Vec<(Index, Vec<u8>)>>>;

/// Records what it applies; its output is the entry's index.
#[derive(Clone, Default)]
struct Recorder {
    applied: AppliedLog,
    last: Index,
}

impl StateMachine for Recorder {
    type Output = Index;

    fn applied_index(&self) -> Index {
        self.last
    }

    fn apply(&mut self, proposals: &[Committed<'_>]) -> Result<Vec<Index>, NodeError> {
        let mut applied = self
            .applied
            .lock()
            .map_err(|_| NodeError::Fatal("poisoned".into()))?;
        for p in proposals {
            applied.push((p.index, p.payload.to_vec()));
            self.last = p.index;
        }
        Ok(proposals.iter().map(|p| p.index).collect())
    }

    fn apply_membership(
        &mut self,
        index: Index,
        _: u64,
        _: &ConfChange,
        _: &ConfState,
    ) -> Result<(), NodeError> {
        self.last = self.last.max(index);
        Ok(())
    }
}

type Peers = Arc<Mutex<BTreeMap<NodeId, NodeHandle<Index>>>>;

/// Routes messages to the other drivers' queues; a stopped peer loses them.
struct ChannelTransport {
    peers: Peers,
}

impl Transport for ChannelTransport {
    fn send(&mut self, messages: Vec<Message>) {
        let Ok(peers) = self.peers.lock() else { return };
        for msg in messages {
            if let Some(peer) = peers.get(&msg.to) {
                peer.try_step(msg);
            }
        }
    }
}

struct TestNode {
    handle: NodeHandle<Index>,
    thread: std::thread::JoinHandle<Result<(), NodeError>>,
    recorder: Recorder,
}

fn start(id: NodeId, voters: &[NodeId], dir: &Path, peers: &Peers) -> TestNode {
    let mut raft = Config::new(id);
    raft.election_tick = 10;
    let options = NodeOptions {
        raft,
        bootstrap_voters: voters.to_vec(),
        tick: Duration::from_millis(10),
        input_queue: 1024,
    };
    let recorder = Recorder::default();
    let transport = ChannelTransport {
        peers: peers.clone(),
    };
    let (handle, thread) = node::start(
        options,
        &dir.join(format!("wal-{id}")),
        recorder.clone(),
        transport,
    )
    .expect("node starts");
    peers.lock().expect("lock").insert(id, handle.clone());
    TestNode {
        handle,
        thread,
        recorder,
    }
}

async fn stop(node: TestNode, id: NodeId, peers: &Peers) {
    peers.lock().expect("lock").remove(&id);
    node.handle.stop().await;
    let result = tokio::task::spawn_blocking(move || node.thread.join())
        .await
        .expect("join");
    assert!(matches!(result, Ok(Ok(()))), "clean stop");
}

async fn wait_for_leader(handles: &[&NodeHandle<Index>]) -> NodeId {
    for _ in 0..500 {
        for handle in handles {
            if let Ok(status) = handle.status().await {
                if status.role == Role::Leader {
                    return status.id;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader within 5 s");
}

async fn propose_until_ok(handle: &NodeHandle<Index>, payload: &'static [u8]) -> Index {
    for _ in 0..200 {
        match handle.propose(Bytes::from_static(payload)).await {
            Ok(index) => return index,
            Err(NodeError::NoLeader | NodeError::LeaderChanged) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("proposal failed: {err}"),
        }
    }
    panic!("proposal never accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_commits_and_recovers_its_log_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peers: Peers = Arc::default();
    let node = start(1, &[1], dir.path(), &peers);
    wait_for_leader(&[&node.handle]).await;
    let first = propose_until_ok(&node.handle, b"one").await;
    let second = propose_until_ok(&node.handle, b"two").await;
    assert!(second > first);
    let read_at = node.handle.read_barrier().await.expect("linearizable read");
    assert!(read_at >= second, "a read after a write sees it");
    stop(node, 1, &peers).await;

    // The restarted node replays its log from the WAL.
    let node = start(1, &[1], dir.path(), &peers);
    wait_for_leader(&[&node.handle]).await;
    let third = propose_until_ok(&node.handle, b"three").await;
    assert!(third > second);
    let applied = node.recorder.applied.lock().expect("lock").clone();
    let payloads: Vec<&[u8]> = applied.iter().map(|(_, p)| p.as_slice()).collect();
    assert_eq!(payloads, vec![&b"one"[..], b"two", b"three"]);
    stop(node, 1, &peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_survive_the_loss_of_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peers: Peers = Arc::default();
    let voters = [1, 2, 3];
    let mut nodes: BTreeMap<NodeId, TestNode> = voters
        .iter()
        .map(|&id| (id, start(id, &voters, dir.path(), &peers)))
        .collect();
    let handles: Vec<NodeHandle<Index>> = nodes.values().map(|n| n.handle.clone()).collect();
    let leader = wait_for_leader(&handles.iter().collect::<Vec<_>>()).await;
    let index = propose_until_ok(&nodes[&leader].handle, b"x").await;

    // Every member applies it.
    for _ in 0..200 {
        if nodes.values().all(|n| {
            n.recorder
                .applied
                .lock()
                .expect("lock")
                .iter()
                .any(|(i, _)| *i == index)
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (id, node) in &nodes {
        assert!(
            node.recorder
                .applied
                .lock()
                .expect("lock")
                .iter()
                .any(|(i, p)| *i == index && p == b"x"),
            "node {id} applied the write"
        );
    }

    // The leader goes away; the other two elect a new one and go on.
    let old = nodes.remove(&leader).expect("leader");
    stop(old, leader, &peers).await;
    let rest: Vec<NodeHandle<Index>> = nodes.values().map(|n| n.handle.clone()).collect();
    let new_leader = wait_for_leader(&rest.iter().collect::<Vec<_>>()).await;
    assert_ne!(new_leader, leader);
    let later = propose_until_ok(&nodes[&new_leader].handle, b"y").await;
    assert!(later > index);
    // A follower's linearizable read waits for the write.
    let follower = nodes
        .keys()
        .copied()
        .find(|&id| id != new_leader)
        .expect("a follower");
    let read_at = nodes[&follower].handle.read_barrier().await.expect("read");
    assert!(read_at >= later);
    for (id, node) in nodes {
        stop(node, id, &peers).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_proposals_to_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peers: Peers = Arc::default();
    let voters = [1, 2, 3];
    let nodes: BTreeMap<NodeId, TestNode> = voters
        .iter()
        .map(|&id| (id, start(id, &voters, dir.path(), &peers)))
        .collect();
    let handles: Vec<NodeHandle<Index>> = nodes.values().map(|n| n.handle.clone()).collect();
    let leader = wait_for_leader(&handles.iter().collect::<Vec<_>>()).await;
    let follower = voters
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("a follower");
    let index = propose_until_ok(&nodes[&follower].handle, b"via follower").await;
    assert!(
        index > 0,
        "the follower's waiter is answered when the entry applies there"
    );
    for (id, node) in nodes {
        stop(node, id, &peers).await;
    }
}
