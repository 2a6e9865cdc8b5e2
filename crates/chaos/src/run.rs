//! One chaos run: a cluster, workers, faults on a schedule, then the
//! checks: the history is linearizable, every member converged on the same
//! revision and hash, every acknowledged append is in every member's copy
//! of its list exactly once, and the watch guarantees hold.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use raftkv_check::history::{History, Input, Outcome};
use raftkv_check::{check, CheckOptions, CheckReport, Verdict};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterConfig};
use crate::error::HarnessError;
use crate::faults::{Fault, FaultKind};
use crate::leases::{LeaseProbe, LeaseReport};
use crate::security::Principal;
use crate::watches::{self, WatchPlan};
use crate::workload::{split_list, Recorder, Worker, WorkloadConfig};

/// Keys of the lease probe.
const LEASE_PREFIX: &str = "chaos-lease/";

/// How a run goes.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The cluster.
    pub cluster: ClusterConfig,
    /// The clients.
    pub workload: WorkloadConfig,
    /// Watchers recording streams for the watch checks.
    pub watchers: usize,
    /// The kinds of fault to draw from (in turn); empty for none.
    pub faults: Vec<FaultKind>,
    /// How long workers run.
    pub duration: Duration,
    /// Quiet time before each fault.
    pub quiet: Duration,
    /// How long each fault lasts.
    pub fault_length: Duration,
    /// Seeds the workers' and the schedule's choices.
    pub seed: u64,
    /// Time allowed to the linearizability check.
    pub check_budget: Duration,
    /// Run the lease probe beside the workload.
    pub leases: bool,
}

impl RunConfig {
    /// A run of `duration` against `cluster` with the default workload.
    pub fn new(cluster: ClusterConfig, faults: Vec<FaultKind>, duration: Duration) -> Self {
        Self {
            cluster,
            workload: WorkloadConfig::default(),
            watchers: 2,
            faults,
            duration,
            quiet: Duration::from_millis(1500),
            fault_length: Duration::from_secs(3),
            seed: crate::entropy(),
            check_budget: Duration::from_secs(60),
            leases: true,
        }
    }
}

/// What a run found.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// Server program.
    pub server: String,
    /// Seed of the run.
    pub seed: u64,
    /// Operations by outcome: ok, fail, unknown.
    pub operations: BTreeMap<String, usize>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// The linearizability verdict.
    pub verdict: Verdict,
    /// The checker's explanation of each violation (empty when none).
    pub violations: Vec<String>,
    /// Acknowledged appends missing from a member's final list.
    pub lost_writes: Vec<String>,
    /// Values present more than once in a member's final list.
    pub duplicated_writes: Vec<String>,
    /// Members whose final state differs from the others'.
    pub divergence: Vec<String>,
    /// Broken watch guarantees.
    pub watch_violations: Vec<String>,
    /// Watch events received.
    pub watch_events: usize,
    /// Broken lease promises.
    pub lease_violations: Vec<String>,
    /// Keep-alives of the lease probe the cluster acknowledged.
    pub lease_keepalives: usize,
}

impl RunReport {
    /// Whether nothing was found wrong (an undecided check is not a pass).
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Linearizable
            && self.lost_writes.is_empty()
            && self.duplicated_writes.is_empty()
            && self.divergence.is_empty()
            && self.watch_violations.is_empty()
            && self.lease_violations.is_empty()
    }

    /// Operations in all.
    pub fn total_operations(&self) -> usize {
        self.operations.values().sum()
    }

    /// Faults in all.
    pub fn total_faults(&self) -> usize {
        self.faults.values().sum()
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} run (seed {}): {} operations {:?}, {} faults {:?}, {} watch events, \
             {} lease keep-alives",
            self.server,
            self.seed,
            self.total_operations(),
            self.operations,
            self.total_faults(),
            self.faults,
            self.watch_events,
            self.lease_keepalives
        )?;
        writeln!(f, "linearizability: {:?}", self.verdict)?;
        for (title, items) in [
            ("violation", &self.violations),
            ("lost write", &self.lost_writes),
            ("duplicated write", &self.duplicated_writes),
            ("divergence", &self.divergence),
            ("watch", &self.watch_violations),
            ("lease", &self.lease_violations),
        ] {
            for item in items.iter().take(10) {
                writeln!(f, "{title}: {item}")?;
            }
            if items.len() > 10 {
                writeln!(f, "{title}: ... and {} more", items.len() - 10)?;
            }
        }
        Ok(())
    }
}

/// Runs the whole thing; `save_history` names a file for the history (JSON
/// Lines, for `raftkvctl check`).
pub async fn run(
    mut config: RunConfig,
    save_history: Option<&Path>,
) -> Result<RunReport, HarnessError> {
    if config.faults.iter().any(|kind| kind.needs_fake_clock()) && !config.cluster.fake_clocks {
        if crate::clock::library().is_some() || crate::clock::required() {
            config.cluster.fake_clocks = true;
        } else {
            tracing::warn!("libfaketime is not installed: no clock jumps in this run");
            config.faults.retain(|kind| !kind.needs_fake_clock());
        }
    }
    let mut cluster = Cluster::start(config.cluster.clone()).await?;
    let result = run_on(&mut cluster, &config, save_history).await;
    cluster.stop_all(Duration::from_secs(5));
    result
}

/// A run on a cluster already started.
pub async fn run_on(
    cluster: &mut Cluster,
    config: &RunConfig,
    save_history: Option<&Path>,
) -> Result<RunReport, HarnessError> {
    let recorder = Recorder::new();
    let endpoints = cluster.client_endpoints();
    let deadline = Instant::now() + config.duration;
    let mut rng = SmallRng::seed_from_u64(config.seed);

    let watch_plan = WatchPlan::new(&config.workload.prefix, config.watchers);
    let watch_streams = watch_plan.start(
        &endpoints,
        deadline,
        config.seed,
        cluster.security().clone(),
    );
    let lease_probe = if config.leases {
        // Outside the workload's prefix, so the watchers' checks and the
        // registers do not see the probe's keys.
        Some(
            LeaseProbe::start(
                endpoints.clone(),
                LEASE_PREFIX,
                deadline,
                cluster.security().client_security(Principal::Worker),
            )
            .map_err(|e| HarnessError::Setup(e.to_string()))?,
        )
    } else {
        None
    };

    let mut workers = Vec::new();
    for id in 0..config.workload.workers as u64 {
        // Each worker starts with its own member, then tries the others.
        let mut order = endpoints.clone();
        let first = rng.gen_range(0..order.len().max(1));
        order.rotate_left(first);
        if config.workload.pin_workers {
            order.truncate(1);
        }
        let mut worker = Worker::new(
            id + 1,
            order,
            config.workload.clone(),
            recorder.clone(),
            config.seed,
            cluster.security().client_security(Principal::Worker),
        )
        .map_err(|e| HarnessError::Setup(e.to_string()))?;
        workers.push(tokio::spawn(async move {
            worker.run_until(deadline).await;
            worker
        }));
    }

    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    let mut next_kind = if config.faults.is_empty() {
        0
    } else {
        rng.gen_range(0..config.faults.len())
    };
    while !config.faults.is_empty() && Instant::now() + config.quiet < deadline {
        tokio::time::sleep(config.quiet).await;
        let kind = config.faults[next_kind % config.faults.len()];
        next_kind += 1;
        let fault = Fault::inject(cluster, kind).await?;
        tracing::info!(%kind, targets = ?fault.targets, "fault injected");
        *faults.entry(kind.to_string()).or_default() += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(config.fault_length.min(left)).await;
        fault.heal(cluster).await?;
    }
    cluster.heal();

    let mut finished = Vec::new();
    for worker in workers {
        finished.push(
            worker
                .await
                .map_err(|e| HarnessError::Setup(format!("worker: {e}")))?,
        );
    }
    cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .map_err(|e| cluster.with_logs(e))?;
    let leases = match lease_probe {
        Some(probe) => probe.finish().await,
        None => LeaseReport::default(),
    };
    // The last word on every key, through the same clients.
    if let Some(worker) = finished.first() {
        worker.read_everything().await;
    }

    let converged = wait_for_convergence(cluster, Duration::from_secs(30)).await;
    let mut divergence = match converged {
        Ok(revision) => compare_hashes(cluster, revision).await,
        Err(err) => vec![err.to_string()],
    };

    let history = History::new(recorder.operations());
    if let Some(path) = save_history {
        let file = std::fs::File::create(path).map_err(|e| HarnessError::io(path, e))?;
        history
            .write_jsonl(std::io::BufWriter::new(file))
            .map_err(|e| HarnessError::Setup(format!("{}: {e}", path.display())))?;
    }
    let report = check(
        &history,
        CheckOptions {
            time_budget: config.check_budget,
            threads: 0,
        },
    );
    let (lost_writes, duplicated_writes, list_divergence) =
        check_lists(cluster, &config.workload, &history).await;
    divergence.extend(list_divergence);

    let streams = watch_streams.finish().await;
    if let Some(path) = std::env::var_os("RAFTKV_CHAOS_WATCH_DUMP") {
        // For a person looking into a watch violation: every recorded
        // stream, as JSON.
        if let Ok(text) = serde_json::to_string(&streams) {
            let _ = std::fs::write(path, text);
        }
    }
    let watch_events = streams.iter().map(watches::event_count).sum();
    let watch_violations = watches::check(cluster, &config.workload.prefix, &streams).await;

    let mut operations = BTreeMap::new();
    for op in &history.operations {
        let outcome = match op.outcome {
            Outcome::Ok(_) => "ok",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        };
        *operations.entry(outcome.to_string()).or_default() += 1;
    }
    Ok(RunReport {
        server: cluster.server().name().to_string(),
        seed: config.seed,
        operations,
        faults,
        verdict: report.verdict,
        violations: violations_of(&report),
        lost_writes,
        duplicated_writes,
        divergence,
        watch_violations,
        watch_events,
        lease_violations: leases.violations,
        lease_keepalives: leases.keepalives,
    })
}

fn violations_of(report: &CheckReport) -> Vec<String> {
    report
        .partitions
        .iter()
        .filter(|p| p.verdict != Verdict::Linearizable)
        .map(|p| p.to_string())
        .collect()
}

/// Waits until every member reports the same revision and applied index
/// twice in a row; that revision.
pub async fn wait_for_convergence(
    cluster: &mut Cluster,
    within: Duration,
) -> Result<i64, HarnessError> {
    let deadline = Instant::now() + within;
    let mut previous: Option<Vec<(i64, u64)>> = None;
    loop {
        let mut seen = Vec::new();
        for i in 0..cluster.size() {
            match cluster.status(i).await {
                Some(status) => seen.push((
                    status.header.as_ref().map_or(0, |h| h.revision),
                    status.raft_applied_index,
                )),
                None => seen.push((-1, 0)),
            }
        }
        let all_same = seen.windows(2).all(|w| w[0] == w[1]) && seen[0].0 >= 0;
        if all_same && previous.as_ref() == Some(&seen) {
            return Ok(seen[0].0);
        }
        if Instant::now() >= deadline {
            let mut text =
                format!("members did not converge: (revision, applied index) = {seen:?}");
            // A member that is not answering says why in its log.
            for (i, (revision, _)) in seen.iter().enumerate() {
                if *revision < 0 {
                    let state = match cluster.exit_status(i) {
                        Some(status) => format!("exited ({status})"),
                        None if cluster.is_running(i) => "running".to_string(),
                        None => "not started".to_string(),
                    };
                    let log = cluster.log(i);
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    text.push_str(&format!("\n--- member {i}, {state}, last log lines ---\n"));
                    for line in tail.iter().rev() {
                        text.push_str(line);
                        text.push('\n');
                    }
                }
            }
            return Err(HarnessError::Timeout(text));
        }
        previous = Some(seen);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// HashKV of every member at `revision`; a divergence per odd one out.
async fn compare_hashes(cluster: &mut Cluster, revision: i64) -> Vec<String> {
    let mut hashes = Vec::new();
    for i in 0..cluster.size() {
        let url = cluster.direct_endpoint(i);
        let security = cluster.security().clone();
        let hash = async {
            let conn = security
                .connect(&url, Principal::Root, Duration::from_secs(3))
                .await?;
            MaintenanceClient::new(conn)
                .hash_kv(pb::HashKvRequest { revision })
                .await
                .ok()
                .map(|r| r.into_inner().hash)
        }
        .await;
        hashes.push(hash);
    }
    let first = hashes[0];
    hashes
        .iter()
        .enumerate()
        .filter(|(_, h)| **h != first || h.is_none())
        .map(|(i, h)| {
            format!("member {i}: HashKV at revision {revision} is {h:?}, member 0's {first:?}")
        })
        .collect()
}

/// Reads every list key from every member directly (serializable, after
/// convergence) and compares with the acknowledged appends.
async fn check_lists(
    cluster: &Cluster,
    workload: &WorkloadConfig,
    history: &History,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut acknowledged: HashMap<String, Vec<String>> = HashMap::new();
    for op in &history.operations {
        if let (Input::Append { value }, Outcome::Ok(_)) = (&op.input, &op.outcome) {
            acknowledged
                .entry(op.key.clone())
                .or_default()
                .push(value.clone());
        }
    }
    let mut lost = Vec::new();
    let mut duplicated = Vec::new();
    let mut divergence = Vec::new();
    for k in 0..workload.list_keys {
        let key = workload.list_key(k);
        let mut copies = Vec::new();
        for i in 0..cluster.size() {
            let values = cluster
                .read_own(i, &key)
                .await
                .ok()
                .map(|kv| kv.map(|kv| split_list(&kv.value)).unwrap_or_default());
            copies.push(values);
        }
        for (i, copy) in copies.iter().enumerate() {
            let Some(values) = copy else {
                divergence.push(format!("member {i}: cannot read {key}"));
                continue;
            };
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for v in values {
                *counts.entry(v.as_str()).or_default() += 1;
            }
            for (v, n) in &counts {
                if *n > 1 {
                    duplicated.push(format!("member {i}: {key} holds {v} {n} times"));
                }
            }
            for v in acknowledged.get(&key).into_iter().flatten() {
                if !counts.contains_key(v.as_str()) {
                    lost.push(format!("member {i}: {key} lacks acknowledged append {v}"));
                }
            }
            if copy != &copies[0] {
                divergence.push(format!("member {i}: {key} differs from member 0's"));
            }
        }
    }
    (lost, duplicated, divergence)
}
