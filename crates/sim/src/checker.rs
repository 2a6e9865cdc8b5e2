//! The safety properties of Raft (paper Figure 3) and of linearizable
//! reads, checked incrementally while a simulation runs.
//!
//! The checker keeps an oracle: the one committed log every node must agree
//! with, built from what nodes commit and apply. Each property is checked
//! when the data it concerns changes, which is cheap enough to do after
//! every step of every run.

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_raft::{Entry, Index, NodeId, RaftLog, Term};

/// A broken property, with enough detail to find the step that broke it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Two nodes led the same term.
    #[error("election safety: nodes {first} and {second} both led term {term}")]
    TwoLeaders {
        /// The term.
        term: Term,
        /// The first leader seen.
        first: NodeId,
        /// The second.
        second: NodeId,
    },
    /// Two logs hold the same (index, term) with different contents or
    /// different predecessors.
    #[error("log matching: node {node} has entry {index} of term {term} unlike another node's")]
    LogMatching {
        /// The node whose entry differs.
        node: NodeId,
        /// The index.
        index: Index,
        /// The term.
        term: Term,
    },
    /// A leader lacks a committed entry.
    #[error("leader completeness: leader {node} of term {term} lacks committed entry {index}")]
    LeaderCompleteness {
        /// The leader.
        node: NodeId,
        /// Its term.
        term: Term,
        /// The missing committed index.
        index: Index,
    },
    /// Two nodes committed or applied different entries at one index.
    #[error("state machine safety: node {node} committed or applied a different entry at {index}")]
    StateMachineSafety {
        /// The node.
        node: NodeId,
        /// The index.
        index: Index,
    },
    /// A read returned state older than a write committed before it began.
    #[error(
        "stale read {read}: served at index {served}, but {committed} was committed when it began"
    )]
    StaleRead {
        /// The read id.
        read: u64,
        /// The index the read was served at.
        served: Index,
        /// The commit index when the read was issued.
        committed: Index,
    },
    /// A committed entry is no longer durable on a quorum.
    #[error("lost committed entry {index}: durable on {copies} nodes only")]
    LostCommit {
        /// The index.
        index: Index,
        /// How many nodes still hold it.
        copies: usize,
    },
    /// The cluster did not recover after faults stopped.
    #[error("liveness: {0}")]
    Liveness(String),
}

/// The oracle and the bookkeeping the properties need.
#[derive(Debug, Default)]
pub struct Checker {
    /// The leader of each term seen so far.
    leaders: BTreeMap<Term, NodeId>,
    /// Every (index, term) seen in any log, with its payload and the term
    /// of the entry before it.
    entries_seen: BTreeMap<(Index, Term), (Bytes, Term)>,
    /// The committed log: index to (term, payload, commit bound). The
    /// bound is the lowest term in which any node knew the entry committed:
    /// the entry was committed in that term or earlier, so every leader of
    /// a later term must hold it (leader completeness, Raft §5.4).
    committed: BTreeMap<Index, (Term, Bytes, Term)>,
    /// The highest committed index any node has reported.
    pub committed_index: Index,
}

impl Checker {
    /// Records that `node` leads `term`.
    pub fn observe_leader(&mut self, node: NodeId, term: Term) -> Result<(), Violation> {
        match self.leaders.get(&term) {
            Some(&first) if first != node => Err(Violation::TwoLeaders {
                term,
                first,
                second: node,
            }),
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(term, node);
                Ok(())
            }
        }
    }

    /// Checks entries a node is about to persist against every log seen.
    /// `prev_term` gives the term of the entry before the first one.
    pub fn observe_appended(
        &mut self,
        node: NodeId,
        entries: &[Entry],
        mut prev_term: Term,
    ) -> Result<(), Violation> {
        for entry in entries {
            let key = (entry.index, entry.term);
            match self.entries_seen.get(&key) {
                Some((data, seen_prev)) if *data != entry.data || *seen_prev != prev_term => {
                    return Err(Violation::LogMatching {
                        node,
                        index: entry.index,
                        term: entry.term,
                    });
                }
                Some(_) => {}
                None => {
                    self.entries_seen
                        .insert(key, (entry.data.clone(), prev_term));
                }
            }
            prev_term = entry.term;
        }
        Ok(())
    }

    /// Records that `node` now knows everything in `(from, commit]` is
    /// committed, reading those entries from its log, and checks them
    /// against the committed log.
    pub fn observe_commit(
        &mut self,
        node: NodeId,
        node_term: Term,
        log: &RaftLog,
        from: Index,
        commit: Index,
    ) -> Result<(), Violation> {
        let low = (from + 1).max(log.first_index());
        if low <= commit {
            for entry in log.slice(low, commit + 1, u64::MAX).unwrap_or_default() {
                self.record_committed(node, node_term, &entry)?;
            }
        }
        self.committed_index = self.committed_index.max(commit);
        Ok(())
    }

    /// Checks an entry a node applies against the committed log.
    pub fn observe_applied(
        &mut self,
        node: NodeId,
        node_term: Term,
        entry: &Entry,
    ) -> Result<(), Violation> {
        self.record_committed(node, node_term, entry)?;
        self.committed_index = self.committed_index.max(entry.index);
        Ok(())
    }

    fn record_committed(
        &mut self,
        node: NodeId,
        node_term: Term,
        entry: &Entry,
    ) -> Result<(), Violation> {
        match self.committed.get_mut(&entry.index) {
            Some((term, data, _)) if *term != entry.term || *data != entry.data => {
                Err(Violation::StateMachineSafety {
                    node,
                    index: entry.index,
                })
            }
            Some((_, _, bound)) => {
                *bound = (*bound).min(node_term);
                Ok(())
            }
            None => {
                self.committed
                    .insert(entry.index, (entry.term, entry.data.clone(), node_term));
                Ok(())
            }
        }
    }

    /// Checks that a leader's log holds every committed entry.
    pub fn check_leader_complete(
        &self,
        node: NodeId,
        term: Term,
        log: &RaftLog,
    ) -> Result<(), Violation> {
        let (snapshot_index, _) = log.snapshot_position();
        for (&index, &(committed_term, _, bound)) in self.committed.range(snapshot_index + 1..) {
            if bound < term && log.term(index) != Some(committed_term) {
                return Err(Violation::LeaderCompleteness { node, term, index });
            }
        }
        Ok(())
    }

    /// The committed entry at `index`, if known.
    pub fn committed_entry(&self, index: Index) -> Option<(Term, &Bytes)> {
        self.committed
            .get(&index)
            .map(|(term, data, _)| (*term, data))
    }

    /// Number of committed entries known.
    pub fn committed_len(&self) -> usize {
        self.committed.len()
    }

    /// Number of distinct terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }
}
