//! The seven leader-failure cases of the project's seed (SCENARIOS.md), on
//! real servers: each brings a 3-member cluster to the stage its row names
//! with the proxies' link modes, fails the leader there, heals everything,
//! and checks what the row says.
//!
//! | case | how the stage is reached |
//! |---|---|
//! | 1 | the leader is killed before the write is sent |
//! | 2 | the leader's links to both followers are cut; the write reaches only it |
//! | 3 | both followers' links to the leader are cut: they hold the write, the leader never hears their acks |
//! | 4 | leader→f2 and f1→leader are cut: only f1 holds the write, uncommitted |
//! | 5 | leader→f2 cut, leader→f1 slowed: the leader commits and answers, then dies before f1 learns of the commit |
//! | 6 | the answers from the leader to the client are cut: the write is committed and applied everywhere, unanswered |
//! | 7 | the leader is isolated: a write sent only to it never commits; the majority elects a new leader and goes on |
//!
//! Afterwards, in every case: every member holds every acknowledged write,
//! applied once (the staged key's version is 1 and its revision the one
//! the client was told), the members converge on the same hash, and the
//! history the clients saw is linearizable.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use raftkv_check::history::History;
use raftkv_check::{check, CheckOptions, Verdict};
use raftkv_proto::etcdserverpb as pb;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterConfig};
use crate::error::HarnessError;
use crate::process::ServerKind;
use crate::proxy::LinkMode;
use crate::run::wait_for_convergence;
use crate::security::Principal;
use crate::workload::{Recorder, Worker, WorkloadConfig};

/// What one case did and found.
#[derive(Debug, Default)]
pub struct CaseReport {
    /// Which case (1 to 7).
    pub case: u8,
    /// What happened, step by step.
    pub transcript: Vec<String>,
    /// What was found wrong; empty when the case holds.
    pub failures: Vec<String>,
}

impl CaseReport {
    fn step(&mut self, started: Instant, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(case = self.case, "{text}");
        self.transcript
            .push(format!("{:>6} ms  {text}", started.elapsed().as_millis()));
    }

    /// Whether the case held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for CaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "leader failure case {}", self.case)?;
        for line in &self.transcript {
            writeln!(f, "  {line}")?;
        }
        for failure in &self.failures {
            writeln!(f, "  FAILED: {failure}")?;
        }
        Ok(())
    }
}

/// How long the leader is given to take a write into its log (or pass it
/// on) before it is failed.
const STAGE_SETTLE: Duration = Duration::from_millis(400);

/// Runs case `case` (1 to 7) on a fresh 3-member cluster of `binary`.
pub async fn run_case(case: u8, binary: PathBuf) -> Result<CaseReport, HarnessError> {
    let mut cluster = Cluster::start(ClusterConfig::new(3, ServerKind::Raftkv { binary })).await?;
    let result = stage(case, &mut cluster).await;
    let result = match result {
        Ok(report) => Ok(report),
        Err(err) => Err(cluster.with_logs(err)),
    };
    cluster.stop_all(Duration::from_secs(5));
    result
}

/// The key a case writes, and its value.
const KEY: &str = "case/key";
const VALUE: &str = "written-once";

struct Stage {
    report: CaseReport,
    started: Instant,
    recorder: Arc<Recorder>,
    leader: usize,
    followers: [usize; 2],
}

impl Stage {
    /// A client whose first endpoint is member `first`, then the others
    /// (or only `first`, when `only`).
    fn client(
        &self,
        cluster: &Cluster,
        id: u64,
        first: usize,
        only: bool,
    ) -> Result<Worker, HarnessError> {
        let mut endpoints = vec![cluster.client_endpoint(first)];
        if !only {
            endpoints.extend(
                (0..cluster.size())
                    .filter(|i| *i != first)
                    .map(|i| cluster.client_endpoint(i)),
            );
        }
        let config = WorkloadConfig {
            op_timeout: if only {
                Duration::from_secs(3)
            } else {
                Duration::from_secs(20)
            },
            ..WorkloadConfig::default()
        };
        let security = cluster.security().client_security(Principal::Worker);
        Worker::new(id, endpoints, config, self.recorder.clone(), id, security)
            .map_err(|e| HarnessError::Setup(e.to_string()))
    }

    /// Sends the staged write through a client that starts at the leader.
    fn send_write(
        &self,
        cluster: &Cluster,
    ) -> Result<JoinHandle<Option<pb::PutResponse>>, HarnessError> {
        let client = self.client(cluster, 1, self.leader, false)?;
        Ok(tokio::spawn(async move {
            client.write(KEY, VALUE.to_string()).await
        }))
    }

    fn step(&mut self, text: impl Into<String>) {
        self.report.step(self.started, text);
    }
}

async fn stage(case: u8, cluster: &mut Cluster) -> Result<CaseReport, HarnessError> {
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut s = Stage {
        report: CaseReport {
            case,
            ..CaseReport::default()
        },
        started: Instant::now(),
        recorder: Recorder::new(),
        leader,
        followers: [others[0], others[1]],
    };
    let [f1, f2] = s.followers;
    s.step(format!("member {leader} leads; followers {f1} and {f2}"));
    let mut must_be_absent = None;

    let answer = match case {
        1 => {
            cluster.kill(leader);
            s.step(format!(
                "killed leader {leader} before any write reached it"
            ));
            let write = s.send_write(cluster)?;
            s.step("client sends the write to the dead leader first, then to the others");
            write.await.ok().flatten()
        }
        2 => {
            cluster.set_link(leader, f1, LinkMode::Cut);
            cluster.set_link(leader, f2, LinkMode::Cut);
            s.step("cut the leader's links to both followers");
            let write = s.send_write(cluster)?;
            tokio::time::sleep(STAGE_SETTLE).await;
            s.step("the write is in the leader's log only; killing the leader");
            cluster.kill(leader);
            write.await.ok().flatten()
        }
        3 => {
            cluster.set_link(f1, leader, LinkMode::Cut);
            cluster.set_link(f2, leader, LinkMode::Cut);
            s.step("cut both followers' links to the leader (their acks are lost)");
            let write = s.send_write(cluster)?;
            tokio::time::sleep(STAGE_SETTLE).await;
            s.step("the write is on all followers, uncommitted, unanswered; killing the leader");
            cluster.kill(leader);
            write.await.ok().flatten()
        }
        4 => {
            cluster.set_link(leader, f2, LinkMode::Cut);
            cluster.set_link(f1, leader, LinkMode::Cut);
            s.step(format!(
                "cut leader→{f2} and {f1}→leader: only {f1} can receive the write, and its ack is lost"
            ));
            let write = s.send_write(cluster)?;
            tokio::time::sleep(STAGE_SETTLE).await;
            s.step(format!(
                "the write is on {f1} only, uncommitted; killing the leader"
            ));
            cluster.kill(leader);
            let answer = write.await.ok().flatten();
            let new_leader = cluster.wait_for_leader(Duration::from_secs(20)).await?;
            s.step(format!("member {new_leader} leads now"));
            if new_leader != f1 {
                s.report.failures.push(format!(
                    "member {new_leader} won the election, but only {f1} held the newest entry"
                ));
            }
            answer
        }
        5 => {
            let delay = Duration::from_millis(600);
            cluster.set_link(leader, f2, LinkMode::Cut);
            cluster.set_link(leader, f1, LinkMode::Delay(delay));
            s.step(format!(
                "cut leader→{f2}; leader→{f1} delayed {} ms",
                delay.as_millis()
            ));
            let write = s.send_write(cluster)?;
            // The write reaches f1 after `delay`, f1's ack comes straight
            // back, and the leader commits and answers; its next message,
            // which tells f1 of the commit, is still in the slow link.
            let answer = write.await.ok().flatten();
            cluster.set_link(leader, f1, LinkMode::Cut);
            cluster.kill(leader);
            s.step(format!(
                "the leader committed and answered ({}); killed it before {f1} learned of the commit",
                if answer.is_some() { "acknowledged" } else { "NOT acknowledged" }
            ));
            answer
        }
        6 => {
            cluster.set_client_link(leader, LinkMode::Pass, LinkMode::Cut);
            s.step("cut the leader's answers to clients");
            let write = s.send_write(cluster)?;
            let applied = wait_until_applied_on(cluster, &[f1, f2], Duration::from_secs(5)).await;
            s.step(format!(
                "the write is committed and applied on both followers ({applied}); the client has no answer; killing the leader"
            ));
            cluster.kill(leader);
            write.await.ok().flatten()
        }
        7 => {
            cluster.isolate(leader);
            s.step("isolated the leader from both followers");
            let minority = s.client(cluster, 2, leader, true)?;
            let lost = "never-committed".to_string();
            let minority_write =
                tokio::spawn(async move { minority.write("case/minority", lost).await });
            let write = s.send_write(cluster)?;
            let answer = write.await.ok().flatten();
            s.step(format!(
                "the write sent to the old leader first was answered by the majority's new leader ({})",
                if answer.is_some() { "acknowledged" } else { "NOT acknowledged" }
            ));
            let minority_answer = minority_write.await.ok().flatten();
            s.step(format!(
                "a write sent only to the old leader: {}",
                if minority_answer.is_some() {
                    "ACKNOWLEDGED"
                } else {
                    "timed out, as it must"
                }
            ));
            if minority_answer.is_some() {
                s.report
                    .failures
                    .push("the isolated old leader acknowledged a write".into());
            }
            must_be_absent = Some("case/minority");
            cluster.heal();
            s.step("healed the partition");
            answer
        }
        other => {
            return Err(HarnessError::Setup(format!("there is no case {other}")));
        }
    };

    if answer.is_none() {
        s.report
            .failures
            .push("the client's write (retried with its request id) was never acknowledged".into());
    }
    // Everyone back, converged. The dead leader's links stay cut until
    // now: what it had sent into them must die with it (the proxy drops
    // held bytes once it sees their connection close), not reach a
    // follower in the middle of the election.
    cluster.heal();
    if !cluster.is_running(leader) {
        cluster.restart(leader)?;
        s.step(format!("restarted the old leader {leader}"));
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await?;
    let reader = s.client(cluster, 3, f1, false)?;
    reader.read(KEY).await;
    let revision = wait_for_convergence(cluster, Duration::from_secs(30)).await?;
    s.step(format!("all members converged at revision {revision}"));

    // Every member holds the write, applied once, at the revision the
    // client was told.
    let told = answer
        .as_ref()
        .and_then(|a| a.header.as_ref())
        .map(|h| h.revision);
    for i in 0..cluster.size() {
        match cluster.read_own(i, KEY).await.ok().flatten() {
            Some(kv) => {
                let value = String::from_utf8_lossy(&kv.value);
                if value != VALUE || kv.version != 1 {
                    s.report.failures.push(format!(
                        "member {i}: {KEY} = {value:?} at version {} (want {VALUE:?}, applied once)",
                        kv.version
                    ));
                }
                if told.is_some_and(|t| t != kv.mod_revision) {
                    s.report.failures.push(format!(
                        "member {i}: {KEY} has mod revision {}, the client was told {told:?}",
                        kv.mod_revision
                    ));
                }
            }
            None => s
                .report
                .failures
                .push(format!("member {i} lacks the acknowledged write")),
        }
        if let Some(key) = must_be_absent {
            match cluster.read_own(i, key).await {
                Ok(None) => {}
                Ok(Some(_)) => s.report.failures.push(format!(
                    "member {i} holds {key}, written only to the isolated old leader"
                )),
                Err(err) => s.report.failures.push(err.to_string()),
            }
        }
    }
    s.step(format!(
        "every member holds {KEY} once, at the revision the client was told ({told:?})"
    ));

    let history = History::new(s.recorder.operations());
    let verdict = check(
        &history,
        CheckOptions {
            time_budget: Duration::from_secs(20),
            threads: 0,
        },
    );
    s.step(format!(
        "history of {} operations: {:?}",
        history.operations.len(),
        verdict.verdict
    ));
    if verdict.verdict != Verdict::Linearizable {
        s.report.failures.push(format!("history: {verdict}"));
    }
    Ok(s.report)
}

/// Waits until every member of `members` has applied the staged write.
async fn wait_until_applied_on(cluster: &Cluster, members: &[usize], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let mut all = true;
        for &i in members {
            all &= matches!(cluster.read_own(i, KEY).await, Ok(Some(_)));
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
