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
        let voters: Vec<(NodeId, Bytes)> = voters.iter().map(|&id| (id, Bytes::new())).collect();
        Self::bootstrap_with_context(config, &voters)
    }

    /// Like [`RawNode::bootstrap`], with application data carried in each
    /// voter's membership change (for example its name and addresses), so a
    /// member that joins later learns the founders from the log itself.
    /// Every founder must be given the same list.
    pub fn bootstrap_with_context(config: Config, voters: &[(NodeId, Bytes)]) -> Result<Self> {
        let mut node = Self::new(config, InitialState::default())?;
        let entries: Vec<Entry> = voters
            .iter()
            .enumerate()
            .map(|(i, (id, context))| Entry {
                term: 1,
                index: i as Index + 1,
                kind: EntryKind::ConfChange,
                data: ConfChange {
                    context: context.clone(),
                    ..ConfChange::single(crate::types::ConfChangeStep::AddVoter(*id))
                }
                .encode(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{MessageBody, SnapshotMeta};
    use crate::HardState;

    fn node(id: NodeId) -> RawNode {
        node_with(Config::new(id))
    }

    fn node_without_pre_vote(id: NodeId) -> RawNode {
        let mut config = Config::new(id);
        config.pre_vote = false;
        node_with(config)
    }

    fn node_with(config: Config) -> RawNode {
        let state = InitialState {
            snapshot: SnapshotMeta {
                conf_state: ConfState::from_voters([1, 2, 3]),
                ..SnapshotMeta::default()
            },
            ..InitialState::default()
        };
        RawNode::new(config, state).expect("valid node")
    }

    /// Makes node 1 leader of term 1 by feeding it the votes it asks for.
    fn leader() -> RawNode {
        let mut n = node_without_pre_vote(1);
        n.campaign();
        let ready = n.ready();
        n.advance();
        for vote in ready.persisted_messages {
            n.step(Message {
                from: vote.to,
                to: 1,
                term: vote.term,
                body: MessageBody::RequestVoteResponse {
                    pre: false,
                    reject: false,
                    commit: 0,
                    commit_term: 0,
                },
            })
            .expect("vote accepted");
        }
        assert_eq!(n.raft.role, Role::Leader);
        n
    }

    fn ack(from: NodeId, term: Term, index: Index) -> Message {
        Message {
            from,
            to: 1,
            term,
            body: MessageBody::AppendResponse {
                index,
                reject: false,
                reject_hint: 0,
                hint_term: 0,
            },
        }
    }

    #[test]
    fn a_follower_acknowledges_appends_only_after_persisting() {
        let mut n = node(2);
        n.step(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::Append {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![Entry {
                    term: 1,
                    index: 1,
                    kind: EntryKind::Normal,
                    data: Bytes::from_static(b"x"),
                }],
                commit: 0,
            },
        })
        .expect("append accepted");
        let ready = n.ready();
        assert!(ready.must_sync);
        assert_eq!(ready.entries.len(), 1);
        assert!(
            ready.messages.is_empty(),
            "nothing may leave before the persist"
        );
        assert!(matches!(
            ready.persisted_messages.as_slice(),
            [Message {
                body: MessageBody::AppendResponse {
                    index: 1,
                    reject: false,
                    ..
                },
                ..
            }]
        ));
    }

    #[test]
    fn a_vote_is_granted_only_after_persisting_it() {
        let mut n = node(2);
        n.step(Message {
            from: 3,
            to: 2,
            term: 5,
            body: MessageBody::RequestVote {
                pre: false,
                last_log_index: 0,
                last_log_term: 0,
                transfer: false,
            },
        })
        .expect("vote request handled");
        let ready = n.ready();
        assert_eq!(ready.hard_state.map(|hs| (hs.term, hs.vote)), Some((5, 3)));
        assert!(ready.must_sync, "a new term and vote must be fsynced");
        assert!(ready.messages.is_empty());
        assert_eq!(ready.persisted_messages.len(), 1);
    }

    #[test]
    fn a_candidate_asks_for_votes_only_after_persisting_its_own() {
        let mut n = node_without_pre_vote(1);
        n.campaign();
        let ready = n.ready();
        assert_eq!(ready.hard_state.map(|hs| hs.vote), Some(1));
        assert!(ready.messages.is_empty());
        assert_eq!(ready.persisted_messages.len(), 2);
    }

    #[test]
    fn a_leader_sends_appends_before_its_own_fsync() {
        let mut n = leader();
        let ready = n.ready();
        assert_eq!(ready.entries.len(), 1, "the no-op to persist");
        assert_eq!(
            ready.messages.len(),
            2,
            "appends may go out while the leader writes"
        );
        assert!(ready.persisted_messages.is_empty());
    }

    #[test]
    fn a_leader_counts_itself_only_for_what_it_has_persisted() {
        let mut n = leader();
        let ready = n.ready();
        let noop = ready.entries[0].index;
        // One follower acknowledges before the leader's own write is done:
        // the leader plus one follower would be a majority, but the leader's
        // copy is not durable yet.
        n.step(ack(2, 1, noop)).expect("ack");
        assert_eq!(
            n.raft.log.committed, 0,
            "no commit on a copy that is not durable"
        );
        n.advance();
        assert_eq!(
            n.raft.log.committed, noop,
            "committed once the leader's own write is durable"
        );
    }

    #[test]
    fn a_commit_index_change_alone_needs_no_fsync() {
        let mut n = leader();
        let noop = n.ready().entries[0].index;
        n.advance();
        let _ = n.ready();
        n.advance();
        n.step(ack(2, 1, noop)).expect("ack");
        let ready = n.ready();
        assert!(ready.hard_state.is_some_and(|hs| hs.commit == noop));
        assert!(!ready.must_sync);
    }

    #[test]
    fn a_candidate_learns_the_commit_index_from_a_matching_vote_answer() {
        let entries: Vec<Entry> = (1..=5)
            .map(|index| Entry {
                term: 1,
                index,
                kind: EntryKind::Normal,
                data: Bytes::new(),
            })
            .collect();
        let state = InitialState {
            hard_state: HardState {
                term: 1,
                vote: 0,
                commit: 2,
            },
            snapshot: SnapshotMeta {
                conf_state: ConfState::from_voters([1, 2, 3]),
                ..SnapshotMeta::default()
            },
            entries,
        };
        let mut n = RawNode::new(Config::new(1), state).expect("valid");
        let answer = |commit, commit_term| Message {
            from: 2,
            to: 1,
            term: 1,
            body: MessageBody::RequestVoteResponse {
                pre: true,
                reject: true,
                commit,
                commit_term,
            },
        };
        n.step(answer(4, 2)).expect("handled");
        assert_eq!(
            n.raft.log.committed, 2,
            "a different entry at 4: nothing learned"
        );
        n.step(answer(9, 1)).expect("handled");
        assert_eq!(n.raft.log.committed, 2, "beyond this log: nothing learned");
        n.step(answer(4, 1)).expect("handled");
        assert_eq!(
            n.raft.log.committed, 4,
            "the same entry at 4: everything up to it is committed"
        );
    }

    #[test]
    fn bootstrap_hands_out_the_founding_configuration() {
        let mut n = RawNode::bootstrap(Config::new(1), &[1, 2, 3]).expect("valid");
        let ready = n.ready();
        assert_eq!(
            ready.entries.len(),
            3,
            "one membership change per founder, to persist"
        );
        assert_eq!(ready.committed_entries.len(), 3, "already committed");
        for entry in &ready.committed_entries {
            let cc = ConfChange::decode(&entry.data).expect("decodes");
            n.apply_conf_change(&cc).expect("applies");
        }
        n.advance();
        assert_eq!(n.status().conf_state.voters.len(), 3);
        assert!(!n.has_ready());
    }
}
