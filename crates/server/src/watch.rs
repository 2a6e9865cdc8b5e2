//! The watch hub: what each applied batch changed, fanned out to every
//! watch stream.
//!
//! The state machine publishes the events of every batch it applies, with
//! the store revision after it. Streams that keep up receive them from the
//! hub; a stream that falls behind the hub's bounded buffer catches up from
//! the store's history instead (see `grpc::watch`), so a slow watcher costs
//! no unbounded memory.
//!
//! Events carry the kv before each change only while some watcher asked for
//! it (`prev_kv`): reading it costs every put a read of the record it
//! replaces. A watcher that asked gets a batch published without them from
//! the store's history instead, which happens only for batches applied
//! around the moment it was created.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
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
    /// Whether the events carry `prev_kv`.
    pub with_prev_kv: bool,
}

/// Fans applied events out to watch streams.
#[derive(Clone, Debug)]
pub struct WatchHub {
    sender: broadcast::Sender<Arc<AppliedEvents>>,
    /// Watchers, on any stream, that asked for the kv before each change.
    prev_kv_watchers: Arc<AtomicUsize>,
    /// Bytes of responses streams hold for their clients (`/metrics`).
    buffered_bytes: Gauge,
}

/// Held by a watcher that asked for `prev_kv`: while any is held, applied
/// batches record it.
#[derive(Debug)]
pub struct PrevKvInterest(Arc<AtomicUsize>);

impl Drop for PrevKvInterest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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
        Self {
            sender,
            prev_kv_watchers: Arc::new(AtomicUsize::new(0)),
            buffered_bytes: Gauge::default(),
        }
    }

    /// The hub, counting what streams hold for their clients in `gauge`.
    pub fn with_buffer_gauge(self, gauge: Gauge) -> Self {
        Self {
            buffered_bytes: gauge,
            ..self
        }
    }

    /// Bytes of responses streams hold for their clients.
    pub fn buffered_bytes(&self) -> &Gauge {
        &self.buffered_bytes
    }

    /// Whether the next batch should record `prev_kv` in its events.
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers.load(Ordering::SeqCst) > 0
    }

    /// Registers a watcher that wants `prev_kv`, until the value is dropped.
    pub fn prev_kv_interest(&self) -> PrevKvInterest {
        self.prev_kv_watchers.fetch_add(1, Ordering::SeqCst);
        PrevKvInterest(Arc::clone(&self.prev_kv_watchers))
    }

    /// Publishes a batch's events (nobody listening is fine).
    pub fn publish(&self, revision: i64, events: Vec<Event>, with_prev_kv: bool) {
        if events.is_empty() {
            return;
        }
        let _ = self.sender.send(Arc::new(AppliedEvents {
            revision,
            events,
            with_prev_kv,
        }));
    }

    /// A new subscription, receiving batches published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppliedEvents>> {
        self.sender.subscribe()
    }
}
