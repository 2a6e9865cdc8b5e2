//! The node driver: one thread that owns the Raft node, its write-ahead log
//! and the state machine, and runs the Ready loop.
//!
//! ```text
//!  gRPC tasks ──Input──▶ ┌──────────── driver thread ────────────┐
//!  peer transport ─────▶ │ step / propose / read_index / tick     │
//!  ticker ─────────────▶ │ ready: send leader msgs ─▶ transport   │
//!                        │        append + fsync WAL (one batch)  │
//!                        │        send persisted msgs             │
//!                        │        apply committed ─▶ state machine│
//!                        │        answer waiters, advance         │
//!                        └────────────────────────────────────────┘
//! ```
//!
//! Everything that touches the disk runs on this one thread, in the order
//! the persistence contract of `raftkv_raft` requires. Inputs are drained in
//! batches between readies, so many proposals share one fsync.
//!
//! Snapshots never pass through this thread as bytes. A leader that must
//! send one opens the state machine's image (a read transaction, no data
//! read yet) and hands it to [`Transport::send_snapshot`] with a
//! [`SnapshotDone`]; the transport streams it elsewhere and reports the end,
//! which the driver passes to `RawNode::report_snapshot`. A follower's
//! transport receives the image (to a file) and hands it in with
//! [`NodeHandle::install_snapshot`]; the driver steps the InstallSnapshot
//! message and, if the core accepts it, restores the state machine from the
//! image.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raftkv_raft::{
    ConfChange, ConfState, Config as RaftConfig, Entry, EntryKind, Index, InitialState, Message,
    MessageBody, NodeId, RawNode, Role, Snapshot, SnapshotMeta, Term,
};
use raftkv_storage::{SnapshotConfig, SnapshotMarker, SnapshotStore, Wal, WalConfig};
use tokio::sync::{mpsc, oneshot};

use crate::error::NodeError;
use crate::metrics::{Histogram, NodeMetrics};

/// Most inputs handled before the next ready, so one fsync covers them.
const INPUT_BATCH_MAX: usize = 4096;
/// How long queued reads wait for the read-index round in flight before they get a round of
/// their own: long enough for any answered round, short enough that a lost one (a message
/// dropped on the way to the leader) costs little.
const READ_ROUND_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// The replicated state machine the driver applies committed entries to.
pub trait StateMachine: Send + 'static {
    /// What applying a proposal yields for its proposer.
    type Output: Send + 'static;

    /// The last index applied. On restart, committed entries at or below it
    /// are handed out again; the state machine must skip them.
    fn applied_index(&self) -> Index;

    /// Applies committed proposals in log order, as one batch. Returns one
    /// output per proposal, in the same order. An error means the state
    /// machine can no longer be trusted: the node stops.
    fn apply(&mut self, proposals: &[Committed<'_>]) -> Result<Vec<Self::Output>, NodeError>;

    /// Records a membership change applied at `index` with the member
    /// information carried in its context.
    fn apply_membership(
        &mut self,
        index: Index,
        term: Term,
        change: &ConfChange,
        conf_state: &ConfState,
    ) -> Result<(), NodeError>;

    /// Makes everything applied durable and returns the applied index that
    /// now survives a crash. Log entries up to it may then be discarded.
    fn persist(&mut self) -> Result<Index, NodeError>;

    /// A full image of the state, for a follower that fell behind the log.
    /// Called on the driver thread, so it must only open the image (fix
    /// what it will contain, covering at least everything applied so far)
    /// and leave reading it to whoever reads the returned stream, on
    /// another thread, while the state machine goes on applying.
    fn snapshot(&self) -> Result<SnapshotImage, NodeError>;

    /// Replaces the whole state with an image made by [`StateMachine::snapshot`],
    /// read from `image`, durably; returns the applied index the image covers.
    /// On an error the node stops (the core has already moved its log to the
    /// snapshot), so the image must have been checked whole beforehand.
    fn restore(&mut self, image: &mut dyn std::io::Read) -> Result<Index, NodeError>;
}

/// A state machine image, read as a byte stream off the driver thread.
pub type SnapshotImage = Box<dyn std::io::Read + Send>;

/// Reports a snapshot's end: {member, delivered}.
type SnapshotReportFn = Arc<dyn Fn(NodeId, bool) + Send + Sync>;

/// How a snapshot handed to [`Transport::send_snapshot`] ended, reported
/// once to the driver (which passes it to `RawNode::report_snapshot`).
/// Dropping it unreported reports a failure, so a transfer that is lost on
/// any path never leaves the leader waiting for it forever.
pub struct SnapshotDone {
    to: NodeId,
    report: Option<SnapshotReportFn>,
}

impl SnapshotDone {
    /// The follower the snapshot goes to.
    pub fn to(&self) -> NodeId {
        self.to
    }

    /// Reports the end: `delivered` if the follower took the snapshot (it
    /// answered after installing it, or found it needed it no more).
    pub fn finished(mut self, delivered: bool) {
        if let Some(report) = self.report.take() {
            report(self.to, delivered);
        }
    }

    /// Reports nothing: a transfer to the same follower is already under
    /// way and its report stands for this one too (the core tracks one
    /// snapshot per follower, not which one).
    pub fn superseded(mut self) {
        self.report = None;
    }
}

impl Drop for SnapshotDone {
    fn drop(&mut self) {
        if let Some(report) = self.report.take() {
            report(self.to, false);
        }
    }
}

impl std::fmt::Debug for SnapshotDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotDone")
            .field("to", &self.to)
            .finish()
    }
}

/// A committed proposal handed to the state machine.
#[derive(Clone, Copy, Debug)]
pub struct Committed<'a> {
    /// Its log index.
    pub index: Index,
    /// Its term.
    pub term: Term,
    /// The proposal id the proposer waits on.
    pub id: u64,
    /// The payload.
    pub payload: &'a [u8],
}

/// Sends Raft messages to peers. Implementations must not block: a message
/// that cannot be queued is dropped (Raft retransmits) and the peer reported
/// unreachable through [`Input::Unreachable`].
pub trait Transport: Send + 'static {
    /// Queues messages for their recipients.
    fn send(&mut self, messages: Vec<Message>);

    /// Sends `message` (an `InstallSnapshot` whose data is empty) with the
    /// state machine's `image` to `message.to`, off the driver thread, and
    /// reports the end through `done`. Must not block: reading the image
    /// and sending it happen elsewhere. The recipient hands both to its
    /// driver with [`NodeHandle::install_snapshot`].
    fn send_snapshot(&mut self, message: Message, image: SnapshotImage, done: SnapshotDone);
}

/// What the driver reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node's id.
    pub id: NodeId,
    /// The leader it knows of (0 for none).
    pub leader_id: NodeId,
    /// Its role.
    pub role: Role,
    /// The current term.
    pub term: Term,
    /// The commit index.
    pub commit_index: Index,
    /// The applied index.
    pub applied_index: Index,
    /// The configuration in force.
    pub conf_state: ConfState,
    /// On the leader, how far each member's log is known to match its own
    /// (empty elsewhere).
    pub matched: BTreeMap<NodeId, Index>,
}

/// A request to the driver.
pub enum Input<O> {
    /// Replicate `payload`; the answer is the state machine's output.
    Propose {
        /// The payload.
        payload: Bytes,
        /// Where the output goes.
        reply: oneshot::Sender<Result<O, NodeError>>,
    },
    /// Wait until a linearizable read may be served locally; the answer is
    /// the applied index it may be served at.
    Read {
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Index, NodeError>>,
    },
    /// Propose a membership change; the answer is the new configuration.
    ChangeMembership {
        /// The change.
        change: ConfChange,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<ConfState, NodeError>>,
    },
    /// Hand leadership to `target`.
    TransferLeader {
        /// The new leader.
        target: NodeId,
        /// Acknowledges that the transfer started.
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    /// If this node leads, start handing leadership to the most caught-up
    /// voter; the answer is the target (`None` when not leading or alone).
    HandOverLeadership(oneshot::Sender<Option<NodeId>>),
    /// A message from a peer.
    Step(Message),
    /// An `InstallSnapshot` message from the leader with the image it goes
    /// with, received in full and checked. The answer says whether the
    /// image was installed (false: the snapshot was not needed, or refused
    /// as stale).
    Snapshot {
        /// The message (its snapshot data is empty).
        message: Message,
        /// The image.
        image: SnapshotImage,
        /// Where the answer goes, once the image is durable (or dropped).
        reply: oneshot::Sender<Result<bool, NodeError>>,
    },
    /// A snapshot transfer ended (see [`SnapshotDone`]); the report itself
    /// waits beside the queue, so it is never lost to a full one.
    Wake,
    /// The transport could not reach a peer.
    Unreachable(NodeId),
    /// One tick of the logical clock.
    Tick,
    /// Report the node's status.
    Status(oneshot::Sender<NodeStatus>),
    /// Stop the driver.
    Stop,
}

/// What the driver publishes after every ready, readable without a round
/// trip (for response headers and status pages).
#[derive(Debug, Default)]
pub struct SharedState {
    term: AtomicU64,
    leader_id: AtomicU64,
    commit_index: AtomicU64,
    applied_index: AtomicU64,
}

impl SharedState {
    /// The current term.
    pub fn term(&self) -> Term {
        self.term.load(Ordering::Relaxed)
    }

    /// The known leader (0 for none).
    pub fn leader_id(&self) -> NodeId {
        self.leader_id.load(Ordering::Relaxed)
    }

    /// The commit index.
    pub fn commit_index(&self) -> Index {
        self.commit_index.load(Ordering::Relaxed)
    }

    /// The applied index.
    pub fn applied_index(&self) -> Index {
        self.applied_index.load(Ordering::Relaxed)
    }
}

/// The handle the rest of the server talks to the driver through.
pub struct NodeHandle<O> {
    inputs: mpsc::Sender<Input<O>>,
    shared: Arc<SharedState>,
}

impl<O> Clone for NodeHandle<O> {
    fn clone(&self) -> Self {
        Self {
            inputs: self.inputs.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<O> NodeHandle<O> {
    /// Resolves once the driver thread has ended: stopped on request, or on
    /// a fatal error (a failed WAL write or fsync) after which the member
    /// must not go on serving.
    pub async fn stopped(&self) {
        self.inputs.closed().await;
    }

    /// The driver's published state.
    pub fn shared(&self) -> &SharedState {
        &self.shared
    }
}

impl<O: Send + 'static> NodeHandle<O> {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> Input<O>,
    ) -> Result<T, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.inputs
            .send(make(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// Replicates a payload and returns the state machine's output for it.
    pub async fn propose(&self, payload: Bytes) -> Result<O, NodeError> {
        self.call(|reply| Input::Propose { payload, reply }).await
    }

    /// Waits until a linearizable read may be served from local state.
    pub async fn read_barrier(&self) -> Result<Index, NodeError> {
        self.call(|reply| Input::Read { reply }).await
    }

    /// Changes the cluster's membership.
    pub async fn change_membership(&self, change: ConfChange) -> Result<ConfState, NodeError> {
        self.call(|reply| Input::ChangeMembership { change, reply })
            .await
    }

    /// Starts handing leadership to `target`.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<(), NodeError> {
        self.call(|reply| Input::TransferLeader { target, reply })
            .await
    }

    /// Starts handing leadership over if this node leads; returns the
    /// target, or `None` if there is nobody to hand it to.
    pub async fn hand_over_leadership(&self) -> Result<Option<NodeId>, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.inputs
            .send(Input::HandOverLeadership(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)
    }

    /// The node's status.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.inputs
            .send(Input::Status(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)
    }

    /// Delivers a message from a peer; waits if the driver is busy.
    pub async fn step(&self, message: Message) -> Result<(), NodeError> {
        self.inputs
            .send(Input::Step(message))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// Delivers a message from a peer without waiting; returns false if the
    /// driver's queue is full (the message is dropped, as on a lossy link).
    pub fn try_step(&self, message: Message) -> bool {
        self.inputs.try_send(Input::Step(message)).is_ok()
    }

    /// Hands in a snapshot received from the leader: steps its message and,
    /// if the Raft core takes the snapshot, restores the state machine from
    /// `image`. Returns whether the image was installed.
    pub async fn install_snapshot(
        &self,
        message: Message,
        image: SnapshotImage,
    ) -> Result<bool, NodeError> {
        self.call(|reply| Input::Snapshot {
            message,
            image,
            reply,
        })
        .await
    }

    /// Reports a peer the transport could not reach (never waits).
    pub fn report_unreachable(&self, peer: NodeId) {
        let _ = self.inputs.try_send(Input::Unreachable(peer));
    }

    /// Asks the driver to stop after the work in hand.
    pub async fn stop(&self) {
        let _ = self.inputs.send(Input::Stop).await;
    }

    /// A raw sender, for the ticker.
    fn sender(&self) -> mpsc::Sender<Input<O>> {
        self.inputs.clone()
    }
}

/// The driver's thread; joining it yields how the driver ended.
pub type DriverThread = std::thread::JoinHandle<Result<(), NodeError>>;

/// How a node starts.
pub struct NodeOptions {
    /// Raft settings; `id` is this member's id.
    pub raft: RaftConfig,
    /// The founding voters, each with the context of its membership change
    /// (the member's record), used only when the log is empty and the node
    /// bootstraps a new cluster; empty to join an existing cluster.
    pub bootstrap_voters: Vec<(NodeId, Bytes)>,
    /// Length of a tick.
    pub tick: Duration,
    /// Capacity of the input queue.
    pub input_queue: usize,
    /// Applied entries between two log compactions.
    pub snapshot_count: u64,
    /// Entries kept in the log below the compaction point, so followers
    /// that lag a little catch up from the log instead of a snapshot.
    pub catch_up_entries: u64,
    /// Where the driver reports leadership, proposals, fsync latency and
    /// peer round trips.
    pub metrics: Arc<NodeMetrics>,
}

/// Opens the WAL in `wal_dir`, restores or bootstraps the Raft node, and
/// starts the driver thread and its ticker. Must be called inside a tokio
/// runtime.
pub fn start<SM: StateMachine, T: Transport>(
    options: NodeOptions,
    wal_dir: &Path,
    snapshot_dir: &Path,
    state_machine: SM,
    transport: T,
) -> Result<(NodeHandle<SM::Output>, DriverThread), NodeError> {
    let wal = Wal::open(wal_dir, WalConfig::default())?;
    let snapshots = SnapshotStore::open(snapshot_dir, SnapshotConfig::default())?;
    let snapshot_meta = restore_snapshot_meta(&wal, &snapshots)?;
    let raw = restore_raft(&options, &wal, snapshot_meta.clone())?;
    let (inputs, receiver) = mpsc::channel(options.input_queue.max(16));
    let shared = Arc::new(SharedState::default());
    let handle = NodeHandle {
        inputs,
        shared: shared.clone(),
    };
    let ticker = handle.sender();
    let snapshot_reports: Arc<Mutex<Vec<(NodeId, bool)>>> = Arc::default();
    let reports = snapshot_reports.clone();
    let wake = handle.sender();
    let snapshot_report: SnapshotReportFn = Arc::new(move |to, delivered| {
        reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((to, delivered));
        // A full queue means the driver is busy and looks at the reports
        // at the end of its batch anyway.
        let _ = wake.try_send(Input::Wake);
    });
    let tick = options.tick;
    // A heartbeat answered later than an election timeout is not a round
    // trip worth reporting (it was lost, and a later one answered).
    let round_trip_max = tick * options.raft.election_tick;
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            // A busy driver misses a tick rather than queueing them up.
            if let Err(mpsc::error::TrySendError::Closed(_)) = ticker.try_send(Input::Tick) {
                return;
            }
        }
    });
    let driver = Driver {
        id: options.raft.id,
        raw,
        wal,
        state_machine,
        transport,
        waiters: HashMap::new(),
        next_proposal_id: proposal_id_base(options.raft.id),
        queued_reads: Vec::new(),
        reads_in_flight: HashMap::new(),
        read_round: None,
        reads_awaiting_apply: BTreeMap::new(),
        next_read_context: 0,
        conf_waiters: Vec::new(),
        proposal_positions: BTreeMap::new(),
        leader_id: 0,
        shared,
        snapshots,
        conf_history: BTreeMap::from([(snapshot_meta.index, snapshot_meta.conf_state.clone())]),
        snapshot_index: snapshot_meta.index,
        snapshot_count: options.snapshot_count.max(1),
        catch_up_entries: options.catch_up_entries,
        metrics: options.metrics,
        round_trips: RoundTrips::new(round_trip_max),
        snapshot_reports,
        snapshot_report,
        incoming_image: None,
    };
    let thread = std::thread::Builder::new()
        .name(format!("raft-node-{:x}", options.raft.id))
        .spawn(move || driver.run(receiver))
        .map_err(|e| NodeError::Fatal(format!("cannot start the node thread: {e}")))?;
    Ok((handle, thread))
}

/// The position and configuration of the snapshot the WAL's marker points at.
fn restore_snapshot_meta(wal: &Wal, snapshots: &SnapshotStore) -> Result<SnapshotMeta, NodeError> {
    let marker = wal.snapshot_marker();
    if marker.index == 0 {
        return Ok(SnapshotMeta::default());
    }
    match snapshots.load(marker.index, marker.term)? {
        Some(snapshot) => Ok(snapshot.meta),
        None => Err(NodeError::Fatal(format!(
            "the WAL starts after snapshot {}/{} but no such snapshot file exists in {}",
            marker.index,
            marker.term,
            snapshots.dir().display()
        ))),
    }
}

fn restore_raft(
    options: &NodeOptions,
    wal: &Wal,
    snapshot: SnapshotMeta,
) -> Result<RawNode, NodeError> {
    let empty = wal.last_index() == 0 && wal.hard_state() == Default::default();
    if empty && !options.bootstrap_voters.is_empty() {
        let voters: Vec<NodeId> = options.bootstrap_voters.iter().map(|(id, _)| *id).collect();
        tracing::info!(id = options.raft.id, ?voters, "bootstrapping a new cluster");
        return Ok(RawNode::bootstrap_with_context(
            options.raft.clone(),
            &options.bootstrap_voters,
        )?);
    }
    let entries = if wal.last_index() >= wal.first_index() {
        wal.entries(wal.first_index(), wal.last_index() + 1)?
    } else {
        Vec::new()
    };
    tracing::info!(
        id = options.raft.id,
        entries = entries.len(),
        hard_state = ?wal.hard_state(),
        "restoring from the write-ahead log"
    );
    let state = InitialState {
        hard_state: wal.hard_state(),
        snapshot,
        entries,
    };
    Ok(RawNode::new(options.raft.clone(), state)?)
}

/// Proposal ids: the member id's low 16 bits, then a counter that starts
/// from the clock so a restarted member does not reuse the ids of its
/// previous life. A clock set back, or two members alike in those bits,
/// could still repeat an id; [`answer`] therefore also compares payloads.
fn proposal_id_base(member: NodeId) -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ((member & 0xffff) << 48) | ((now_ms & 0xff_ffff_ffff) << 8)
}

/// Encodes a proposal as an entry payload: the id, then the payload.
pub fn encode_proposal(id: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + payload.len());
    out.put_u64_le(id);
    out.put_slice(payload);
    out.freeze()
}

/// Splits an entry payload into proposal id and payload; `None` for the
/// empty entries a new leader appends.
pub fn decode_proposal(data: &[u8]) -> Option<(u64, &[u8])> {
    if data.len() < 8 {
        return None;
    }
    let mut head = &data[..8];
    Some((head.get_u64_le(), &data[8..]))
}

type ReadReply = oneshot::Sender<Result<Index, NodeError>>;

struct Driver<SM: StateMachine, T> {
    id: NodeId,
    raw: RawNode,
    wal: Wal,
    state_machine: SM,
    transport: T,
    waiters: HashMap<u64, Waiter<SM::Output>>,
    next_proposal_id: u64,
    /// Reads that arrived since the last read-index request.
    queued_reads: Vec<ReadReply>,
    /// Read-index requests sent, by context.
    reads_in_flight: HashMap<u64, Vec<ReadReply>>,
    /// The newest read-index request (its context) and when it was sent.
    read_round: Option<(u64, std::time::Instant)>,
    /// Reads confirmed at an index not yet applied.
    reads_awaiting_apply: BTreeMap<Index, Vec<ReadReply>>,
    next_read_context: u64,
    /// Membership changes waiting to apply, with their entry payload.
    conf_waiters: Vec<(Bytes, oneshot::Sender<Result<ConfState, NodeError>>)>,
    /// Where this node, as leader, put each waiting proposal: if another
    /// entry is applied there, the proposal was lost with a leader change.
    proposal_positions: BTreeMap<Index, u64>,
    leader_id: NodeId,
    shared: Arc<SharedState>,
    /// Snapshot descriptions (the data is the state machine itself).
    snapshots: SnapshotStore,
    /// The configuration in force from each index on, since the snapshot:
    /// a compaction point needs the configuration at that point.
    conf_history: BTreeMap<Index, ConfState>,
    /// Where the log was last compacted.
    snapshot_index: Index,
    snapshot_count: u64,
    catch_up_entries: u64,
    metrics: Arc<NodeMetrics>,
    round_trips: RoundTrips,
    /// Ends of snapshot transfers, waiting for `RawNode::report_snapshot`.
    snapshot_reports: Arc<Mutex<Vec<(NodeId, bool)>>>,
    /// What each [`SnapshotDone`] reports through.
    snapshot_report: SnapshotReportFn,
    /// The image received with the InstallSnapshot message being stepped,
    /// with that snapshot's index and term.
    incoming_image: Option<(Index, Term, SnapshotImage)>,
}

/// Peer round trips, timed from a heartbeat to its answer: the one request
/// and answer pair every leader exchanges with every follower all the time.
struct RoundTrips {
    /// When the oldest unanswered heartbeat to each peer left.
    sent: HashMap<NodeId, Instant>,
    /// Each peer's histogram, looked up once.
    histograms: HashMap<NodeId, Histogram>,
    max: Duration,
}

impl RoundTrips {
    fn new(max: Duration) -> Self {
        Self {
            sent: HashMap::new(),
            histograms: HashMap::new(),
            max,
        }
    }

    fn sending(&mut self, messages: &[Message]) {
        let now = Instant::now();
        for msg in messages {
            if matches!(msg.body, MessageBody::Heartbeat { .. }) {
                let since = self.sent.entry(msg.to).or_insert(now);
                if now.duration_since(*since) > self.max {
                    *since = now;
                }
            }
        }
    }

    fn received(&mut self, msg: &Message, metrics: &NodeMetrics) {
        if !matches!(msg.body, MessageBody::HeartbeatResponse { .. }) {
            return;
        }
        let Some(sent) = self.sent.remove(&msg.from) else {
            return;
        };
        let took = sent.elapsed();
        if took <= self.max {
            self.histograms
                .entry(msg.from)
                .or_insert_with(|| metrics.peer_round_trip(msg.from))
                .observe(took);
        }
    }
}

impl<SM: StateMachine, T: Transport> Driver<SM, T> {
    fn run(mut self, mut inputs: mpsc::Receiver<Input<SM::Output>>) -> Result<(), NodeError> {
        let result = self.run_loop(&mut inputs);
        if let Err(err) = &result {
            tracing::error!(id = self.id, %err, "node stopped on a fatal error");
        }
        self.fail_everything(&result);
        result
    }

    fn run_loop(
        &mut self,
        inputs: &mut mpsc::Receiver<Input<SM::Output>>,
    ) -> Result<(), NodeError> {
        loop {
            let Some(first) = inputs.blocking_recv() else {
                return Ok(());
            };
            if !self.handle(first)? {
                return self.drain_ready();
            }
            for _ in 0..INPUT_BATCH_MAX {
                match inputs.try_recv() {
                    Ok(input) => {
                        if !self.handle(input)? {
                            return self.drain_ready();
                        }
                    }
                    Err(_) => break,
                }
            }
            self.take_snapshot_reports();
            self.request_read_index();
            self.drain_ready()?;
            // A round that just ended lets the reads queued behind it go at once.
            if self.request_read_index() {
                self.drain_ready()?;
            }
        }
    }

    /// Handles one input; returns false on `Stop`.
    fn handle(&mut self, input: Input<SM::Output>) -> Result<bool, NodeError> {
        match input {
            Input::Propose { payload, reply } => {
                let id = self.next_proposal_id;
                self.next_proposal_id += 1;
                match self.raw.propose(encode_proposal(id, &payload)) {
                    Ok(()) => {
                        self.waiters.insert(id, Waiter { payload, reply });
                        let raft = self.raw.raft();
                        if raft.role == Role::Leader {
                            self.proposal_positions.insert(raft.log.last_index(), id);
                        }
                    }
                    Err(err) => {
                        self.metrics.proposals_failed.inc();
                        let _ = reply.send(Err(err.into()));
                    }
                }
            }
            Input::Read { reply } => self.queued_reads.push(reply),
            Input::ChangeMembership { change, reply } => {
                match self.raw.propose_conf_change(&change) {
                    Ok(()) => self.conf_waiters.push((change.encode(), reply)),
                    Err(err) => {
                        let _ = reply.send(Err(err.into()));
                    }
                }
            }
            Input::TransferLeader { target, reply } => {
                let _ = reply.send(self.raw.transfer_leader(target).map_err(NodeError::from));
            }
            Input::Step(message) => {
                if is_snapshot_without_image(&message) {
                    // Images come through `Input::Snapshot`; stepping this
                    // one would make the core take a snapshot the state
                    // machine has nothing to restore from.
                    tracing::warn!(
                        id = self.id,
                        from = message.from,
                        "snapshot message without its image refused"
                    );
                    return Ok(true);
                }
                self.round_trips.received(&message, &self.metrics);
                if let Err(err) = self.raw.step(message) {
                    tracing::debug!(id = self.id, %err, "peer message refused");
                }
            }
            Input::Snapshot {
                message,
                image,
                reply,
            } => self.receive_snapshot(message, image, reply)?,
            Input::Wake => {}
            Input::HandOverLeadership(reply) => {
                let _ = reply.send(self.hand_over_leadership());
            }
            Input::Unreachable(peer) => self.raw.report_unreachable(peer),
            Input::Tick => self.raw.tick(),
            Input::Status(reply) => {
                let status = self.raw.status();
                let _ = reply.send(NodeStatus {
                    id: self.id,
                    leader_id: status.soft_state.leader_id,
                    role: status.soft_state.role,
                    term: status.hard_state.term,
                    commit_index: status.hard_state.commit,
                    applied_index: self.state_machine.applied_index().max(status.applied),
                    conf_state: status.conf_state,
                    matched: status
                        .progress
                        .map(|progress| {
                            progress
                                .into_iter()
                                .map(|(id, pr)| (id, pr.matched))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
            Input::Stop => return Ok(false),
        }
        Ok(true)
    }

    /// Passes the ends of snapshot transfers to the core: a failure lets it
    /// send a new snapshot later (the transport spaced the report out with
    /// its backoff), a delivery lets it probe the follower again.
    fn take_snapshot_reports(&mut self) {
        let reports = std::mem::take(
            &mut *self
                .snapshot_reports
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (to, delivered) in reports {
            tracing::debug!(id = self.id, to, delivered, "snapshot transfer ended");
            self.raw.report_snapshot(to, delivered);
        }
    }

    /// A snapshot received in full: its message is stepped at once, with
    /// the image waiting in `incoming_image` for the Ready that installs
    /// it, and answered once that Ready is through (the install durable).
    fn receive_snapshot(
        &mut self,
        message: Message,
        image: SnapshotImage,
        reply: oneshot::Sender<Result<bool, NodeError>>,
    ) -> Result<(), NodeError> {
        let MessageBody::InstallSnapshot { snapshot } = &message.body else {
            let _ = reply.send(Err(NodeError::Fatal(
                "a snapshot image came with a message of another kind".into(),
            )));
            return Ok(());
        };
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        // Whatever earlier inputs made ready goes first, so the only Ready
        // that can carry a snapshot below is this message's.
        self.drain_ready()?;
        self.incoming_image = Some((index, term, image));
        if let Err(err) = self.raw.step(message) {
            tracing::debug!(id = self.id, %err, "snapshot message refused");
        }
        let result = self.drain_ready();
        // The install takes the image; one left over was not needed.
        let installed = self.incoming_image.take().is_none();
        match result {
            Ok(()) => {
                let _ = reply.send(Ok(installed));
                Ok(())
            }
            Err(err) => {
                let _ = reply.send(Err(err.clone()));
                Err(err)
            }
        }
    }

    fn hand_over_leadership(&mut self) -> Option<NodeId> {
        let status = self.raw.status();
        let progress = status.progress?;
        let voters = &self.raw.raft().tracker.membership.voters;
        let target = progress
            .iter()
            .filter(|&(&id, pr)| id != self.id && !pr.is_learner && voters.contains(id))
            .max_by_key(|&(_, pr)| pr.matched)
            .map(|(&id, _)| id)?;
        match self.raw.transfer_leader(target) {
            Ok(()) => {
                tracing::info!(id = self.id, target, "handing over leadership");
                Some(target)
            }
            Err(err) => {
                tracing::warn!(id = self.id, target, %err, "could not hand over leadership");
                None
            }
        }
    }

    /// Asks the leader for one read index covering every queued read; returns whether it
    /// did. One round at a time: reads that arrive while one is out ride on the next, so a
    /// read load makes as many rounds as the quorum answers, not one per turn of the loop
    /// (each round is a heartbeat to every follower and back). A round out for longer than
    /// [`READ_ROUND_WAIT_MAX`] no longer holds the queue back.
    fn request_read_index(&mut self) -> bool {
        if self.queued_reads.is_empty() {
            return false;
        }
        // Only the newest round counts: an older one that was lost waits for its
        // readers' deadlines or a leader change, and must not slow every round after it.
        let round_out = self.read_round.is_some_and(|(context, sent)| {
            self.reads_in_flight.contains_key(&context) && sent.elapsed() < READ_ROUND_WAIT_MAX
        });
        if round_out {
            return false;
        }
        self.next_read_context += 1;
        let context = self.next_read_context;
        let reads = std::mem::take(&mut self.queued_reads);
        match self
            .raw
            .read_index(Bytes::copy_from_slice(&context.to_le_bytes()))
        {
            Ok(()) => {
                self.reads_in_flight.insert(context, reads);
                self.read_round = Some((context, std::time::Instant::now()));
            }
            Err(err) => {
                let err = NodeError::from(err);
                for reply in reads {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
        true
    }

    fn drain_ready(&mut self) -> Result<(), NodeError> {
        while self.raw.has_ready() {
            self.process_ready()?;
        }
        Ok(())
    }

    fn process_ready(&mut self) -> Result<(), NodeError> {
        let ready = self.raw.ready();
        if let Some(soft) = ready.soft_state {
            self.on_leader_change(soft.leader_id);
        }
        if let Some(snapshot) = &ready.snapshot {
            self.install_snapshot(snapshot)?;
        }
        // The leader's appends may leave while its own disk write runs.
        let messages = self.route_snapshots(ready.messages)?;
        self.round_trips.sending(&messages);
        self.transport.send(messages);
        // Committed entries this member already holds on disk, and that this
        // Ready does not rewrite, are applied before its disk write: their
        // clients need not wait for the fsync of newer entries (a follower
        // learns a commit from the next append, which mostly brings entries
        // to sync). Applied ahead of the hard state's commit is safe: the
        // entries are committed and durable here, and on restart the state
        // machine skips what it has applied.
        let rewritten_from = ready.entries.first().map_or(Index::MAX, |e| e.index);
        let on_disk = self.wal.durable_last_index().min(rewritten_from - 1);
        let ahead = ready
            .committed_entries
            .partition_point(|e| e.index <= on_disk);
        let (committed_on_disk, committed_after) = ready.committed_entries.split_at(ahead);
        if !ready.entries.is_empty() {
            self.wal.append_entries(&ready.entries)?;
        }
        if let Some(hard_state) = ready.hard_state {
            self.wal.set_hard_state(hard_state)?;
        }
        self.apply(committed_on_disk)?;
        if ready.must_sync {
            self.sync_wal()?;
        }
        let persisted_messages = self.route_snapshots(ready.persisted_messages)?;
        self.round_trips.sending(&persisted_messages);
        self.transport.send(persisted_messages);
        self.apply(committed_after)?;
        for read in ready.read_states {
            let Ok(context) = <[u8; 8]>::try_from(read.context.as_ref()) else {
                continue;
            };
            if let Some(replies) = self.reads_in_flight.remove(&u64::from_le_bytes(context)) {
                self.reads_awaiting_apply
                    .entry(read.index)
                    .or_default()
                    .extend(replies);
            }
        }
        self.raw.advance();
        self.release_reads();
        self.maybe_compact()?;
        self.campaign_if_sole_voter();
        self.publish();
        Ok(())
    }

    /// A member that is the only voter has nobody to wait for: it need not
    /// sit out an election timeout after starting.
    fn campaign_if_sole_voter(&mut self) {
        let raft = self.raw.raft();
        let voters = &raft.tracker.membership.voters;
        let sole = voters.outgoing.is_empty()
            && voters.incoming.len() == 1
            && voters.incoming.contains(&self.id);
        if sole && raft.role == Role::Follower && raft.leader_id == 0 {
            self.raw.campaign();
        }
    }

    /// Fsyncs the WAL, timing it.
    fn sync_wal(&mut self) -> Result<(), NodeError> {
        let started = Instant::now();
        self.wal.sync()?;
        self.metrics.wal_fsync.observe(started.elapsed());
        Ok(())
    }

    fn publish(&self) {
        let raft = self.raw.raft();
        let shared = &self.shared;
        shared.term.store(raft.term, Ordering::Relaxed);
        let leader = if raft.role == Role::Leader {
            self.id
        } else {
            raft.leader_id
        };
        shared.leader_id.store(leader, Ordering::Relaxed);
        shared
            .commit_index
            .store(raft.log.committed, Ordering::Relaxed);
        let applied = self.state_machine.applied_index().max(raft.log.applied);
        shared.applied_index.store(applied, Ordering::Relaxed);
        let metrics = &self.metrics;
        metrics.has_leader.set(i64::from(leader != 0));
        metrics.is_leader.set(i64::from(raft.role == Role::Leader));
        metrics.proposals_committed.set(gauge(raft.log.committed));
        metrics.proposals_applied.set(gauge(applied));
        metrics
            .proposals_pending
            .set(gauge(self.waiters.len() as u64));
    }

    fn on_leader_change(&mut self, leader_id: NodeId) {
        if leader_id == self.leader_id {
            return;
        }
        tracing::info!(id = self.id, leader_id, "leader changed");
        if leader_id != 0 {
            self.metrics.leader_changes_seen.inc();
        }
        self.leader_id = leader_id;
        // A read-index request sent to the old leader may never be answered;
        // fail it so the client retries rather than waiting for a time-out.
        for (_, replies) in self.reads_in_flight.drain() {
            for reply in replies {
                let _ = reply.send(Err(NodeError::LeaderChanged));
            }
        }
    }

    fn apply(&mut self, entries: &[Entry]) -> Result<(), NodeError> {
        let mut batch: Vec<Committed<'_>> = Vec::new();
        let mut last_applied = self.state_machine.applied_index();
        for entry in entries {
            self.fail_displaced_proposal(entry);
            match entry.kind {
                EntryKind::Normal => {
                    if entry.index <= last_applied {
                        continue;
                    }
                    if let Some((id, payload)) = decode_proposal(&entry.data) {
                        batch.push(Committed {
                            index: entry.index,
                            term: entry.term,
                            id,
                            payload,
                        });
                    }
                }
                EntryKind::ConfChange => {
                    // Apply what came before, then the change, in log order.
                    let outputs = self.state_machine.apply(&batch)?;
                    answer(&mut self.waiters, &batch, outputs);
                    batch.clear();
                    self.apply_conf_change(entry, last_applied)?;
                }
            }
            last_applied = last_applied.max(entry.index);
        }
        let outputs = self.state_machine.apply(&batch)?;
        answer(&mut self.waiters, &batch, outputs);
        Ok(())
    }

    /// Fails the proposal this node put at `entry.index` if a different
    /// entry was committed there.
    fn fail_displaced_proposal(&mut self, entry: &Entry) {
        let Some(id) = self.proposal_positions.remove(&entry.index) else {
            return;
        };
        let same = decode_proposal(&entry.data).is_some_and(|(committed, _)| committed == id);
        if !same {
            if let Some(waiter) = self.waiters.remove(&id) {
                self.metrics.proposals_failed.inc();
                let _ = waiter.reply.send(Err(NodeError::LeaderChanged));
            }
        }
        // Positions below the applied index can no longer be decided.
        let stale = self.proposal_positions.split_off(&entry.index);
        for (_, id) in std::mem::replace(&mut self.proposal_positions, stale) {
            if let Some(waiter) = self.waiters.remove(&id) {
                self.metrics.proposals_failed.inc();
                let _ = waiter.reply.send(Err(NodeError::LeaderChanged));
            }
        }
    }

    fn take_conf_waiter(
        &mut self,
        data: &[u8],
    ) -> Option<oneshot::Sender<Result<ConfState, NodeError>>> {
        let position = self
            .conf_waiters
            .iter()
            .position(|(payload, _)| payload.as_ref() == data)?;
        Some(self.conf_waiters.remove(position).1)
    }

    fn apply_conf_change(&mut self, entry: &Entry, applied_before: Index) -> Result<(), NodeError> {
        let change = ConfChange::decode(&entry.data).map_err(|e| {
            NodeError::Fatal(format!(
                "undecodable membership change at {}: {e}",
                entry.index
            ))
        })?;
        match self.raw.apply_conf_change(&change) {
            Ok(conf_state) => {
                self.conf_history.insert(entry.index, conf_state.clone());
                if entry.index > applied_before {
                    self.state_machine.apply_membership(
                        entry.index,
                        entry.term,
                        &change,
                        &conf_state,
                    )?;
                }
                if let Some(reply) = self.take_conf_waiter(&entry.data) {
                    let _ = reply.send(Ok(conf_state));
                }
            }
            Err(err) => {
                // Refused identically on every member: the log stays in step.
                tracing::warn!(id = self.id, index = entry.index, %err, "committed membership change refused");
                if let Some(reply) = self.take_conf_waiter(&entry.data) {
                    let _ = reply.send(Err(err.into()));
                }
            }
        }
        Ok(())
    }

    fn release_reads(&mut self) {
        // Not `status()`: on a leader it clones every follower's progress,
        // and this runs on every Ready.
        let applied = self
            .state_machine
            .applied_index()
            .max(self.raw.raft().log.applied);
        let pending = self.reads_awaiting_apply.split_off(&(applied + 1));
        for (_, replies) in std::mem::replace(&mut self.reads_awaiting_apply, pending) {
            for reply in replies {
                let _ = reply.send(Ok(applied));
            }
        }
    }

    /// A snapshot from the leader: the state machine takes the image, then
    /// the WAL records that the log now starts after it.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        let meta = &snapshot.meta;
        let started = Instant::now();
        let covered = match self.incoming_image.take() {
            Some((index, term, mut image)) if index == meta.index && term == meta.term => {
                self.state_machine.restore(&mut image)?
            }
            other => {
                self.incoming_image = other;
                // A member of an older version sends the image inline.
                if snapshot.data.is_empty() {
                    return Err(NodeError::Fatal(format!(
                        "snapshot {}/{} was accepted without its image",
                        meta.index, meta.term
                    )));
                }
                self.state_machine.restore(&mut snapshot.data.as_ref())?
            }
        };
        tracing::info!(
            id = self.id,
            index = meta.index,
            covered,
            took_ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        self.snapshots.save(&Snapshot {
            meta: meta.clone(),
            data: Bytes::new(),
        })?;
        self.wal.save_snapshot_marker(SnapshotMarker {
            index: meta.index,
            term: meta.term,
        })?;
        self.sync_wal()?;
        self.conf_history = BTreeMap::from([(meta.index, meta.conf_state.clone())]);
        self.snapshot_index = meta.index;
        Ok(())
    }

    /// The core names a snapshot in `InstallSnapshot`; its data is the
    /// state machine's image, which goes to the transport's snapshot path
    /// with the message (opened here, read and sent elsewhere), never
    /// inline. The image may cover more than the snapshot's index: the
    /// follower then skips the entries it already has applied. The core
    /// keeps the follower in Snapshot state (heartbeats only) until the
    /// transport reports the end.
    fn route_snapshots(&mut self, messages: Vec<Message>) -> Result<Vec<Message>, NodeError> {
        let (snapshots, others): (Vec<Message>, Vec<Message>) = messages
            .into_iter()
            .partition(|msg| matches!(msg.body, MessageBody::InstallSnapshot { .. }));
        for msg in snapshots {
            let image = self.state_machine.snapshot()?;
            if let MessageBody::InstallSnapshot { snapshot } = &msg.body {
                tracing::info!(
                    id = self.id,
                    to = msg.to,
                    index = snapshot.meta.index,
                    term = snapshot.meta.term,
                    "sending a snapshot"
                );
            }
            let done = SnapshotDone {
                to: msg.to,
                report: Some(self.snapshot_report.clone()),
            };
            self.transport.send_snapshot(msg, image, done);
        }
        Ok(others)
    }

    /// Every `snapshot_count` applied entries, makes the state machine
    /// durable and drops the log below it (keeping `catch_up_entries`).
    fn maybe_compact(&mut self) -> Result<(), NodeError> {
        let applied = self.raw.raft().log.applied;
        if applied < self.snapshot_index + self.snapshot_count + self.catch_up_entries {
            return Ok(());
        }
        let durable = self.state_machine.persist()?.min(applied);
        let index = durable.saturating_sub(self.catch_up_entries);
        if index <= self.snapshot_index {
            return Ok(());
        }
        let Some(term) = self.raw.raft().log.term(index) else {
            return Ok(());
        };
        let conf_state = self
            .conf_history
            .range(..=index)
            .next_back()
            .map(|(_, cs)| cs.clone())
            .unwrap_or_default();
        let meta = SnapshotMeta {
            index,
            term,
            conf_state,
        };
        self.snapshots.save(&Snapshot {
            meta: meta.clone(),
            data: Bytes::new(),
        })?;
        self.wal
            .save_snapshot_marker(SnapshotMarker { index, term })?;
        self.sync_wal()?;
        self.raw.compact_log(meta.clone())?;
        let released = self.wal.release_segments()?;
        self.snapshots.release()?;
        // Keep the configuration in force at the new start of the log.
        let newer = self.conf_history.split_off(&(index + 1));
        self.conf_history = BTreeMap::from([(index, meta.conf_state)]);
        self.conf_history.extend(newer);
        self.snapshot_index = index;
        tracing::info!(id = self.id, index, durable, released, "compacted the log");
        Ok(())
    }

    fn fail_everything(&mut self, result: &Result<(), NodeError>) {
        let err = match result {
            Ok(()) => NodeError::Stopped,
            Err(err) => err.clone(),
        };
        for (_, waiter) in self.waiters.drain() {
            self.metrics.proposals_failed.inc();
            let _ = waiter.reply.send(Err(err.clone()));
        }
        let reads = self
            .queued_reads
            .drain(..)
            .chain(self.reads_in_flight.drain().flat_map(|(_, r)| r))
            .chain(
                std::mem::take(&mut self.reads_awaiting_apply)
                    .into_values()
                    .flatten(),
            );
        for reply in reads {
            let _ = reply.send(Err(err.clone()));
        }
        for (_, reply) in self.conf_waiters.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
    }
}

/// An InstallSnapshot message that carries no image (images travel beside
/// their message, see [`Input::Snapshot`]).
fn is_snapshot_without_image(message: &Message) -> bool {
    matches!(&message.body, MessageBody::InstallSnapshot { snapshot } if snapshot.data.is_empty())
}

/// An index or count as a gauge value (they stay far below `i64::MAX`).
fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A proposer waiting for its entry to be applied.
struct Waiter<O> {
    /// What it proposed: an entry with its id but another payload is not
    /// its own (ids are unique only as far as wall clocks are trusted).
    payload: Bytes,
    reply: oneshot::Sender<Result<O, NodeError>>,
}

fn answer<O>(waiters: &mut HashMap<u64, Waiter<O>>, batch: &[Committed<'_>], outputs: Vec<O>) {
    for (committed, output) in batch.iter().zip(outputs) {
        let ours = waiters
            .get(&committed.id)
            .is_some_and(|waiter| waiter.payload.as_ref() == committed.payload);
        if !ours {
            continue;
        }
        if let Some(waiter) = waiters.remove(&committed.id) {
            let _ = waiter.reply.send(Ok(output));
        }
    }
}
