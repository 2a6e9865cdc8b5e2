//! ReadIndex bookkeeping: linearizable reads without writing to the log.
//!
//! A read asks the leader for its commit index, then waits until the leader
//! has proven it was still the leader when it was asked (Raft thesis §6.4).
//! Proof comes in numbered rounds: every read joins the next round, the
//! round's number rides on a heartbeat, and once a quorum has echoed a round
//! every read of that round and of earlier rounds is safe. The highest round
//! a quorum echoed is computed exactly like a commit index.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::types::{Index, NodeId};

/// A read waiting for its round to be confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRead {
    /// The round that must be confirmed.
    pub round: u64,
    /// The commit index when the read arrived.
    pub index: Index,
    /// The requester's context.
    pub context: Bytes,
    /// Who asked: this node or a follower that forwarded the read.
    pub from: NodeId,
}

/// The reads a leader has in flight.
#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    /// The last round started.
    round: u64,
    /// The highest round each peer has echoed.
    acked: BTreeMap<NodeId, u64>,
    /// Reads in round order.
    queue: VecDeque<PendingRead>,
}

impl ReadOnly {
    /// Queues a read at `index` and returns the new round it joins.
    pub fn add_request(&mut self, index: Index, context: Bytes, from: NodeId) -> u64 {
        self.round += 1;
        self.queue.push_back(PendingRead {
            round: self.round,
            index,
            context,
            from,
        });
        self.round
    }

    /// The round that heartbeats should carry now (zero if nothing waits).
    pub fn current_round(&self) -> u64 {
        if self.queue.is_empty() {
            0
        } else {
            self.round
        }
    }

    /// Records that `from` echoed `round`.
    pub fn record_ack(&mut self, from: NodeId, round: u64) {
        if round == 0 || round > self.round {
            return;
        }
        let acked = self.acked.entry(from).or_insert(0);
        *acked = (*acked).max(round);
    }

    /// The highest round `id` echoed (the leader echoes every round at once).
    pub fn acked_round(&self, id: NodeId, leader: NodeId) -> u64 {
        if id == leader {
            self.round
        } else {
            self.acked.get(&id).copied().unwrap_or(0)
        }
    }

    /// Removes and returns the reads of rounds up to `confirmed`.
    pub fn release(&mut self, confirmed: u64) -> Vec<PendingRead> {
        let mut released = Vec::new();
        while self.queue.front().is_some_and(|r| r.round <= confirmed) {
            if let Some(read) = self.queue.pop_front() {
                released.push(read);
            }
        }
        released
    }

    /// Number of reads waiting.
    pub fn pending_count(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirming_a_round_releases_earlier_rounds_too() {
        let mut reads = ReadOnly::default();
        let first = reads.add_request(5, Bytes::from_static(b"a"), 1);
        let second = reads.add_request(6, Bytes::from_static(b"b"), 2);
        assert_eq!((first, second), (1, 2));
        assert_eq!(reads.current_round(), 2);
        assert!(reads.release(0).is_empty());
        let released = reads.release(2);
        assert_eq!(released.len(), 2);
        assert_eq!(released[0].index, 5);
        assert_eq!(reads.current_round(), 0);
    }

    #[test]
    fn acks_only_move_forward_and_ignore_unknown_rounds() {
        let mut reads = ReadOnly::default();
        reads.add_request(1, Bytes::new(), 1);
        reads.record_ack(2, 1);
        reads.record_ack(2, 0);
        reads.record_ack(3, 9);
        assert_eq!(reads.acked_round(2, 1), 1);
        assert_eq!(
            reads.acked_round(3, 1),
            0,
            "a round never started is ignored"
        );
        assert_eq!(
            reads.acked_round(1, 1),
            1,
            "the leader confirms its own rounds"
        );
    }
}
