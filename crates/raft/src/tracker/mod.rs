//! The leader's bookkeeping: the cluster configuration, one [`Progress`] per
//! member, and the votes of an election in progress.

mod inflights;
mod progress;

use std::collections::{BTreeMap, BTreeSet};

pub use inflights::Inflights;
pub use progress::{Progress, ProgressState};

use crate::quorum::{JointVoters, VoteResult};
use crate::types::{ConfState, Index, NodeId};

/// A cluster configuration as the core works with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Who votes (both halves during a joint change).
    pub voters: JointVoters,
    /// Learners.
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when the joint change is left.
    pub learners_next: BTreeSet<NodeId>,
    /// Leave the joint configuration automatically.
    pub auto_leave: bool,
}

impl Membership {
    /// The configuration a [`ConfState`] describes.
    pub fn from_conf_state(cs: &ConfState) -> Self {
        Self {
            voters: JointVoters {
                incoming: cs.voters.clone(),
                outgoing: cs.voters_outgoing.clone(),
            },
            learners: cs.learners.clone(),
            learners_next: cs.learners_next.clone(),
            auto_leave: cs.auto_leave,
        }
    }

    /// The [`ConfState`] describing this configuration.
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters.outgoing.clone(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
        }
    }

    /// Whether a joint change is in progress.
    pub fn is_joint(&self) -> bool {
        !self.voters.outgoing.is_empty()
    }

    /// Every member in any role.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.ids();
        all.extend(&self.learners);
        all.extend(&self.learners_next);
        all
    }
}

/// Configuration, per-member progress and election votes.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    /// The configuration in force.
    pub membership: Membership,
    /// One entry per member (voters and learners).
    pub progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    inflight_count_max: usize,
    inflight_bytes_max: u64,
}

impl ProgressTracker {
    /// An empty tracker; inflight limits apply to every follower added later.
    pub fn new(inflight_count_max: usize, inflight_bytes_max: u64) -> Self {
        Self {
            membership: Membership::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            inflight_count_max,
            inflight_bytes_max,
        }
    }

    /// A fresh progress for a member added while the log ends at `last_index`.
    pub fn new_progress(&self, last_index: Index, is_learner: bool) -> Progress {
        let mut pr = Progress::new(
            last_index + 1,
            self.inflight_count_max,
            self.inflight_bytes_max,
        );
        pr.is_learner = is_learner;
        // A new member gets the benefit of the doubt for one quorum check,
        // so adding it cannot make the leader step down at once.
        pr.recent_active = true;
        pr
    }

    /// Installs a configuration and the progress map that goes with it.
    pub fn apply(&mut self, membership: Membership, progress: BTreeMap<NodeId, Progress>) {
        self.membership = membership;
        self.progress = progress;
    }

    /// The highest index a quorum of voters has durably stored.
    pub fn committed_index(&self) -> Index {
        self.membership
            .voters
            .committed_index(|id| self.progress.get(&id).map(|pr| pr.matched))
    }

    /// Forgets the votes of a previous election.
    pub fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `id`'s answer; the first answer of a voter counts.
    pub fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    /// The outcome of the election so far, with the granted and rejected counts.
    pub fn tally_votes(&self) -> (usize, usize, VoteResult) {
        let granted = self.votes.values().filter(|&&v| v).count();
        let rejected = self.votes.len() - granted;
        let result = self
            .membership
            .voters
            .vote_result(|id| self.votes.get(&id).copied());
        (granted, rejected, result)
    }

    /// Whether a quorum was heard from since the last check.
    pub fn quorum_active(&self) -> bool {
        let result = self
            .membership
            .voters
            .vote_result(|id| self.progress.get(&id).map(|pr| pr.recent_active));
        result == VoteResult::Won
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.membership.voters.contains(id)
    }
}
