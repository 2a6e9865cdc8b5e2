//! Quorum arithmetic for plain and joint configurations.
//!
//! A plain configuration decides by majority of its voters. A joint
//! configuration (during a membership change) decides only when both of its
//! halves decide the same way, so no decision can be made by the old or the
//! new members alone.

use std::collections::BTreeSet;

use crate::types::{Index, NodeId};

/// The outcome of a vote counted so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Enough votes are still missing that either outcome is possible.
    Pending,
    /// Too many rejections: the vote cannot be won.
    Lost,
    /// A quorum granted.
    Won,
}

/// The highest index that a majority of `voters` has acknowledged, given each
/// voter's acknowledged index. An empty set imposes no bound (`Index::MAX`),
/// so it is neutral as the outgoing half of a non-joint configuration.
pub fn majority_committed_index(
    voters: &BTreeSet<NodeId>,
    acked: impl Fn(NodeId) -> Option<Index>,
) -> Index {
    if voters.is_empty() {
        return Index::MAX;
    }
    // Small clusters are the rule: sort a stack-sized array when we can.
    let mut stack = [0 as Index; 7];
    let mut heap = Vec::new();
    let values: &mut [Index] = if voters.len() <= stack.len() {
        &mut stack[..voters.len()]
    } else {
        heap.resize(voters.len(), 0);
        &mut heap
    };
    for (slot, &id) in values.iter_mut().zip(voters) {
        *slot = acked(id).unwrap_or(0);
    }
    values.sort_unstable();
    // With n voters sorted ascending, the value at position n - (n/2 + 1)
    // is acknowledged by at least n/2 + 1 voters.
    let quorum = voters.len() / 2 + 1;
    values[voters.len() - quorum]
}

/// Counts votes of a plain configuration. `vote` gives a voter's answer, or
/// `None` if it has not answered.
pub fn majority_vote_result(
    voters: &BTreeSet<NodeId>,
    vote: impl Fn(NodeId) -> Option<bool>,
) -> VoteResult {
    if voters.is_empty() {
        // An empty configuration agrees to everything; this keeps the joint
        // rules simple when there is no outgoing half.
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0usize, 0usize);
    for &id in voters {
        match vote(id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if granted + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// The voters of a configuration: the incoming half and, during a joint
/// change, the outgoing half.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointVoters {
    /// The voters being moved to (the only voters outside a change).
    pub incoming: BTreeSet<NodeId>,
    /// The voters being moved from; empty outside a joint change.
    pub outgoing: BTreeSet<NodeId>,
}

impl JointVoters {
    /// Whether `id` votes in either half.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    /// Every voter of either half.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming.union(&self.outgoing).copied().collect()
    }

    /// The highest index acknowledged by a quorum of both halves.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
        let incoming = majority_committed_index(&self.incoming, &acked);
        let outgoing = majority_committed_index(&self.outgoing, &acked);
        incoming.min(outgoing)
    }

    /// The vote outcome: won only if both halves won, lost if either lost.
    pub fn vote_result(&self, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let incoming = majority_vote_result(&self.incoming, &vote);
        let outgoing = majority_vote_result(&self.outgoing, &vote);
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn majority_index_is_the_median_for_three() {
        let acked: BTreeMap<NodeId, Index> = [(1, 10), (2, 7), (3, 3)].into();
        let index = majority_committed_index(&set(&[1, 2, 3]), |id| acked.get(&id).copied());
        assert_eq!(index, 7);
    }

    #[test]
    fn missing_voters_count_as_zero() {
        let acked: BTreeMap<NodeId, Index> = [(1, 10)].into();
        let index = majority_committed_index(&set(&[1, 2, 3]), |id| acked.get(&id).copied());
        assert_eq!(index, 0);
    }

    #[test]
    fn even_clusters_need_more_than_half() {
        let acked: BTreeMap<NodeId, Index> = [(1, 9), (2, 9), (3, 1), (4, 1)].into();
        let index = majority_committed_index(&set(&[1, 2, 3, 4]), |id| acked.get(&id).copied());
        assert_eq!(index, 1, "two of four is not a majority");
    }

    #[test]
    fn large_clusters_use_the_heap_path() {
        let voters: BTreeSet<NodeId> = (1..=9).collect();
        let index = majority_committed_index(&voters, |id| Some(id * 10));
        assert_eq!(index, 50, "five of nine voters have reached 50");
    }

    #[test]
    fn joint_commit_needs_both_halves() {
        let joint = JointVoters {
            incoming: set(&[1, 2, 3]),
            outgoing: set(&[1, 4, 5]),
        };
        let acked: BTreeMap<NodeId, Index> = [(1, 10), (2, 10), (3, 10), (4, 2), (5, 1)].into();
        assert_eq!(joint.committed_index(|id| acked.get(&id).copied()), 2);
    }

    #[test]
    fn vote_outcomes() {
        let voters = set(&[1, 2, 3]);
        let votes: BTreeMap<NodeId, bool> = [(1, true)].into();
        assert_eq!(
            majority_vote_result(&voters, |id| votes.get(&id).copied()),
            VoteResult::Pending
        );
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true)].into();
        assert_eq!(
            majority_vote_result(&voters, |id| votes.get(&id).copied()),
            VoteResult::Won
        );
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, false), (3, false)].into();
        assert_eq!(
            majority_vote_result(&voters, |id| votes.get(&id).copied()),
            VoteResult::Lost
        );
    }

    #[test]
    fn joint_vote_lost_if_either_half_lost() {
        let joint = JointVoters {
            incoming: set(&[1, 2, 3]),
            outgoing: set(&[4, 5, 6]),
        };
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, false), (5, false)].into();
        assert_eq!(
            joint.vote_result(|id| votes.get(&id).copied()),
            VoteResult::Lost
        );
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, true)].into();
        assert_eq!(
            joint.vote_result(|id| votes.get(&id).copied()),
            VoteResult::Pending
        );
    }
}
