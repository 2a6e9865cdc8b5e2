//! The watch hub: what each applied batch changed, fanned out to every
//! watch stream.
//!
//! The state machine publishes the events of every batch it applies, with
//! the store revision after it. Streams that keep up receive them from the
//! hub; a stream that falls behind the hub's bounded buffer catches up from
//! the store's history instead (see `grpc::watch`), so a slow watcher costs
//! no unbounded memory.

use std::sync::Arc;

use raftkv_mvcc::Event;
use tokio::sync::broadcast;

/// Batches kept for streams that are momentarily behind.
const HUB_BATCHES: usize = 1024;

/// The events of one applied batch.
#[derive(Debug)]
pub struct AppliedEvents {
    /// The store revision after the batch.
    pub revision: i64,
    /// The changes, in revision order.
    pub events: Vec<Event>,
}

/// Fans applied events out to watch streams.
#[derive(Clone, Debug)]
pub struct WatchHub {
    sender: broadcast::Sender<Arc<AppliedEvents>>,
}

impl Default for WatchHub {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchHub {
    /// A hub with no subscribers.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(HUB_BATCHES);
        Self { sender }
    }

    /// Publishes a batch's events (nobody listening is fine).
    pub fn publish(&self, revision: i64, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let _ = self
            .sender
            .send(Arc::new(AppliedEvents { revision, events }));
    }

    /// A new subscription, receiving batches published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppliedEvents>> {
        self.sender.subscribe()
    }
}
