//! Reads on other threads while one thread writes and compacts: a read is served from one
//! commit, whatever the key index went through meanwhile, and never fails but with the
//! answers a request can get (a compacted revision).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use raftkv_mvcc::*;

const KEYS: usize = 50;

#[test]
fn reads_race_writes_and_compactions_and_stay_consistent() {
    reads_race_writes_and_compactions(TestStore::new());
}

/// Readers commit the batches the writer left uncommitted, under the writer's feet.
#[test]
fn reads_race_deferred_commits_and_stay_consistent() {
    reads_race_writes_and_compactions(TestStore::with_durable_every(16));
}

fn reads_race_writes_and_compactions(t: TestStore) {
    for i in 0..KEYS {
        t.put(&format!("k{i:02}"), "v0");
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let (mut reads, mut compacted) = (0u64, 0u64);
                    while !done.load(Ordering::Relaxed) && reads < 200_000 {
                        // Every key always exists at the latest revision.
                        let all = t.s().scan(b"k", b"l", 0).unwrap();
                        assert_eq!(all.len(), KEYS, "a latest read lost keys");
                        assert!(t.s().get(b"k07").unwrap().is_some());
                        // A past revision is served or reported compacted, nothing else.
                        let rev = all.iter().map(|kv| kv.mod_revision).max().unwrap() - 3;
                        match t.s().range(&RangeRequest {
                            key: b"k".to_vec(),
                            range_end: b"l".to_vec(),
                            revision: rev,
                            ..Default::default()
                        }) {
                            // Every key exists from the end of the fill (revision KEYS + 1).
                            Ok(r) if rev > KEYS as i64 => assert_eq!(r.kvs.len(), KEYS, "at {rev}"),
                            Ok(_) => {}
                            Err(MvccError::Compacted) => compacted += 1,
                            Err(e) => panic!("read at {rev}: {e}"),
                        }
                        reads += 1;
                    }
                    (reads, compacted)
                })
            })
            .collect();
        for i in 0..3000 {
            t.put(&format!("k{:02}", i % KEYS), &format!("v{i}"));
            if i % 10 == 9 {
                let at = t.s().current_revision().unwrap() - 2;
                t.entry(|b| b.compact(at)).unwrap();
            }
        }
        done.store(true, Ordering::Relaxed);
        for r in readers {
            let (reads, _compacted) = r.join().unwrap();
            assert!(reads > 0);
        }
    });
    // History below the last compaction is gone from the file as well as from the index.
    let compact = t.s().compact_revision().unwrap();
    let changes = t.s().events(compact + 1, b"k", b"l", 0).unwrap();
    assert!(
        changes.len() <= 3,
        "{} changes after {compact}",
        changes.len()
    );
}
