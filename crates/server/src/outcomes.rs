//! The exactly-once table: the outcomes of recent client writes, so a
//! retried write is answered with its first outcome instead of applied again
//! (see [`crate::grpc::kv`] for the metadata that names a request).
//!
//! Outcomes are forgotten after a TTL, and every member must forget the
//! same ones at the same log position, or a retry could be applied on one
//! member and answered from the table on another. So nothing here reads a
//! member's wall clock, which an operator or NTP can step at any time:
//!
//! - Time is the *cluster clock*: each request carries its proposer's
//!   reading of it, and applying a request moves the replicated clock to
//!   the largest reading seen so far (persisted with the entry, so it never
//!   goes back). An outcome is aged from the replicated clock at its apply,
//!   not from its proposer's reading, so a member whose reading lags cannot
//!   make its outcomes look old.
//! - A member reads the cluster clock as the last replicated value it
//!   applied plus the time its *monotonic* clock has measured since, so a
//!   wall-clock jump on any member changes nothing. While the whole cluster
//!   is down the clock stands still, which only keeps outcomes longer.
//! - Forgetting is itself replicated: the leader proposes
//!   [`ForgetOutcomes`] with its TTL once some outcome has outlived it, and
//!   every member deletes what is older than the TTL by the replicated
//!   clock at that entry.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use raftkv_mvcc::{Batch, MvccError, Store};

use crate::grpc::ServiceContext;
use crate::replicated::{replicated_request::Op, ForgetOutcomes, Outcome};

/// Namespace of the exactly-once table in the store's aux records.
pub const OUTCOMES: &str = "outcome";
/// Namespace of the replicated cluster clock (one record).
pub const CLOCK: &str = "outcome_clock";
const CLOCK_KEY: &[u8] = b"ms";
/// Outcomes kept per client: a client may have this many writes in flight
/// and still retry each of them exactly once.
pub const OUTCOMES_PER_CLIENT: u64 = 64;
/// How long outcomes are kept unless `--request-outcome-ttl` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// This member's reading of the cluster clock, in milliseconds.
#[derive(Debug)]
pub struct ClusterClock {
    /// The replicated value last seen, and when (by the monotonic clock).
    base: Mutex<(u64, Instant)>,
}

impl ClusterClock {
    /// A clock that reads `replicated_ms` now.
    pub fn new(replicated_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            base: Mutex::new((replicated_ms, Instant::now())),
        })
    }

    /// The cluster clock now, as this member measures it.
    pub fn now_ms(&self) -> u64 {
        let (ms, at) = *self.base.lock().unwrap_or_else(|e| e.into_inner());
        ms.saturating_add(at.elapsed().as_millis() as u64)
    }

    /// The replicated clock reached `replicated_ms`: read from there if it
    /// is ahead of this member's reading. Never moves the reading back.
    pub fn observe(&self, replicated_ms: u64) {
        let mut base = self.base.lock().unwrap_or_else(|e| e.into_inner());
        let (ms, at) = *base;
        if replicated_ms > ms.saturating_add(at.elapsed().as_millis() as u64) {
            *base = (replicated_ms, Instant::now());
        }
    }
}

/// The replicated clock as last applied to `store` (0 for a new cluster).
pub fn load_clock(store: &Store) -> Result<u64, MvccError> {
    let stored = store
        .aux_scan(CLOCK)?
        .into_iter()
        .find(|(key, _)| key.as_slice() == CLOCK_KEY)
        .and_then(|(_, value)| Some(u64::from_le_bytes(value.as_slice().try_into().ok()?)));
    if let Some(ms) = stored {
        return Ok(ms);
    }
    // Stores written before the clock was replicated aged outcomes by the
    // proposers' wall clocks; go on from the newest of those.
    Ok(store
        .aux_scan(OUTCOMES)?
        .iter()
        .filter_map(|(_, stored)| decode(stored).map(|(_, at_ms, _)| at_ms))
        .max()
        .unwrap_or(0))
}

/// Records the replicated clock as of the current entry.
pub fn store_clock(batch: &mut Batch<'_>, ms: u64) -> Result<(), MvccError> {
    batch.aux_put(CLOCK, CLOCK_KEY, &ms.to_le_bytes())
}

/// The slot of a request: per client, a ring of [`OUTCOMES_PER_CLIENT`]
/// slots indexed by sequence number.
fn slot(client_id: u64, sequence: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&client_id.to_be_bytes());
    key[8..].copy_from_slice(&(sequence % OUTCOMES_PER_CLIENT).to_be_bytes());
    key
}

/// A stored outcome: sequence, clock at apply, then the encoded [`Outcome`].
fn encode(sequence: u64, at_ms: u64, outcome: &Outcome) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + outcome.encoded_len());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&at_ms.to_le_bytes());
    outcome.encode(&mut out).unwrap_or_default();
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, u64, Outcome)> {
    let sequence = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let at_ms = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    let outcome = Outcome::decode(bytes.get(16..)?).ok()?;
    Some((sequence, at_ms, outcome))
}

/// What the table knows of a request.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// Not applied yet, as far as the table can tell.
    New,
    /// Applied, with this first outcome.
    Applied(Outcome),
    /// Its slot holds a later request of the same client: it is at least
    /// [`OUTCOMES_PER_CLIENT`] requests old, and whether it was applied is
    /// no longer known. Such a request (a copy the network delivered late,
    /// say) must not be applied.
    Superseded,
}

/// What the table knows of the request `sequence` of `client_id`.
pub fn lookup(batch: &Batch<'_>, client_id: u64, sequence: u64) -> Result<Seen, MvccError> {
    let stored = batch
        .aux_get(OUTCOMES, &slot(client_id, sequence))?
        .as_deref()
        .and_then(decode);
    Ok(match stored {
        Some((stored, _, outcome)) if stored == sequence => Seen::Applied(outcome),
        Some((stored, _, _)) if stored > sequence => Seen::Superseded,
        _ => Seen::New,
    })
}

/// Remembers a request's outcome, applied when the replicated clock read
/// `clock_ms`.
pub fn record(
    batch: &mut Batch<'_>,
    client_id: u64,
    sequence: u64,
    clock_ms: u64,
    outcome: &Outcome,
) -> Result<(), MvccError> {
    batch.aux_put(
        OUTCOMES,
        &slot(client_id, sequence),
        &encode(sequence, clock_ms, outcome),
    )
}

/// Applies [`ForgetOutcomes`]: forgets the outcomes older than its TTL by
/// the replicated clock `clock_ms`. Returns how many were forgotten.
pub fn forget(
    batch: &mut Batch<'_>,
    request: &ForgetOutcomes,
    clock_ms: u64,
) -> Result<usize, MvccError> {
    let before_ms = clock_ms.saturating_sub(request.ttl_ms);
    let expired: Vec<Vec<u8>> = batch
        .aux_scan(OUTCOMES)?
        .into_iter()
        .filter(|(_, stored)| decode(stored).is_some_and(|(_, at_ms, _)| at_ms < before_ms))
        .map(|(key, _)| key)
        .collect();
    for key in &expired {
        batch.aux_delete(OUTCOMES, key)?;
    }
    if !expired.is_empty() {
        tracing::debug!(expired = expired.len(), "forgot expired request outcomes");
    }
    Ok(expired.len())
}

/// Whether some outcome in `store` is older than `before_ms`.
fn any_older(store: &Store, before_ms: u64) -> Result<bool, MvccError> {
    Ok(store
        .aux_scan(OUTCOMES)?
        .iter()
        .any(|(_, stored)| decode(stored).is_some_and(|(_, at_ms, _)| at_ms < before_ms)))
}

/// How often the leader looks for outcomes to forget: a fraction of the
/// TTL, so an outcome lives at most about 1.25 TTLs.
pub fn check_interval(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// While this member leads, proposes [`ForgetOutcomes`] whenever some
/// outcome has outlived `ttl` by the cluster clock. Runs until the server
/// stops.
pub async fn run_expiry(ctx: ServiceContext, clock: Arc<ClusterClock>, ttl: Duration) {
    let ttl_ms = ttl.as_millis() as u64;
    let mut interval = tokio::time::interval(check_interval(ttl));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if ctx.node.shared().leader_id() != ctx.member_id {
            continue;
        }
        let before_ms = clock.now_ms().saturating_sub(ttl_ms);
        match any_older(&ctx.store, before_ms) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(err) => {
                tracing::warn!(%err, "could not read the exactly-once table");
                continue;
            }
        }
        let metadata = tonic::metadata::MetadataMap::new();
        // A lost proposal only means the outcomes go at the next check.
        if let Err(status) = ctx
            .propose(
                &crate::auth::Caller::Server,
                &metadata,
                Op::ForgetOutcomes(ForgetOutcomes { ttl_ms }),
            )
            .await
        {
            tracing::debug!(%status, "forgetting expired outcomes not committed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicated::outcome;

    fn open_store(dir: &tempfile::TempDir) -> Store {
        Store::open(raftkv_mvcc::Config::new(dir.path().join("kv.redb"))).expect("store")
    }

    fn put_outcome(revision: i64) -> Outcome {
        Outcome {
            revision,
            user: String::new(),
            result: Some(outcome::Result::Put(Default::default())),
        }
    }

    #[test]
    fn the_reading_follows_the_monotonic_clock_and_never_goes_back() {
        let clock = ClusterClock::new(5_000);
        let first = clock.now_ms();
        assert!(first >= 5_000);
        clock.observe(1_000);
        assert!(clock.now_ms() >= first, "an older value is ignored");
        clock.observe(90_000);
        let after = clock.now_ms();
        assert!((90_000..91_000).contains(&after), "{after}");
        std::thread::sleep(Duration::from_millis(20));
        assert!(clock.now_ms() >= after + 20);
    }

    #[test]
    fn outcomes_are_found_by_sequence_and_forgotten_by_the_replicated_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(&dir);
        store
            .apply(|batch| {
                assert!(batch.begin_entry(1, 1));
                record(batch, 7, 1, 1_000, &put_outcome(2))?;
                record(batch, 7, 2, 5_000, &put_outcome(3))?;
                // Sequence 65 shares sequence 1's slot and replaces it.
                record(batch, 8, 65, 1_000, &put_outcome(4))?;
                store_clock(batch, 5_000)?;
                assert_eq!(lookup(batch, 7, 1)?, Seen::Applied(put_outcome(2)));
                assert_eq!(lookup(batch, 7, 3)?, Seen::New);
                assert_eq!(lookup(batch, 8, 1)?, Seen::Superseded, "65 took its slot");
                assert_eq!(lookup(batch, 8, 129)?, Seen::New, "after 65 in the slot");
                Ok(())
            })
            .expect("apply");
        assert_eq!(load_clock(&store).expect("clock"), 5_000);
        assert!(any_older(&store, 2_000).expect("scan"));
        store
            .apply(|batch| {
                assert!(batch.begin_entry(2, 1));
                let forgotten = forget(batch, &ForgetOutcomes { ttl_ms: 3_000 }, 5_000)?;
                assert_eq!(forgotten, 2, "the two outcomes applied at 1000");
                assert_eq!(lookup(batch, 7, 1)?, Seen::New);
                assert_eq!(lookup(batch, 7, 2)?, Seen::Applied(put_outcome(3)));
                Ok(())
            })
            .expect("apply");
        assert!(!any_older(&store, 2_000).expect("scan"));
    }

    #[test]
    fn a_store_from_before_the_replicated_clock_goes_on_from_its_newest_outcome() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(&dir);
        assert_eq!(load_clock(&store).expect("clock"), 0, "a new cluster");
        store
            .apply(|batch| {
                assert!(batch.begin_entry(1, 1));
                record(batch, 7, 1, 1_700_000_000_000, &put_outcome(2))?;
                record(batch, 7, 2, 1_700_000_000_500, &put_outcome(3))
            })
            .expect("apply");
        assert_eq!(load_clock(&store).expect("clock"), 1_700_000_000_500);
    }

    #[test]
    fn the_check_interval_is_a_quarter_of_the_ttl_within_bounds() {
        assert_eq!(
            check_interval(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            check_interval(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
        assert_eq!(
            check_interval(Duration::from_secs(600)),
            Duration::from_secs(30)
        );
    }
}
