//! Automatic compaction (`--auto-compaction-mode` and
//! `--auto-compaction-retention`), decided by the leader and carried out
//! by an ordinary replicated compaction, like etcd's compactor.
//!
//! - **periodic:** keep `retention` worth of history. Every tenth of the
//!   retention (at most an hour) the compactor notes the current revision,
//!   and compacts to the revision it noted `retention` ago.
//! - **revision:** keep the last `retention` revisions, checked every five
//!   minutes.
//!
//! Every member samples revisions, so a new leader can compact at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb as pb;

use crate::config::AutoCompaction;
use crate::grpc::ServiceContext;
use crate::replicated::replicated_request::Op;

/// How often revision mode looks (etcd's interval).
const REVISION_CHECK: Duration = Duration::from_secs(300);
/// The longest step between two periodic compactions.
const PERIODIC_STEP_MAX: Duration = Duration::from_secs(3600);

/// Revisions sampled over time, and the compaction point they give.
#[derive(Debug)]
pub struct Plan {
    mode: AutoCompaction,
    samples: VecDeque<(Instant, i64)>,
    last_compacted: i64,
}

impl Plan {
    /// A plan for `mode`.
    pub fn new(mode: AutoCompaction) -> Self {
        Self {
            mode,
            samples: VecDeque::new(),
            last_compacted: 0,
        }
    }

    /// How often [`Plan::step`] should run; `None` when compaction is off.
    pub fn interval(&self) -> Option<Duration> {
        match self.mode {
            AutoCompaction::Off => None,
            AutoCompaction::Periodic(retention) => {
                Some((retention / 10).clamp(Duration::from_millis(10), PERIODIC_STEP_MAX))
            }
            AutoCompaction::Revision(_) => Some(REVISION_CHECK),
        }
    }

    /// Notes `revision` at `now` and returns the revision to compact to, if
    /// any is due.
    pub fn step(&mut self, now: Instant, revision: i64) -> Option<i64> {
        let target = match self.mode {
            AutoCompaction::Off => return None,
            AutoCompaction::Revision(keep) => revision - keep as i64,
            AutoCompaction::Periodic(retention) => {
                self.samples.push_back((now, revision));
                // The newest sample at least `retention` old is the target;
                // older ones are no longer needed.
                let mut target = None;
                while let Some(&(at, rev)) = self.samples.front() {
                    if now.duration_since(at) >= retention {
                        target = Some(rev);
                        self.samples.pop_front();
                    } else {
                        break;
                    }
                }
                target?
            }
        };
        (target > self.last_compacted && target > 1).then_some(target)
    }

    /// A compaction to `revision` took effect.
    pub fn compacted(&mut self, revision: i64) {
        self.last_compacted = self.last_compacted.max(revision);
    }
}

/// Runs the compactor until the task is dropped.
pub async fn run(ctx: ServiceContext, mode: AutoCompaction) {
    let mut plan = Plan::new(mode);
    let Some(interval) = plan.interval() else {
        return;
    };
    tracing::info!(?mode, ?interval, "automatic compaction");
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (Ok(revision), Ok(compacted)) =
            (ctx.store.current_revision(), ctx.store.compact_revision())
        else {
            continue;
        };
        plan.compacted(compacted);
        let Some(target) = plan.step(Instant::now(), revision) else {
            continue;
        };
        if ctx.node.shared().leader_id() != ctx.member_id {
            continue;
        }
        let request = pb::CompactionRequest {
            revision: target,
            physical: false,
        };
        let metadata = tonic::metadata::MetadataMap::new();
        match ctx
            .propose(
                &crate::auth::Caller::Server,
                &metadata,
                Op::Compaction(request),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(revision = target, "compacted automatically");
                plan.compacted(target);
            }
            Err(status) => {
                tracing::warn!(revision = target, %status, "automatic compaction failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_compacts_to_the_revision_of_one_retention_ago() {
        let retention = Duration::from_secs(100);
        let mut plan = Plan::new(AutoCompaction::Periodic(retention));
        assert_eq!(plan.interval(), Some(Duration::from_secs(10)));
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        assert_eq!(plan.step(at(0), 5), None);
        assert_eq!(
            plan.step(at(50), 40),
            None,
            "nothing is a retention old yet"
        );
        assert_eq!(plan.step(at(100), 90), Some(5));
        plan.compacted(5);
        assert_eq!(plan.step(at(120), 95), None, "40 is only 70 s old");
        assert_eq!(plan.step(at(150), 99), Some(40));
    }

    #[test]
    fn revision_mode_keeps_the_last_revisions() {
        let mut plan = Plan::new(AutoCompaction::Revision(1000));
        let now = Instant::now();
        assert_eq!(plan.step(now, 900), None);
        assert_eq!(plan.step(now, 1500), Some(500));
        plan.compacted(500);
        assert_eq!(plan.step(now, 1500), None, "already compacted there");
        assert_eq!(plan.step(now, 1600), Some(600));
    }

    #[test]
    fn off_never_compacts() {
        let mut plan = Plan::new(AutoCompaction::Off);
        assert_eq!(plan.interval(), None);
        assert_eq!(plan.step(Instant::now(), 1_000_000), None);
    }

    #[test]
    fn long_retentions_step_at_most_hourly() {
        let plan = Plan::new(AutoCompaction::Periodic(Duration::from_secs(72 * 3600)));
        assert_eq!(plan.interval(), Some(Duration::from_secs(3600)));
    }
}
