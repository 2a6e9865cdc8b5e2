//! The seven leader-failure cases of the seed document (shared/seed/SCENARIOS.md),
//! each played message by message on a simulated 3-node cluster.
//!
//! Every test prints its transcript; run with `--nocapture` to read a case
//! like the seed's own figures:
//!
//! ```text
//! cargo test -p raftkv-sim --test leader_failure -- --nocapture leader_failure_case_4
//! ```
//!
//! Node 1 leads term 2 at the start of each case. The scripted cases run with
//! pre-vote on and check-quorum off, so that which node may win is decided by
//! the logs alone, as in the seed's argument; case 7 is also played with
//! check-quorum on.

use raftkv_raft::{Config, MessageBody, NodeId, Role};
use raftkv_sim::cluster::{Cluster, ClusterOptions, ProposalOutcome};
use raftkv_sim::node::Write;
use raftkv_sim::Violation;

type Outcome = Result<(), Violation>;

fn scenario_cluster(configure: fn(&mut Config)) -> Result<Cluster, Violation> {
    let mut options = ClusterOptions::new(&[1, 2, 3]);
    options.configure = configure;
    let mut cluster = Cluster::new(options);
    cluster.echo_transcript();
    cluster.note("node 1 campaigns and becomes leader");
    cluster.elect(1)?;
    Ok(cluster)
}

fn logs_only(config: &mut Config) {
    config.check_quorum = false;
}

fn is_append_from(msg: &raftkv_raft::Message, from: NodeId) -> bool {
    msg.from == from && matches!(msg.body, MessageBody::Append { .. })
}

/// Ticks the given nodes until one of them leads, or fails after a bound.
fn tick_until_leader_among(cluster: &mut Cluster, ids: &[NodeId]) -> Result<NodeId, Violation> {
    for _ in 0..200 {
        for &id in ids {
            cluster.tick(id)?;
        }
        cluster.stabilize()?;
        if let Some(leader) = ids
            .iter()
            .copied()
            .find(|&id| cluster.raft(id).is_some_and(|r| r.role == Role::Leader))
        {
            return Ok(leader);
        }
    }
    Err(Violation::Liveness(format!(
        "none of {ids:?} became leader"
    )))
}

/// Lets the cluster run with every node up until the leader has committed
/// and every node applied everything.
fn settle(cluster: &mut Cluster) -> Outcome {
    for _ in 0..200 {
        cluster.tick_all()?;
        cluster.stabilize()?;
        if cluster.is_settled() {
            return cluster.check_converged();
        }
    }
    Err(Violation::Liveness("cluster did not settle".into()))
}

fn assert_everywhere(cluster: &Cluster, key: &str, value: Option<u64>) {
    for id in [1, 2, 3] {
        assert_eq!(cluster.value(id, key), value, "value of {key} on node {id}");
    }
}

fn applications_of(cluster: &Cluster, id: NodeId, write: &Write) -> u64 {
    let kv = &cluster.nodes[&id].kv;
    u64::from(kv.applied_writes.contains(&write.id))
}

/// Case 1: the leader fails before the write reaches it. Nothing is lost;
/// the client sees an error and retries at the new leader.
#[test]
fn leader_failure_case_1() -> Outcome {
    let mut cluster = scenario_cluster(logs_only)?;
    cluster.note("case 1: the leader dies before the client's write reaches it");
    cluster.crash(1);
    let write = Write {
        id: 100,
        key: "x".into(),
        value: 1,
    };
    assert!(
        cluster.propose_write(1, write.clone()).is_err(),
        "the client gets an error"
    );
    let leader = tick_until_leader_among(&mut cluster, &[2, 3])?;
    cluster.note(format!("the client retries at the new leader {leader}"));
    let retry = cluster
        .propose_write(leader, write.clone())
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.restart(1)?;
    settle(&mut cluster)?;
    assert_eq!(cluster.outcome(&retry), ProposalOutcome::Committed);
    assert_everywhere(&cluster, "x", Some(1));
    Ok(())
}

/// Case 2: the write is on the leader only. It was never committed; a new
/// leader is elected without it, and when the old leader returns its entry
/// is overwritten by the new leader's log.
#[test]
fn leader_failure_case_2() -> Outcome {
    let mut cluster = scenario_cluster(logs_only)?;
    cluster.note("case 2: the write reaches the leader only");
    let lost = cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    let dropped = cluster.drop_matching(|m| is_append_from(m, 1));
    assert_eq!(dropped, 2, "both appends of the write are lost");
    cluster.crash(1);
    let leader = tick_until_leader_among(&mut cluster, &[2, 3])?;
    let newer = cluster
        .propose(leader, "y", 2)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    assert_eq!(
        cluster.raft(leader).and_then(|r| r.log.term(lost.index)),
        Some(newer.term),
        "the new leader's own entry (its no-op) takes the lost write's index"
    );
    cluster.note("the old leader returns as a follower of the new term");
    cluster.restart(1)?;
    settle(&mut cluster)?;
    let old_leader = cluster.raft(1).expect("node 1 is up");
    assert_eq!(old_leader.role, Role::Follower);
    assert!(old_leader.term > lost.term, "node 1 moved to the new term");
    assert_eq!(
        old_leader.log.term(lost.index),
        Some(newer.term),
        "the uncommitted entry was overwritten by the new leader's"
    );
    assert_eq!(cluster.outcome(&lost), ProposalOutcome::Failed);
    assert_everywhere(&cluster, "x", None);
    assert_everywhere(&cluster, "y", Some(2));
    Ok(())
}

/// Case 3: the write is on every follower but the leader has not answered.
/// The new leader commits it in its own term; the client's retry with the
/// same request id is recognised and not applied twice.
#[test]
fn leader_failure_case_3() -> Outcome {
    let mut cluster = scenario_cluster(logs_only)?;
    cluster
        .note("case 3: the write reaches every follower, the leader dies before counting the acks");
    let first = cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    assert_eq!(cluster.deliver_matching(|m| is_append_from(m, 1))?, 2);
    cluster.crash(1);
    let leader = tick_until_leader_among(&mut cluster, &[2, 3])?;
    cluster.stabilize()?;
    assert_eq!(
        cluster.outcome(&first),
        ProposalOutcome::Committed,
        "the new leader committed it"
    );
    cluster.note("the client, never answered, retries the write with the same id");
    let retry = cluster
        .propose_write(leader, first.write.clone())
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.restart(1)?;
    settle(&mut cluster)?;
    assert_eq!(
        cluster.outcome(&retry),
        ProposalOutcome::Committed,
        "the retry is in the log too"
    );
    for id in [1, 2, 3] {
        assert_eq!(applications_of(&cluster, id, &first.write), 1);
        assert_eq!(
            cluster.nodes[&id].kv.duplicates_skipped, 1,
            "node {id} skipped the retry"
        );
        assert_eq!(
            cluster.nodes[&id].kv.values["x"],
            (1, first.index),
            "the first outcome stands"
        );
    }
    Ok(())
}

/// Case 4: the write is on some followers only. A node without it cannot
/// win; a node with it wins and brings the others up to date.
#[test]
fn leader_failure_case_4() -> Outcome {
    let mut cluster = scenario_cluster(logs_only)?;
    cluster.note("case 4: the write reaches node 2 but not node 3");
    let write = cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    assert_eq!(
        cluster.deliver_matching(|m| is_append_from(m, 1) && m.to == 2)?,
        1
    );
    assert_eq!(
        cluster.drop_matching(|m| is_append_from(m, 1) && m.to == 3),
        1
    );
    cluster.crash(1);
    cluster.note("node 3, which lacks the write, campaigns: node 2 refuses");
    cluster.campaign(3)?;
    cluster.stabilize()?;
    assert_ne!(
        cluster.raft(3).map(|r| r.role),
        Some(Role::Leader),
        "a node missing the newest entry cannot win"
    );
    cluster.note("node 2, which has the write, campaigns and wins");
    cluster.elect(2)?;
    assert_eq!(cluster.outcome(&write), ProposalOutcome::Committed);
    assert_eq!(
        cluster.raft(3).and_then(|r| r.log.term(write.index)),
        Some(write.term),
        "node 3 was brought up to date"
    );
    cluster.restart(1)?;
    settle(&mut cluster)?;
    assert_everywhere(&cluster, "x", Some(1));
    Ok(())
}

/// Case 5: the leader has committed the write (a majority stored it) but
/// the followers have not learned it is committed. The new leader has it and
/// commits it.
#[test]
fn leader_failure_case_5() -> Outcome {
    let mut cluster = scenario_cluster(logs_only)?;
    cluster.note("case 5: the leader commits, then dies before telling the followers");
    let write = cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    assert_eq!(cluster.deliver_matching(|m| is_append_from(m, 1))?, 2);
    assert_eq!(
        cluster.deliver_matching(
            |m| m.to == 1 && matches!(m.body, MessageBody::AppendResponse { .. })
        )?,
        2
    );
    assert_eq!(
        cluster.raft(1).map(|r| r.log.committed),
        Some(write.index),
        "the leader committed"
    );
    for id in [2, 3] {
        assert!(
            cluster
                .raft(id)
                .is_some_and(|r| r.log.committed < write.index),
            "node {id} does not know yet"
        );
    }
    let told = cluster.drop_matching(|m| is_append_from(m, 1));
    cluster.note(format!("{told} commit notices are lost with the leader"));
    cluster.crash(1);
    let leader = tick_until_leader_among(&mut cluster, &[2, 3])?;
    cluster.stabilize()?;
    assert!(cluster
        .raft(leader)
        .is_some_and(|r| r.log.committed >= write.index));
    cluster.restart(1)?;
    settle(&mut cluster)?;
    assert_eq!(cluster.outcome(&write), ProposalOutcome::Committed);
    assert_everywhere(&cluster, "x", Some(1));
    Ok(())
}

/// Case 6: the write is committed and applied everywhere, but the leader
/// dies before answering the client. The retry is absorbed by
/// de-duplication: the first outcome stands and nothing is applied twice.
#[test]
fn leader_failure_case_6() -> Outcome {
    let mut cluster = scenario_cluster(logs_only)?;
    cluster.note("case 6: the write is committed everywhere; the leader dies before answering");
    let write = cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    cluster.tick(1)?; // a heartbeat carries the commit index to everyone
    cluster.stabilize()?;
    for id in [1, 2, 3] {
        assert_eq!(
            cluster.value(id, "x"),
            Some(1),
            "node {id} applied the write"
        );
    }
    cluster.crash(1);
    let leader = tick_until_leader_among(&mut cluster, &[2, 3])?;
    cluster.note("the client retries with the same request id");
    cluster
        .propose_write(leader, write.write.clone())
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.restart(1)?;
    settle(&mut cluster)?;
    for id in [1, 2, 3] {
        let kv = &cluster.nodes[&id].kv;
        assert_eq!(
            kv.values["x"],
            (1, write.index),
            "node {id} kept the first outcome"
        );
        assert_eq!(kv.duplicates_skipped, 1, "node {id} recognised the retry");
    }
    Ok(())
}

fn partitioned_old_leader(
    cluster: &mut Cluster,
) -> Result<(NodeId, raftkv_sim::Proposal), Violation> {
    cluster.note("case 7: a partition isolates the leader; the client keeps writing to it");
    cluster.isolate(1);
    let stranded = cluster
        .propose(1, "x", 1)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    let leader = tick_until_leader_among(cluster, &[2, 3])?;
    let new_term = cluster.raft(leader).map(|r| r.term).unwrap_or(0);
    assert!(
        new_term > stranded.term,
        "the majority elects a leader of a higher term"
    );
    let fresh = cluster
        .propose(leader, "y", 2)
        .map_err(|e| Violation::Liveness(e.to_string()))?;
    cluster.stabilize()?;
    assert_eq!(
        cluster.outcome(&fresh),
        ProposalOutcome::Committed,
        "the majority side commits"
    );
    Ok((leader, stranded))
}

/// Case 7: a partition isolates the old leader, so two leaders exist in
/// different terms. The old one cannot commit; when the partition heals it
/// sees the higher term, steps down and takes the new leader's log.
#[test]
fn leader_failure_case_7() -> Outcome {
    let mut cluster = scenario_cluster(logs_only)?;
    let (new_leader, stranded) = partitioned_old_leader(&mut cluster)?;
    for _ in 0..50 {
        cluster.tick(1)?;
        cluster.stabilize()?;
    }
    let old = cluster.raft(1).expect("node 1 is up");
    assert_eq!(
        old.role,
        Role::Leader,
        "without check-quorum the old leader still believes it leads"
    );
    assert!(
        old.log.committed < stranded.index,
        "the minority leader never commits"
    );
    assert_eq!(
        old.log.term(stranded.index),
        Some(stranded.term),
        "its client still waits"
    );
    assert_ne!(cluster.outcome(&stranded), ProposalOutcome::Committed);
    cluster.note("two leaders, in different terms; now the partition heals");
    cluster.heal();
    settle(&mut cluster)?;
    assert_eq!(cluster.leader(), Some(new_leader));
    assert_eq!(
        cluster.raft(1).map(|r| r.role),
        Some(Role::Follower),
        "the old leader stepped down"
    );
    assert_eq!(cluster.outcome(&stranded), ProposalOutcome::Failed);
    assert_everywhere(&cluster, "x", None);
    assert_everywhere(&cluster, "y", Some(2));
    Ok(())
}

/// Case 7 again, with check-quorum on (the default): the isolated leader
/// notices within an election timeout that it lost the majority and steps
/// down by itself, before the partition heals.
#[test]
fn leader_failure_case_7_check_quorum_steps_down_alone() -> Outcome {
    let mut cluster = scenario_cluster(|_| {})?;
    let (_, stranded) = partitioned_old_leader(&mut cluster)?;
    for _ in 0..20 {
        cluster.tick(1)?;
        cluster.stabilize()?;
    }
    assert_ne!(
        cluster.raft(1).map(|r| r.role),
        Some(Role::Leader),
        "the isolated leader stepped down"
    );
    cluster.heal();
    settle(&mut cluster)?;
    assert_eq!(cluster.outcome(&stranded), ProposalOutcome::Failed);
    assert_everywhere(&cluster, "y", Some(2));
    Ok(())
}
