//! Server records kept beside the data: atomic with the applied index, out of
//! the revision model, carried by snapshots.

use raftkv_mvcc::{Config, PutRequest, Store};

fn open(dir: &std::path::Path, name: &str) -> Store {
    Store::open(Config::new(dir.join(name))).expect("store opens")
}

#[test]
fn records_are_written_with_their_entry_and_make_no_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), "a.redb");
    store
        .apply(|b| {
            b.begin_entry(1, 1);
            b.aux_put("outcome", b"client-7", b"rev=1")?;
            assert_eq!(b.aux_get("outcome", b"client-7")?, Some(b"rev=1".to_vec()));
            Ok(())
        })
        .expect("apply");
    assert_eq!(
        store.current_revision().expect("rev"),
        1,
        "records are not KV writes"
    );
    // Without an entry begun, nothing may be written: replayed entries skip.
    let refused = store.apply(|b| {
        b.begin_entry(1, 1);
        b.aux_put("outcome", b"client-7", b"again")
    });
    assert!(refused.is_err());
    assert_eq!(
        store.aux_scan("outcome").expect("scan"),
        vec![(b"client-7".to_vec(), b"rev=1".to_vec())]
    );
}

#[test]
fn a_failed_batch_leaves_no_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), "a.redb");
    let result: raftkv_mvcc::Result<()> = store.apply(|b| {
        b.begin_entry(1, 1);
        b.aux_put("member", b"1", b"node-a")?;
        Err(raftkv_mvcc::MvccError::Corruption(
            "abandon the batch".into(),
        ))
    });
    assert!(result.is_err());
    assert!(store.aux_scan("member").expect("scan").is_empty());
    assert_eq!(store.applied_index().expect("applied").index, 0);
}

#[test]
fn namespaces_are_separate_and_deletes_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), "a.redb");
    store
        .apply(|b| {
            b.begin_entry(1, 1);
            b.aux_put("a", b"k", b"1")?;
            b.aux_put("ab", b"k", b"2")?;
            b.aux_put("a", b"z", b"3")?;
            assert!(b.aux_delete("a", b"z")?);
            assert!(!b.aux_delete("a", b"missing")?);
            Ok(())
        })
        .expect("apply");
    assert_eq!(
        store.aux_scan("a").expect("scan"),
        vec![(b"k".to_vec(), b"1".to_vec())]
    );
    assert_eq!(
        store.aux_scan("ab").expect("scan"),
        vec![(b"k".to_vec(), b"2".to_vec())]
    );
}

#[test]
fn records_travel_in_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = open(dir.path(), "source.redb");
    source
        .apply(|b| {
            b.begin_entry(1, 1);
            b.put(&PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })?;
            b.aux_put("outcome", b"c1", b"first")?;
            b.aux_put("member", b"2", b"node-b")?;
            Ok(())
        })
        .expect("apply");
    let target = open(dir.path(), "target.redb");
    target
        .apply(|b| {
            b.begin_entry(1, 1);
            b.aux_put("outcome", b"stale", b"gone after install")
        })
        .expect("apply");
    let snapshot = source.snapshot().expect("snapshot");
    target.install_snapshot(snapshot).expect("install");
    assert_eq!(
        target.aux_scan("outcome").expect("scan"),
        vec![(b"c1".to_vec(), b"first".to_vec())]
    );
    assert_eq!(
        target.aux_scan("member").expect("scan"),
        vec![(b"2".to_vec(), b"node-b".to_vec())]
    );
    assert_eq!(
        target.hash_kv(0).expect("hash").hash,
        source.hash_kv(0).expect("hash").hash
    );
}
