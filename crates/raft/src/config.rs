//! The knobs of one Raft node, with their defaults and their limits.

use crate::error::{Error, Result};
use crate::types::NodeId;

/// How the leader confirms it is still the leader before serving a read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadOnlyOption {
    /// Each read-index round is confirmed by a heartbeat quorum. Safe under
    /// any clock behaviour.
    #[default]
    Safe,
    /// The leader serves reads on the strength of its lease: it stepped down
    /// otherwise within an election timeout (check-quorum). Saves a round
    /// trip but trusts that clocks run at about the same rate.
    LeaseBased,
}

/// Settings of one node. Times are in ticks; the application decides how long
/// a tick is.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; must not be zero.
    pub id: NodeId,
    /// Ticks without hearing from a leader before a follower campaigns. The
    /// actual timeout is drawn in `[election_tick, 2 * election_tick)`.
    /// Default 10.
    pub election_tick: u32,
    /// Ticks between the leader's heartbeats. Default 1.
    pub heartbeat_tick: u32,
    /// Run a pre-vote round before a real election, so a node that was cut
    /// off does not disrupt the cluster with a higher term when it returns.
    /// Default true.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; followers that heard from a leader within an election
    /// timeout refuse to vote for others. Default true.
    pub check_quorum: bool,
    /// How reads are confirmed. Default [`ReadOnlyOption::Safe`].
    pub read_only: ReadOnlyOption,
    /// Largest append message in bytes (at least one entry is always sent).
    /// Default 1 MiB.
    pub max_message_size_bytes: u64,
    /// Appends in flight per follower. Default 256.
    pub max_inflight_msgs: usize,
    /// Bytes in flight per follower; zero for no limit. Default 32 MiB.
    pub max_inflight_bytes: u64,
    /// Bytes of uncommitted entries the leader accepts before it drops
    /// proposals; zero for no limit. Default 64 MiB.
    pub max_uncommitted_entries_bytes: u64,
    /// Most committed entries handed out in one ready. Default 4096.
    pub max_committed_entries_per_ready: usize,
    /// Most bytes of committed entries handed out in one ready (at least one
    /// entry is always handed out). Default 64 MiB.
    pub max_committed_bytes_per_ready: u64,
    /// Drop proposals made on a follower instead of forwarding them to the
    /// leader. Default false.
    pub disable_proposal_forwarding: bool,
    /// Seed of this node's randomized election timeouts. Nodes of one
    /// cluster must use different seeds (the id is mixed in).
    pub seed: u64,
}

impl Config {
    /// The defaults for node `id`.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            read_only: ReadOnlyOption::Safe,
            max_message_size_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 * 1024 * 1024,
            max_uncommitted_entries_bytes: 64 * 1024 * 1024,
            max_committed_entries_per_ready: 4096,
            max_committed_bytes_per_ready: 64 * 1024 * 1024,
            disable_proposal_forwarding: false,
            seed: 0,
        }
    }

    /// Checks that the settings are usable together.
    pub fn validate(&self) -> Result<()> {
        let invalid = |why: &str| Err(Error::Config(why.to_string()));
        if self.id == crate::types::NO_NODE {
            return invalid("id must not be zero");
        }
        if self.heartbeat_tick == 0 {
            return invalid("heartbeat_tick must be positive");
        }
        if self.election_tick <= self.heartbeat_tick {
            return invalid("election_tick must be greater than heartbeat_tick");
        }
        if self.max_inflight_msgs == 0 {
            return invalid("max_inflight_msgs must be positive");
        }
        if self.max_committed_entries_per_ready == 0 {
            return invalid("max_committed_entries_per_ready must be positive");
        }
        if self.read_only == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return invalid("lease-based reads require check_quorum");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new(1).validate(), Ok(()));
    }

    #[test]
    fn invalid_settings_are_refused() {
        type Breaker = Box<dyn Fn(&mut Config)>;
        let cases: Vec<Breaker> = vec![
            Box::new(|c| c.id = 0),
            Box::new(|c| c.heartbeat_tick = 0),
            Box::new(|c| c.election_tick = c.heartbeat_tick),
            Box::new(|c| c.max_inflight_msgs = 0),
            Box::new(|c| c.max_committed_entries_per_ready = 0),
            Box::new(|c| {
                c.read_only = ReadOnlyOption::LeaseBased;
                c.check_quorum = false;
            }),
        ];
        for break_it in cases {
            let mut config = Config::new(1);
            break_it(&mut config);
            assert!(
                matches!(config.validate(), Err(Error::Config(_))),
                "{config:?}"
            );
        }
    }
}
