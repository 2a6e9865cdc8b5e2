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

/// Frames a stream the way the snapshot format does (tag, length, payload, CRC-32C, and an
/// END frame with the count and the checksum of checksums).
fn stream(magic: &[u8; 8], frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = magic.to_vec();
    let mut crcs = 0u32;
    let frame = |out: &mut Vec<u8>, tag: u8, payload: &[u8]| {
        let start = out.len();
        out.push(tag);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        crc
    };
    for (tag, payload) in frames {
        let crc = frame(&mut out, *tag, payload);
        crcs = crc32c::crc32c_append(crcs, &crc.to_le_bytes());
    }
    let mut end = (frames.len() as u64).to_le_bytes().to_vec();
    end.extend_from_slice(&crcs.to_le_bytes());
    frame(&mut out, 255, &end);
    out
}

/// A history frame of the first format: key, revision, then kind and (for a put) create,
/// version, lease and value.
fn v1_change(key: &str, main: i64, put: Option<(i64, i64, i64, &str)>) -> (u8, Vec<u8>) {
    let mut p = (key.len() as u32).to_le_bytes().to_vec();
    p.extend_from_slice(key.as_bytes());
    p.extend_from_slice(&main.to_le_bytes());
    p.extend_from_slice(&0i64.to_le_bytes());
    match put {
        Some((create, version, lease, value)) => {
            p.push(0);
            for n in [create, version, lease] {
                p.extend_from_slice(&n.to_le_bytes());
            }
            p.extend_from_slice(value.as_bytes());
        }
        None => p.push(1),
    }
    (2, p)
}

#[test]
fn a_snapshot_of_the_first_format_installs() {
    // META: revision 5, compacted at 0, applied index 9 in term 2.
    let mut meta = Vec::new();
    for n in [5i64, 0, 9, 2] {
        meta.extend_from_slice(&n.to_le_bytes());
    }
    let mut lease = 7i64.to_le_bytes().to_vec();
    lease.extend_from_slice(&60i64.to_le_bytes());
    // In that format's (key, revision) order: a put at 2 and 3 (leased), b put at 4 and
    // deleted at 5.
    let bytes = stream(
        b"RKVSNAP1",
        &[
            (1, meta),
            v1_change("a", 2, Some((2, 1, 0, "a1"))),
            v1_change("a", 3, Some((2, 2, 7, "a2"))),
            v1_change("b", 4, Some((4, 1, 0, "b1"))),
            v1_change("b", 5, None),
            (3, lease),
        ],
    );
    let t = TestStore::new();
    let meta = t.s().install_snapshot(bytes.as_slice()).unwrap();
    assert_eq!(meta.revision, 5);
    assert_eq!(
        t.s().applied_index().unwrap(),
        AppliedIndex { index: 9, term: 2 }
    );
    let a = t.s().get(b"a").unwrap().unwrap();
    assert_eq!(
        (
            a.value.as_slice(),
            a.create_revision,
            a.mod_revision,
            a.version,
            a.lease
        ),
        (&b"a2"[..], 2, 3, 2, 7)
    );
    assert_eq!(t.s().get(b"b").unwrap(), None);
    let at4 = t.s().scan(b"a", b"c", 4).unwrap();
    assert_eq!(
        at4.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        [b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(t.s().lease_keys(7).unwrap(), vec![b"a".to_vec()]);
    // What it installed streams out again in today's format, and installs equal.
    let again = TestStore::new();
    again
        .s()
        .install_snapshot(bytes_of(t.s().snapshot().unwrap()).as_slice())
        .unwrap();
    assert_eq!(again.s().hash().unwrap(), t.s().hash().unwrap());
    // Out of its order, it is refused and the store is left as it was.
    let shuffled = stream(
        b"RKVSNAP1",
        &[
            (
                1,
                5i64.to_le_bytes()
                    .iter()
                    .chain(&[0u8; 24])
                    .copied()
                    .collect(),
            ),
            v1_change("b", 4, Some((4, 1, 0, "b1"))),
            v1_change("a", 2, Some((2, 1, 0, "a1"))),
        ],
    );
    let err = again.s().install_snapshot(shuffled.as_slice()).unwrap_err();
    assert!(err.to_string().contains("out of order"), "{err}");
    assert_eq!(again.s().hash().unwrap(), t.s().hash().unwrap());
}

#[test]
fn reads_during_installs_see_one_state_or_the_other() {
    // Two sources whose every key holds the source's name; a reader must never mix them.
    let sources: Vec<Vec<u8>> = ["one", "two"]
        .iter()
        .map(|name| {
            let s = TestStore::new();
            for i in 0..200 {
                s.put(&format!("k{i:03}"), name);
            }
            bytes_of(s.s().snapshot().unwrap())
        })
        .collect();
    let t = TestStore::new();
    t.s().install_snapshot(sources[0].as_slice()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && reads < 100_000 {
                let kvs = t.s().scan(b"k", b"l", 0).unwrap();
                assert_eq!(kvs.len(), 200);
                assert!(
                    kvs.iter().all(|kv| kv.value == kvs[0].value),
                    "a read mixed two states"
                );
                reads += 1;
            }
            reads
        });
        for i in 0..20 {
            t.s().install_snapshot(sources[i % 2].as_slice()).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
}

/// Puts `count` values of `bytes` bytes under `prefix`, a hundred to a batch.
fn fill_large(t: &TestStore, prefix: &str, count: usize, bytes: usize) {
    let value = "v".repeat(bytes);
    for start in (0..count).step_by(100) {
        t.entry(|b| {
            for i in start..(start + 100).min(count) {
                b.put(&put_req(&format!("{prefix}{i:05}"), &value))?;
            }
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn an_image_larger_than_one_commit_replaces_a_large_store_in_a_file_of_its_own_size() {
    // 72 MiB: more than one of the install's commits.
    let src = TestStore::new();
    fill_large(&src, "src/", 1150, 64 << 10);
    let image = bytes_of(src.s().snapshot().unwrap());
    let dst = TestStore::new();
    fill_large(&dst, "old/", 1150, 64 << 10);
    dst.s().install_snapshot(image.as_slice()).unwrap();
    assert_eq!(dst.s().hash_kv(0).unwrap(), src.s().hash_kv(0).unwrap());
    assert!(dst.s().scan(b"old/", b"old0", 0).unwrap().is_empty());
    // The old state is gone with its file: the store is not the two side by side.
    // (How redb lays out values of this size is another matter: the measure is the source
    // store's own file, which holds the same state once.)
    let file = dst.s().file_bytes().unwrap();
    let source_file = src.s().file_bytes().unwrap();
    assert!(
        file <= source_file * 5 / 4,
        "the source's state in a {source_file}-byte file was installed in a {file}-byte file"
    );
    let leftover = dst.dir.path().join("kv.redb.install");
    assert!(
        !leftover.exists(),
        "the build file is renamed over the store"
    );
}

#[test]
fn a_crash_during_an_install_leaves_the_old_store_and_no_build_file() {
    let mut dst = TestStore::new();
    dst.put("mine", "1");
    let before = dst.s().hash_kv(0).unwrap();
    // What a crash mid-install leaves beside the store.
    let leftover = dst.dir.path().join("kv.redb.install");
    std::fs::write(&leftover, b"half an image").unwrap();
    dst.reopen();
    assert!(!leftover.exists());
    assert_eq!(dst.s().hash_kv(0).unwrap(), before);
    // A damaged image leaves no build file either.
    let src = TestStore::new();
    fill(&src, 100);
    let image = bytes_of(src.s().snapshot().unwrap());
    dst.s()
        .install_snapshot(&image[..image.len() - 3])
        .unwrap_err();
    assert!(!leftover.exists());
    assert_eq!(dst.get("mine").unwrap().value, b"1");
}
