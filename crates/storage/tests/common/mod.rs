//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftkv_raft::{Entry, EntryKind, HardState, Index, Term};
use raftkv_storage::{SnapshotMarker, Wal, WalConfig};

pub fn entry(index: Index, term: Term) -> Entry {
    Entry {
        term,
        index,
        kind: if index.is_multiple_of(7) {
            EntryKind::ConfChange
        } else {
            EntryKind::Normal
        },
        data: Bytes::from(format!("payload of entry {index} in term {term}")),
    }
}

pub fn hs(term: Term, vote: u64, commit: Index) -> HardState {
    HardState { term, vote, commit }
}

/// Everything a WAL gives back on restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
    pub snapshot: SnapshotMarker,
    pub first_index: Index,
    pub last_index: Index,
}

pub fn state_of(wal: &Wal) -> State {
    State {
        entries: wal
            .entries(wal.first_index(), wal.last_index() + 1)
            .expect("read back the whole log"),
        hard_state: wal.hard_state(),
        snapshot: wal.snapshot_marker(),
        first_index: wal.first_index(),
        last_index: wal.last_index(),
    }
}

/// The segment files of a WAL directory, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

/// A config with tiny segments, so that a few records span several.
pub fn small_segments(segment_size_bytes: u64) -> WalConfig {
    WalConfig {
        segment_size_bytes,
        ..WalConfig::default()
    }
}
