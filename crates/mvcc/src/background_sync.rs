//! Durable commits made off the applying thread.
//!
//! Batches are committed without an fsync, and every so often one commit is made durable (see
//! the [`crate::store`] module doc). Made by the thread that applies, that commit stalls it for
//! the whole fsync, which writes back every page the batches since the last one touched
//! (2-5 ms on the benchmark machine, against 0.4 ms for a WAL append). In a Raft member the
//! applying thread is the node's driver: the write whose batch drew the fsync waited for it,
//! and a stalled follower left its next acknowledgement waiting.
//!
//! [`BackgroundSync`] makes that commit on a thread of its own, in three steps:
//!
//! 0. [`Store::commit_applied`]: the batches applied since the last commit, still in an open
//!    transaction (see "Deferred commits" in [`crate::store`]), are committed without an
//!    fsync, under the gate but only for as long as writing their pages to the file takes;
//! 1. [`Store::write_back`]: an fdatasync of the file, without the write gate, so batches keep
//!    applying while the disk takes their pages;
//! 2. [`Store::sync`]: the durable commit, under the gate, left with only redb's header and
//!    the pages of the batches applied during step 1 to flush.
//!
//! Step 1 promises nothing by itself: redb's header still names the last durable commit, so
//! after a crash the store reopens there whatever step 1 wrote. Only step 2 moves the durable
//! point, exactly as an inline durable commit would.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use crate::error::{MvccError, Result};
use crate::store::Store;

/// Runs the store's durable commits on a thread of its own; see the module doc.
///
/// Dropping it (or [`BackgroundSync::stop`]) ends the thread after the sync under way, if any.
/// The store's own backstop ([`crate::Config::durable_every_batches`]) still applies: if this
/// thread falls behind, the applying thread makes a durable commit itself.
pub struct BackgroundSync {
    store: Arc<Store>,
    every_batches: u64,
    /// Capacity 1: a full channel means a sync is already asked for.
    requests: Option<SyncSender<()>>,
    /// The first sync that failed; the thread stops there.
    failure: Arc<OnceLock<String>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundSync {
    /// Starts the thread. It syncs `store` once `every_batches` batches were applied since the
    /// last durable commit (checked by [`BackgroundSync::batch_applied`]).
    pub fn start(store: Arc<Store>, every_batches: u64) -> Result<Self> {
        if every_batches == 0 {
            return Err(MvccError::Config("every_batches must be > 0".into()));
        }
        let (requests, received) = mpsc::sync_channel(1);
        let failure = Arc::new(OnceLock::new());
        let thread = std::thread::Builder::new()
            .name("store-sync".into())
            .spawn({
                let store = store.clone();
                let failure = failure.clone();
                move || run(&store, &received, &failure)
            })?;
        Ok(BackgroundSync {
            store,
            every_batches,
            requests: Some(requests),
            failure,
            thread: Some(thread),
        })
    }

    /// Called after each applied batch: asks the thread for a sync when enough batches piled
    /// up. Fails once a background sync has failed; the caller must then stop applying, as it
    /// would had the durable commit failed in its own hands.
    pub fn batch_applied(&self) -> Result<()> {
        if let Some(reason) = self.failure.get() {
            return Err(MvccError::BackgroundSync(reason.clone()));
        }
        if self.store.batches_since_durable() < self.every_batches {
            return Ok(());
        }
        if let Some(requests) = &self.requests {
            match requests.try_send(()) {
                // Full: a request is waiting already, and it covers this batch too.
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    return Err(MvccError::BackgroundSync("the sync thread is gone".into()));
                }
            }
        }
        Ok(())
    }

    /// Ends the thread, waiting for a sync under way.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("mvcc store: the sync thread panicked");
            }
        }
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn run(store: &Store, requests: &Receiver<()>, failure: &OnceLock<String>) {
    while requests.recv().is_ok() {
        // The applying thread may have made a durable commit itself meanwhile.
        if store.batches_since_durable() == 0 {
            continue;
        }
        // The batches applied since the last commit go to the file first (no fsync), so
        // the write-back below takes their pages too.
        if let Err(e) = store.commit_applied() {
            tracing::error!(error = %e, "mvcc store: commit before the write-back failed");
            let _ = failure.set(format!("commit: {e}"));
            return;
        }
        // A failed fdatasync may have been the only report of pages the disk lost, so the
        // durable commit after it could not be trusted: stop here, as for a failed commit.
        if let Err(e) = store.write_back() {
            tracing::error!(error = %e, "mvcc store: write-back before the durable commit failed");
            let _ = failure.set(format!("write-back: {e}"));
            return;
        }
        if let Err(e) = store.sync() {
            tracing::error!(error = %e, "mvcc store: background durable commit failed");
            let _ = failure.set(e.to_string());
            return;
        }
    }
}
