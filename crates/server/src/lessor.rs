//! Lease expiry, decided by the leader alone.
//!
//! Grants and revocations are replicated; *time* is not. Only the leader
//! tracks when each lease expires, and it carries an expiry out by proposing
//! a revocation, so every member deletes the lease's keys at the same point
//! of the log. A member that becomes leader starts every lease's clock from
//! its full TTL (as etcd 3.4 does), so a leader change can extend a lease
//! but never shorten it: a client that keeps a lease alive never loses it.

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
}

impl Clock {
    fn new(ttl: i64, now: Instant) -> Self {
        Self {
            ttl,
            expiry: now + seconds(ttl),
            revoke_retry_at: None,
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

    /// This member became leader: start every lease's clock now.
    pub fn promote(&self, leases: Vec<(i64, i64)>) {
        let now = Instant::now();
        self.with_state(|state| {
            state.leading = true;
            state.leases = leases
                .into_iter()
                .map(|(id, ttl)| (id, Clock::new(ttl, now)))
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

    /// A keep-alive: the lease's clock restarts. Returns its TTL, or `None`
    /// if the lease is unknown (or already expired).
    pub fn renew(&self, id: i64) -> Option<i64> {
        let now = Instant::now();
        self.with_state(|state| {
            let clock = state.leases.get_mut(&id)?;
            if !clock.alive(now) {
                return None;
            }
            clock.expiry = now + seconds(clock.ttl);
            Some(clock.ttl)
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
        lessor.promote(vec![(1, 10)]);
        assert_eq!(lessor.renew(1), Some(10));
        lessor.demote();
        assert_eq!(lessor.remaining(1), None);
    }

    #[test]
    fn expired_leases_are_reported_then_held_back_while_revoking() {
        let lessor = Lessor::default();
        lessor.promote(vec![(1, 0), (2, 100)]);
        assert_eq!(lessor.take_expired(Duration::from_secs(5)), vec![1]);
        assert!(
            lessor.take_expired(Duration::from_secs(5)).is_empty(),
            "not proposed twice at once"
        );
        assert_eq!(lessor.renew(1), None, "an expired lease cannot be renewed");
        lessor.revoked(1);
        assert_eq!(lessor.remaining(2).map(|(ttl, _)| ttl), Some(100));
    }
}
