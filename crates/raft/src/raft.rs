//! The protocol: roles, terms, elections, replication, commitment, reads,
//! membership and leadership transfer. Everything here reacts to one input
//! (a message, a tick, a local request) and records its output (messages,
//! log changes) for [`crate::RawNode`] to hand out in the next `Ready`.

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::confchange::{self, Changer};
use crate::config::{Config, ReadOnlyOption};
use crate::error::{ConfChangeError, DropReason, Error, Result};
use crate::log::RaftLog;
use crate::quorum::VoteResult;
use crate::read_only::ReadOnly;
use crate::tracker::{Membership, Progress, ProgressState, ProgressTracker};
use crate::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId,
    ReadState, Snapshot, SnapshotMeta, Term, NO_NODE,
};

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election, without changing its term.
    PreCandidate,
    /// Campaigns for leadership in its term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Why a node campaigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Campaign {
    /// A pre-vote round: ask first, change nothing.
    PreElection,
    /// A real election in the next term.
    Election,
    /// An election requested by the leader handing over leadership.
    Transfer,
}

/// One node's protocol state.
pub struct Raft {
    /// This node's id.
    pub id: NodeId,
    /// The current term.
    pub term: Term,
    /// The vote cast in the current term.
    pub vote: NodeId,
    /// The current role.
    pub role: Role,
    /// The leader of the current term, if known.
    pub leader_id: NodeId,
    /// The log.
    pub log: RaftLog,
    /// Configuration, progress and votes.
    pub tracker: ProgressTracker,
    /// The position and configuration of the latest snapshot.
    pub snapshot_meta: SnapshotMeta,
    /// Messages that may be sent at once.
    pub(crate) msgs: Vec<Message>,
    /// Messages that may be sent only once this step's state is durable.
    pub(crate) msgs_after_persist: Vec<Message>,
    /// Reads that became safe.
    pub(crate) read_states: Vec<ReadState>,
    read_only: ReadOnly,
    /// Reads that arrived before the leader committed an entry of its term.
    reads_awaiting_commit: Vec<(Bytes, NodeId)>,
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    rng: SmallRng,
    /// The node leadership is being handed to.
    pub lead_transferee: Option<NodeId>,
    /// The index of the latest membership change in the log; no other may be
    /// proposed until it is applied.
    pending_conf_index: Index,
    /// Bytes of entries appended by this leader and not yet applied.
    uncommitted_size_bytes: u64,
    /// Proposals were appended since the last ready: send them then, so all
    /// proposals between two readies share one append per follower.
    pub(crate) appends_pending: bool,
    config: Config,
}

impl Raft {
    /// A node restored from its durable state.
    pub fn new(
        config: Config,
        hard_state: HardState,
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
    ) -> Result<Self> {
        config.validate()?;
        let log = RaftLog::restore_from(&snapshot, entries, hard_state.commit)?;
        let mut tracker = ProgressTracker::new(config.max_inflight_msgs, config.max_inflight_bytes);
        let (membership, progress) =
            confchange::restore(&tracker, &snapshot.conf_state, log.last_index())?;
        tracker.apply(membership, progress);
        let rng =
            SmallRng::seed_from_u64(config.seed ^ config.id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut raft = Self {
            id: config.id,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader_id: NO_NODE,
            log,
            tracker,
            snapshot_meta: snapshot,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            read_only: ReadOnly::default(),
            reads_awaiting_commit: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            rng,
            lead_transferee: None,
            pending_conf_index: 0,
            uncommitted_size_bytes: 0,
            appends_pending: false,
            config,
        };
        raft.become_follower(hard_state.term, NO_NODE);
        Ok(raft)
    }

    /// The durable part of the state.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// The settings this node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- sending ----------------------------------------------------------

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = match body {
            // Forwarded requests are not bound to a term: the leader treats
            // them as if made locally.
            MessageBody::Propose { .. }
            | MessageBody::ReadIndex { .. }
            | MessageBody::TransferLeader { .. } => 0,
            _ => self.term,
        };
        self.send_with_term(to, term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let after_persist = self.role != Role::Leader
            || matches!(
                body,
                MessageBody::AppendResponse { .. } | MessageBody::RequestVoteResponse { .. }
            );
        let msg = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if after_persist {
            // A vote or an append acknowledgement speaks for state that must
            // survive a crash (Raft §5, thesis §3.8): it waits for the persist.
            self.msgs_after_persist.push(msg);
        } else {
            self.msgs.push(msg);
        }
    }

    /// Sends appends (or a snapshot) to `to` as flow control allows. With
    /// `send_if_empty`, an append without entries still goes out to carry the
    /// commit index. Returns whether a message was sent.
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.tracker.progress.get_mut(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let prev_index = pr.next - 1;
        let prev_term = self.log.term(prev_index);
        let entries = match prev_term {
            Some(_) => self.log.slice(
                pr.next,
                self.log.last_index() + 1,
                self.config.max_message_size_bytes,
            ),
            None => Err(Error::Compacted(prev_index)),
        };
        let (Some(prev_term), Ok(entries)) = (prev_term, entries) else {
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let size_bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let last_index = prev_index + entries.len() as Index;
        pr.sent_entries(entries.len(), last_index, size_bytes);
        let commit = self.log.committed;
        self.send(
            to,
            MessageBody::Append {
                prev_log_index: prev_index,
                prev_log_term: prev_term,
                entries,
                commit,
            },
        );
        true
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let Some(pr) = self.tracker.progress.get_mut(&to) else {
            return false;
        };
        if !pr.recent_active {
            // Don't ship a whole snapshot to a node that may be down.
            return false;
        }
        let meta = self.snapshot_meta.clone();
        tracing::debug!(node = self.id, to, index = meta.index, "sending snapshot");
        pr.become_snapshot(meta.index);
        self.send(
            to,
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta,
                    data: Bytes::new(),
                },
            },
        );
        true
    }

    fn bcast_append(&mut self) {
        for id in self.peer_ids() {
            self.maybe_send_append(id, true);
        }
    }

    fn bcast_heartbeat(&mut self) {
        let round = self.read_only.current_round();
        for id in self.peer_ids() {
            self.send_heartbeat(id, round);
        }
    }

    fn send_heartbeat(&mut self, to: NodeId, read_round: u64) {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return;
        };
        // A follower may not have the leader's log up to the commit index; it
        // may adopt only what it is known to hold.
        let commit = pr.matched.min(self.log.committed);
        self.send(to, MessageBody::Heartbeat { commit, read_round });
    }

    fn peer_ids(&self) -> Vec<NodeId> {
        self.tracker
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    // ---- roles ------------------------------------------------------------

    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader_id = NO_NODE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout =
            self.config.election_tick + self.rng.gen_range(0..self.config.election_tick);
        self.lead_transferee = None;
        self.tracker.reset_votes();
        let last_index = self.log.last_index();
        let stable_index = self.log.stable_index();
        for (&id, pr) in self.tracker.progress.iter_mut() {
            let is_learner = pr.is_learner;
            *pr = Progress::new(
                last_index + 1,
                self.config.max_inflight_msgs,
                self.config.max_inflight_bytes,
            );
            pr.is_learner = is_learner;
            if id == self.id {
                // The node counts itself only for what it has persisted.
                pr.matched = stable_index;
            }
        }
        self.pending_conf_index = 0;
        self.uncommitted_size_bytes = 0;
        self.read_only = ReadOnly::default();
        self.reads_awaiting_commit.clear();
    }

    fn become_follower(&mut self, term: Term, leader_id: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader_id = leader_id;
        tracing::debug!(node = self.id, term, leader_id, "became follower");
    }

    fn become_pre_candidate(&mut self) {
        // A pre-vote changes neither term nor vote, so a node that cannot win
        // leaves no trace on the cluster.
        self.role = Role::PreCandidate;
        self.leader_id = NO_NODE;
        self.tracker.reset_votes();
        tracing::debug!(node = self.id, term = self.term, "became pre-candidate");
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
        tracing::debug!(node = self.id, term = self.term, "became candidate");
    }

    fn become_leader(&mut self) {
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader_id = self.id;
        if let Some(pr) = self.tracker.progress.get_mut(&self.id) {
            pr.become_replicate();
            pr.matched = self.log.stable_index();
            pr.recent_active = true;
        }
        // A membership change may hide in the uncommitted tail: allow no new
        // one until everything this leader inherited is applied.
        self.pending_conf_index = self.log.last_index();
        // The no-op of the new term: committing it commits everything before
        // it (Raft §5.4.2) and lets reads be served (thesis §6.4).
        let noop = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        };
        self.log.append_as_leader(vec![noop]);
        tracing::info!(node = self.id, term = self.term, "became leader");
    }

    /// Whether this node may campaign: it is a voter of the configuration.
    pub fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id)
            && self
                .tracker
                .progress
                .get(&self.id)
                .is_some_and(|pr| !pr.is_learner)
    }

    // ---- time -------------------------------------------------------------

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.check_quorum_active() {
                tracing::warn!(
                    node = self.id,
                    term = self.term,
                    "lost contact with a quorum; stepping down"
                );
                self.become_follower(self.term, NO_NODE);
                return;
            }
            // A transfer that did not finish within an election timeout failed.
            self.lead_transferee = None;
            if !self.promotable() {
                self.hand_over_leadership();
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    fn check_quorum_active(&mut self) -> bool {
        let id = self.id;
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            pr.recent_active = true;
        }
        let active = self.tracker.quorum_active();
        for (&peer, pr) in self.tracker.progress.iter_mut() {
            if peer != id {
                pr.recent_active = false;
            }
        }
        active
    }

    // ---- elections --------------------------------------------------------

    /// Starts an election now (if this node may).
    pub fn campaign_now(&mut self) {
        self.hup(false);
    }

    fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        if self.has_unapplied_conf_change() {
            // The configuration this node would lead with is not settled yet.
            tracing::debug!(
                node = self.id,
                "not campaigning: a committed membership change is unapplied"
            );
            return;
        }
        if transfer {
            self.campaign(Campaign::Transfer);
        } else if self.config.pre_vote {
            self.campaign(Campaign::PreElection);
        } else {
            self.campaign(Campaign::Election);
        }
    }

    fn has_unapplied_conf_change(&self) -> bool {
        let (low, high) = (self.log.applied + 1, self.log.committed + 1);
        self.log
            .slice(low, high, u64::MAX)
            .map(|entries| entries.iter().any(|e| e.kind == EntryKind::ConfChange))
            .unwrap_or(false)
    }

    fn campaign(&mut self, kind: Campaign) {
        let (pre, vote_term) = if kind == Campaign::PreElection {
            self.become_pre_candidate();
            (true, self.term + 1)
        } else {
            self.become_candidate();
            (false, self.term)
        };
        self.tracker.record_vote(self.id, true);
        if self.tally_and_act(pre) {
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for id in self.tracker.membership.voters.ids() {
            if id == self.id {
                continue;
            }
            let body = MessageBody::RequestVote {
                pre,
                last_log_index,
                last_log_term,
                transfer: kind == Campaign::Transfer,
            };
            self.send_with_term(id, vote_term, body);
        }
    }

    /// Acts on the votes counted so far; returns whether the election ended.
    fn tally_and_act(&mut self, pre: bool) -> bool {
        let (_, _, result) = self.tracker.tally_votes();
        match result {
            VoteResult::Won if pre => {
                self.campaign(Campaign::Election);
                true
            }
            VoteResult::Won => {
                self.become_leader();
                self.bcast_append();
                true
            }
            VoteResult::Lost => {
                self.become_follower(self.term, NO_NODE);
                true
            }
            VoteResult::Pending => false,
        }
    }

    fn handle_request_vote(&mut self, m: &Message, pre: bool, last_index: Index, last_term: Term) {
        let can_vote = self.vote == m.from
            || (self.vote == NO_NODE && self.leader_id == NO_NODE)
            // A pre-vote for a later term is granted whatever we did in ours.
            || (pre && m.term > self.term);
        if can_vote && self.log.is_up_to_date(last_index, last_term) {
            // The answer carries the request's term so a pre-candidate does
            // not discard it as stale.
            self.send_with_term(m.from, m.term, self.vote_response(pre, false));
            if !pre {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            self.send_with_term(m.from, self.term, self.vote_response(pre, true));
        }
    }

    fn vote_response(&self, pre: bool, reject: bool) -> MessageBody {
        let commit = self.log.committed;
        MessageBody::RequestVoteResponse {
            pre,
            reject,
            commit,
            commit_term: self.log.term(commit).unwrap_or(0),
        }
    }

    /// Adopts another node's commit index if this log holds the same entry
    /// there: by log matching, everything up to it is then the committed log.
    fn learn_commit(&mut self, commit: Index, commit_term: Term) {
        if commit > self.log.committed
            && commit_term > 0
            && self.log.match_term(commit, commit_term)
        {
            tracing::debug!(
                node = self.id,
                commit,
                "commit index learned from a vote answer"
            );
            self.log.commit_to(commit);
        }
    }

    // ---- the entry point for messages ------------------------------------

    /// Processes a message from a peer.
    pub fn step(&mut self, m: Message) -> Result<()> {
        if m.term > self.term {
            if !self.accept_higher_term(&m) {
                return Ok(());
            }
        } else if m.term != 0 && m.term < self.term {
            self.answer_stale(&m);
            return Ok(());
        }
        if let MessageBody::RequestVoteResponse {
            commit,
            commit_term,
            ..
        } = m.body
        {
            self.learn_commit(commit, commit_term);
        }
        match m.body {
            MessageBody::RequestVote {
                pre,
                last_log_index,
                last_log_term,
                ..
            } => {
                self.handle_request_vote(&m, pre, last_log_index, last_log_term);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    /// Handles a message from a later term. Returns whether to go on
    /// processing it.
    fn accept_higher_term(&mut self, m: &Message) -> bool {
        match &m.body {
            MessageBody::RequestVote { pre, transfer, .. } => {
                let in_lease = self.config.check_quorum
                    && self.leader_id != NO_NODE
                    && self.election_elapsed < self.config.election_tick;
                if in_lease && !transfer {
                    // We heard from a live leader within the election timeout:
                    // a node asking for votes now was cut off, and must not
                    // depose a working leader (thesis §4.2.3).
                    tracing::debug!(
                        node = self.id,
                        from = m.from,
                        "ignoring vote request within leader lease"
                    );
                    return false;
                }
                if !pre {
                    self.become_follower(m.term, NO_NODE);
                }
            }
            MessageBody::RequestVoteResponse {
                pre: true,
                reject: false,
                ..
            } => {
                // A granted pre-vote carries the term the candidate will use;
                // it says nothing about the voter's term.
            }
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(m.term, m.from);
            }
            _ => self.become_follower(m.term, NO_NODE),
        }
        true
    }

    /// Answers a message from an earlier term so its sender learns it is stale.
    fn answer_stale(&mut self, m: &Message) {
        match m.body {
            MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                // Tell the stale leader the current term (Raft §5.1), or it
                // would keep leading a cluster that moved on: with
                // check-quorum or pre-vote a node may have a higher term
                // without having disrupted the leader, and a learner whose
                // term was raised by removed members' votes would ignore its
                // leader forever.
                self.send(
                    m.from,
                    MessageBody::AppendResponse {
                        index: 0,
                        reject: false,
                        reject_hint: 0,
                        hint_term: 0,
                    },
                );
            }
            MessageBody::RequestVote { pre, .. } => {
                // Reject with our term (Raft §5.1), so the candidate catches
                // up. Ignoring it instead can stall the cluster: a candidate
                // that only this node would vote for never learns the term
                // it must exceed.
                self.send_with_term(m.from, self.term, self.vote_response(pre, true));
            }
            _ => {}
        }
    }

    fn step_leader(&mut self, m: Message) -> Result<()> {
        let from = m.from;
        match m.body {
            MessageBody::Propose { entries } => self.propose_forwarded(entries),
            MessageBody::ReadIndex { context } => {
                self.leader_read_index(context, from);
                Ok(())
            }
            MessageBody::TransferLeader { target } => self.transfer_leadership(target),
            MessageBody::AppendResponse {
                index,
                reject,
                reject_hint,
                hint_term,
            } => {
                self.handle_append_response(from, index, reject, reject_hint, hint_term);
                Ok(())
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(from, read_round);
                Ok(())
            }
            // Vote answers after winning, or messages from our own term that
            // only a follower acts on: nothing to do.
            _ => Ok(()),
        }
    }

    fn step_candidate(&mut self, m: Message) -> Result<()> {
        match m.body {
            MessageBody::Propose { .. } => Err(Error::ProposalDropped(DropReason::NoLeader)),
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // Someone won this term: follow it.
                self.become_follower(m.term, m.from);
                self.step_follower(m)
            }
            MessageBody::RequestVoteResponse { pre, reject, .. } => {
                let expected_pre = self.role == Role::PreCandidate;
                if pre == expected_pre {
                    self.tracker.record_vote(m.from, !reject);
                    self.tally_and_act(pre);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<()> {
        let from = m.from;
        match m.body {
            MessageBody::Propose { entries } => {
                if self.leader_id == NO_NODE {
                    return Err(Error::ProposalDropped(DropReason::NoLeader));
                }
                if self.config.disable_proposal_forwarding {
                    return Err(Error::ProposalDropped(DropReason::NotLeader));
                }
                let leader = self.leader_id;
                self.send(leader, MessageBody::Propose { entries });
                Ok(())
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            } => {
                self.election_elapsed = 0;
                self.leader_id = from;
                self.handle_append(from, prev_log_index, prev_log_term, entries, commit);
                Ok(())
            }
            MessageBody::Heartbeat { commit, read_round } => {
                self.election_elapsed = 0;
                self.leader_id = from;
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(from, MessageBody::HeartbeatResponse { read_round });
                Ok(())
            }
            MessageBody::InstallSnapshot { snapshot } => {
                self.election_elapsed = 0;
                self.leader_id = from;
                self.handle_snapshot(from, snapshot);
                Ok(())
            }
            MessageBody::TransferLeader { target } => {
                if self.leader_id == NO_NODE {
                    return Err(Error::Transfer {
                        target,
                        reason: "no leader",
                    });
                }
                let leader = self.leader_id;
                self.send(leader, MessageBody::TransferLeader { target });
                Ok(())
            }
            MessageBody::TimeoutNow => {
                // The leader chose us: campaign at once, without pre-vote, and
                // with the transfer flag so voters set aside their lease.
                tracing::info!(
                    node = self.id,
                    term = self.term,
                    "leadership transfer: campaigning now"
                );
                self.hup(true);
                Ok(())
            }
            MessageBody::ReadIndex { context } => {
                if self.leader_id == NO_NODE {
                    return Err(Error::ReadDropped(DropReason::NoLeader));
                }
                let leader = self.leader_id;
                self.send(leader, MessageBody::ReadIndex { context });
                Ok(())
            }
            MessageBody::ReadIndexResponse { context, index } => {
                self.read_states.push(ReadState { index, context });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // ---- replication: follower side ---------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    ) {
        if prev_index < self.log.committed {
            // Everything up to our commit index already matches the leader.
            let index = self.log.committed;
            self.send(from, accept(index));
            return;
        }
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, entries)
        {
            Some(last_new) => self.send(from, accept(last_new)),
            None => {
                // Tell the leader where our log might match, skipping a whole
                // term of entries at once (thesis §5.3's optimisation).
                let (hint_index, hint_term) = self
                    .log
                    .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
                tracing::debug!(
                    node = self.id,
                    prev_index,
                    prev_term,
                    hint_index,
                    hint_term,
                    "rejecting append"
                );
                self.send(
                    from,
                    MessageBody::AppendResponse {
                        index: prev_index,
                        reject: true,
                        reject_hint: hint_index,
                        hint_term,
                    },
                );
            }
        }
    }

    fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if index <= self.log.committed {
            let committed = self.log.committed;
            self.send(from, accept(committed));
            return;
        }
        if self.log.match_term(index, term) {
            // Our log already holds the snapshot's last entry: just commit.
            self.log.commit_to(index);
            let committed = self.log.committed;
            self.send(from, accept(committed));
            return;
        }
        // The snapshot's configuration may predate this node's membership
        // (it was added after the snapshot was taken). That is fine: the
        // change adding it follows in the log, and until it is applied the
        // node is not promotable, so it cannot campaign on a wrong view.
        match confchange::restore(&self.tracker, &snapshot.meta.conf_state, index) {
            Ok((membership, progress)) => self.tracker.apply(membership, progress),
            Err(err) => {
                tracing::error!(node = self.id, %err, "ignoring snapshot with an invalid configuration");
                return;
            }
        }
        tracing::info!(node = self.id, index, term, "restoring from snapshot");
        self.snapshot_meta = snapshot.meta.clone();
        self.log.restore_snapshot(snapshot);
        let last = self.log.last_index();
        self.send(from, accept(last));
    }

    // ---- replication: leader side -----------------------------------------

    fn handle_append_response(
        &mut self,
        from: NodeId,
        index: Index,
        reject: bool,
        hint: Index,
        hint_term: Term,
    ) {
        let last_index = self.log.last_index();
        let first_index = self.log.first_index();
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if reject {
            // The follower's hint says its log has no entry newer than
            // `hint_term` at or below `hint`; find the last such entry in our
            // own log, so one probe per term suffices.
            let match_hint = if hint_term > 0 {
                self.log.find_conflict_by_term(hint, hint_term).0
            } else {
                hint
            };
            let Some(pr) = self.tracker.progress.get_mut(&from) else {
                return;
            };
            if pr.maybe_decr_to(index, match_hint) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.maybe_send_append(from, true);
            }
            return;
        }
        let was_paused = pr.is_paused();
        let probe_caught_up = pr.matched == index && pr.state == ProgressState::Probe;
        if !pr.maybe_update(index) && !probe_caught_up {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.matched + 1 >= first_index => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.free_inflights(index),
        }
        let matched = pr.matched;
        if self.maybe_commit() {
            self.bcast_append();
        } else if was_paused {
            self.maybe_send_append(from, false);
        }
        // Keep the pipeline full as far as the window allows.
        while self.maybe_send_append(from, false) {}
        if self.lead_transferee == Some(from) && matched == last_index {
            tracing::info!(
                node = self.id,
                to = from,
                "transfer target caught up; sending TimeoutNow"
            );
            self.send(from, MessageBody::TimeoutNow);
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.paused = false;
        if pr.matched < last_index || pr.state == ProgressState::Probe {
            self.maybe_send_append(from, true);
        }
        if read_round == 0 || self.config.read_only != ReadOnlyOption::Safe {
            return;
        }
        self.read_only.record_ack(from, read_round);
        let leader = self.id;
        let confirmed = self
            .tracker
            .membership
            .voters
            .committed_index(|id| Some(self.read_only.acked_round(id, leader)));
        for read in self.read_only.release(confirmed) {
            self.respond_to_read(read.index, read.context, read.from);
        }
    }

    /// Commits what a quorum has stored, if that advances the commit index.
    fn maybe_commit(&mut self) -> bool {
        let quorum_index = self.tracker.committed_index();
        if !self.log.maybe_commit(quorum_index, self.term) {
            return false;
        }
        // The first commit of the term also unblocks reads that waited for it.
        let waiting = std::mem::take(&mut self.reads_awaiting_commit);
        for (context, from) in waiting {
            self.leader_read_index(context, from);
        }
        true
    }

    /// Sends the appends that proposals since the last ready are waiting for.
    pub(crate) fn flush_appends(&mut self) {
        if std::mem::take(&mut self.appends_pending) && self.role == Role::Leader {
            self.bcast_append();
        }
    }

    /// Called when the log up to (`index`, `term`) is durable on this node.
    pub(crate) fn on_persisted(&mut self, index: Index, term: Term) {
        self.log.stable_to(index, term);
        if self.role != Role::Leader {
            return;
        }
        let stable = self.log.stable_index();
        let id = self.id;
        let updated = self
            .tracker
            .progress
            .get_mut(&id)
            .is_some_and(|pr| pr.maybe_update(stable));
        if updated && self.maybe_commit() {
            self.bcast_append();
        }
    }

    /// Called when entries up to `index` were applied; `size_bytes` is the
    /// size of the entries just applied.
    pub(crate) fn on_applied(&mut self, index: Index, size_bytes: u64) {
        self.log.applied_to(index);
        self.uncommitted_size_bytes = self.uncommitted_size_bytes.saturating_sub(size_bytes);
        let membership = &self.tracker.membership;
        if self.role == Role::Leader
            && membership.auto_leave
            && membership.is_joint()
            && self.pending_conf_index <= self.log.applied
        {
            // The joint configuration is committed and applied: leave it.
            let entry = Entry {
                term: 0,
                index: 0,
                kind: EntryKind::ConfChange,
                data: ConfChange::leave_joint().encode(),
            };
            match self.append_as_leader(vec![entry]) {
                Ok(()) => {
                    self.pending_conf_index = self.log.last_index();
                    self.bcast_append();
                    tracing::info!(node = self.id, "leaving joint configuration");
                }
                Err(err) => {
                    tracing::warn!(node = self.id, %err, "could not propose leaving the joint configuration")
                }
            }
        }
    }

    // ---- proposals --------------------------------------------------------

    /// Proposes entries (their term and index are assigned here). On a
    /// follower they are forwarded to the leader.
    pub fn propose(&mut self, entries: Vec<Entry>) -> Result<()> {
        if self.role != Role::Leader {
            let msg = Message {
                from: self.id,
                to: self.id,
                term: 0,
                body: MessageBody::Propose { entries },
            };
            return self.step(msg);
        }
        if let Some(cc) = entries.iter().find(|e| e.kind == EntryKind::ConfChange) {
            self.check_conf_change_proposal(&cc.data)?;
        }
        self.propose_as_leader(entries)
    }

    fn propose_forwarded(&mut self, mut entries: Vec<Entry>) -> Result<()> {
        for entry in entries
            .iter_mut()
            .filter(|e| e.kind == EntryKind::ConfChange)
        {
            if let Err(err) = self.check_conf_change_proposal(&entry.data) {
                // The proposer cannot be told; keep the log position but
                // turn the refused change into a no-op.
                tracing::warn!(node = self.id, %err, "forwarded membership change refused");
                entry.kind = EntryKind::Normal;
                entry.data = Bytes::new();
            }
        }
        self.propose_as_leader(entries)
    }

    fn check_conf_change_proposal(&self, data: &[u8]) -> Result<()> {
        if self.pending_conf_index > self.log.applied {
            return Err(ConfChangeError::Pending.into());
        }
        let cc = ConfChange::decode(data).map_err(|e| ConfChangeError::Invariant(e.to_string()))?;
        Changer::new(&self.tracker, self.log.last_index()).apply(&cc)?;
        Ok(())
    }

    fn propose_as_leader(&mut self, entries: Vec<Entry>) -> Result<()> {
        if !self.tracker.progress.contains_key(&self.id) {
            return Err(Error::ProposalDropped(DropReason::NotMember));
        }
        if self.lead_transferee.is_some() {
            return Err(Error::ProposalDropped(DropReason::TransferInProgress));
        }
        let has_conf_change = entries.iter().any(|e| e.kind == EntryKind::ConfChange);
        self.append_as_leader(entries)?;
        if has_conf_change {
            self.pending_conf_index = self.log.last_index();
        }
        self.appends_pending = true;
        Ok(())
    }

    fn append_as_leader(&mut self, mut entries: Vec<Entry>) -> Result<()> {
        let size_bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let limit = self.config.max_uncommitted_entries_bytes;
        // An empty tail always admits one batch, however large, so a single
        // big proposal cannot be refused forever.
        if limit > 0
            && self.uncommitted_size_bytes > 0
            && self.uncommitted_size_bytes + size_bytes > limit
        {
            return Err(Error::ProposalDropped(DropReason::UncommittedSizeLimit));
        }
        let mut index = self.log.last_index();
        for entry in &mut entries {
            index += 1;
            entry.term = self.term;
            entry.index = index;
        }
        self.uncommitted_size_bytes += size_bytes;
        self.log.append_as_leader(entries);
        Ok(())
    }

    // ---- reads ------------------------------------------------------------

    /// Requests a linearizable read point; the answer arrives as a
    /// [`ReadState`] carrying `context`.
    pub fn read_index(&mut self, context: Bytes) -> Result<()> {
        match self.role {
            Role::Leader => {
                self.leader_read_index(context, self.id);
                Ok(())
            }
            _ => {
                let msg = Message {
                    from: self.id,
                    to: self.id,
                    term: 0,
                    body: MessageBody::ReadIndex { context },
                };
                self.step_follower(msg)
            }
        }
    }

    fn leader_read_index(&mut self, context: Bytes, from: NodeId) {
        let membership = &self.tracker.membership;
        let sole_voter = !membership.is_joint()
            && membership.voters.incoming.len() == 1
            && membership.voters.incoming.contains(&self.id);
        if self.log.term(self.log.committed) != Some(self.term) {
            // Until an entry of this term commits, our commit index may lag
            // behind what an earlier leader committed (thesis §6.4 step 1).
            self.reads_awaiting_commit.push((context, from));
            return;
        }
        let index = self.log.committed;
        if sole_voter || self.config.read_only == ReadOnlyOption::LeaseBased {
            self.respond_to_read(index, context, from);
            return;
        }
        let round = self.read_only.add_request(index, context, from);
        for id in self.peer_ids() {
            self.send_heartbeat(id, round);
        }
    }

    fn respond_to_read(&mut self, index: Index, context: Bytes, from: NodeId) {
        if from == self.id {
            self.read_states.push(ReadState { index, context });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { context, index });
        }
    }

    /// Reads waiting for a heartbeat quorum or for the first commit of the term.
    pub fn pending_read_count(&self) -> usize {
        self.read_only.pending_count() + self.reads_awaiting_commit.len()
    }

    // ---- membership ---------------------------------------------------------

    /// Applies a committed membership change and returns the new configuration.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<ConfState> {
        let (membership, progress) =
            Changer::new(&self.tracker, self.log.last_index()).apply(cc)?;
        Ok(self.switch_to(membership, progress))
    }

    fn switch_to(
        &mut self,
        membership: Membership,
        progress: std::collections::BTreeMap<NodeId, Progress>,
    ) -> ConfState {
        self.tracker.apply(membership, progress);
        let conf_state = self.tracker.membership.to_conf_state();
        tracing::info!(node = self.id, ?conf_state, "applied membership change");
        if self.role != Role::Leader {
            return conf_state;
        }
        if !self.promotable() {
            // Removed or demoted. Stepping down at once could strand the
            // cluster: the remaining voters may not yet know this change is
            // committed, and still need this node's vote under the old
            // configuration. Keep leading (without counting ourselves) until
            // the best-placed voter has taken over.
            self.hand_over_leadership();
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else {
            for id in self.peer_ids() {
                self.maybe_send_append(id, false);
            }
        }
        if let Some(target) = self.lead_transferee {
            if !self.tracker.is_voter(target) {
                self.lead_transferee = None;
            }
        }
        conf_state
    }

    // ---- leadership transfer ----------------------------------------------

    /// Asks the cluster to make `target` the leader.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<()> {
        if self.role == Role::Leader {
            return self.transfer_leadership(target);
        }
        let msg = Message {
            from: self.id,
            to: self.id,
            term: 0,
            body: MessageBody::TransferLeader { target },
        };
        self.step_follower(msg)
    }

    fn transfer_leadership(&mut self, target: NodeId) -> Result<()> {
        let refuse = |reason| Err(Error::Transfer { target, reason });
        if target == self.id {
            return refuse("already leader");
        }
        if self.lead_transferee == Some(target) {
            return Ok(());
        }
        match self.tracker.progress.get(&target) {
            None => return refuse("not a member"),
            Some(pr) if pr.is_learner || !self.tracker.is_voter(target) => {
                return refuse("not a voter")
            }
            Some(_) => {}
        }
        // The transfer must finish within an election timeout, or it is
        // abandoned and proposals flow again.
        self.election_elapsed = 0;
        self.lead_transferee = Some(target);
        tracing::info!(node = self.id, target, "transferring leadership");
        let caught_up = self
            .tracker
            .progress
            .get(&target)
            .is_some_and(|pr| pr.matched == self.log.last_index());
        if caught_up {
            self.send(target, MessageBody::TimeoutNow);
        } else {
            self.maybe_send_append(target, true);
        }
        Ok(())
    }

    /// A leader that is no longer a voter hands leadership to the voter with
    /// the most of its log.
    fn hand_over_leadership(&mut self) {
        let id = self.id;
        let best = self
            .tracker
            .progress
            .iter()
            .filter(|&(&peer, pr)| peer != id && !pr.is_learner && self.tracker.is_voter(peer))
            .max_by_key(|&(&peer, pr)| (pr.matched, std::cmp::Reverse(peer)))
            .map(|(&peer, _)| peer);
        match best {
            Some(target) => {
                tracing::info!(
                    node = id,
                    target,
                    "leader is no longer a voter; handing over leadership"
                );
                if let Err(err) = self.transfer_leadership(target) {
                    tracing::warn!(node = id, %err, "could not hand over leadership");
                }
            }
            None => self.become_follower(self.term, NO_NODE),
        }
    }

    // ---- reports from the application -------------------------------------

    /// The transport could not reach `to`: stop streaming appends to it.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    /// The transport finished sending a snapshot to `to`, or failed to.
    pub fn report_snapshot(&mut self, to: NodeId, success: bool) {
        let Some(pr) = self.tracker.progress.get_mut(&to) else {
            return;
        };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        if !success {
            pr.pending_snapshot = 0;
        }
        pr.become_probe();
        // Wait for the follower's answer (or a heartbeat) before probing.
        pr.paused = true;
    }

    /// Records that the application took a snapshot covering the log up to
    /// `meta.index` and drops those entries from memory.
    pub fn compact_log(&mut self, meta: SnapshotMeta) -> Result<()> {
        if self.log.term(meta.index) != Some(meta.term) {
            return Err(Error::Compacted(meta.index));
        }
        self.log.compact_to(meta.index)?;
        self.snapshot_meta = meta;
        Ok(())
    }
}

fn accept(index: Index) -> MessageBody {
    MessageBody::AppendResponse {
        index,
        reject: false,
        reject_hint: 0,
        hint_term: 0,
    }
}
