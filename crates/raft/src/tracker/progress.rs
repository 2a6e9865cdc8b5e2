//! What the leader knows about one follower's log, and how it paces appends.
//!
//! ```text
//!            reject / unreachable               snapshot needed
//!   Replicate ──────────────────────▶ Probe ─────────────────────▶ Snapshot
//!       ▲                              │  ▲                            │
//!       └──────── append accepted ─────┘  └── snapshot applied/failed ─┘
//! ```
//!
//! In `Probe` the leader sends one append at a time until it finds where the
//! logs match; in `Replicate` it streams appends optimistically within the
//! inflight window; in `Snapshot` it sends nothing until the snapshot is done.

use super::inflights::Inflights;
use crate::types::Index;

/// The replication state of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Looking for the point where the follower's log matches.
    Probe,
    /// Streaming appends; `next` runs ahead of `matched`.
    Replicate,
    /// Waiting for a snapshot up to `pending_snapshot` to be installed.
    Snapshot,
}

/// The leader's view of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The highest index known to be replicated on the follower.
    pub matched: Index,
    /// The next index to send.
    pub next: Index,
    /// How appends are paced.
    pub state: ProgressState,
    /// In `Snapshot` state, the index of the snapshot being sent.
    pub pending_snapshot: Index,
    /// Whether the follower was heard from since the last quorum check.
    pub recent_active: bool,
    /// Appends are paused until the follower answers: in `Probe` state after
    /// each append, in `Replicate` state when the inflight window is full. A
    /// heartbeat response lifts the pause, so one append goes out even past a
    /// full window; if the whole window was lost, the follower rejects that
    /// append and the leader starts probing again instead of waiting forever.
    pub paused: bool,
    /// Appends in flight in `Replicate` state.
    pub inflights: Inflights,
    /// Whether the node is a learner (receives the log, never votes).
    pub is_learner: bool,
}

impl Progress {
    /// A follower about which nothing is known yet: probe from `next`.
    pub fn new(next: Index, inflight_count_max: usize, inflight_bytes_max: u64) -> Self {
        Self {
            matched: 0,
            next: next.max(1),
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            paused: false,
            inflights: Inflights::new(inflight_count_max, inflight_bytes_max),
            is_learner: false,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.paused = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    /// Starts probing from just after the last known match (or just after
    /// the snapshot that was being sent).
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next = self.matched + 1;
        }
    }

    /// Starts streaming from just after the match.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    /// Stops appends until a snapshot at `snapshot_index` is installed.
    pub fn become_snapshot(&mut self, snapshot_index: Index) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// Records that the follower has everything up to `index`. Returns whether
    /// the match moved (a stale acknowledgement leaves it alone).
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = self.matched < index;
        if updated {
            self.matched = index;
            self.paused = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// Accounts for an append of `count` entries ending at `last_index`.
    pub fn sent_entries(&mut self, count: usize, last_index: Index, size_bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if count > 0 {
                    self.next = last_index + 1;
                    self.inflights.add(last_index, size_bytes);
                }
                self.paused = self.inflights.full();
            }
            ProgressState::Probe => self.paused = true,
            ProgressState::Snapshot => {
                debug_assert!(
                    false,
                    "no append is sent to a follower receiving a snapshot"
                );
            }
        }
    }

    /// Moves `next` back after the follower rejected an append at
    /// `rejected`; `match_hint` is the highest index that may still match.
    /// Returns false if the rejection is stale and was ignored.
    pub fn maybe_decr_to(&mut self, rejected: Index, match_hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            // Appends are pipelined: a rejection of an index at or below the
            // match answers an older append and says nothing new.
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        // In probe state only the one outstanding append is answered.
        if self.next.saturating_sub(1) != rejected {
            return false;
        }
        self.next = rejected.min(match_hint + 1).max(self.matched + 1).max(1);
        self.paused = false;
        true
    }

    /// Whether the leader should hold appends to this follower for now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe | ProgressState::Replicate => self.paused,
            ProgressState::Snapshot => true,
        }
    }

    /// Records that the follower acknowledged appends up to `index`, which
    /// frees room in the window.
    pub fn free_inflights(&mut self, index: Index) {
        self.inflights.free_le(index);
        self.paused = self.inflights.full();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(matched: Index, next: Index, state: ProgressState) -> Progress {
        let mut pr = Progress::new(next, 4, 0);
        pr.matched = matched;
        pr.state = state;
        pr
    }

    #[test]
    fn probe_pauses_after_one_append_until_answered() {
        let mut pr = progress(0, 5, ProgressState::Probe);
        assert!(!pr.is_paused());
        pr.sent_entries(3, 7, 30);
        assert!(pr.is_paused());
        assert_eq!(pr.next, 5, "probing does not advance next optimistically");
        assert!(pr.maybe_update(7));
        assert!(!pr.is_paused());
        assert_eq!(pr.next, 8);
    }

    #[test]
    fn replicate_advances_optimistically_and_pauses_on_full_window() {
        let mut pr = progress(5, 6, ProgressState::Replicate);
        for last in [7, 9, 11, 13] {
            assert!(!pr.is_paused());
            pr.sent_entries(2, last, 20);
        }
        assert_eq!(pr.next, 14);
        assert!(pr.is_paused(), "four appends fill a window of four");
        pr.free_inflights(9);
        assert!(!pr.is_paused());
    }

    #[test]
    fn heartbeat_response_lets_one_append_past_a_full_window() {
        let mut pr = progress(5, 6, ProgressState::Replicate);
        for last in [7, 9, 11, 13] {
            pr.sent_entries(2, last, 20);
        }
        assert!(pr.is_paused());
        // Every append in the window may have been lost: a heartbeat answer
        // must allow another append, whose rejection exposes the gap.
        pr.paused = false;
        assert!(!pr.is_paused());
        pr.sent_entries(1, 14, 10);
        assert!(pr.is_paused());
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut pr = progress(10, 15, ProgressState::Replicate);
        assert!(!pr.maybe_decr_to(9, 9), "rejection below match is stale");
        assert!(pr.maybe_decr_to(12, 11));
        assert_eq!(pr.next, 11);

        let mut pr = progress(0, 10, ProgressState::Probe);
        assert!(
            !pr.maybe_decr_to(5, 5),
            "probe only believes a rejection of next-1"
        );
        assert!(pr.maybe_decr_to(9, 3));
        assert_eq!(pr.next, 4, "the hint lets the leader skip back at once");
    }

    #[test]
    fn probe_never_goes_below_match_plus_one() {
        let mut pr = progress(6, 10, ProgressState::Probe);
        assert!(pr.maybe_decr_to(9, 0));
        assert_eq!(pr.next, 7);
    }

    #[test]
    fn snapshot_state_resumes_after_the_snapshot() {
        let mut pr = progress(3, 4, ProgressState::Probe);
        pr.become_snapshot(20);
        assert!(pr.is_paused());
        pr.become_probe();
        assert_eq!(pr.next, 21);
    }
}
