//! Computes the configuration that results from a membership change, and
//! refuses changes that would break Raft's safety rules.
//!
//! Changes that alter more than one voter must go through a joint
//! configuration (Raft thesis §4.3): first every decision needs a majority of
//! both the old and the new voters; only when that joint configuration is
//! committed is it left for the new one. A single voter change may be applied
//! directly, since any majority of the old and of the new set overlap.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ConfChangeError;
use crate::tracker::{Membership, Progress, ProgressTracker};
use crate::types::{ConfChange, ConfChangeStep, ConfChangeTransition, ConfState, Index, NodeId};

/// A configuration being built from the current one.
pub struct Changer<'a> {
    tracker: &'a ProgressTracker,
    last_index: Index,
}

/// The result of a change: the new configuration and its progress map.
pub type ChangeResult = Result<(Membership, BTreeMap<NodeId, Progress>), ConfChangeError>;

impl<'a> Changer<'a> {
    /// Prepares changes against `tracker`; new members start probing after
    /// `last_index`.
    pub fn new(tracker: &'a ProgressTracker, last_index: Index) -> Self {
        Self {
            tracker,
            last_index,
        }
    }

    /// Applies a whole [`ConfChange`] the way its transition asks.
    pub fn apply(&self, cc: &ConfChange) -> ChangeResult {
        if cc.is_leave_joint() {
            return self.leave_joint();
        }
        match cc.transition {
            ConfChangeTransition::Auto if cc.steps.len() == 1 => self.simple(&cc.steps),
            ConfChangeTransition::Auto | ConfChangeTransition::JointImplicit => {
                self.enter_joint(true, &cc.steps)
            }
            ConfChangeTransition::JointExplicit => self.enter_joint(false, &cc.steps),
        }
    }

    /// Enters a joint configuration: the current voters become the outgoing
    /// half and `steps` shape the incoming half.
    pub fn enter_joint(&self, auto_leave: bool, steps: &[ConfChangeStep]) -> ChangeResult {
        let (mut cfg, mut prs) = self.snapshot();
        if cfg.is_joint() {
            return Err(ConfChangeError::AlreadyJoint);
        }
        if cfg.voters.incoming.is_empty() {
            return Err(ConfChangeError::ZeroVoters);
        }
        cfg.voters.outgoing = cfg.voters.incoming.clone();
        self.apply_steps(&mut cfg, &mut prs, steps)?;
        cfg.auto_leave = auto_leave;
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// Leaves a joint configuration for its incoming half.
    pub fn leave_joint(&self) -> ChangeResult {
        let (mut cfg, mut prs) = self.snapshot();
        if !cfg.is_joint() {
            return Err(ConfChangeError::NotJoint);
        }
        let learners_next = std::mem::take(&mut cfg.learners_next);
        for id in learners_next {
            cfg.learners.insert(id);
            if let Some(pr) = prs.get_mut(&id) {
                pr.is_learner = true;
            }
        }
        let outgoing = std::mem::take(&mut cfg.voters.outgoing);
        for id in outgoing {
            if !cfg.voters.incoming.contains(&id) && !cfg.learners.contains(&id) {
                prs.remove(&id);
            }
        }
        cfg.auto_leave = false;
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// Applies steps directly, which is allowed only if at most one voter
    /// changes.
    pub fn simple(&self, steps: &[ConfChangeStep]) -> ChangeResult {
        let (mut cfg, mut prs) = self.snapshot();
        if cfg.is_joint() {
            return Err(ConfChangeError::SimpleWhileJoint);
        }
        self.apply_steps(&mut cfg, &mut prs, steps)?;
        let before = &self.tracker.membership.voters.incoming;
        let changed = before.symmetric_difference(&cfg.voters.incoming).count();
        if changed > 1 {
            return Err(ConfChangeError::TooManyVoterChanges);
        }
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    fn snapshot(&self) -> (Membership, BTreeMap<NodeId, Progress>) {
        (
            self.tracker.membership.clone(),
            self.tracker.progress.clone(),
        )
    }

    fn apply_steps(
        &self,
        cfg: &mut Membership,
        prs: &mut BTreeMap<NodeId, Progress>,
        steps: &[ConfChangeStep],
    ) -> Result<(), ConfChangeError> {
        for step in steps {
            match *step {
                ConfChangeStep::AddVoter(id) => self.make_voter(cfg, prs, id)?,
                ConfChangeStep::AddLearner(id) => self.make_learner(cfg, prs, id)?,
                ConfChangeStep::RemoveNode(id) => remove(cfg, prs, id)?,
            }
        }
        if cfg.voters.incoming.is_empty() {
            return Err(ConfChangeError::ZeroVoters);
        }
        Ok(())
    }

    fn make_voter(
        &self,
        cfg: &mut Membership,
        prs: &mut BTreeMap<NodeId, Progress>,
        id: NodeId,
    ) -> Result<(), ConfChangeError> {
        check_id(id)?;
        match prs.get_mut(&id) {
            None => {
                prs.insert(id, self.tracker.new_progress(self.last_index, false));
            }
            Some(pr) => pr.is_learner = false,
        }
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        cfg.voters.incoming.insert(id);
        Ok(())
    }

    fn make_learner(
        &self,
        cfg: &mut Membership,
        prs: &mut BTreeMap<NodeId, Progress>,
        id: NodeId,
    ) -> Result<(), ConfChangeError> {
        check_id(id)?;
        match prs.get_mut(&id) {
            None => {
                prs.insert(id, self.tracker.new_progress(self.last_index, true));
            }
            Some(pr) => {
                if cfg.learners.contains(&id) {
                    return Ok(());
                }
                pr.is_learner = true;
            }
        }
        cfg.voters.incoming.remove(&id);
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        // A node still voting in the outgoing half cannot be a learner at
        // the same time; it becomes one when the joint change is left.
        if cfg.voters.outgoing.contains(&id) {
            cfg.learners_next.insert(id);
        } else {
            cfg.learners.insert(id);
        }
        Ok(())
    }
}

fn remove(
    cfg: &mut Membership,
    prs: &mut BTreeMap<NodeId, Progress>,
    id: NodeId,
) -> Result<(), ConfChangeError> {
    check_id(id)?;
    cfg.voters.incoming.remove(&id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
    // An outgoing voter keeps its progress until the joint change is left.
    if !cfg.voters.outgoing.contains(&id) {
        prs.remove(&id);
    }
    Ok(())
}

fn check_id(id: NodeId) -> Result<(), ConfChangeError> {
    if id == crate::types::NO_NODE {
        return Err(ConfChangeError::ZeroNodeId);
    }
    Ok(())
}

/// The structural rules every configuration must satisfy.
fn check_invariants(
    cfg: &Membership,
    prs: &BTreeMap<NodeId, Progress>,
) -> Result<(), ConfChangeError> {
    let broken = |what: &str| Err(ConfChangeError::Invariant(what.to_string()));
    for id in cfg.members() {
        if !prs.contains_key(&id) {
            return broken(&format!("member {id} has no progress"));
        }
    }
    if prs.len() != cfg.members().len() {
        return broken("progress kept for a node that is not a member");
    }
    if cfg.learners.iter().any(|id| cfg.voters.contains(*id)) {
        return broken("a node is both voter and learner");
    }
    if cfg
        .learners_next
        .iter()
        .any(|id| !cfg.voters.outgoing.contains(id))
    {
        return broken("a pending learner is not an outgoing voter");
    }
    if !cfg.is_joint() && (cfg.auto_leave || !cfg.learners_next.is_empty()) {
        return broken("joint-only state outside a joint configuration");
    }
    for (id, pr) in prs {
        let learner = cfg.learners.contains(id) || cfg.learners_next.contains(id);
        if pr.is_learner != learner {
            return broken(&format!("progress of {id} disagrees on being a learner"));
        }
    }
    Ok(())
}

/// Builds the configuration and progress map a [`ConfState`] describes, as
/// after a restart or a snapshot.
pub fn restore(tracker: &ProgressTracker, cs: &ConfState, last_index: Index) -> ChangeResult {
    let membership = Membership::from_conf_state(cs);
    let mut prs = BTreeMap::new();
    let learners: BTreeSet<NodeId> = cs.learners.union(&cs.learners_next).copied().collect();
    for id in membership.members() {
        prs.insert(id, tracker.new_progress(last_index, learners.contains(&id)));
    }
    check_invariants(&membership, &prs)?;
    Ok((membership, prs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ConfChangeStep::{AddLearner, AddVoter, RemoveNode};

    fn tracker_with(voters: &[NodeId]) -> ProgressTracker {
        let mut tracker = ProgressTracker::new(8, 0);
        let (cfg, prs) = restore(
            &tracker,
            &ConfState::from_voters(voters.iter().copied()),
            10,
        )
        .expect("valid voters");
        tracker.apply(cfg, prs);
        tracker
    }

    fn apply_and_install(tracker: &mut ProgressTracker, result: ChangeResult) {
        let (cfg, prs) = result.expect("valid change");
        tracker.apply(cfg, prs);
    }

    #[test]
    fn simple_change_adds_one_voter() {
        let tracker = tracker_with(&[1, 2, 3]);
        let (cfg, prs) = Changer::new(&tracker, 10)
            .simple(&[AddVoter(4)])
            .expect("one voter");
        assert_eq!(cfg.voters.incoming.len(), 4);
        assert_eq!(prs[&4].next, 11);
    }

    #[test]
    fn simple_change_refuses_two_voters() {
        let tracker = tracker_with(&[1, 2, 3]);
        let err = Changer::new(&tracker, 10).simple(&[AddVoter(4), AddVoter(5)]);
        assert_eq!(err.err(), Some(ConfChangeError::TooManyVoterChanges));
        // Swapping one voter for another is two changes as well.
        let err = Changer::new(&tracker, 10).simple(&[AddVoter(4), RemoveNode(1)]);
        assert_eq!(err.err(), Some(ConfChangeError::TooManyVoterChanges));
    }

    #[test]
    fn learners_can_be_added_and_promoted_simply() {
        let mut tracker = tracker_with(&[1, 2, 3]);
        let result = Changer::new(&tracker, 10).simple(&[AddLearner(4)]);
        apply_and_install(&mut tracker, result);
        assert!(tracker.progress[&4].is_learner);
        assert!(!tracker.is_voter(4));
        let result = Changer::new(&tracker, 10).simple(&[AddVoter(4)]);
        apply_and_install(&mut tracker, result);
        assert!(!tracker.progress[&4].is_learner);
        assert!(tracker.is_voter(4));
    }

    #[test]
    fn joint_change_replaces_voters_and_leaves() {
        let mut tracker = tracker_with(&[1, 2, 3]);
        let steps = [AddVoter(4), AddVoter(5), RemoveNode(1), RemoveNode(2)];
        let result = Changer::new(&tracker, 10).enter_joint(true, &steps);
        apply_and_install(&mut tracker, result);
        assert!(tracker.membership.is_joint());
        assert!(
            tracker.progress.contains_key(&1),
            "outgoing voters keep progress"
        );
        assert!(tracker.membership.auto_leave);
        let result = Changer::new(&tracker, 10).leave_joint();
        apply_and_install(&mut tracker, result);
        assert!(!tracker.membership.is_joint());
        let voters: Vec<NodeId> = tracker.membership.voters.incoming.iter().copied().collect();
        assert_eq!(voters, vec![3, 4, 5]);
        assert!(!tracker.progress.contains_key(&1));
    }

    #[test]
    fn demoting_a_voter_in_joint_uses_learners_next() {
        let mut tracker = tracker_with(&[1, 2, 3]);
        let result = Changer::new(&tracker, 10).enter_joint(false, &[AddLearner(3)]);
        apply_and_install(&mut tracker, result);
        assert!(tracker.membership.learners_next.contains(&3));
        assert!(tracker.membership.voters.outgoing.contains(&3));
        let result = Changer::new(&tracker, 10).leave_joint();
        apply_and_install(&mut tracker, result);
        assert!(tracker.membership.learners.contains(&3));
        assert!(tracker.progress[&3].is_learner);
    }

    #[test]
    fn refuses_nested_joint_and_empty_configs() {
        let mut tracker = tracker_with(&[1, 2, 3]);
        assert_eq!(
            Changer::new(&tracker, 10).leave_joint().err(),
            Some(ConfChangeError::NotJoint)
        );
        assert_eq!(
            Changer::new(&tracker, 10)
                .enter_joint(true, &[RemoveNode(1), RemoveNode(2), RemoveNode(3)])
                .err(),
            Some(ConfChangeError::ZeroVoters)
        );
        let result = Changer::new(&tracker, 10).enter_joint(true, &[AddVoter(4)]);
        apply_and_install(&mut tracker, result);
        assert_eq!(
            Changer::new(&tracker, 10)
                .enter_joint(true, &[AddVoter(5)])
                .err(),
            Some(ConfChangeError::AlreadyJoint)
        );
        assert_eq!(
            Changer::new(&tracker, 10).simple(&[AddVoter(5)]).err(),
            Some(ConfChangeError::SimpleWhileJoint)
        );
    }

    #[test]
    fn auto_transition_picks_simple_or_joint() {
        let tracker = tracker_with(&[1, 2, 3]);
        let changer = Changer::new(&tracker, 10);
        let (cfg, _) = changer
            .apply(&ConfChange::single(AddVoter(4)))
            .expect("simple");
        assert!(!cfg.is_joint());
        let two = ConfChange {
            steps: vec![AddVoter(4), AddVoter(5)],
            ..ConfChange::default()
        };
        let (cfg, _) = changer.apply(&two).expect("joint");
        assert!(cfg.is_joint() && cfg.auto_leave);
    }
}
