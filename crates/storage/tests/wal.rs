//! Behaviour of the WAL across reopens: overwrites, release, hard state,
//! reads from disk, damage between segments, and random restarts checked
//! against a model.

mod common;

use std::fs;

use common::{entry, hs, segment_files, small_segments, state_of};
use raftkv_raft::{Entry, HardState, Index};
use raftkv_storage::{Error, SnapshotMarker, Wal, WalConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn entries(lo: Index, hi: Index, term: u64) -> Vec<Entry> {
    (lo..hi).map(|i| entry(i, term)).collect()
}

#[test]
fn overwritten_suffix_is_what_reopen_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    wal.append_entries(&entries(1, 11, 1)).unwrap();
    wal.sync().unwrap();
    // A new leader of term 2 replaces 6..=10 with 6..=8.
    wal.append_entries(&entries(6, 9, 2)).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.last_index(), 8);
    drop(wal);
    let wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    let mut expected = entries(1, 6, 1);
    expected.extend(entries(6, 9, 2));
    assert_eq!(wal.entries(1, 9).unwrap(), expected);
    assert!(matches!(wal.entries(1, 10), Err(Error::Unavailable { .. })));
}

#[test]
fn positions_say_what_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    let written = wal.append_entries(&entries(1, 4, 1)).unwrap();
    assert!(wal.durable_position() < written);
    assert_eq!(wal.durable_last_index(), 0);
    assert_eq!(wal.sync().unwrap(), written);
    assert_eq!(wal.durable_last_index(), 3);
    // A sync with nothing new is free and changes nothing.
    assert_eq!(wal.sync().unwrap(), written);
}

#[test]
fn old_entries_are_read_back_from_disk_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_size_bytes: 512,
        cache_bytes_max: 0,
        ..WalConfig::default()
    };
    let mut wal = Wal::open(dir.path(), config.clone()).unwrap();
    for i in 1..=60 {
        wal.append_entries(&[entry(i, 1 + i / 20)]).unwrap();
    }
    assert!(wal.segment_count() > 3);
    let expected: Vec<Entry> = (1..=60).map(|i| entry(i, 1 + i / 20)).collect();
    assert_eq!(wal.entries(1, 61).unwrap(), expected);
    assert_eq!(wal.entries(30, 31).unwrap(), vec![entry(30, 2)]);
    assert_eq!(wal.term(45).unwrap(), 3);
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), config).unwrap();
    assert_eq!(wal.entries(1, 61).unwrap(), expected);
}

#[test]
fn segments_below_the_snapshot_are_released_and_state_survives() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(400);
    let mut wal = Wal::open(dir.path(), config.clone()).unwrap();
    wal.set_hard_state(hs(1, 1, 0)).unwrap();
    for i in 1..=100 {
        wal.append_entries(&[entry(i, 1)]).unwrap();
    }
    wal.set_hard_state(hs(1, 1, 90)).unwrap();
    let before = wal.segment_count();
    assert_eq!(wal.release_segments().unwrap(), 0, "nothing is covered yet");
    wal.save_snapshot_marker(SnapshotMarker { index: 80, term: 1 })
        .unwrap();
    let released = wal.release_segments().unwrap();
    assert!(released > 0 && wal.segment_count() == before - released);
    assert_eq!(wal.first_index(), 81);
    assert_eq!(wal.entries(81, 101).unwrap(), entries(81, 101, 1));
    assert_eq!(wal.term(80).unwrap(), 1);
    assert!(matches!(
        wal.entries(80, 81),
        Err(Error::Unavailable { .. })
    ));
    let state = state_of(&wal);
    drop(wal);
    let wal = Wal::open(dir.path(), config.clone()).unwrap();
    assert_eq!(state_of(&wal), state);

    // A snapshot past the end of the log empties it; everything but the
    // active segment can go, and the hard state still comes back.
    let mut wal = wal;
    wal.save_snapshot_marker(SnapshotMarker {
        index: 150,
        term: 2,
    })
    .unwrap();
    wal.release_segments().unwrap();
    assert_eq!(wal.segment_count(), 1);
    assert_eq!((wal.first_index(), wal.last_index()), (151, 150));
    wal.append_entries(&[entry(151, 2)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), config).unwrap();
    assert_eq!(wal.hard_state(), hs(1, 1, 90));
    assert_eq!(wal.entries(151, 152).unwrap(), vec![entry(151, 2)]);
}

#[test]
fn the_latest_hard_state_wins_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small_segments(256)).unwrap();
    for term in 1..=20 {
        wal.set_hard_state(hs(term, term % 3, term * 2)).unwrap();
        wal.append_entries(&[entry(term, term)]).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), small_segments(256)).unwrap();
    assert_eq!(wal.hard_state(), hs(20, 2, 40));
}

#[test]
fn a_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small_segments(200)).unwrap();
    wal.append_entries(&entries(1, 30, 1)).unwrap();
    for i in 30..40 {
        wal.append_entries(&[entry(i, 1)]).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).unwrap();
    match Wal::open(dir.path(), small_segments(200)) {
        Err(Error::Corruption { path, reason, .. }) => {
            assert_eq!(path, dir.path());
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_lost_first_segment_is_an_index_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small_segments(200)).unwrap();
    for i in 1..20 {
        wal.append_entries(&[entry(i, 1)]).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    fs::remove_file(&segment_files(dir.path())[0]).unwrap();
    let err = Wal::open(dir.path(), small_segments(200)).unwrap_err();
    assert!(err.is_corruption() && err.is_fatal(), "{err}");
}

#[test]
fn garbage_in_the_middle_of_the_last_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    wal.append_entries(&entries(1, 10, 1)).unwrap();
    wal.sync().unwrap();
    let records_end = wal.written_position().offset as usize;
    drop(wal);
    let file = &segment_files(dir.path())[0];
    let mut bytes = fs::read(file).unwrap();
    let middle = records_end / 2;
    bytes[middle..middle + 4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    fs::write(file, &bytes).unwrap();
    let err = Wal::open(dir.path(), WalConfig::default()).unwrap_err();
    match err {
        Error::Corruption { path, offset, .. } => {
            assert_eq!(&path, file);
            assert!(offset <= middle as u64);
        }
        other => panic!("{other}"),
    }
}

/// Writes entries 1..5 to a new WAL in `dir` and closes it; returns its
/// segment and where its records end.
fn four_entries_synced(dir: &std::path::Path) -> (std::path::PathBuf, u64) {
    let mut wal = Wal::open(dir, WalConfig::default()).unwrap();
    wal.append_entries(&entries(1, 5, 1)).unwrap();
    wal.sync().unwrap();
    let records_end = wal.written_position().offset;
    drop(wal);
    (segment_files(dir)[0].clone(), records_end)
}

#[test]
fn zeros_after_the_records_are_free_space_kept_for_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (file, records_end) = &four_entries_synced(dir.path());
    let records_end = *records_end;
    // The segment was zero-filled ahead of its records, so that syncs need
    // not write the file's length.
    let len = fs::metadata(file).unwrap().len();
    assert!(
        len > records_end,
        "{len} bytes for records ending at {records_end}"
    );
    // What a file system may also show after a crash: the size grew, the
    // data never arrived. Either way the zeros hold no record.
    fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len + 4096)
        .unwrap();
    let mut wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    assert_eq!(wal.recovery_info().torn_tail, None);
    assert_eq!(wal.written_position().offset, records_end);
    assert_eq!(wal.entries(1, 5).unwrap(), entries(1, 5, 1));
    assert_eq!(fs::metadata(file).unwrap().len(), len + 4096, "kept");
    // New records go into the free space and are read back after a reopen.
    wal.append_entries(&entries(5, 8, 1)).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    assert_eq!(wal.entries(1, 8).unwrap(), entries(1, 8, 1));
    assert_eq!(fs::metadata(file).unwrap().len(), len + 4096);
}

/// Damage in the free space after the records is cut away, and with it the
/// free space: the file ends at its last record again.
#[test]
fn a_damaged_tail_is_cut_with_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let (file, records_end) = &four_entries_synced(dir.path());
    let records_end = *records_end;
    let len = fs::metadata(file).unwrap().len();
    // The start of a record that never finished.
    let mut bytes = fs::read(file).unwrap();
    bytes[records_end as usize..records_end as usize + 12].fill(0x5a);
    fs::write(file, &bytes).unwrap();
    let wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    let torn = wal.recovery_info().torn_tail.clone().unwrap();
    assert_eq!(
        (torn.offset, torn.bytes_cut),
        (records_end, len - records_end)
    );
    assert_eq!(wal.entries(1, 5).unwrap(), entries(1, 5, 1));
    assert_eq!(fs::metadata(file).unwrap().len(), records_end);
}

/// A crash while records written into the space filled ahead are being
/// synced may keep a later page of them and lose an earlier one, which reads
/// as zeros: that is a torn tail, cut from the first damaged record, and
/// everything synced before it is kept. A damaged record with no zero sector
/// before the next whole one stays corruption (see the garbage test above).
#[test]
fn an_earlier_page_lost_and_a_later_one_kept_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (file, synced_end) = &four_entries_synced(dir.path());
    let synced_end = *synced_end;
    let mut wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    // About 5 pages of records that were being synced when the power went.
    let big: Vec<Entry> = (5..25)
        .map(|index| Entry {
            data: bytes::Bytes::from(vec![b'x'; 1000]),
            ..entry(index, 1)
        })
        .collect();
    wal.append_entries(&big).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let mut bytes = fs::read(file).unwrap();
    let lost_page = (synced_end as usize).div_ceil(4096) * 4096;
    bytes[lost_page..lost_page + 4096].fill(0);
    fs::write(file, &bytes).unwrap();

    let wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    let torn = wal.recovery_info().torn_tail.clone().expect("a torn tail");
    assert!(torn.offset >= synced_end && torn.offset <= lost_page as u64);
    assert_eq!(wal.entries(1, 5).unwrap(), entries(1, 5, 1));
    assert!(
        wal.last_index() >= 4 && wal.last_index() < 24,
        "{}",
        wal.last_index()
    );
    assert_eq!(fs::metadata(file).unwrap().len(), torn.offset);
}

/// A segment the WAL moved on from ends at its last record: the free space
/// is only ever in the last one.
#[test]
fn rolled_segments_end_at_their_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_segments(512);
    let mut wal = Wal::open(dir.path(), config.clone()).unwrap();
    for i in 1..=40 {
        wal.append_entries(&entries(i, i + 1, 1)).unwrap();
        wal.sync().unwrap();
    }
    let files = segment_files(dir.path());
    assert!(files.len() > 2, "{files:?}");
    let (last, closed) = files.split_last().unwrap();
    for file in closed {
        let bytes = fs::read(file).unwrap();
        assert!(bytes.len() <= 512);
        assert_ne!(bytes.last(), Some(&0), "{file:?} ends in free space");
    }
    assert_eq!(
        fs::metadata(last).unwrap().len(),
        512,
        "filled up to the segment size"
    );
    drop(wal);
    let wal = Wal::open(dir.path(), config).unwrap();
    assert_eq!(wal.entries(1, 41).unwrap().len(), 40);
}

#[test]
fn leftover_temporary_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    drop(Wal::open(dir.path(), WalConfig::default()).unwrap());
    let tmp = dir.path().join("0000000000000001-0000000000000001.wal.tmp");
    fs::write(&tmp, b"half a header").unwrap();
    let wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
    assert!(!tmp.exists());
    assert_eq!(wal.segment_count(), 1);
}

#[test]
fn caller_mistakes_are_refused_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        entry_bytes_max: 64,
        ..WalConfig::default()
    };
    let mut wal = Wal::open(dir.path(), config).unwrap();
    wal.append_entries(&entries(1, 5, 2)).unwrap();
    wal.save_snapshot_marker(SnapshotMarker { index: 2, term: 2 })
        .unwrap();
    let mut big = entry(5, 2);
    big.data = vec![0u8; 65].into();
    let refusals = [
        wal.append_entries(&[big]).unwrap_err(),
        wal.append_entries(&[entry(2, 2)]).unwrap_err(), // at the snapshot
        wal.append_entries(&[entry(7, 2)]).unwrap_err(), // gap
        wal.append_entries(&[entry(5, 2), entry(7, 2)]).unwrap_err(),
        wal.truncate_suffix(2).unwrap_err(),
        wal.set_hard_state(HardState {
            term: 1,
            vote: 0,
            commit: 0,
        })
        .and_then(|_| wal.set_hard_state(HardState::default()))
        .unwrap_err(),
        wal.save_snapshot_marker(SnapshotMarker { index: 1, term: 1 })
            .unwrap_err(),
    ];
    for err in refusals {
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(!err.is_fatal());
    }
    wal.append_entries(&[entry(5, 2)]).unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.entries(3, 6).unwrap(), entries(3, 6, 2));
}

/// An independent model of what the WAL must hold.
#[derive(Default)]
struct Model {
    snapshot: SnapshotMarker,
    /// Entries after the snapshot.
    log: Vec<Entry>,
    hard_state: HardState,
}

impl Model {
    fn last(&self) -> Index {
        self.snapshot.index + self.log.len() as u64
    }

    fn term_at(&self, index: Index) -> u64 {
        if index == self.snapshot.index {
            return self.snapshot.term;
        }
        self.log[(index - self.snapshot.index - 1) as usize].term
    }
}

#[test]
fn random_restarts_give_back_exactly_what_was_written() {
    for seed in 0..4u64 {
        run_random_restarts(seed);
    }
}

fn run_random_restarts(seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig {
        segment_size_bytes: 1024,
        cache_bytes_max: 600,
        ..WalConfig::default()
    };
    let mut wal = Wal::open(dir.path(), config.clone()).unwrap();
    let mut model = Model::default();
    let mut term = 1;
    for step in 0..400 {
        match rng.gen_range(0..100) {
            0..=49 => {
                // Append, sometimes overwriting a suffix with a newer term.
                let from = if model.log.is_empty() || rng.gen_bool(0.8) {
                    model.last() + 1
                } else {
                    term += 1;
                    rng.gen_range(model.snapshot.index + 1..=model.last())
                };
                let count = rng.gen_range(1..6);
                let batch: Vec<Entry> = (from..from + count).map(|i| entry(i, term)).collect();
                wal.append_entries(&batch).unwrap();
                model
                    .log
                    .truncate((from - model.snapshot.index - 1) as usize);
                model.log.extend(batch);
            }
            50..=64 => {
                model.hard_state = hs(term, rng.gen_range(0..4), model.last());
                wal.set_hard_state(model.hard_state).unwrap();
            }
            65..=72 if model.last() > model.snapshot.index => {
                let index = rng.gen_range(model.snapshot.index + 1..=model.last());
                let marker = SnapshotMarker {
                    index,
                    term: model.term_at(index),
                };
                wal.save_snapshot_marker(marker).unwrap();
                model.log.drain(..(index - model.snapshot.index) as usize);
                model.snapshot = marker;
            }
            73..=84 => {
                wal.sync().unwrap();
            }
            85..=89 => {
                wal.release_segments().unwrap();
            }
            _ => {
                if rng.gen_bool(0.5) {
                    wal.sync().unwrap();
                }
                drop(wal);
                wal = Wal::open(dir.path(), config.clone()).unwrap();
            }
        }
        let context = format!("seed {seed} step {step}");
        assert_eq!(wal.snapshot_marker(), model.snapshot, "{context}");
        assert_eq!(wal.hard_state(), model.hard_state, "{context}");
        assert_eq!(wal.first_index(), model.snapshot.index + 1, "{context}");
        assert_eq!(wal.last_index(), model.last(), "{context}");
        assert_eq!(
            wal.entries(wal.first_index(), wal.last_index() + 1)
                .unwrap(),
            model.log,
            "{context}"
        );
    }
}
