//! Behaviour of the Raft core on a simulated cluster, one test per rule.
//! Each test drives the cluster into the situation the rule is about and
//! would fail if the rule were missing.

use bytes::Bytes;
use raftkv_raft::{
    ConfChange, ConfChangeStep, ConfChangeTransition, Config, DropReason, Error, Message,
    MessageBody, NodeId, ReadOnlyOption, Role,
};
use raftkv_sim::cluster::{Cluster, ClusterOptions, ProposalOutcome};
use raftkv_sim::Violation;

type Outcome = Result<(), Violation>;

fn cluster_with(voters: &[NodeId], spares: &[NodeId], configure: fn(&mut Config)) -> Cluster {
    let mut options = ClusterOptions::new(voters);
    options.spares = spares.to_vec();
    options.configure = configure;
    Cluster::new(options)
}

fn elected(configure: fn(&mut Config)) -> Result<Cluster, Violation> {
    let mut cluster = cluster_with(&[1, 2, 3], &[], configure);
    cluster.elect(1)?;
    Ok(cluster)
}

fn settle(cluster: &mut Cluster) -> Outcome {
    for _ in 0..300 {
        cluster.tick_all()?;
        cluster.stabilize()?;
        if cluster.is_settled() {
            return cluster.check_converged();
        }
    }
    Err(Violation::Liveness("cluster did not settle".into()))
}

/// Delivers every message but appends until `id` leads, so the new leader's
/// no-op stays in flight.
fn win_without_appends(cluster: &mut Cluster, id: NodeId) -> Outcome {
    cluster.campaign(id)?;
    for _ in 0..10 {
        if role(cluster, id) == Some(Role::Leader) {
            return Ok(());
        }
        cluster.deliver_matching(|m| !matches!(m.body, MessageBody::Append { .. }))?;
    }
    Err(Violation::Liveness(format!("node {id} did not win")))
}

fn in_flight(cluster: &Cluster, pick: impl Fn(&Message) -> bool) -> Vec<Message> {
    cluster
        .network
        .pending()
        .filter(|m| pick(m))
        .cloned()
        .collect()
}

fn appends_to(cluster: &Cluster, to: NodeId) -> Vec<Message> {
    in_flight(cluster, |m| {
        m.to == to && matches!(m.body, MessageBody::Append { .. })
    })
}

fn entry_count(msg: &Message) -> usize {
    match &msg.body {
        MessageBody::Append { entries, .. } => entries.len(),
        _ => 0,
    }
}

fn raw(cluster: &mut Cluster, id: NodeId) -> &mut raftkv_raft::RawNode {
    cluster
        .nodes
        .get_mut(&id)
        .and_then(|n| n.raft.as_mut())
        .expect("node is up")
}

fn role(cluster: &Cluster, id: NodeId) -> Option<Role> {
    cluster.raft(id).map(|r| r.role)
}

fn term(cluster: &Cluster, id: NodeId) -> u64 {
    cluster.raft(id).map_or(0, |r| r.term)
}

fn propose_raw(cluster: &mut Cluster, id: NodeId, n: usize) -> Result<(), Error> {
    for i in 0..n {
        raw(cluster, id).propose(Bytes::from(format!("{i}:k:{i}")))?;
    }
    Ok(())
}

// ---- elections ---------------------------------------------------------------

#[test]
fn election_timeouts_are_randomized_between_one_and_two_election_ticks() -> Outcome {
    let mut timeouts = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let mut options = ClusterOptions::new(&[1, 2, 3]);
        options.seed = seed;
        let mut cluster = Cluster::new(options);
        let mut ticks = 0;
        while role(&cluster, 1) == Some(Role::Follower) {
            cluster.tick(1)?;
            ticks += 1;
            assert!(ticks < 100, "node 1 never campaigned");
        }
        assert!(
            (10..20).contains(&ticks),
            "timeout {ticks} outside [election_tick, 2 * election_tick)"
        );
        timeouts.insert(ticks);
    }
    assert!(
        timeouts.len() > 3,
        "timeouts must differ between seeds: {timeouts:?}"
    );
    Ok(())
}

#[test]
fn pre_vote_keeps_an_isolated_node_from_raising_its_term() -> Outcome {
    let mut cluster = elected(|c| c.check_quorum = false)?;
    let leader_term = term(&cluster, 1);
    cluster.isolate(3);
    for _ in 0..100 {
        cluster.tick(3)?;
        cluster.stabilize()?;
    }
    assert_eq!(
        term(&cluster, 3),
        leader_term,
        "pre-votes that fail leave the term alone"
    );
    cluster.heal();
    settle(&mut cluster)?;
    assert_eq!(
        cluster.leader(),
        Some(1),
        "the returning node did not depose the leader"
    );
    assert_eq!(term(&cluster, 1), leader_term);
    Ok(())
}

#[test]
fn without_pre_vote_an_isolated_node_disrupts_the_leader_when_it_returns() -> Outcome {
    // The contrast to the test above: this is what pre-vote prevents.
    let mut cluster = elected(|c| {
        c.check_quorum = false;
        c.pre_vote = false;
    })?;
    let leader_term = term(&cluster, 1);
    cluster.isolate(3);
    for _ in 0..100 {
        cluster.tick(3)?;
        cluster.stabilize()?;
    }
    assert!(term(&cluster, 3) > leader_term);
    cluster.heal();
    settle(&mut cluster)?;
    assert!(
        term(&cluster, 1) > leader_term,
        "the cluster had to move to a new term"
    );
    Ok(())
}

#[test]
fn check_quorum_makes_followers_ignore_votes_while_the_leader_is_alive() -> Outcome {
    let mut cluster = elected(|c| c.pre_vote = false)?;
    let leader_term = term(&cluster, 1);
    // Node 3 cannot hear the leader but can reach node 2.
    cluster.network.cut_one_way(1, 3);
    for _ in 0..40 {
        cluster.tick_all()?;
        cluster.stabilize()?;
    }
    assert!(term(&cluster, 3) > leader_term, "node 3 campaigned");
    assert_eq!(
        cluster.leader(),
        Some(1),
        "node 2 refused to vote while it hears from the leader"
    );
    Ok(())
}

#[test]
fn check_quorum_makes_an_isolated_leader_step_down() -> Outcome {
    let mut cluster = elected(|_| {})?;
    cluster.isolate(1);
    // The first check after the cut still sees the answers from before it;
    // the second, one election timeout later, finds no quorum.
    for _ in 0..20 {
        cluster.tick(1)?;
    }
    assert_eq!(role(&cluster, 1), Some(Role::Follower));
    Ok(())
}

#[test]
fn stale_vote_requests_are_answered_with_the_current_term() -> Outcome {
    let mut cluster = elected(|c| c.pre_vote = false)?;
    let current = term(&cluster, 1);
    cluster.deliver(Message {
        from: 3,
        to: 2,
        term: current - 1,
        body: MessageBody::RequestVote {
            pre: false,
            last_log_index: 100,
            last_log_term: current - 1,
            transfer: false,
        },
    })?;
    let answers = in_flight(&cluster, |m| {
        m.to == 3
            && matches!(
                m.body,
                MessageBody::RequestVoteResponse { reject: true, .. }
            )
    });
    assert_eq!(answers.len(), 1);
    assert_eq!(
        answers[0].term, current,
        "the stale candidate learns the term to beat"
    );
    Ok(())
}

// ---- replication --------------------------------------------------------------

#[test]
fn proposals_between_readies_go_out_in_one_append() -> Outcome {
    let mut cluster = elected(|_| {})?;
    propose_raw(&mut cluster, 1, 10).map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.process(1)?;
    let appends = appends_to(&cluster, 2);
    assert_eq!(appends.len(), 1);
    assert_eq!(entry_count(&appends[0]), 10);
    Ok(())
}

#[test]
fn a_replicating_follower_gets_appends_without_waiting_for_answers() -> Outcome {
    let mut cluster = elected(|_| {})?;
    for _ in 0..3 {
        propose_raw(&mut cluster, 1, 1).map_err(|e| Violation::Liveness(e.to_string()))?;
        cluster.process(1)?;
    }
    assert_eq!(appends_to(&cluster, 2).len(), 3, "three appends pipelined");
    Ok(())
}

#[test]
fn the_inflight_window_bounds_appends_by_count() -> Outcome {
    let mut cluster = elected(|c| c.max_inflight_msgs = 2)?;
    for _ in 0..5 {
        propose_raw(&mut cluster, 1, 1).map_err(|e| Violation::Liveness(e.to_string()))?;
        cluster.process(1)?;
    }
    assert_eq!(appends_to(&cluster, 2).len(), 2);
    cluster.stabilize()?;
    settle(&mut cluster)
}

#[test]
fn the_inflight_window_bounds_appends_by_bytes() -> Outcome {
    let mut cluster = elected(|c| c.max_inflight_bytes = 100)?;
    for _ in 0..5 {
        raw(&mut cluster, 1)
            .propose(Bytes::from(vec![b'x'; 80]))
            .map_err(|e| Violation::Liveness(e.to_string()))?;
        cluster.process(1)?;
    }
    assert_eq!(
        appends_to(&cluster, 2).len(),
        1,
        "one 104-byte append fills a 100-byte window"
    );
    Ok(())
}

#[test]
fn a_lost_window_is_resent_after_a_heartbeat() -> Outcome {
    let mut cluster = elected(|c| c.max_inflight_msgs = 2)?;
    for _ in 0..4 {
        propose_raw(&mut cluster, 1, 1).map_err(|e| Violation::Liveness(e.to_string()))?;
        cluster.process(1)?;
    }
    cluster.drop_matching(|m| m.to == 2 && matches!(m.body, MessageBody::Append { .. }));
    settle(&mut cluster)?;
    let last = cluster.raft(1).map_or(0, |r| r.log.last_index());
    assert_eq!(cluster.raft(2).map(|r| r.log.last_index()), Some(last));
    Ok(())
}

#[test]
fn max_message_size_splits_appends() -> Outcome {
    let mut cluster = elected(|c| c.max_message_size_bytes = 100)?;
    for _ in 0..4 {
        raw(&mut cluster, 1)
            .propose(Bytes::from(vec![b'x'; 40]))
            .map_err(|e| Violation::Liveness(e.to_string()))?;
    }
    cluster.process(1)?;
    let appends = appends_to(&cluster, 2);
    assert!(
        appends.iter().all(|m| m.body.size_bytes() <= 128),
        "no append far beyond the limit"
    );
    assert!(appends.iter().all(|m| entry_count(m) <= 2));
    Ok(())
}

#[test]
fn a_rejected_append_backtracks_a_whole_term_at_once() -> Outcome {
    let mut cluster = elected(|c| c.check_quorum = false)?;
    // The old leader piles up 30 entries nobody else gets.
    cluster.isolate(1);
    propose_raw(&mut cluster, 1, 30).map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.process(1)?;
    cluster.crash(1);
    cluster.heal();
    cluster.elect(2)?;
    propose_raw(&mut cluster, 2, 10).map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.process(2)?;
    cluster.stabilize()?;
    // A leader of a later term probes node 1 from the end of its log: ten
    // entries of term 3 and one of term 4 lie between it and the match.
    cluster.elect(3)?;
    cluster.restart(1)?;
    let mut rejections = 0;
    for _ in 0..50 {
        cluster.tick(3)?;
        while !cluster.network.is_empty() {
            for msg in cluster.network.take_matching(|_| true) {
                if msg.from == 1
                    && matches!(msg.body, MessageBody::AppendResponse { reject: true, .. })
                {
                    rejections += 1;
                }
                cluster.deliver(msg)?;
            }
        }
    }
    assert!(
        rejections >= 1,
        "the old leader's log had to be backtracked"
    );
    assert!(
        rejections <= 2,
        "one probe per term, not one per entry: {rejections} rejections"
    );
    settle(&mut cluster)
}

#[test]
fn a_leader_counts_replicas_only_for_entries_of_its_own_term() -> Outcome {
    let mut cluster = elected(|c| c.check_quorum = false)?;
    // Entry 5 of term 2 reaches node 2 only; the leader dies before counting it.
    let old = cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.deliver_matching(|m| {
        m.from == 1 && m.to == 2 && matches!(m.body, MessageBody::Append { .. })
    })?;
    cluster.drop_matching(|_| true);
    cluster.crash(1);
    cluster.restart(1)?;
    // Node 1 wins term 3; its no-op (entry 6) never reaches anyone.
    win_without_appends(&mut cluster, 1)?;
    let new_term = term(&cluster, 1);
    cluster.drop_matching(|m| matches!(m.body, MessageBody::Append { .. }));
    // Node 2 reports it holds entry 5: a majority (1 and 2) has it, but it is
    // of term 2, so counting replicas must not commit it (Raft §5.4.2).
    cluster.deliver(Message {
        from: 2,
        to: 1,
        term: new_term,
        body: MessageBody::AppendResponse {
            index: old.index,
            reject: false,
            reject_hint: 0,
            hint_term: 0,
        },
    })?;
    assert!(cluster.raft(1).is_some_and(|r| r.log.committed < old.index));
    cluster.drop_matching(|_| true);
    // Once the no-op of term 3 is on a majority, both commit together.
    cluster.deliver(Message {
        from: 2,
        to: 1,
        term: new_term,
        body: MessageBody::AppendResponse {
            index: old.index + 1,
            reject: false,
            reject_hint: 0,
            hint_term: 0,
        },
    })?;
    assert_eq!(
        cluster.raft(1).map(|r| r.log.committed),
        Some(old.index + 1)
    );
    Ok(())
}

// ---- reads --------------------------------------------------------------------

#[test]
fn read_index_waits_for_the_new_leader_to_commit_in_its_term() -> Outcome {
    let mut cluster = cluster_with(&[1, 2, 3], &[], |_| {});
    // Let the votes through, but hold the new leader's no-op.
    win_without_appends(&mut cluster, 1)?;
    let read = cluster
        .read(1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.deliver_matching(|m| {
        matches!(
            m.body,
            MessageBody::Heartbeat { .. } | MessageBody::HeartbeatResponse { .. }
        )
    })?;
    assert_eq!(
        cluster.read_served(read),
        None,
        "no read before the term's first commit"
    );
    cluster.stabilize()?;
    let (node, index) = cluster
        .read_served(read)
        .expect("served once the no-op committed");
    assert_eq!(node, 1);
    assert_eq!(Some(index), cluster.raft(1).map(|r| r.log.committed));
    Ok(())
}

#[test]
fn read_index_needs_a_heartbeat_quorum() -> Outcome {
    let mut cluster = elected(|c| c.check_quorum = false)?;
    cluster.isolate(1);
    let read = cluster
        .read(1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    for _ in 0..30 {
        cluster.tick(1)?;
        cluster.stabilize()?;
    }
    assert_eq!(
        cluster.read_served(read),
        None,
        "a leader cut off from the majority serves no read"
    );
    Ok(())
}

#[test]
fn a_follower_read_is_confirmed_by_the_leader() -> Outcome {
    let mut cluster = elected(|_| {})?;
    cluster
        .propose(1, "x", 7)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    let read = cluster
        .read(3)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    let (node, index) = cluster.read_served(read).expect("served");
    assert_eq!(node, 3);
    assert!(index >= cluster.checker.committed_index - 1);
    Ok(())
}

#[test]
fn lease_based_reads_are_served_without_a_round_trip() -> Outcome {
    let mut cluster = elected(|c| c.read_only = ReadOnlyOption::LeaseBased)?;
    cluster.isolate(1);
    let read = cluster
        .read(1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    assert!(
        cluster.read_served(read).is_some(),
        "answered at once from the lease"
    );
    Ok(())
}

// ---- snapshots ------------------------------------------------------------------

#[test]
fn a_follower_behind_the_compacted_log_catches_up_by_snapshot() -> Outcome {
    let mut cluster = elected(|_| {})?;
    cluster.compact_every = 5;
    cluster.crash(3);
    for value in 0..30 {
        cluster
            .propose(1, "x", value)
            .map_err(|e| Violation::Liveness(e.to_string()))?;
        cluster.stabilize()?;
    }
    assert!(
        cluster.raft(1).is_some_and(|r| r.log.first_index() > 10),
        "the leader compacted"
    );
    cluster.restart(3)?;
    settle(&mut cluster)?;
    assert_eq!(cluster.stats.snapshots_installed, 1);
    assert_eq!(cluster.value(3, "x"), Some(29));
    Ok(())
}

// ---- membership ---------------------------------------------------------------

fn conf_change(cluster: &mut Cluster, cc: ConfChange) -> Outcome {
    let leader = cluster
        .leader()
        .ok_or_else(|| Violation::Liveness("no leader".into()))?;
    cluster
        .propose_conf_change(leader, &cc)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    settle(cluster)
}

fn voters(cluster: &Cluster, id: NodeId) -> Vec<NodeId> {
    cluster
        .raft(id)
        .map(|r| {
            r.tracker
                .membership
                .voters
                .incoming
                .iter()
                .copied()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_learner_receives_the_log_but_does_not_count_toward_quorum() -> Outcome {
    let mut cluster = cluster_with(&[1, 2], &[3], |c| c.check_quorum = false);
    cluster.elect(1)?;
    conf_change(
        &mut cluster,
        ConfChange::single(ConfChangeStep::AddLearner(3)),
    )?;
    let write = cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    assert_eq!(
        cluster.value(3, "x"),
        Some(1),
        "the learner applies the log"
    );
    // With voter 2 gone, leader plus learner is not a quorum of {1, 2}.
    cluster.crash(2);
    let stuck = cluster
        .propose(1, "y", 2)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    assert_eq!(cluster.outcome(&write), ProposalOutcome::Committed);
    assert_eq!(
        cluster.outcome(&stuck),
        ProposalOutcome::Pending,
        "a learner's ack does not commit"
    );
    // A learner never campaigns.
    for _ in 0..50 {
        cluster.tick(3)?;
    }
    assert_eq!(role(&cluster, 3), Some(Role::Follower));
    Ok(())
}

#[test]
fn a_learner_is_promoted_to_voter() -> Outcome {
    let mut cluster = cluster_with(&[1, 2, 3], &[4], |_| {});
    cluster.elect(1)?;
    conf_change(
        &mut cluster,
        ConfChange::single(ConfChangeStep::AddLearner(4)),
    )?;
    conf_change(
        &mut cluster,
        ConfChange::single(ConfChangeStep::AddVoter(4)),
    )?;
    assert_eq!(voters(&cluster, 4), vec![1, 2, 3, 4]);
    Ok(())
}

#[test]
fn a_joint_change_replaces_two_voters_at_once() -> Outcome {
    let mut cluster = cluster_with(&[1, 2, 3], &[4, 5], |_| {});
    cluster.elect(1)?;
    let cc = ConfChange {
        transition: ConfChangeTransition::JointImplicit,
        steps: vec![
            ConfChangeStep::AddVoter(4),
            ConfChangeStep::AddVoter(5),
            ConfChangeStep::RemoveNode(2),
            ConfChangeStep::RemoveNode(3),
        ],
        context: Bytes::new(),
    };
    conf_change(&mut cluster, cc)?;
    // The leader left the joint configuration by itself.
    assert_eq!(voters(&cluster, 1), vec![1, 4, 5]);
    assert!(cluster
        .raft(1)
        .is_some_and(|r| !r.tracker.membership.is_joint()));
    // The new majority works without the removed nodes.
    cluster.crash(2);
    cluster.crash(3);
    cluster.crash(5);
    let write = cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    assert_eq!(
        cluster.outcome(&write),
        ProposalOutcome::Committed,
        "1 and 4 are a majority of {{1, 4, 5}}"
    );
    Ok(())
}

#[test]
fn a_second_membership_change_waits_for_the_first() -> Outcome {
    let mut cluster = cluster_with(&[1, 2, 3], &[4, 5], |_| {});
    cluster.elect(1)?;
    raw(&mut cluster, 1)
        .propose_conf_change(&ConfChange::single(ConfChangeStep::AddLearner(4)))
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    let second = raw(&mut cluster, 1)
        .propose_conf_change(&ConfChange::single(ConfChangeStep::AddLearner(5)));
    assert!(matches!(
        second,
        Err(Error::ConfChange(raftkv_raft::ConfChangeError::Pending))
    ));
    Ok(())
}

#[test]
fn a_removed_leader_hands_over_leadership() -> Outcome {
    let mut cluster = elected(|_| {})?;
    conf_change(
        &mut cluster,
        ConfChange::single(ConfChangeStep::RemoveNode(1)),
    )?;
    let leader = cluster.leader().expect("a new leader");
    assert_ne!(leader, 1);
    let write = cluster
        .propose(leader, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    assert_eq!(cluster.outcome(&write), ProposalOutcome::Committed);
    Ok(())
}

// ---- leadership transfer --------------------------------------------------------

#[test]
fn leadership_transfer_makes_the_target_leader() -> Outcome {
    let mut cluster = elected(|_| {})?;
    cluster
        .transfer_leader(1, 3)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    let timeout_now = in_flight(&cluster, |m| matches!(m.body, MessageBody::TimeoutNow));
    assert_eq!(
        timeout_now.len(),
        1,
        "the caught-up target is told to campaign"
    );
    cluster.stabilize()?;
    assert_eq!(cluster.leader(), Some(3));
    Ok(())
}

#[test]
fn leadership_transfer_catches_the_target_up_first_and_holds_proposals() -> Outcome {
    let mut cluster = elected(|_| {})?;
    cluster.crash(3);
    cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    cluster.restart(3)?;
    cluster
        .transfer_leader(1, 3)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    assert!(matches!(
        raw(&mut cluster, 1).propose(Bytes::from_static(b"1:y:2")),
        Err(Error::ProposalDropped(DropReason::TransferInProgress))
    ));
    settle(&mut cluster)?;
    assert_eq!(cluster.leader(), Some(3));
    assert_eq!(cluster.value(3, "x"), Some(1));
    Ok(())
}

#[test]
fn a_transfer_to_a_dead_node_is_abandoned_after_an_election_timeout() -> Outcome {
    let mut cluster = elected(|_| {})?;
    cluster.crash(3);
    cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    cluster
        .transfer_leader(1, 3)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    for _ in 0..11 {
        cluster.tick(1)?;
        cluster.stabilize()?;
    }
    assert_eq!(cluster.leader(), Some(1));
    assert!(cluster.propose(1, "y", 2).is_ok(), "proposals flow again");
    Ok(())
}

// ---- limits -------------------------------------------------------------------

#[test]
fn the_uncommitted_size_limit_drops_proposals() -> Outcome {
    let mut cluster = elected(|c| c.max_uncommitted_entries_bytes = 1000)?;
    cluster.isolate(1);
    let mut accepted = 0;
    let refused = loop {
        match raw(&mut cluster, 1).propose(Bytes::from(vec![b'x'; 100])) {
            Ok(()) => accepted += 1,
            Err(err) => break err,
        }
        assert!(accepted < 100, "the limit never applied");
    };
    assert_eq!(
        refused,
        Error::ProposalDropped(DropReason::UncommittedSizeLimit)
    );
    assert!(
        (8..=10).contains(&accepted),
        "about 1000 bytes accepted, got {accepted} entries"
    );
    cluster.heal();
    settle(&mut cluster)?;
    assert!(
        raw(&mut cluster, 1)
            .propose(Bytes::from(vec![b'x'; 100]))
            .is_ok(),
        "room again once committed"
    );
    Ok(())
}

#[test]
fn committed_entries_are_handed_out_in_bounded_readies() -> Outcome {
    let mut cluster = elected(|c| c.max_committed_entries_per_ready = 3)?;
    propose_raw(&mut cluster, 1, 10).map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.process(1)?;
    cluster.stabilize()?;
    settle(&mut cluster)?;
    assert_eq!(cluster.stats.largest_apply_batch, 3);
    Ok(())
}

#[test]
fn a_stale_leader_learns_the_current_term_from_any_follower() -> Outcome {
    // Neither pre-vote nor check-quorum: the follower's answer to a stale
    // heartbeat is the only way the leader learns it is behind.
    let mut cluster = cluster_with(&[1, 2], &[3], |c| {
        c.check_quorum = false;
        c.pre_vote = false;
    });
    cluster.elect(1)?;
    conf_change(
        &mut cluster,
        ConfChange::single(ConfChangeStep::AddLearner(3)),
    )?;
    // Votes from a removed member raise the learner's term; the learner
    // never campaigns itself.
    cluster.deliver(Message {
        from: 9,
        to: 3,
        term: 50,
        body: MessageBody::RequestVote {
            pre: false,
            last_log_index: 0,
            last_log_term: 0,
            transfer: false,
        },
    })?;
    cluster.drop_matching(|m| m.to == 9);
    cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    settle(&mut cluster)?;
    let leader = cluster.leader().expect("a leader");
    assert!(
        term(&cluster, leader) > 50,
        "the cluster moved past the learner's term"
    );
    assert_eq!(cluster.value(3, "x"), Some(1), "the learner follows again");
    Ok(())
}
