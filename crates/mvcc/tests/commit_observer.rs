//! The commit observer a server times backend commits with.

#[test]
fn the_commit_observer_hears_every_apply_and_sync_commit() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = raftkv_mvcc::Store::open(raftkv_mvcc::Config::new(dir.path().join("c.redb")))
        .expect("store opens");
    let commits = Arc::new(AtomicU64::new(0));
    let counted = commits.clone();
    store.set_commit_observer(Box::new(move |_took| {
        counted.fetch_add(1, Ordering::Relaxed);
    }));
    store
        .apply(|b| {
            b.begin_entry(1, 1);
            Ok(())
        })
        .expect("apply");
    store.sync().expect("sync");
    // A failed batch is aborted, not committed.
    let _ = store.apply(|_| Err::<(), _>(raftkv_mvcc::MvccError::KeyNotFound));
    assert_eq!(commits.load(Ordering::Relaxed), 2);
}
