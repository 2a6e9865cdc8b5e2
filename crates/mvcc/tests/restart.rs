//! Restarts and crashes: the state and the applied index survive a close/reopen exactly; a
//! crash loses only the batches after the last durable commit, together with their applied
//! index, and replaying the log from there gives the same state with no entry applied twice.

mod common;

use common::*;
use raftkv_mvcc::*;
use rand::{rngs::SmallRng, Rng, SeedableRng};

/// Everything observable: revision, compaction, applied index, all kvs, hash.
fn fingerprint(s: &Store) -> (i64, i64, AppliedIndex, Vec<KeyValue>, HashKv) {
    (
        s.current_revision().unwrap(),
        s.compact_revision().unwrap(),
        s.applied_index().unwrap(),
        s.scan(b"\0", b"\0", 0).unwrap(),
        s.hash_kv(0).unwrap(),
    )
}

/// The request of raft entry `index`, a pure function of it (like a log).
fn entry_op(b: &mut Batch<'_>, index: u64) {
    let mut rng = SmallRng::seed_from_u64(index);
    let key = format!("k{:02}", rng.gen_range(0..30));
    let r = match rng.gen_range(0..10) {
        0..=6 => b.put(&put_req(&key, &format!("v{index}"))).map(|_| ()),
        7..=8 => b
            .delete_range(&DeleteRangeRequest {
                key: key.into(),
                range_end: b"k2".to_vec(),
                prev_kv: false,
            })
            .map(|_| ()),
        _ => {
            let rev = b.current_revision() - 3;
            b.compact(rev).map(|_| ())
        }
    };
    // Request errors (compaction at an old revision) are answers, not failures.
    if let Err(e) = r {
        assert!(!e.is_fatal(), "{e}");
    }
}

fn apply_entries(s: &Store, from: u64, to: u64) -> u64 {
    let mut applied = 0;
    s.apply(|b| {
        for i in from..=to {
            if b.begin_entry(i, 1) {
                entry_op(b, i);
                applied += 1;
            }
        }
        Ok(())
    })
    .unwrap();
    applied
}

#[test]
fn close_and_reopen_at_random_points_keeps_everything() {
    let mut t = TestStore::new();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut next = 1u64;
    for _ in 0..40 {
        let n = rng.gen_range(1..20);
        apply_entries(t.s(), next, next + n - 1);
        next += n;
        if rng.gen_bool(0.5) {
            let before = fingerprint(t.s());
            t.reopen();
            assert_eq!(fingerprint(t.s()), before);
            assert_eq!(t.s().applied_index().unwrap().index, next - 1);
        }
    }
}

#[test]
fn entries_at_or_below_applied_index_are_skipped_after_reopen() {
    let mut t = TestStore::new();
    apply_entries(t.s(), 1, 50);
    t.reopen();
    let before = fingerprint(t.s());
    assert_eq!(apply_entries(t.s(), 1, 50), 0, "nothing applied twice");
    assert_eq!(apply_entries(t.s(), 40, 50), 0);
    assert_eq!(fingerprint(t.s()).3, before.3);
    assert_eq!(apply_entries(t.s(), 45, 55), 5, "only 51..=55 are new");
    assert_eq!(t.s().applied_index().unwrap().index, 55);
}

#[test]
fn crash_loses_only_non_durable_batches_and_replay_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.durable_every_batches = 5;
    let s = Store::open(cfg).unwrap();
    // Reference: the state after each entry, from a store that never crashes.
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = Store::open(config(&reference_dir)).unwrap();
    let mut expected = vec![fingerprint(&reference).3];
    for i in 1..=23u64 {
        apply_entries(&s, i, i);
        apply_entries(&reference, i, i);
        expected.push(fingerprint(&reference).3);
    }
    // A crash image: the file as the OS holds it, with 3 batches since the last durable one.
    let crash_path = dir.path().join("crash.redb");
    std::fs::copy(dir.path().join("kv.redb"), &crash_path).unwrap();
    let mut crash_cfg = Config::new(&crash_path);
    crash_cfg.cache_size_bytes = 8 << 20;
    let crashed = Store::open(crash_cfg).unwrap();
    let applied = crashed.applied_index().unwrap().index;
    assert_eq!(applied, 20, "the last durable commit is batch 20");
    assert_eq!(fingerprint(&crashed).3, expected[applied as usize]);
    // Replay the whole log: only what was lost is applied again.
    assert_eq!(apply_entries(&crashed, 1, 23), 23 - applied);
    assert_eq!(fingerprint(&crashed).3, expected[23]);
    assert_eq!(fingerprint(&crashed).4, fingerprint(&s).4);
}

#[test]
fn sync_makes_everything_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.durable_every_batches = 1000;
    let s = Store::open(cfg).unwrap();
    for i in 1..=10 {
        apply_entries(&s, i, i);
    }
    assert_eq!(s.sync().unwrap().index, 10);
    let crash_path = dir.path().join("crash.redb");
    std::fs::copy(dir.path().join("kv.redb"), &crash_path).unwrap();
    let crashed = Store::open(Config::new(&crash_path)).unwrap();
    assert_eq!(fingerprint(&crashed), fingerprint(&s));
}

#[test]
fn a_store_file_of_the_first_layout_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    {
        // What the first layout left in `meta`: counters, no layout version.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            let mut t = txn.open_table(meta).unwrap();
            t.insert("current_revision", 40).unwrap();
            t.insert("applied_index", 90).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Store::open(Config::new(&path)).err().expect("refused");
    assert!(
        matches!(
            err,
            MvccError::Layout {
                found: 1,
                expected: 3
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("etcdctl snapshot save"), "{err}");
}

/// A record of layout 2: kind 0 (put), key, create, version, lease, the whole value.
fn whole_record(key: &[u8], create: i64, version: i64, value: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend_from_slice(&(key.len() as u32).to_le_bytes());
    b.extend_from_slice(key);
    for field in [create, version, 0] {
        b.extend_from_slice(&field.to_le_bytes());
    }
    b.extend_from_slice(value);
    b
}

#[test]
fn a_store_file_of_layout_2_opens_with_its_whole_values_and_takes_split_ones_after() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.redb");
    let big = vec![7u8; 10_000];
    {
        // What layout 2 wrote: every value whole in its `kvs` record, no `values` table.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
            let mut t = txn.open_table(meta).unwrap();
            for (name, v) in [
                ("current_revision", 3),
                ("compact_revision", 0),
                ("applied_index", 2),
                ("applied_term", 1),
                ("layout_version", 2),
                ("snapshot_installs", 0),
            ] {
                t.insert(name, v).unwrap();
            }
            let kvs: redb::TableDefinition<(i64, i64), &[u8]> = redb::TableDefinition::new("kvs");
            let mut t = txn.open_table(kvs).unwrap();
            t.insert((2, 0), whole_record(b"big", 2, 1, &big).as_slice())
                .unwrap();
            t.insert((3, 0), whole_record(b"small", 3, 1, b"v").as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let mut t = TestStore {
        dir,
        store: Some(Store::open(config_at(&path)).unwrap()),
        index: std::sync::atomic::AtomicU64::new(2),
    };
    assert_eq!(t.get("big").unwrap().value, big);
    assert_eq!(t.get("small").unwrap().value, b"v");
    let old_hash = t.s().hash_kv(0).unwrap();
    t.put("big2", &"x".repeat(10_000));
    t.reopen();
    assert_eq!(t.get("big").unwrap().value, big);
    assert_eq!(t.get("big2").unwrap().value, "x".repeat(10_000).as_bytes());
    assert_eq!(t.s().hash_kv(3).unwrap().hash, old_hash.hash);
    // Marked as layout 3, which a version that keeps values whole refuses.
    drop(t.store.take());
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
    let layout = txn.open_table(meta).unwrap().get("layout_version").unwrap();
    assert_eq!(layout.map(|v| v.value()), Some(3));
}

#[test]
fn a_batch_that_panics_leaves_nothing_behind_in_reads_or_revisions() {
    let t = TestStore::new();
    t.put("kept", "1");
    let before = t.s().current_revision().unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = t.s().apply(|b| -> Result<()> {
            b.begin_entry(100, 1);
            b.put(&put_req("lost", "x")).unwrap();
            panic!("a bug in the caller, mid-batch");
        });
    }));
    assert!(panicked.is_err());
    // The next batch reuses the lost revision; it must not inherit the lost key.
    t.index.store(100, std::sync::atomic::Ordering::SeqCst);
    let resp = t.put("next", "2");
    assert_eq!(resp.revision, before + 1);
    assert_eq!(t.s().get(b"lost").unwrap(), None);
    let all = t.s().scan(b"\0", b"\0", 0).unwrap();
    let keys: Vec<_> = all.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"kept"[..], &b"next"[..]]);
    assert_eq!(all[1].value, b"2");
}

#[test]
fn background_sync_moves_the_durable_point_and_a_crash_keeps_exactly_that() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    // The inline backstop stays out of reach: only the sync thread makes commits durable.
    cfg.durable_every_batches = 1000;
    let s = std::sync::Arc::new(Store::open(cfg).unwrap());
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = Store::open(config(&reference_dir)).unwrap();
    let mut expected = vec![fingerprint(&reference).3];
    let sync = BackgroundSync::start(s.clone(), 4).unwrap();
    for i in 1..=30u64 {
        apply_entries(&s, i, i);
        sync.batch_applied().unwrap();
        apply_entries(&reference, i, i);
        expected.push(fingerprint(&reference).3);
    }
    // Waits for the sync under way; a request still queued is served first.
    sync.stop();
    let behind = s.batches_since_durable();
    assert!(behind < 4, "{behind} batches left undurable");
    let crash_path = dir.path().join("crash.redb");
    std::fs::copy(dir.path().join("kv.redb"), &crash_path).unwrap();
    let crashed = Store::open(Config::new(&crash_path)).unwrap();
    let applied = crashed.applied_index().unwrap().index;
    assert_eq!(applied, 30 - behind, "the durable point is the last sync");
    assert_eq!(fingerprint(&crashed).3, expected[applied as usize]);
    assert_eq!(apply_entries(&crashed, 1, 30), 30 - applied);
    assert_eq!(fingerprint(&crashed).4, fingerprint(&s).4);
}

#[test]
fn background_sync_refuses_a_period_of_zero() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Store::open(config(&dir)).unwrap());
    let err = BackgroundSync::start(s, 0).err().expect("refused");
    assert!(matches!(err, MvccError::Config(_)), "{err}");
}

#[test]
fn deferred_batches_are_read_from_another_thread_and_a_crash_loses_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.durable_every_batches = 1000;
    let s = Store::open(cfg).unwrap();
    for i in 1..=10 {
        s.apply(|b| {
            assert!(b.begin_entry(i, 1));
            b.put(&put_req(&format!("k{i:02}"), "v")).map(|_| ())
        })
        .unwrap();
    }
    // Not committed yet: the file holds none of it.
    let crash_path = dir.path().join("crash.redb");
    std::fs::copy(dir.path().join("kv.redb"), &crash_path).unwrap();
    // A reader on another thread sees every applied batch.
    let seen = std::thread::scope(|scope| {
        scope
            .spawn(|| s.scan(b"k", b"l", 0).unwrap().len())
            .join()
            .unwrap()
    });
    assert_eq!(seen, 10);
    assert_eq!(s.applied_index().unwrap().index, 10);
    let crashed = Store::open(Config::new(&crash_path)).unwrap();
    assert_eq!(crashed.applied_index().unwrap().index, 0);
    assert_eq!(crashed.current_revision().unwrap(), 1);
    // The read committed them without an fsync, which a crash does not keep either (redb's
    // header still names the last durable commit); a sync does.
    drop(crashed);
    std::fs::copy(dir.path().join("kv.redb"), &crash_path).unwrap();
    let crashed = Store::open(Config::new(&crash_path)).unwrap();
    assert_eq!(crashed.applied_index().unwrap().index, 0);
    drop(crashed);
    s.sync().unwrap();
    std::fs::copy(dir.path().join("kv.redb"), &crash_path).unwrap();
    let crashed = Store::open(Config::new(&crash_path)).unwrap();
    assert_eq!(crashed.applied_index().unwrap().index, 10);
    assert_eq!(crashed.scan(b"k", b"l", 0).unwrap().len(), 10);
}

#[test]
fn a_failed_batch_after_deferred_ones_stops_the_store_and_a_reopen_replays_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.durable_every_batches = 1000;
    let s = Store::open(cfg.clone()).unwrap();
    apply_entries(&s, 1, 3);
    // A read commits batches 1 to 3; 4 to 6 stay in the open transaction.
    let committed = fingerprint(&s);
    for i in 4..=6 {
        apply_entries(&s, i, i);
    }
    let failed = s.apply(|b| -> Result<()> {
        assert!(b.begin_entry(7, 1));
        Err(MvccError::Corruption(
            "a storage failure in the middle of a batch".into(),
        ))
    });
    assert!(
        matches!(failed, Err(MvccError::Corruption(_))),
        "{failed:?}"
    );
    // Batches 4 to 6 went with the transaction: nothing may be applied or read on top.
    let next = s.apply(|b| {
        b.begin_entry(8, 1);
        Ok(())
    });
    assert!(matches!(next, Err(MvccError::UncommittedLost)), "{next:?}");
    assert!(next.unwrap_err().is_fatal());
    assert!(matches!(s.get(b"k00"), Err(MvccError::UncommittedLost)));
    assert!(matches!(s.sync(), Err(MvccError::UncommittedLost)));
    drop(s);
    // Reopened, the store is where the last commit left it, and the log replays the rest.
    let s = Store::open(cfg).unwrap();
    assert_eq!(fingerprint(&s), committed);
    assert_eq!(apply_entries(&s, 1, 6), 3);
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = Store::open(config(&reference_dir)).unwrap();
    apply_entries(&reference, 1, 6);
    assert_eq!(fingerprint(&s), fingerprint(&reference));
}
