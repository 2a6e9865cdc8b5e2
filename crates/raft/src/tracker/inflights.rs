//! The window of appends sent to one follower and not yet acknowledged.
//!
//! A leader in the replicate state pipelines appends without waiting for each
//! answer; this window bounds that pipeline by message count and by bytes, so
//! a slow follower cannot make the leader queue unbounded data for it.

use std::collections::VecDeque;

use crate::types::Index;

/// Appends in flight to one follower, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inflights {
    /// `(last index of the append, its size in bytes)`, in send order.
    window: VecDeque<(Index, u64)>,
    count_max: usize,
    size_bytes_max: u64,
    size_bytes: u64,
}

impl Inflights {
    /// An empty window holding at most `count_max` appends and
    /// `size_bytes_max` bytes (zero means no byte limit).
    pub fn new(count_max: usize, size_bytes_max: u64) -> Self {
        debug_assert!(count_max > 0, "an inflight window must admit one append");
        Self {
            window: VecDeque::with_capacity(count_max.min(64)),
            count_max,
            size_bytes_max,
            size_bytes: 0,
        }
    }

    /// Records an append whose last entry is `last_index`. Indexes must grow.
    pub fn add(&mut self, last_index: Index, size_bytes: u64) {
        debug_assert!(
            self.window
                .back()
                .is_none_or(|&(last, _)| last < last_index),
            "inflight appends must be recorded in index order"
        );
        self.window.push_back((last_index, size_bytes));
        self.size_bytes += size_bytes;
    }

    /// Forgets every append whose last entry is at or below `index`: the
    /// follower acknowledged them.
    pub fn free_le(&mut self, index: Index) {
        while let Some(&(last, size)) = self.window.front() {
            if last > index {
                break;
            }
            self.size_bytes -= size;
            self.window.pop_front();
        }
    }

    /// Whether no further append may be sent.
    pub fn full(&self) -> bool {
        self.window.len() >= self.count_max
            || (self.size_bytes_max > 0 && self.size_bytes >= self.size_bytes_max)
    }

    /// Number of appends in flight.
    pub fn count(&self) -> usize {
        self.window.len()
    }

    /// Bytes in flight.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Forgets everything (the follower's state was reset).
    pub fn reset(&mut self) {
        self.window.clear();
        self.size_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fills_by_count() {
        let mut window = Inflights::new(3, 0);
        for index in 1..=3 {
            assert!(!window.full());
            window.add(index, 10);
        }
        assert!(window.full());
        window.free_le(1);
        assert!(!window.full());
        assert_eq!(window.count(), 2);
    }

    #[test]
    fn window_fills_by_bytes() {
        let mut window = Inflights::new(100, 1000);
        window.add(5, 600);
        assert!(!window.full());
        window.add(9, 400);
        assert!(window.full(), "1000 bytes in flight reach the byte limit");
        window.free_le(5);
        assert_eq!(window.size_bytes(), 400);
        assert!(!window.full());
    }

    #[test]
    fn free_le_releases_everything_acknowledged() {
        let mut window = Inflights::new(10, 0);
        for index in [2, 4, 6, 8] {
            window.add(index, 1);
        }
        window.free_le(5);
        assert_eq!(window.count(), 2);
        window.free_le(100);
        assert_eq!(window.count(), 0);
        assert_eq!(window.size_bytes(), 0);
    }
}
