//! The faults a run injects, each undone by [`Fault::heal`].
//!
//! A fault is chosen by kind and aimed when it starts (at whoever leads
//! then), so "kill the leader" always kills the leader of the moment.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::cluster::Cluster;
use crate::error::HarnessError;
use crate::proxy::LinkMode;

/// What a raftkv member logs when its node stops on a fatal error (a failed
/// WAL write or fsync), before it shuts down.
const FATAL_STOP_LOG: &str = "stopped on a fatal error";

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// kill -9 of the leader, restarted when healed.
    KillLeader,
    /// kill -9 of a follower, restarted when healed.
    KillFollower,
    /// kill -9 of a majority (the leader among them), restarted when healed.
    KillMajority,
    /// SIGSTOP of the leader, SIGCONT when healed.
    PauseLeader,
    /// SIGSTOP of a follower.
    PauseFollower,
    /// Every link of the leader cut both ways.
    IsolateLeader,
    /// Every link of a follower cut both ways.
    IsolateFollower,
    /// A minority with the leader cut off from the majority.
    SplitMajorityMinority,
    /// The leader's messages to everyone lost; theirs reach it.
    OneWayFromLeader,
    /// Everyone's messages to the leader lost; its reach them.
    OneWayToLeader,
    /// Every link between members 150 ms slow.
    SlowNetwork,
    /// Every fsync of a running follower slowed by 100 ms.
    SlowFsync,
    /// The running leader's fsyncs fail after a few more; it must stop
    /// without acknowledging what it could not make durable.
    FailingFsync,
    /// The answers from the leader to clients lost (clients time out and
    /// retry elsewhere).
    ClientAnswersLost,
    /// The leader's wall clock stepped a day ahead and a follower's three
    /// hours back; both stepped back to the true time when healed.
    ClockJumps,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 15] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::KillMajority,
        FaultKind::PauseLeader,
        FaultKind::PauseFollower,
        FaultKind::IsolateLeader,
        FaultKind::IsolateFollower,
        FaultKind::SplitMajorityMinority,
        FaultKind::OneWayFromLeader,
        FaultKind::OneWayToLeader,
        FaultKind::SlowNetwork,
        FaultKind::SlowFsync,
        FaultKind::FailingFsync,
        FaultKind::ClientAnswersLost,
        FaultKind::ClockJumps,
    ];

    /// The kinds that need per-link cuts, which only members binding their
    /// peer connections to their own address (raftkv) allow.
    pub fn needs_link_control(self) -> bool {
        matches!(
            self,
            FaultKind::IsolateLeader
                | FaultKind::IsolateFollower
                | FaultKind::SplitMajorityMinority
                | FaultKind::OneWayFromLeader
                | FaultKind::OneWayToLeader
                | FaultKind::SlowNetwork
        )
    }

    /// The kinds that need members under libfaketime
    /// ([`crate::ClusterConfig::fake_clocks`]).
    pub fn needs_fake_clock(self) -> bool {
        matches!(self, FaultKind::ClockJumps)
    }

    /// The kinds that need raftkv's storage fault injection.
    pub fn needs_fault_injection(self) -> bool {
        matches!(self, FaultKind::SlowFsync | FaultKind::FailingFsync)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{self:?}"));
        f.write_str(&name)
    }
}

/// A fault in force, with what it takes to undo it.
#[derive(Debug)]
pub struct Fault {
    /// What it is.
    pub kind: FaultKind,
    /// The members it was aimed at.
    pub targets: Vec<usize>,
    /// How long each target's log was when the fault started, so heal can
    /// tell whether a target reported a fatal stop under this fault.
    log_lengths: Vec<usize>,
}

/// How long heal waits for a member that reported a fatal error to finish
/// stopping (its client grace, the leadership hand-over and the node's own
/// stop), before it is killed and restarted.
const FATAL_STOP_WAIT: Duration = Duration::from_secs(15);

/// How long heal waits after clearing storage faults: the member reads its
/// fault file at a sync at most 100 ms after the previous read, so syncs in
/// that window may still fail under the old settings.
const FAULT_FILE_SETTLE: Duration = Duration::from_millis(300);

impl Fault {
    /// Starts a fault of `kind` on the cluster as it is now.
    pub async fn inject(cluster: &mut Cluster, kind: FaultKind) -> Result<Self, HarnessError> {
        let size = cluster.size();
        // No leader at the moment: aim at member 0.
        let leader = cluster.leader().await.unwrap_or_default();
        let follower = (0..size)
            .map(|i| (leader + 1 + i) % size)
            .find(|i| *i != leader)
            .unwrap_or(0);
        let targets = match kind {
            FaultKind::KillLeader => {
                cluster.kill(leader);
                vec![leader]
            }
            FaultKind::KillFollower => {
                cluster.kill(follower);
                vec![follower]
            }
            FaultKind::KillMajority => {
                let majority: Vec<usize> = (0..size / 2 + 1).map(|i| (leader + i) % size).collect();
                for &i in &majority {
                    cluster.kill(i);
                }
                majority
            }
            FaultKind::PauseLeader => {
                cluster.pause(leader)?;
                vec![leader]
            }
            FaultKind::PauseFollower => {
                cluster.pause(follower)?;
                vec![follower]
            }
            FaultKind::IsolateLeader => {
                cluster.isolate(leader);
                vec![leader]
            }
            FaultKind::IsolateFollower => {
                cluster.isolate(follower);
                vec![follower]
            }
            FaultKind::SplitMajorityMinority => {
                // The leader and as many others as keep it a minority.
                let minority: Vec<usize> = (0..size.div_ceil(2) - 1)
                    .map(|i| (leader + i) % size)
                    .collect();
                let minority = if minority.is_empty() {
                    vec![leader]
                } else {
                    minority
                };
                let majority: Vec<usize> = (0..size).filter(|i| !minority.contains(i)).collect();
                cluster.partition(&[minority.clone(), majority]);
                minority
            }
            FaultKind::OneWayFromLeader => {
                for other in (0..size).filter(|i| *i != leader) {
                    cluster.set_link(leader, other, LinkMode::Cut);
                }
                vec![leader]
            }
            FaultKind::OneWayToLeader => {
                for other in (0..size).filter(|i| *i != leader) {
                    cluster.set_link(other, leader, LinkMode::Cut);
                }
                vec![leader]
            }
            FaultKind::SlowNetwork => {
                for a in 0..size {
                    for b in (0..size).filter(|b| *b != a) {
                        cluster.set_link(a, b, LinkMode::Delay(Duration::from_millis(150)));
                    }
                }
                (0..size).collect()
            }
            FaultKind::SlowFsync => {
                cluster.set_storage_faults(follower, "sync_delay_ms=100")?;
                vec![follower]
            }
            FaultKind::FailingFsync => {
                cluster.set_storage_faults(leader, "sync_fail_after=40")?;
                vec![leader]
            }
            FaultKind::ClientAnswersLost => {
                cluster.set_client_link(leader, LinkMode::Pass, LinkMode::Cut);
                vec![leader]
            }
            FaultKind::ClockJumps => {
                // Further than the exactly-once TTL and any lease, both ways.
                cluster.set_clock_offset(leader, 86_400)?;
                cluster.set_clock_offset(follower, -10_800)?;
                vec![leader, follower]
            }
        };
        let log_lengths = targets.iter().map(|&i| cluster.log(i).len()).collect();
        Ok(Self {
            kind,
            targets,
            log_lengths,
        })
    }

    /// Undoes the fault: links pass, paused members resume, killed (or
    /// failed) members restart without storage faults.
    pub async fn heal(self, cluster: &mut Cluster) -> Result<(), HarnessError> {
        cluster.heal();
        if self.kind.needs_fault_injection() {
            for &i in &self.targets {
                cluster.set_storage_faults(i, "")?;
            }
            tokio::time::sleep(FAULT_FILE_SETTLE).await;
        }
        for (&i, &log_length) in self.targets.iter().zip(&self.log_lengths) {
            cluster.resume(i)?;
            if self.kind.needs_fault_injection() {
                // A member whose fsync failed stops on its own, which takes
                // a few seconds; restart it only once it is gone, or it would
                // stay down for the rest of the run.
                let since_fault = cluster.log(i).get(log_length..).map(str::to_owned);
                if since_fault.is_some_and(|log| log.contains(FATAL_STOP_LOG)) {
                    cluster.wait_for_exit(i, FATAL_STOP_WAIT).await;
                }
            }
            if self.kind.needs_fake_clock() {
                cluster.set_clock_offset(i, 0)?;
            }
            if !cluster.is_running(i) {
                cluster.restart(i)?;
            }
        }
        Ok(())
    }
}
