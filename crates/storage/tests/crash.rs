//! Crash at every byte: a WAL cut at any length recovers exactly the records
//! wholly inside that length, and so never loses one synced before it.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{entry, hs, segment_files, small_segments, state_of, State};
use raftkv_storage::{SnapshotMarker, Wal, WalConfig};

enum Op {
    Append(u64, u64),
    Truncate(u64),
    HardState(u64, u64, u64),
    Snapshot(u64, u64),
    Sync,
}

/// A script touching every record type, overwrites, a snapshot that keeps
/// a suffix, and several segment rolls. Each call writes at most one record
/// (besides a roll's preamble), so every whole-record prefix is a state the
/// writer was in after some call.
fn script() -> Vec<Op> {
    use Op::*;
    vec![
        Append(1, 1),
        Append(2, 1),
        HardState(1, 1, 0),
        Sync,
        Append(3, 1),
        Append(4, 1),
        Sync,
        Truncate(3),
        Append(3, 2),
        HardState(2, 2, 2),
        Sync,
        Append(4, 2),
        Append(5, 2),
        Snapshot(2, 1),
        Sync,
        Append(6, 2),
        Append(7, 3),
        HardState(3, 3, 5),
        Sync,
        Truncate(7),
        Append(7, 4),
        Append(8, 4),
        Snapshot(6, 2),
        HardState(4, 1, 8),
        Sync,
    ]
}

struct Checkpoint {
    /// Bytes of the segments, concatenated, when the call returned.
    end: u64,
    state: State,
}

fn config() -> WalConfig {
    small_segments(300)
}

#[test]
fn recovery_from_a_crash_at_every_byte_keeps_exactly_the_whole_records() {
    let source = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(source.path(), config()).unwrap();
    // (segment, offset) positions, turned into concatenated lengths below.
    let mut positions = vec![(wal.written_position(), state_of(&wal))];
    let mut synced = Vec::new();
    for op in script() {
        match op {
            Op::Append(index, term) => {
                wal.append_entries(&[entry(index, term)]).unwrap();
            }
            Op::Truncate(index) => {
                wal.truncate_suffix(index).unwrap();
            }
            Op::HardState(t, v, c) => {
                wal.set_hard_state(hs(t, v, c)).unwrap();
            }
            Op::Snapshot(index, term) => {
                wal.save_snapshot_marker(SnapshotMarker { index, term })
                    .unwrap();
            }
            Op::Sync => synced.push(wal.sync().unwrap()),
        }
        positions.push((wal.written_position(), state_of(&wal)));
    }
    drop(wal);

    let files = segment_files(source.path());
    assert!(
        files.len() >= 3,
        "the script should span several segments: {files:?}"
    );
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .collect();
    let starts: Vec<u64> = sizes
        .iter()
        .scan(0, |acc, &s| {
            let start = *acc;
            *acc += s;
            Some(start)
        })
        .collect();
    let total: u64 = sizes.iter().sum();
    let concat = |p: raftkv_storage::Position| starts[p.segment as usize] + p.offset;
    let mut checkpoints: Vec<Checkpoint> = positions
        .into_iter()
        .map(|(p, state)| Checkpoint {
            end: concat(p),
            state,
        })
        .collect();
    // Before the first header is whole the WAL is simply new and empty.
    checkpoints[0].end = 0;
    let synced: Vec<u64> = synced.into_iter().map(concat).collect();
    let contents: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();

    let mut torn_cuts = 0;
    for len in 0..=total {
        let target = tempfile::tempdir().unwrap();
        write_prefix(&files, &contents, &starts, len, target.path().to_path_buf());
        let wal = Wal::open(target.path(), config())
            .unwrap_or_else(|e| panic!("cut at byte {len} of {total}: {e}"));
        let expected = checkpoints
            .iter()
            .rev()
            .find(|c| c.end <= len)
            .map(|c| &c.state)
            .unwrap();
        assert_eq!(&state_of(&wal), expected, "cut at byte {len} of {total}");
        // Equality with the longest whole prefix is what "no synced record
        // lost" means here; check the prefix indeed reaches the last sync.
        if let Some(&last_sync) = synced.iter().rev().find(|&&s| s <= len) {
            let found = checkpoints.iter().rev().find(|c| c.end <= len).unwrap();
            assert!(found.end >= last_sync);
        }
        torn_cuts += usize::from(wal.recovery_info().torn_tail.is_some());
        // The recovered WAL takes new writes and reopens to them.
        if len % 5 == 0 {
            let mut wal = wal;
            let next = wal.last_index() + 1;
            let term = wal.term(wal.last_index()).unwrap_or(0).max(1);
            wal.append_entries(&[entry(next, term)]).unwrap();
            wal.sync().unwrap();
            let after = state_of(&wal);
            drop(wal);
            let reopened = Wal::open(target.path(), config()).unwrap();
            assert_eq!(state_of(&reopened), after, "append after cut at {len}");
        }
    }
    assert!(torn_cuts > 0);
}

/// Lays out in `dir` what the disk holds if only the first `len` bytes of
/// the concatenated segments had been written.
fn write_prefix(files: &[PathBuf], contents: &[Vec<u8>], starts: &[u64], len: u64, dir: PathBuf) {
    for ((file, bytes), &start) in files.iter().zip(contents).zip(starts) {
        if start >= len && start > 0 {
            break;
        }
        let keep = (len - start).min(bytes.len() as u64) as usize;
        fs::write(dir.join(file.file_name().unwrap()), &bytes[..keep]).unwrap();
    }
}
