//! Snapshots: produced while writes go on, installed on an empty or a stale store, giving the
//! same HashKV, reads and applied index; damaged streams are refused and leave the target as
//! it was.

mod common;

use std::io::Read;

use common::*;
use raftkv_mvcc::*;

fn fill(t: &TestStore, n: usize) {
    for i in 0..n {
        t.put(&format!("key{:04}", i % 300), &format!("value{i}"));
        if i % 7 == 0 {
            t.del(&format!("key{:04}", (i * 13) % 300), "");
        }
    }
    // Already granted on a second fill: that answer is fine.
    let _ = t.entry(|b| b.lease_grant(42, 30));
    let mut p = put_req("leased", "x");
    p.lease = 42;
    t.entry(|b| b.put(&p)).unwrap();
}

fn bytes_of(r: SnapshotReader) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in r {
        out.extend(chunk.unwrap());
    }
    out
}

#[test]
fn snapshot_taken_while_writing_installs_to_an_identical_store() {
    let src = TestStore::new();
    fill(&src, 1000);
    src.entry(|b| b.compact(200)).unwrap();
    let at = src.s().current_revision().unwrap();
    let hash = src.s().hash_kv(at).unwrap();
    let all = src.s().scan(b"\0", b"\0", 0).unwrap();
    let past = src.s().scan(b"\0", b"\0", 500).unwrap();

    let mut reader = src.s().snapshot().unwrap();
    let mut first = vec![0u8; 1000];
    reader.read_exact(&mut first).unwrap();
    // Writes continue while the snapshot is read; it must not see them.
    fill(&src, 500);
    src.entry(|b| b.compact(at)).unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    first.extend(rest);

    // Install on a stale store with other data.
    let dst = TestStore::new();
    fill(&dst, 50);
    let meta = dst.s().install_snapshot(first.as_slice()).unwrap();
    assert_eq!(meta.revision, at);
    assert_eq!(dst.s().current_revision().unwrap(), at);
    assert_eq!(dst.s().compact_revision().unwrap(), 200);
    assert_eq!(dst.s().applied_index().unwrap(), meta.applied);
    assert_eq!(dst.s().hash_kv(at).unwrap(), hash);
    assert_eq!(dst.s().scan(b"\0", b"\0", 0).unwrap(), all);
    assert_eq!(dst.s().scan(b"\0", b"\0", 500).unwrap(), past);
    assert_eq!(dst.s().leases().unwrap(), vec![(42, 30)]);
    assert_eq!(dst.s().lease_keys(42).unwrap(), vec![b"leased".to_vec()]);
    // The installed store keeps working: same next write on both sides.
    let d2 = TestStore::new();
    d2.s()
        .install_snapshot(bytes_of(dst.s().snapshot().unwrap()).as_slice())
        .unwrap();
    assert_eq!(d2.s().hash_kv(0).unwrap(), hash);
}

#[test]
fn installed_store_continues_identically() {
    let src = TestStore::new();
    fill(&src, 200);
    let snap = bytes_of(src.s().snapshot().unwrap());
    let mut dst = TestStore::new();
    dst.s().install_snapshot(snap.as_slice()).unwrap();
    dst.index.store(
        src.index.load(std::sync::atomic::Ordering::SeqCst),
        std::sync::atomic::Ordering::SeqCst,
    );
    for t in [&src, &dst] {
        t.put("key0001", "again");
        t.entry(|b| b.lease_revoke(42)).unwrap();
    }
    dst.reopen();
    assert_eq!(src.s().hash_kv(0).unwrap(), dst.s().hash_kv(0).unwrap());
    assert_eq!(src.get("key0001"), dst.get("key0001"));
}

#[test]
fn damaged_snapshots_are_refused_and_target_unchanged() {
    let src = TestStore::new();
    fill(&src, 300);
    let snap = bytes_of(src.s().snapshot().unwrap());
    let dst = TestStore::new();
    dst.put("mine", "1");
    let before = dst.s().hash_kv(0).unwrap();
    let mut cases: Vec<Vec<u8>> = vec![
        snap[..snap.len() - 1].to_vec(),
        snap[..snap.len() / 2].to_vec(),
        b"garbage".to_vec(),
    ];
    for at in [10, snap.len() / 3, snap.len() - 10] {
        let mut bad = snap.clone();
        bad[at] ^= 0x40;
        cases.push(bad);
    }
    for bad in cases {
        let err = dst.s().install_snapshot(bad.as_slice()).unwrap_err();
        assert!(err.is_fatal(), "{err}");
        assert_eq!(dst.s().hash_kv(0).unwrap(), before);
        assert_eq!(dst.get("mine").unwrap().value, b"1");
    }
}

#[test]
fn hash_differs_when_state_differs_and_checks_revisions() {
    let a = TestStore::new();
    let b = TestStore::new();
    a.put("k", "1");
    b.put("k", "2");
    assert_ne!(
        a.s().hash_kv(0).unwrap().hash,
        b.s().hash_kv(0).unwrap().hash
    );
    assert_eq!(
        a.s().hash_kv(1).unwrap().hash,
        b.s().hash_kv(1).unwrap().hash
    );
    assert!(matches!(
        a.s().hash_kv(9).unwrap_err(),
        MvccError::FutureRev
    ));
}
