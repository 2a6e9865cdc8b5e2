//! The application's handle on a node: feed it input, take a [`Ready`],
//! carry the `Ready` out, call [`RawNode::advance`].

use bytes::Bytes;

use crate::config::Config;
use crate::error::Result;
use crate::raft::{Raft, Role};
use crate::tracker::Progress;
use crate::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, Message, NodeId, ReadState,
    Snapshot, SnapshotMeta, Term, NO_NODE,
};

/// What the node knows about leadership; not persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The known leader, or [`NO_NODE`].
    pub leader_id: NodeId,
    /// This node's role.
    pub role: Role,
}

/// The durable state a node starts from.
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    /// The last persisted hard state.
    pub hard_state: HardState,
    /// The latest snapshot's position and configuration (index 0 if none).
    pub snapshot: SnapshotMeta,
    /// Every persisted entry after the snapshot, in order.
    pub entries: Vec<Entry>,
}

/// Everything the application must do after the node changed.
///
/// Carry it out in this order, then call [`RawNode::advance`]:
///
/// 1. Persist `snapshot`, then `entries` (an entry at index `i` replaces any
///    persisted entry at `i` and everything after it), then `hard_state`;
///    make them durable (one fsync for all) if `must_sync`.
/// 2. Send `persisted_messages`. `messages` may be sent at any time, even
///    before or while step 1 runs: they never speak for state this node has
///    not made durable.
/// 3. Apply `snapshot`, then `committed_entries` in order, calling
///    [`RawNode::apply_conf_change`] for every membership change among them.
///    Serve `read_states` once their index is applied.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// Leadership changed since the last ready.
    pub soft_state: Option<SoftState>,
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to persist.
    pub entries: Vec<Entry>,
    /// A snapshot from the leader to persist and apply.
    pub snapshot: Option<Snapshot>,
    /// Messages that may be sent at once.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after step 1 is durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply.
    pub committed_entries: Vec<Entry>,
    /// Reads that are safe once their index is applied.
    pub read_states: Vec<ReadState>,
    /// Whether step 1 must be made durable before anything else happens.
    pub must_sync: bool,
}

/// What a handed-out ready covers, so `advance` can acknowledge exactly it.
#[derive(Clone, Copy, Debug, Default)]
struct ReadyMarks {
    last_entry: Option<(Index, Term)>,
    snapshot_index: Option<Index>,
    applied: Option<(Index, u64)>,
}

/// The node's introspection data.
#[derive(Clone, Debug)]
pub struct Status {
    /// The node id.
    pub id: NodeId,
    /// The hard state in memory (possibly not yet persisted).
    pub hard_state: HardState,
    /// Role and known leader.
    pub soft_state: SoftState,
    /// The applied index.
    pub applied: Index,
    /// The last log index.
    pub last_index: Index,
    /// The configuration in force.
    pub conf_state: ConfState,
    /// Per-member progress, on the leader only.
    pub progress: Option<std::collections::BTreeMap<NodeId, Progress>>,
    /// The node leadership is being handed to.
    pub lead_transferee: Option<NodeId>,
}

/// A Raft node driven by the application.
pub struct RawNode {
    raft: Raft,
    prev_soft_state: SoftState,
    prev_hard_state: HardState,
    marks: Option<ReadyMarks>,
}

impl RawNode {
    /// A node restarted from its durable state.
    ///
    /// Committed entries after the snapshot are handed out again for
    /// applying; an application that already applied some of them skips
    /// their effect, but must still call [`RawNode::apply_conf_change`] for
    /// membership changes, since the node's configuration is rebuilt from
    /// the snapshot's.
    pub fn new(config: Config, state: InitialState) -> Result<Self> {
        let raft = Raft::new(config, state.hard_state, state.snapshot, state.entries)?;
        let prev_hard_state = raft.hard_state();
        Ok(Self {
            prev_soft_state: soft_state(&raft),
            prev_hard_state,
            raft,
            marks: None,
        })
    }

    /// A brand-new member of a brand-new cluster of `voters`.
    ///
    /// Every founding member bootstraps the same log: one membership change
    /// per voter at term 1, already committed. A node that joins an existing
    /// cluster later starts with [`RawNode::new`] and an empty state instead,
    /// and learns the configuration from the leader.
    pub fn bootstrap(config: Config, voters: &[NodeId]) -> Result<Self> {
        let mut node = Self::new(config, InitialState::default())?;
        let entries: Vec<Entry> = voters
            .iter()
            .enumerate()
            .map(|(i, &id)| Entry {
                term: 1,
                index: i as Index + 1,
                kind: EntryKind::ConfChange,
                data: ConfChange::single(crate::types::ConfChangeStep::AddVoter(id)).encode(),
            })
            .collect();
        let raft = &mut node.raft;
        raft.term = 1;
        raft.log.append_as_leader(entries);
        raft.log.commit_to(voters.len() as Index);
        Ok(node)
    }

    /// The protocol state, for inspection.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election at once.
    pub fn campaign(&mut self) {
        self.raft.campaign_now();
    }

    /// Processes a message from a peer.
    pub fn step(&mut self, msg: Message) -> Result<()> {
        self.raft.step(msg)
    }

    /// Proposes application data.
    pub fn propose(&mut self, data: Bytes) -> Result<()> {
        self.raft.propose(vec![Entry {
            term: 0,
            index: 0,
            kind: EntryKind::Normal,
            data,
        }])
    }

    /// Proposes several payloads at once (one batch, one fsync).
    pub fn propose_batch(&mut self, payloads: impl IntoIterator<Item = Bytes>) -> Result<()> {
        let entries = payloads
            .into_iter()
            .map(|data| Entry {
                term: 0,
                index: 0,
                kind: EntryKind::Normal,
                data,
            })
            .collect();
        self.raft.propose(entries)
    }

    /// Proposes a membership change. Refused while another is unapplied or
    /// if it would be invalid in the current configuration.
    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<()> {
        self.raft.propose(vec![Entry {
            term: 0,
            index: 0,
            kind: EntryKind::ConfChange,
            data: cc.encode(),
        }])
    }

    /// Applies a committed membership change.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState> {
        self.raft.apply_conf_change(cc)
    }

    /// Requests a linearizable read point for `context`.
    pub fn read_index(&mut self, context: Bytes) -> Result<()> {
        self.raft.read_index(context)
    }

    /// Asks the leader to hand leadership to `target`.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<()> {
        self.raft.transfer_leader(target)
    }

    /// Reports that `to` could not be reached.
    pub fn report_unreachable(&mut self, to: NodeId) {
        self.raft.report_unreachable(to);
    }

    /// Reports the outcome of sending a snapshot to `to`.
    pub fn report_snapshot(&mut self, to: NodeId, success: bool) {
        self.raft.report_snapshot(to, success);
    }

    /// Drops log entries covered by a snapshot the application took at
    /// `meta.index` (which must be applied). The leader sends followers that
    /// need older entries an `InstallSnapshot` with `meta`; the application
    /// attaches the snapshot's data before sending it.
    pub fn compact_log(&mut self, meta: SnapshotMeta) -> Result<()> {
        self.raft.compact_log(meta)
    }

    /// Whether there is anything to do.
    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        soft_state(raft) != self.prev_soft_state
            || raft.hard_state() != self.prev_hard_state
            || raft.log.has_unstable()
            || !raft.msgs.is_empty()
            || !raft.msgs_after_persist.is_empty()
            || raft.log.has_next_committed_entries()
            || !raft.read_states.is_empty()
            || raft.appends_pending
    }

    /// Takes the work to do. Must be followed by [`RawNode::advance`] before
    /// the next call.
    pub fn ready(&mut self) -> Ready {
        debug_assert!(
            self.marks.is_none(),
            "ready() called twice without advance()"
        );
        let config = self.raft.config();
        let (max_count, max_bytes) = (
            config.max_committed_entries_per_ready,
            config.max_committed_bytes_per_ready,
        );
        let raft = &mut self.raft;
        raft.flush_appends();
        let soft = soft_state(raft);
        let hard = raft.hard_state();
        let entries = raft.log.unstable_entries();
        let snapshot = raft.log.pending_snapshot().cloned();
        let committed_entries = raft.log.next_committed_entries(max_count, max_bytes);
        let mut ready = Ready {
            soft_state: (soft != self.prev_soft_state).then_some(soft),
            hard_state: (hard != self.prev_hard_state).then_some(hard),
            must_sync: !entries.is_empty()
                || snapshot.is_some()
                || hard.term != self.prev_hard_state.term
                || hard.vote != self.prev_hard_state.vote,
            messages: std::mem::take(&mut raft.msgs),
            persisted_messages: std::mem::take(&mut raft.msgs_after_persist),
            read_states: std::mem::take(&mut raft.read_states),
            entries,
            snapshot,
            committed_entries,
        };
        self.marks = Some(ReadyMarks {
            last_entry: ready.entries.last().map(|e| (e.index, e.term)),
            snapshot_index: ready.snapshot.as_ref().map(|s| s.meta.index),
            applied: ready.committed_entries.last().map(|e| {
                (
                    e.index,
                    ready.committed_entries.iter().map(Entry::size_bytes).sum(),
                )
            }),
        });
        self.prev_soft_state = soft;
        self.prev_hard_state = hard;
        // An empty snapshot data field is the application's to fill; keep the
        // ready small when there is nothing to say.
        ready.messages.shrink_to_fit();
        ready
    }

    /// Acknowledges that the last ready was carried out.
    pub fn advance(&mut self) {
        let Some(marks) = self.marks.take() else {
            return;
        };
        if let Some(index) = marks.snapshot_index {
            self.raft.log.snapshot_applied(index);
        }
        if let Some((index, term)) = marks.last_entry {
            self.raft.on_persisted(index, term);
        }
        if let Some((index, size_bytes)) = marks.applied {
            self.raft.on_applied(index, size_bytes);
        }
    }

    /// A summary of the node's state.
    pub fn status(&self) -> Status {
        let raft = &self.raft;
        Status {
            id: raft.id,
            hard_state: raft.hard_state(),
            soft_state: soft_state(raft),
            applied: raft.log.applied,
            last_index: raft.log.last_index(),
            conf_state: raft.tracker.membership.to_conf_state(),
            progress: (raft.role == Role::Leader).then(|| raft.tracker.progress.clone()),
            lead_transferee: raft.lead_transferee,
        }
    }
}

fn soft_state(raft: &Raft) -> SoftState {
    SoftState {
        leader_id: if raft.role == Role::Leader {
            raft.id
        } else {
            raft.leader_id
        },
        role: raft.role,
    }
}

impl Default for SoftState {
    fn default() -> Self {
        Self {
            leader_id: NO_NODE,
            role: Role::Follower,
        }
    }
}
