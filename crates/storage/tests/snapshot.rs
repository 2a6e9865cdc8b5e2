//! The snapshot store: round trips, damage detection, retention, and the
//! leftovers of a crash during a save.

use std::fs;

use bytes::Bytes;
use raftkv_raft::{ConfState, Snapshot, SnapshotMeta};
use raftkv_storage::{Error, SnapshotConfig, SnapshotStore};

fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state: ConfState {
                voters: [1, 2, 3].into(),
                learners: [9].into(),
                ..ConfState::default()
            },
        },
        data: Bytes::from(format!("application state at {index}").repeat(50)),
    }
}

fn snap_files(store: &SnapshotStore) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn a_saved_snapshot_loads_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path(), SnapshotConfig::default()).unwrap();
    assert_eq!(store.load_newest().unwrap(), None);
    store.save(&snapshot(10, 2)).unwrap();
    store.save(&snapshot(20, 3)).unwrap();
    let empty = Snapshot {
        meta: SnapshotMeta {
            index: 30,
            term: 3,
            conf_state: ConfState::default(),
        },
        data: Bytes::new(),
    };
    store.save(&empty).unwrap();
    let store = SnapshotStore::open(dir.path(), SnapshotConfig::default()).unwrap();
    assert_eq!(store.load(10, 2).unwrap(), Some(snapshot(10, 2)));
    assert_eq!(store.load(10, 3).unwrap(), None);
    assert_eq!(store.load_newest().unwrap(), Some(empty));
    assert_eq!(store.list().unwrap(), vec![(10, 2), (20, 3), (30, 3)]);
}

#[test]
fn a_damaged_snapshot_is_detected_and_skipped_for_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path(), SnapshotConfig::default()).unwrap();
    store.save(&snapshot(10, 2)).unwrap();
    store.save(&snapshot(20, 2)).unwrap();
    let newest = snap_files(&store).pop().unwrap();
    let original = fs::read(&newest).unwrap();
    // Every single bit flip and every truncation is caught.
    for bit in (0..original.len() * 8).step_by(7) {
        let mut bytes = original.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        fs::write(&newest, &bytes).unwrap();
        let err = store.load(20, 2).unwrap_err();
        assert!(
            matches!(&err, Error::Corruption { path, .. } if *path == newest),
            "{err}"
        );
    }
    fs::write(&newest, &original[..original.len() - 1]).unwrap();
    assert!(store.load(20, 2).unwrap_err().is_corruption());
    assert_eq!(store.load_newest().unwrap(), Some(snapshot(10, 2)));
}

#[test]
fn a_renamed_snapshot_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path(), SnapshotConfig::default()).unwrap();
    store.save(&snapshot(10, 2)).unwrap();
    let file = snap_files(&store).pop().unwrap();
    fs::rename(
        &file,
        dir.path().join("0000000000000011-0000000000000002.snap"),
    )
    .unwrap();
    assert!(store.load(17, 2).unwrap_err().is_corruption());
}

#[test]
fn only_the_newest_snapshots_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = SnapshotConfig {
        keep_count: 2,
        ..SnapshotConfig::default()
    };
    let store = SnapshotStore::open(dir.path(), config).unwrap();
    for index in 1..=5 {
        store.save(&snapshot(index * 10, 1)).unwrap();
    }
    assert_eq!(store.list().unwrap(), vec![(40, 1), (50, 1)]);
    assert_eq!(store.load(30, 1).unwrap(), None);
}

#[test]
fn leftovers_of_a_crashed_save_are_ignored_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path(), SnapshotConfig::default()).unwrap();
    store.save(&snapshot(10, 1)).unwrap();
    let tmp = dir
        .path()
        .join("0000000000000014-0000000000000001.snap.tmp");
    fs::write(&tmp, b"half a snapshot").unwrap();
    let unrelated = dir.path().join("notes.txt");
    fs::write(&unrelated, b"not ours").unwrap();
    assert_eq!(store.load_newest().unwrap(), Some(snapshot(10, 1)));
    let store = SnapshotStore::open(dir.path(), SnapshotConfig::default()).unwrap();
    assert!(!tmp.exists());
    assert!(unrelated.exists());
    assert_eq!(store.list().unwrap(), vec![(10, 1)]);
}

#[test]
fn an_oversized_file_is_refused_before_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = SnapshotConfig {
        snapshot_bytes_max: 100,
        ..SnapshotConfig::default()
    };
    let store = SnapshotStore::open(dir.path(), config).unwrap();
    store.save(&snapshot(10, 1)).unwrap();
    assert!(store.load(10, 1).unwrap_err().is_corruption());
}
