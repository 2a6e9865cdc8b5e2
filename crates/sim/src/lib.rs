//! A deterministic simulator for the raftkv Raft core.
//!
//! It drives several real [`raftkv_raft::RawNode`]s over a simulated network
//! and disk. Everything (message delays, losses, duplicates, partitions,
//! crashes, client activity) is drawn from one seed, and time is counted in
//! steps, so a run is exactly reproducible: a failing seed replays the same
//! way on any machine.
//!
//! - [`cluster`] places a cluster in any state message by message (the
//!   leader-failure scenarios are written this way) or lets it run.
//! - [`checker`] checks Raft's safety properties after every step.
//! - [`random`] runs one seed of random faults and activity, then checks
//!   that the cluster recovers.
#![deny(missing_docs, unsafe_code)]

pub mod checker;
pub mod cluster;
pub mod network;
pub mod node;
pub mod random;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use checker::Violation;
pub use cluster::{Cluster, ClusterOptions, Proposal, ProposalOutcome};
pub use random::{run, RunFailure, RunOptions, RunReport};

/// Totals over many seeds.
#[derive(Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Steps simulated in all.
    pub steps: u64,
    /// Entries committed in all.
    pub committed: u64,
    /// Writes proposed at leaders.
    pub proposals: u64,
    /// Of those, how many failed (and the client was told).
    pub proposals_failed: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Snapshots installed.
    pub snapshots_installed: u64,
    /// Membership changes applied (per node).
    pub conf_changes_applied: u64,
    /// Linearizable reads served.
    pub reads_served: u64,
    /// Messages lost.
    pub messages_lost: u64,
    /// The failures, in seed order.
    pub failures: Vec<RunFailure>,
}

/// Runs seeds `start..start + count` on `threads` threads.
pub fn run_many(start: u64, count: u64, threads: usize) -> Summary {
    let next = AtomicU64::new(start);
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + count {
                    break;
                }
                let result = run(&RunOptions::new(seed));
                let Ok(mut summary) = summary.lock() else {
                    break;
                };
                summary.seeds += 1;
                match result {
                    Ok(report) => {
                        summary.steps += report.steps;
                        summary.committed += report.committed as u64;
                        summary.proposals += report.proposals as u64;
                        summary.proposals_failed += report.proposals_failed as u64;
                        summary.crashes += report.stats.crashes;
                        summary.snapshots_installed += report.stats.snapshots_installed;
                        summary.conf_changes_applied += report.stats.conf_changes_applied;
                        summary.reads_served += report.stats.reads_served;
                        summary.messages_lost += report.stats.messages_lost;
                    }
                    Err(failure) => summary.failures.push(failure),
                }
            });
        }
    });
    let mut summary = summary.into_inner().unwrap_or_default();
    summary.failures.sort_by_key(|f| f.seed);
    summary
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} seeds, {} failed; {} steps, {} entries committed, {} writes proposed ({} failed and reported), \
             {} reads served, {} crashes, {} snapshots installed, {} membership changes applied, {} messages lost",
            self.seeds,
            self.failures.len(),
            self.steps,
            self.committed,
            self.proposals,
            self.proposals_failed,
            self.reads_served,
            self.crashes,
            self.snapshots_installed,
            self.conf_changes_applied,
            self.messages_lost
        )
    }
}
