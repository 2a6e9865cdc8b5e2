//! Lease expiry, decided by the leader alone.
//!
//! Grants and revocations are replicated; *time* is not. Only the leader
//! tracks when each lease expires, and it carries an expiry out by proposing
//! a revocation, so every member deletes the lease's keys at the same point
//! of the log. A member that becomes leader starts every lease's clock from
//! its last checkpoint (see [`crate::lease_checkpoint`]) or, for a lease
//! never checkpointed, from its full TTL, so a leader change extends a lease
//! by at most one checkpoint interval and never shortens it: a client that
//! keeps a lease alive never loses it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest TTL accepted, in seconds (etcd's limit).
pub const MAX_LEASE_TTL_SECONDS: i64 = 9_000_000_000;

/// One lease's clock.
#[derive(Debug, Clone, Copy)]
struct Clock {
    ttl: i64,
    expiry: Instant,
    /// Set once expired: the revocation is in flight, and will be proposed
    /// again at this instant if it has not been applied by then. An expired
    /// lease can no longer be renewed.
    revoke_retry_at: Option<Instant>,
    /// The log holds a checkpoint of this lease, which a renewal must clear.
    checkpointed: bool,
    /// When the lease's time left was last checkpointed (or its clock
    /// started).
    last_checkpoint: Instant,
}

impl Clock {
    fn new(ttl: i64, now: Instant) -> Self {
        Self::resumed(ttl, ttl, now)
    }

    /// A clock that starts with `left` of `ttl` seconds to go.
    fn resumed(ttl: i64, left: i64, now: Instant) -> Self {
        Self {
            ttl,
            expiry: now + seconds(left.clamp(0, ttl)),
            revoke_retry_at: None,
            checkpointed: left < ttl,
            last_checkpoint: now,
        }
    }

    fn alive(&self, now: Instant) -> bool {
        self.revoke_retry_at.is_none() && self.expiry > now
    }
}

#[derive(Debug, Default)]
struct State {
    leading: bool,
    leases: HashMap<i64, Clock>,
}

/// The leader's lease clocks.
#[derive(Debug, Default)]
pub struct Lessor {
    state: Mutex<State>,
}

impl Lessor {
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        match self.state.lock() {
            Ok(mut state) => f(&mut state),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// This member became leader: start every lease's clock now, from its
    /// checkpointed time left where there is one.
    pub fn promote(&self, leases: Vec<(i64, i64)>, checkpoints: &HashMap<i64, i64>) {
        let now = Instant::now();
        self.with_state(|state| {
            state.leading = true;
            state.leases = leases
                .into_iter()
                .map(|(id, ttl)| {
                    let left = checkpoints.get(&id).copied().unwrap_or(ttl);
                    (id, Clock::resumed(ttl, left, now))
                })
                .collect();
        });
    }

    /// This member stopped leading: it keeps no clocks.
    pub fn demote(&self) {
        self.with_state(|state| {
            state.leading = false;
            state.leases.clear();
        });
    }

    /// Whether this member keeps the clocks.
    pub fn is_leading(&self) -> bool {
        self.with_state(|state| state.leading)
    }

    /// A grant was applied.
    pub fn granted(&self, id: i64, ttl: i64) {
        self.with_state(|state| {
            if state.leading {
                state.leases.insert(id, Clock::new(ttl, Instant::now()));
            }
        });
    }

    /// A revocation was applied.
    pub fn revoked(&self, id: i64) {
        self.with_state(|state| {
            state.leases.remove(&id);
        });
    }

    /// A keep-alive: the lease's clock restarts. Returns its TTL and
    /// whether a checkpoint in the log must be cleared before answering,
    /// or `None` if the lease is unknown (or already expired).
    pub fn renew(&self, id: i64) -> Option<Renewal> {
        let now = Instant::now();
        self.with_state(|state| {
            let clock = state.leases.get_mut(&id)?;
            if !clock.alive(now) {
                return None;
            }
            clock.expiry = now + seconds(clock.ttl);
            clock.last_checkpoint = now;
            Some(Renewal {
                ttl: clock.ttl,
                clear_checkpoint: clock.checkpointed,
            })
        })
    }

    /// A checkpoint was applied: `remaining` seconds left, 0 for cleared.
    pub fn checkpointed(&self, id: i64, remaining: i64) {
        self.with_state(|state| {
            if let Some(clock) = state.leases.get_mut(&id) {
                clock.checkpointed = remaining > 0 && remaining < clock.ttl;
            }
        });
    }

    /// The leases due for a checkpoint, with their seconds left: those
    /// longer than `interval` whose time left was not recorded for an
    /// interval. Each is reported once per interval.
    pub fn take_checkpoints(&self, interval: Duration) -> Vec<(i64, i64)> {
        let now = Instant::now();
        self.with_state(|state| {
            let mut due = Vec::new();
            for (id, clock) in state.leases.iter_mut() {
                if !clock.alive(now)
                    || seconds(clock.ttl) <= interval
                    || now.duration_since(clock.last_checkpoint) < interval
                {
                    continue;
                }
                clock.last_checkpoint = now;
                let left = clock.expiry.saturating_duration_since(now);
                due.push((*id, (left.as_secs_f64().ceil() as i64).max(1)));
            }
            due.sort_unstable();
            due
        })
    }

    /// Granted TTL and seconds left, if the lease is alive.
    pub fn remaining(&self, id: i64) -> Option<(i64, i64)> {
        let now = Instant::now();
        self.with_state(|state| {
            let clock = state.leases.get(&id).filter(|c| c.alive(now))?;
            let left = clock.expiry.checked_duration_since(now)?;
            Some((clock.ttl, left.as_secs_f64().ceil() as i64))
        })
    }

    /// The leases whose time is up. Each is reported again only after
    /// `retry_after`, giving its revocation time to commit.
    pub fn take_expired(&self, retry_after: Duration) -> Vec<i64> {
        let now = Instant::now();
        self.with_state(|state| {
            let mut expired = Vec::new();
            for (id, clock) in state.leases.iter_mut() {
                let due = match clock.revoke_retry_at {
                    None => clock.expiry <= now,
                    Some(retry_at) => retry_at <= now,
                };
                if due {
                    expired.push(*id);
                    clock.revoke_retry_at = Some(now + retry_after);
                }
            }
            expired
        })
    }
}

/// What a keep-alive found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    /// The lease's TTL, now its time left.
    pub ttl: i64,
    /// The log holds an older checkpoint of this lease; it must be cleared
    /// before the keep-alive is answered.
    pub clear_checkpoint: bool,
}

fn seconds(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_leader_keeps_clocks() {
        let lessor = Lessor::default();
        lessor.granted(1, 10);
        assert_eq!(lessor.renew(1), None, "a follower tracks nothing");
        lessor.promote(vec![(1, 10)], &HashMap::new());
        assert_eq!(lessor.renew(1).map(|r| r.ttl), Some(10));
        lessor.demote();
        assert_eq!(lessor.remaining(1), None);
    }

    #[test]
    fn expired_leases_are_reported_then_held_back_while_revoking() {
        let lessor = Lessor::default();
        lessor.promote(vec![(1, 0), (2, 100)], &HashMap::new());
        assert_eq!(lessor.take_expired(Duration::from_secs(5)), vec![1]);
        assert!(
            lessor.take_expired(Duration::from_secs(5)).is_empty(),
            "not proposed twice at once"
        );
        assert_eq!(lessor.renew(1), None, "an expired lease cannot be renewed");
        lessor.revoked(1);
        assert_eq!(lessor.remaining(2).map(|(ttl, _)| ttl), Some(100));
    }

    #[test]
    fn a_new_leader_resumes_from_checkpoints_and_renewals_clear_them() {
        let lessor = Lessor::default();
        lessor.promote(vec![(1, 100), (2, 100)], &HashMap::from([(1, 30)]));
        let (ttl, left) = lessor.remaining(1).unwrap();
        assert_eq!(ttl, 100);
        assert!(
            left <= 30,
            "resumed from the checkpoint, not the TTL: {left}"
        );
        assert_eq!(lessor.remaining(2).unwrap().1, 100);
        assert_eq!(
            lessor.renew(1),
            Some(Renewal {
                ttl: 100,
                clear_checkpoint: true
            })
        );
        lessor.checkpointed(1, 0);
        assert!(!lessor.renew(1).unwrap().clear_checkpoint);
    }

    #[test]
    fn only_leases_longer_than_the_interval_are_checkpointed_once_per_interval() {
        let lessor = Lessor::default();
        lessor.promote(vec![(1, 100), (2, 1000)], &HashMap::new());
        let due = lessor.take_checkpoints(Duration::from_secs(200));
        assert_eq!(due.len(), 0, "none checkpointed before an interval passed");
        let interval = Duration::from_millis(30);
        std::thread::sleep(interval);
        let due = lessor.take_checkpoints(interval);
        assert_eq!(
            due.iter().map(|&(id, _)| id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(due[0].1 <= 100 && due[0].1 >= 99, "{due:?}");
        assert!(
            lessor.take_checkpoints(interval).is_empty(),
            "just checkpointed"
        );
    }
}
