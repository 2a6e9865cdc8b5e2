//! Bit flips: a single flipped bit anywhere in a segment (header, length,
//! type, checksum or payload of any record) is always detected. It is
//! reported as corruption, except in the final record of the last segment,
//! where it may instead be cut as a torn tail; it is never read back as
//! different data.

mod common;

use std::fs;
use std::path::Path;

use common::{entry, hs, segment_files, small_segments, state_of, State};
use raftkv_storage::{Error, SnapshotMarker, Wal, WalConfig};

/// Writes a WAL, returning its directory, the final state, the state before
/// the last record, and where the records of the last segment end (the zeros
/// after them are free space).
fn build(config: &WalConfig) -> (tempfile::TempDir, State, State, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), config.clone()).unwrap();
    wal.append_entries(&[entry(1, 1), entry(2, 1), entry(3, 1)])
        .unwrap();
    wal.set_hard_state(hs(1, 1, 1)).unwrap();
    wal.save_snapshot_marker(SnapshotMarker { index: 1, term: 1 })
        .unwrap();
    wal.append_entries(&[entry(3, 2), entry(4, 2)]).unwrap();
    let before_last = state_of(&wal);
    wal.append_entries(&[entry(5, 2)]).unwrap();
    wal.sync().unwrap();
    let last = state_of(&wal);
    let records_end = wal.written_position().offset;
    (dir, last, before_last, records_end)
}

/// Flips every bit of the records of every segment in turn and checks the
/// outcome (the free space after the last segment's records has its own
/// test); with
/// `skip_final_record`, not those of the final record (each flip there costs
/// an fsync to cut the tail, and another test covers them). Returns
/// (corruptions, torn tails) counted.
fn flip_every_bit(config: &WalConfig, skip_final_record: bool) -> (usize, usize) {
    let (source, full, before_last, records_end) = build(config);
    let files = segment_files(source.path());
    let last_file = files.len() - 1;
    let last_record_start =
        records_end - raftkv_storage::record::entry_record_bytes(entry(5, 2).data.len()) as u64;
    let (mut corrupt, mut torn) = (0, 0);
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("wal");
    for (f, file) in files.iter().enumerate() {
        let original = fs::read(file).unwrap();
        let records = if f == last_file {
            records_end as usize
        } else {
            original.len()
        };
        for bit in 0..records * 8 {
            // A fresh copy of the WAL for every flip (recovery may cut it).
            let in_final = f == last_file && (bit / 8) as u64 >= last_record_start;
            if in_final && skip_final_record {
                continue;
            }
            let _ = fs::remove_dir_all(&target);
            fs::create_dir(&target).unwrap();
            copy_all(&files, &target);
            let mut flipped = original.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            fs::write(target.join(file.file_name().unwrap()), &flipped).unwrap();
            let byte = (bit / 8) as u64;
            match Wal::open(&target, config.clone()) {
                Err(Error::Corruption { path, offset, .. }) => {
                    assert!(path.starts_with(&target));
                    assert!(
                        offset <= byte,
                        "corruption reported after the flip at {byte}"
                    );
                    corrupt += 1;
                }
                Err(other) => panic!("flip of bit {bit} in {file:?}: unexpected {other}"),
                Ok(wal) => {
                    assert!(in_final, "flip of bit {bit} in {file:?} went undetected");
                    assert!(wal.recovery_info().torn_tail.is_some());
                    assert_eq!(state_of(&wal), before_last, "flip of bit {bit}");
                    assert_ne!(state_of(&wal), full);
                    torn += 1;
                }
            }
        }
    }
    (corrupt, torn)
}

fn copy_all(files: &[std::path::PathBuf], to: &Path) {
    for file in files {
        fs::copy(file, to.join(file.file_name().unwrap())).unwrap();
    }
}

#[test]
fn every_bit_flip_in_a_single_segment_is_detected() {
    let (corrupt, torn) = flip_every_bit(&WalConfig::default(), false);
    assert!(corrupt > 0 && torn > 0, "corrupt {corrupt}, torn {torn}");
}

/// A flip in the zero-filled space after the last record damages no record:
/// it is cut as a torn tail and everything written is read back.
#[test]
fn a_bit_flip_in_the_free_space_after_the_records_loses_nothing() {
    let config = WalConfig::default();
    let (source, full, _, records_end) = build(&config);
    let files = segment_files(source.path());
    assert_eq!(files.len(), 1);
    let original = fs::read(&files[0]).unwrap();
    assert!(
        original.len() as u64 > records_end,
        "the segment is filled ahead"
    );
    assert!(original[records_end as usize..].iter().all(|&b| b == 0));
    let scratch = tempfile::tempdir().unwrap();
    let free = original.len() - records_end as usize;
    for step in [0, 1, 8, 9, 4096, free / 2, free - 1] {
        let byte = records_end as usize + step;
        let target = scratch.path().join(format!("wal-{step}"));
        fs::create_dir(&target).unwrap();
        let mut flipped = original.clone();
        flipped[byte] ^= 0x10;
        fs::write(target.join(files[0].file_name().unwrap()), &flipped).unwrap();
        let wal =
            Wal::open(&target, config.clone()).unwrap_or_else(|e| panic!("flip at {byte}: {e}"));
        assert_eq!(state_of(&wal), full, "flip at {byte}");
        let torn = wal.recovery_info().torn_tail.clone().expect("cut");
        assert_eq!(torn.offset, records_end);
    }
}

#[test]
fn every_bit_flip_across_several_segments_is_detected() {
    let config = small_segments(200);
    let (source, ..) = build(&config);
    assert!(segment_files(source.path()).len() >= 2);
    let (corrupt, torn) = flip_every_bit(&config, true);
    assert!(corrupt > 0 && torn == 0, "corrupt {corrupt}, torn {torn}");
}
