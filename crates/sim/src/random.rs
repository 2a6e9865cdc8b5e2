//! Random runs: one seed decides the cluster size, the network's faults and
//! every action (writes, reads, crashes, partitions, membership changes,
//! leadership transfers, compactions). Invariants are checked after every
//! step; after the faults stop the cluster must recover and settle.

use raftkv_raft::{ConfChange, ConfChangeStep, ConfChangeTransition, NodeId, Role};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::checker::Violation;
use crate::cluster::{Cluster, ClusterOptions, ProposalOutcome, Stats};
use crate::network::NetworkFaults;

/// Steps between ticks: a message delay of a few steps is a fraction of a
/// heartbeat, as on a LAN.
const TICK_EVERY_STEPS: u64 = 5;

/// How long a random run is.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// Steps with faults and client activity.
    pub fault_steps: u64,
    /// Most steps allowed for recovery once faults stop.
    pub settle_steps_max: u64,
    /// Print the transcript as the run goes.
    pub verbose: bool,
}

impl RunOptions {
    /// The default run for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            fault_steps: 2_500,
            settle_steps_max: 4_000,
            verbose: false,
        }
    }
}

/// What a passing run did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Steps simulated.
    pub steps: u64,
    /// Terms that had a leader.
    pub leader_terms: usize,
    /// Entries committed.
    pub committed: usize,
    /// Writes proposed at leaders.
    pub proposals: usize,
    /// Of those, how many failed (the client was told).
    pub proposals_failed: usize,
    /// Counters of the run.
    pub stats: Stats,
}

/// A run that broke a property.
#[derive(Debug)]
pub struct RunFailure {
    /// The seed, to replay it.
    pub seed: u64,
    /// What broke.
    pub violation: Violation,
    /// The last lines of the transcript.
    pub transcript: Vec<String>,
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} failed: {}", self.seed, self.violation)?;
        writeln!(f, "last events:")?;
        for line in self.transcript.iter().rev().take(60).rev() {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay with: cargo run --release -p raftkv-sim -- --seed {} --verbose",
            self.seed
        )
    }
}

/// The faults and activity of one run, drawn from its seed.
struct Plan {
    voters: Vec<NodeId>,
    spares: Vec<NodeId>,
    faults: NetworkFaults,
    compact_every: u64,
    p_write: f64,
    p_read: f64,
    p_crash: f64,
    p_partition: f64,
    p_conf_change: f64,
    p_transfer: f64,
}

impl Plan {
    fn draw(rng: &mut SmallRng) -> Self {
        let founders = if rng.gen_bool(0.7) { 3 } else { 5 };
        let voters: Vec<NodeId> = (1..=founders).collect();
        let spares: Vec<NodeId> = (founders + 1..=founders + 2).collect();
        let delay_max = *[2u64, 5, 15, 40].get(rng.gen_range(0..4)).unwrap_or(&5);
        Self {
            voters,
            spares,
            faults: NetworkFaults {
                drop: *[0.0, 0.01, 0.05, 0.15]
                    .get(rng.gen_range(0..4))
                    .unwrap_or(&0.0),
                duplicate: if rng.gen_bool(0.3) { 0.03 } else { 0.0 },
                delay_min: 1,
                delay_max,
            },
            compact_every: *[0u64, 5, 20, 100].get(rng.gen_range(0..4)).unwrap_or(&0),
            p_write: 0.05 + rng.gen_range(0.0..0.2),
            p_read: rng.gen_range(0.0..0.05),
            p_crash: rng.gen_range(0.0..0.004),
            p_partition: rng.gen_range(0.0..0.004),
            p_conf_change: rng.gen_range(0.0..0.003),
            p_transfer: rng.gen_range(0.0..0.002),
        }
    }
}

/// Runs the simulation for one seed.
pub fn run(options: &RunOptions) -> Result<RunReport, RunFailure> {
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let plan = Plan::draw(&mut rng);
    let pre_vote = rng.gen_bool(0.8);
    let check_quorum = rng.gen_bool(0.8);
    let mut cluster_options = ClusterOptions::new(&plan.voters);
    cluster_options.spares = plan.spares.clone();
    cluster_options.seed = options.seed;
    cluster_options.faults = plan.faults.clone();
    cluster_options.configure = match (pre_vote, check_quorum) {
        (true, true) => |c| c.max_inflight_msgs = 4,
        (true, false) => |c| {
            c.check_quorum = false;
            c.max_message_size_bytes = 64;
        },
        (false, true) => |c| c.pre_vote = false,
        (false, false) => |c| {
            c.pre_vote = false;
            c.check_quorum = false;
        },
    };
    let mut cluster = Cluster::new(cluster_options);
    cluster.compact_every = plan.compact_every;
    if options.verbose {
        cluster.echo_transcript();
    }
    let fail = |cluster: &Cluster, violation| RunFailure {
        seed: options.seed,
        violation,
        transcript: cluster
            .transcript()
            .into_iter()
            .chain(cluster.describe_nodes())
            .collect(),
    };
    let mut driver = Driver {
        plan,
        rng,
        restart_at: Vec::new(),
        heal_at: None,
        value: 0,
    };
    for _ in 0..options.fault_steps {
        if let Err(v) = driver
            .act(&mut cluster)
            .and_then(|()| cluster.step(TICK_EVERY_STEPS))
        {
            return Err(fail(&cluster, v));
        }
    }
    if let Err(v) = settle(&mut cluster, options.settle_steps_max) {
        return Err(fail(&cluster, v));
    }
    let failed = cluster
        .proposals
        .iter()
        .filter(|p| cluster.outcome(p) == ProposalOutcome::Failed)
        .count();
    Ok(RunReport {
        seed: options.seed,
        steps: cluster.now,
        leader_terms: cluster.checker.leader_terms(),
        committed: cluster.checker.committed_len(),
        proposals: cluster.proposals.len(),
        proposals_failed: failed,
        stats: cluster.stats.clone(),
    })
}

/// Stops every fault, then requires the cluster to elect a leader, commit
/// everything and agree, within `steps_max` steps.
fn settle(cluster: &mut Cluster, steps_max: u64) -> Result<(), Violation> {
    cluster.note("faults stop");
    cluster.heal();
    cluster.network.faults = NetworkFaults::reliable();
    for id in cluster.ids() {
        cluster.restart(id)?;
    }
    let start = cluster.now;
    while cluster.now - start < steps_max {
        cluster.step(TICK_EVERY_STEPS)?;
        if cluster.is_settled()
            && cluster
                .proposals
                .iter()
                .all(|p| cluster.outcome(p) != ProposalOutcome::Pending)
        {
            return cluster.check_converged();
        }
    }
    let pending: Vec<u64> = cluster
        .proposals
        .iter()
        .filter(|p| cluster.outcome(p) == ProposalOutcome::Pending)
        .map(|p| p.index)
        .collect();
    Err(Violation::Liveness(format!(
        "not settled {steps_max} steps after faults stopped (leader {:?}, pending proposals at {pending:?})",
        cluster.leader()
    )))
}

struct Driver {
    plan: Plan,
    rng: SmallRng,
    restart_at: Vec<(u64, NodeId)>,
    heal_at: Option<u64>,
    value: u64,
}

impl Driver {
    fn act(&mut self, cluster: &mut Cluster) -> Result<(), Violation> {
        self.recover(cluster)?;
        if self.rng.gen_bool(self.plan.p_write) {
            self.write(cluster);
        }
        if self.rng.gen_bool(self.plan.p_read) {
            let ids = cluster.up_ids();
            if !ids.is_empty() {
                let id = ids[self.rng.gen_range(0..ids.len())];
                let _ = cluster.read(id);
            }
        }
        if self.rng.gen_bool(self.plan.p_crash) {
            self.crash(cluster);
        }
        if self.heal_at.is_none() && self.rng.gen_bool(self.plan.p_partition) {
            self.partition(cluster);
        }
        if self.rng.gen_bool(self.plan.p_conf_change) {
            self.change_membership(cluster);
        }
        if self.rng.gen_bool(self.plan.p_transfer) {
            if let Some(leader) = cluster.leader() {
                let voters: Vec<NodeId> = cluster
                    .raft(leader)
                    .map(|r| r.tracker.membership.voters.ids().into_iter().collect())
                    .unwrap_or_default();
                if !voters.is_empty() {
                    let target = voters[self.rng.gen_range(0..voters.len())];
                    let _ = cluster.transfer_leader(leader, target);
                }
            }
        }
        Ok(())
    }

    fn recover(&mut self, cluster: &mut Cluster) -> Result<(), Violation> {
        let now = cluster.now;
        let due: Vec<NodeId> = self
            .restart_at
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        self.restart_at.retain(|(at, _)| *at > now);
        for id in due {
            cluster.restart(id)?;
        }
        if self.heal_at.is_some_and(|at| at <= now) {
            self.heal_at = None;
            cluster.heal();
        }
        Ok(())
    }

    fn write(&mut self, cluster: &mut Cluster) {
        self.value += 1;
        let key = format!("k{}", self.rng.gen_range(0..5));
        // Writes go to a node that believes it leads; sometimes to a
        // follower, which forwards them (untracked: the client cannot tell
        // where they landed).
        let leaders: Vec<NodeId> = cluster
            .up_ids()
            .into_iter()
            .filter(|&id| cluster.raft(id).is_some_and(|r| r.role == Role::Leader))
            .collect();
        if !leaders.is_empty() && self.rng.gen_bool(0.9) {
            let id = leaders[self.rng.gen_range(0..leaders.len())];
            let _ = cluster.propose(id, &key, self.value);
        } else if let Some(&id) = cluster.up_ids().first() {
            if let Some(raft) = cluster.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
                let write = crate::node::Write {
                    id: u64::MAX - self.value,
                    key,
                    value: self.value,
                };
                let _ = raft.propose(write.encode());
                let _ = cluster.process(id);
            }
        }
    }

    fn crash(&mut self, cluster: &mut Cluster) {
        let up = cluster.up_ids();
        if up.is_empty() {
            return;
        }
        // Mostly the leader: that is where the interesting failures are.
        let victim = match cluster.leader() {
            Some(leader) if self.rng.gen_bool(0.6) => leader,
            _ => up[self.rng.gen_range(0..up.len())],
        };
        if self.rng.gen_bool(0.3) {
            // Die in the middle of a ready: messages out, nothing persisted.
            let _ = cluster.process_then_crash_before_persist(victim);
        }
        cluster.crash(victim);
        let down_for = self.rng.gen_range(1..200) * TICK_EVERY_STEPS;
        self.restart_at.push((cluster.now + down_for, victim));
    }

    fn partition(&mut self, cluster: &mut Cluster) {
        let mut ids = cluster.ids();
        match self.rng.gen_range(0..4) {
            0 => {
                let victim = cluster.leader().unwrap_or(ids[0]);
                cluster.isolate(victim);
            }
            1 => {
                // A random split into two sides.
                for i in (1..ids.len()).rev() {
                    ids.swap(i, self.rng.gen_range(0..=i));
                }
                let cut = self.rng.gen_range(1..ids.len());
                let (left, right) = ids.split_at(cut);
                cluster.network.partition(left, right);
                cluster.note(format!("PARTITION {left:?} | {right:?}"));
            }
            2 => {
                let from = ids[self.rng.gen_range(0..ids.len())];
                let to = ids[self.rng.gen_range(0..ids.len())];
                if from != to {
                    cluster.network.cut_one_way(from, to);
                    cluster.note(format!("CUT {from} -> {to}"));
                }
            }
            _ => {
                if let Some(leader) = cluster.leader() {
                    // The leader can send but not hear back.
                    for id in ids.iter().copied().filter(|&id| id != leader) {
                        cluster.network.cut_one_way(id, leader);
                    }
                    cluster.note(format!("leader {leader} can no longer hear anyone"));
                }
            }
        }
        self.heal_at = Some(cluster.now + self.rng.gen_range(20..300) * TICK_EVERY_STEPS);
    }

    fn change_membership(&mut self, cluster: &mut Cluster) {
        let Some(leader) = cluster.leader() else {
            return;
        };
        let Some(raft) = cluster.raft(leader) else {
            return;
        };
        let membership = raft.tracker.membership.clone();
        let voters: Vec<NodeId> = membership.voters.incoming.iter().copied().collect();
        let learners: Vec<NodeId> = membership.learners.iter().copied().collect();
        let outsiders: Vec<NodeId> = cluster
            .ids()
            .into_iter()
            .filter(|id| !membership.members().contains(id))
            .collect();
        let cc = match self.rng.gen_range(0..5) {
            0 if !outsiders.is_empty() => ConfChange::single(ConfChangeStep::AddLearner(
                outsiders[self.rng.gen_range(0..outsiders.len())],
            )),
            1 if !learners.is_empty() => ConfChange::single(ConfChangeStep::AddVoter(
                learners[self.rng.gen_range(0..learners.len())],
            )),
            2 if voters.len() > 2 => ConfChange::single(ConfChangeStep::RemoveNode(
                voters[self.rng.gen_range(0..voters.len())],
            )),
            3 if !outsiders.is_empty() && voters.len() > 1 => {
                // Swap a voter for a newcomer in one joint change.
                let leaving = voters[self.rng.gen_range(0..voters.len())];
                let joining = outsiders[self.rng.gen_range(0..outsiders.len())];
                ConfChange {
                    transition: if self.rng.gen_bool(0.5) {
                        ConfChangeTransition::JointImplicit
                    } else {
                        ConfChangeTransition::Auto
                    },
                    steps: vec![
                        ConfChangeStep::AddVoter(joining),
                        ConfChangeStep::RemoveNode(leaving),
                    ],
                    context: bytes::Bytes::new(),
                }
            }
            4 if voters.len() > 1 => {
                // Demote a voter to learner.
                ConfChange::single(ConfChangeStep::AddLearner(
                    voters[self.rng.gen_range(0..voters.len())],
                ))
            }
            _ => return,
        };
        let _ = cluster.propose_conf_change(leader, &cc);
    }
}
