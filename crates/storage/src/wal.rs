//! The write-ahead log: the Raft log, the hard state and the snapshot
//! marker, kept durable in a directory of segment files.
//!
//! # Using it
//!
//! One Raft `Ready` is persisted as a group: append its entries and its
//! hard state, then call [`Wal::sync`] once. Several `Ready`s may share one
//! sync (group commit). Nothing is durable until a sync that comes after it
//! has returned `Ok`:
//!
//! ```text
//!  append_entries(e5..e7) ─┐ written, not durable: a crash may lose them
//!  set_hard_state(hs)     ─┤ (each call returns the Position after its records)
//!  append_entries(e8)     ─┘
//!  sync()  ──────────────── fdatasync; on Ok every record up to the returned
//!                           Position is durable: now acknowledge e5..e8, vote, ...
//! ```
//!
//! [`Wal::durable_position`] and [`Wal::durable_last_index`] say how far the
//! last successful sync reached, so a server can hold acknowledgements until
//! then.
//!
//! ```
//! use bytes::Bytes;
//! use raftkv_raft::{Entry, EntryKind, HardState};
//! use raftkv_storage::{Wal, WalConfig};
//!
//! # fn main() -> Result<(), raftkv_storage::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut wal = Wal::open(dir.path(), WalConfig::default())?;
//! let entry = |index| Entry { term: 1, index, kind: EntryKind::Normal, data: Bytes::from("x") };
//! wal.append_entries(&[entry(1), entry(2)])?;
//! let written = wal.set_hard_state(HardState { term: 1, vote: 1, commit: 1 })?;
//! let durable = wal.sync()?;
//! assert!(durable >= written && wal.durable_last_index() == 2);
//! drop(wal);
//!
//! let wal = Wal::open(dir.path(), WalConfig::default())?;
//! assert_eq!(wal.entries(1, 3)?.len(), 2);
//! assert_eq!(wal.hard_state().commit, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Failures
//!
//! A failed write or sync **poisons** the WAL: the kernel may have dropped
//! the dirty pages, so retrying an fsync and carrying on could acknowledge
//! data that is gone. Every later call returns [`Error::Poisoned`]; the
//! process should stop, and on restart [`Wal::open`] recovers what the disk
//! really holds.
//!
//! # Recovery
//!
//! [`Wal::open`] replays every segment in order. The end of the last segment
//! may be torn by a crash; it is cut back to the last whole record with a
//! warning naming the file and offset. Anything else that does not decode,
//! a missing segment or a gap in the log indices is [`Error::Corruption`]:
//! the node must not start. See [`crate::segment`] for the rules.
//!
//! # Segments and release
//!
//! The active segment is closed (synced) and a new one started when it
//! reaches [`WalConfig::segment_size_bytes`]. Each new segment repeats the
//! current snapshot marker and hard state right after its header, so that
//! deleting older segments never loses them. [`Wal::release_segments`]
//! deletes the segments that hold no live entry once a snapshot marker
//! covers them.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use raftkv_raft::{Entry, HardState, Index, Term};
use tracing::{debug, error, info, warn};

use crate::cache::EntryCache;
use crate::config::WalConfig;
use crate::error::{Error, Result};
use crate::log_index::{EntryLoc, LogIndex};
use crate::record::{encode_record, Record};
use crate::segment::{self, SegmentWriter, TMP_SUFFIX};

/// The largest log index the WAL accepts. Far beyond any real log, it
/// leaves room for `index + 1` without overflow, even for indices read from
/// a damaged disk.
pub const INDEX_MAX: Index = u64::MAX / 2;

/// A place in the WAL: a segment and a byte offset in it. Positions only
/// grow while a [`Wal`] is open, so they order writes: a record is durable
/// once [`Wal::durable_position`] is at or past the position returned when
/// it was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Sequence number of the segment.
    pub segment: u64,
    /// Byte offset just past the record, in that segment.
    pub offset: u64,
}

/// The latest snapshot the log knows of: entries up to `index` are covered
/// by a snapshot stored elsewhere (see [`crate::SnapshotStore`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMarker {
    /// The last index the snapshot covers; 0 for none.
    pub index: Index,
    /// The term of the entry at `index`; 0 for none.
    pub term: Term,
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryInfo {
    /// Segment files replayed.
    pub segments: usize,
    /// Records replayed, segment headers included.
    pub records: u64,
    /// The torn tail that was cut, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// A torn end of the last segment that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Where the cut was made: the end of the last whole record.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes_cut: u64,
}

/// An open segment: where it is, and a handle to read entries from it.
#[derive(Debug)]
struct SegmentFile {
    path: PathBuf,
    file: File,
}

/// The write-ahead log. See the [module docs](self) for the contract.
///
/// A `Wal` is used from one thread at a time (`&mut self` for every
/// change); it takes no lock on its directory, so two processes must not
/// open the same directory. Dropping a `Wal` does not sync: records written
/// after the last successful [`Wal::sync`] may or may not survive a crash.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    config: WalConfig,
    segments: BTreeMap<u64, SegmentFile>,
    active: SegmentWriter,
    /// Bytes of the active segment taken by its header and carried-forward
    /// records: a segment holding no more is never rolled.
    active_preamble_bytes: u64,
    log: LogIndex,
    cache: EntryCache,
    hard_state: HardState,
    snapshot: SnapshotMarker,
    written: Position,
    durable: Position,
    durable_last_index: Index,
    poisoned: Option<String>,
    recovery: RecoveryInfo,
    buf: Vec<u8>,
}

impl Wal {
    /// Opens the WAL in `dir`, creating the directory and an empty log if
    /// there is none, and recovers its state.
    ///
    /// On return everything the WAL holds is durable (a cut torn tail is
    /// synced away). Errors: [`Error::InvalidConfig`] for a bad `config`,
    /// [`Error::Corruption`] for damage a crash cannot explain (the node
    /// must not start), [`Error::Io`] if the directory cannot be read or
    /// written.
    pub fn open(dir: impl AsRef<Path>, config: WalConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        segment::create_dir_durably(&dir)?;
        let found = list_segments(&dir)?;
        if found.is_empty() {
            return Self::create_new(dir, config);
        }
        Recovery::new(dir, config).run(found)
    }

    fn create_new(dir: PathBuf, config: WalConfig) -> Result<Self> {
        let active = SegmentWriter::create(&dir, 0, 1, &[], config.segment_size_bytes)?;
        info!(dir = %dir.display(), "created a new WAL");
        let state = Recovery::new(dir, config);
        let preamble_bytes = active.len_bytes();
        state.finish(active, preamble_bytes)
    }

    // ----- writing -----

    /// Appends `entries`, which must have consecutive indices, the first at
    /// most [`Wal::last_index`] `+ 1` and above the snapshot index. If the
    /// first is at or below the last index, entries from its index on are
    /// replaced (a truncation record is written first).
    ///
    /// Returns the position after the last record written; the entries are
    /// durable once a later [`Wal::sync`] returns `Ok`. An empty slice writes
    /// nothing. Errors: [`Error::InvalidArgument`] (nothing written, the WAL
    /// unchanged) for entries that break the rules above or exceed
    /// [`WalConfig::entry_bytes_max`]; a fatal error poisons the WAL.
    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<Position> {
        self.check_usable()?;
        let Some(first) = entries.first() else {
            return Ok(self.written);
        };
        self.validate_entries(entries)?;
        let truncate = first.index <= self.log.last();
        self.buf.clear();
        if truncate {
            self.encode(&Record::Truncate { index: first.index })?;
        }
        let mut spans = Vec::with_capacity(entries.len());
        for entry in entries {
            let start = self.buf.len() as u64;
            self.encode(&Record::Entry(entry.clone()))?;
            spans.push((start, self.buf.len() as u64 - start));
        }
        let (seq, base) = self.write_buf()?;
        if truncate {
            self.apply_truncate(first.index)?;
        }
        for (entry, (start, len)) in entries.iter().zip(spans) {
            let loc = EntryLoc {
                seq,
                offset: base + start,
                // An entry record is at most 9 + 17 + entry_bytes_max bytes.
                len: len as u32,
                term: entry.term,
            };
            if let Err(why) = self.log.append(entry.index, loc) {
                return Err(self.poison(Error::InvalidArgument(why)));
            }
            self.cache.push(entry);
        }
        Ok(self.written)
    }

    /// Discards entries `index` and above (writes a truncation record).
    /// [`Wal::append_entries`] does this by itself when entries overwrite the
    /// log; this is for a log that is to end without replacements.
    ///
    /// `index` must be above the snapshot index and at most
    /// [`Wal::last_index`] `+ 1` (then nothing is written). Durable after the
    /// next successful [`Wal::sync`].
    pub fn truncate_suffix(&mut self, index: Index) -> Result<Position> {
        self.check_usable()?;
        if index <= self.snapshot.index || index > self.log.last() + 1 {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate at {index}: the log holds ({}, {}]",
                self.snapshot.index,
                self.log.last()
            )));
        }
        if index == self.log.last() + 1 {
            return Ok(self.written);
        }
        self.buf.clear();
        self.encode(&Record::Truncate { index })?;
        self.write_buf()?;
        self.apply_truncate(index)?;
        Ok(self.written)
    }

    /// Records the hard state; the latest recorded wins on recovery. A hard
    /// state equal to the current one writes nothing.
    ///
    /// The term must not go down ([`Error::InvalidArgument`] otherwise).
    /// Durable after the next successful [`Wal::sync`]: votes must not be
    /// sent before.
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<Position> {
        self.check_usable()?;
        if hard_state == self.hard_state {
            return Ok(self.written);
        }
        if hard_state.term < self.hard_state.term {
            return Err(Error::InvalidArgument(format!(
                "hard state term {} is below the recorded term {}",
                hard_state.term, self.hard_state.term
            )));
        }
        self.buf.clear();
        self.encode(&Record::HardState(hard_state))?;
        self.write_buf()?;
        self.hard_state = hard_state;
        Ok(self.written)
    }

    /// Records that a snapshot covering the log up to `marker.index` is
    /// durable elsewhere. Entries up to that index leave the log; if the
    /// log's entry at that index has a different term, or the log ends
    /// before it, the log is emptied and continues at `marker.index + 1`.
    ///
    /// Save the snapshot itself durably first ([`crate::SnapshotStore::save`]):
    /// after a crash the WAL's marker is taken as proof that the snapshot
    /// exists. The index must not go down ([`Error::InvalidArgument`]); the
    /// same marker again writes nothing. Durable after the next successful
    /// [`Wal::sync`].
    pub fn save_snapshot_marker(&mut self, marker: SnapshotMarker) -> Result<Position> {
        self.check_usable()?;
        if marker == self.snapshot {
            return Ok(self.written);
        }
        if marker.index <= self.snapshot.index || marker.index > INDEX_MAX {
            return Err(Error::InvalidArgument(format!(
                "snapshot marker ({}, {}) does not advance the current ({}, {})",
                marker.index, marker.term, self.snapshot.index, self.snapshot.term
            )));
        }
        self.buf.clear();
        self.encode(&Record::Snapshot {
            index: marker.index,
            term: marker.term,
        })?;
        self.write_buf()?;
        apply_snapshot(&mut self.log, &mut self.cache, marker);
        self.snapshot = marker;
        Ok(self.written)
    }

    /// Makes every record written so far durable (one fdatasync for all of
    /// them) and returns the position up to which the WAL is durable.
    ///
    /// Does nothing if nothing was written since the last sync. On error the
    /// WAL is poisoned: whether the records reached the disk is unknown, and
    /// none of them may be acknowledged.
    pub fn sync(&mut self) -> Result<Position> {
        self.check_usable()?;
        if self.durable == self.written {
            return Ok(self.durable);
        }
        if let Err(err) = self.active.sync() {
            return Err(self.poison(err));
        }
        self.mark_durable();
        Ok(self.durable)
    }

    /// Deletes the segment files that hold no live entry (every entry in
    /// them is covered by the snapshot marker or was overwritten), except
    /// the active one. Syncs first, so that the marker that makes them
    /// obsolete is durable before they go. Returns how many were deleted.
    pub fn release_segments(&mut self) -> Result<usize> {
        self.sync()?;
        let active = self.active.seq();
        let keep_from = self.log.oldest_seq().unwrap_or(active).min(active);
        let doomed: Vec<u64> = self.segments.range(..keep_from).map(|(&s, _)| s).collect();
        // Oldest first, the directory synced after each: after a crash the
        // remaining segments are still numbered without gaps.
        for seq in &doomed {
            if let Some(segment) = self.segments.remove(seq) {
                fs::remove_file(&segment.path).map_err(|e| Error::io(&segment.path, e))?;
                if let Err(err) = segment::sync_dir(&self.dir) {
                    return Err(self.poison(err));
                }
                debug!(path = %segment.path.display(), "released WAL segment");
            }
        }
        Ok(doomed.len())
    }

    // ----- reading -----

    /// The entries with indices `lo..hi`, from the cache when they are
    /// recent and from their segment otherwise.
    ///
    /// Errors: [`Error::Unavailable`] if the range is not within
    /// [`Wal::first_index`]`..=`[`Wal::last_index`] (or `lo > hi`);
    /// [`Error::Corruption`] or [`Error::Io`] if a segment cannot be read back.
    pub fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        self.check_usable()?;
        if lo > hi || lo < self.log.first() || hi > self.log.last() + 1 {
            return Err(Error::Unavailable {
                lo,
                hi,
                first: self.log.first(),
                last: self.log.last(),
            });
        }
        (lo..hi).map(|index| self.entry(index)).collect()
    }

    fn entry(&self, index: Index) -> Result<Entry> {
        if let Some(entry) = self.cache.get(index) {
            return Ok(entry.clone());
        }
        let unavailable = || Error::Unavailable {
            lo: index,
            hi: index.saturating_add(1),
            first: self.log.first(),
            last: self.log.last(),
        };
        let loc = *self.log.get(index).ok_or_else(unavailable)?;
        let segment = self.segments.get(&loc.seq).ok_or_else(|| {
            Error::corruption(
                &self.dir,
                0,
                format!("segment {} of entry {index} is gone", loc.seq),
            )
        })?;
        match segment::read_record_at(&segment.file, &segment.path, loc.offset, loc.len)? {
            Record::Entry(entry) if entry.index == index && entry.term == loc.term => Ok(entry),
            other => Err(Error::corruption(
                &segment.path,
                loc.offset,
                format!(
                    "expected entry {index} of term {}, found {other:?}",
                    loc.term
                ),
            )),
        }
    }

    /// The term of entry `index`; also answers for the snapshot index.
    pub fn term(&self, index: Index) -> Result<Term> {
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        self.log
            .get(index)
            .map(|loc| loc.term)
            .ok_or(Error::Unavailable {
                lo: index,
                hi: index.saturating_add(1),
                first: self.log.first(),
                last: self.log.last(),
            })
    }

    /// Index of the first live entry: the snapshot index `+ 1` once a
    /// snapshot marker exists. Greater than [`Wal::last_index`] when the log
    /// is empty.
    pub fn first_index(&self) -> Index {
        self.log.first()
    }

    /// Index of the last entry written (durable or not), or the snapshot
    /// index if there is none after it.
    pub fn last_index(&self) -> Index {
        self.log.last()
    }

    /// The last hard state written (durable or not).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The last snapshot marker written (durable or not).
    pub fn snapshot_marker(&self) -> SnapshotMarker {
        self.snapshot
    }

    /// The position after the last record written.
    pub fn written_position(&self) -> Position {
        self.written
    }

    /// The position up to which everything is durable: the end of what the
    /// last successful [`Wal::sync`] (or [`Wal::open`]) covered.
    pub fn durable_position(&self) -> Position {
        self.durable
    }

    /// [`Wal::last_index`] as it was at the last successful sync: after a
    /// crash the log holds at least this far, as it was then.
    pub fn durable_last_index(&self) -> Index {
        self.durable_last_index
    }

    /// What [`Wal::open`] found, including a torn tail it cut.
    pub fn recovery_info(&self) -> &RecoveryInfo {
        &self.recovery
    }

    /// The directory the WAL lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    // ----- internals -----

    fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(why) => Err(Error::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Marks the WAL unusable after a fatal error and hands the error back.
    fn poison(&mut self, err: Error) -> Error {
        if err.is_fatal() || matches!(err, Error::InvalidArgument(_)) {
            error!(dir = %self.dir.display(), error = %err, "WAL poisoned");
            self.poisoned = Some(err.to_string());
        }
        err
    }

    fn validate_entries(&self, entries: &[Entry]) -> Result<()> {
        let first = &entries[0];
        if first.index <= self.snapshot.index || first.index > self.log.last() + 1 {
            return Err(Error::InvalidArgument(format!(
                "entry {} cannot be appended: the log holds ({}, {}]",
                first.index,
                self.snapshot.index,
                self.log.last()
            )));
        }
        // The entry before the first must not have a higher term (Raft's log
        // terms never decrease along the log).
        let prev_term = self.term(first.index - 1).unwrap_or(0);
        let mut prev = (first.index - 1, prev_term);
        for entry in entries {
            if entry.index != prev.0 + 1 || entry.term < prev.1 {
                return Err(Error::InvalidArgument(format!(
                    "entry ({}, term {}) does not follow ({}, term {})",
                    entry.index, entry.term, prev.0, prev.1
                )));
            }
            if entry.data.len() > self.config.entry_bytes_max as usize {
                return Err(Error::InvalidArgument(format!(
                    "entry {} has {} bytes, the limit is {}",
                    entry.index,
                    entry.data.len(),
                    self.config.entry_bytes_max
                )));
            }
            prev = (entry.index, entry.term);
        }
        Ok(())
    }

    fn encode(&mut self, record: &Record) -> Result<()> {
        encode_record(record, &mut self.buf)
            .map(|_| ())
            .map_err(|e| Error::InvalidArgument(format!("record cannot be encoded: {e}")))
    }

    /// Writes the encoded records in `buf` to the active segment, rolling to
    /// a new segment first if they would overfill it. Returns the segment
    /// and the offset they were written at.
    fn write_buf(&mut self) -> Result<(u64, u64)> {
        let len = self.buf.len() as u64;
        let full = self.active.len_bytes() + len > self.config.segment_size_bytes;
        if full && self.active.len_bytes() > self.active_preamble_bytes {
            self.roll()?;
        }
        let at = self.active.len_bytes();
        if let Err(err) = self.active.append(&self.buf) {
            return Err(self.poison(err));
        }
        self.written = Position {
            segment: self.active.seq(),
            offset: self.active.len_bytes(),
        };
        Ok((self.active.seq(), at))
    }

    /// Syncs the active segment and starts the next one, which opens with
    /// the current snapshot marker and hard state.
    fn roll(&mut self) -> Result<()> {
        if let Err(err) = self.active.close() {
            return Err(self.poison(err));
        }
        self.mark_durable();
        let mut preamble = Vec::new();
        if self.snapshot != SnapshotMarker::default() {
            preamble.push(Record::Snapshot {
                index: self.snapshot.index,
                term: self.snapshot.term,
            });
        }
        if self.hard_state != HardState::default() {
            preamble.push(Record::HardState(self.hard_state));
        }
        let seq = self.active.seq() + 1;
        let first_index = self.log.last() + 1;
        let fill_limit = self.config.segment_size_bytes;
        let next = match SegmentWriter::create(&self.dir, seq, first_index, &preamble, fill_limit) {
            Ok(next) => next,
            Err(err) => return Err(self.poison(err)),
        };
        let file = match next.reader() {
            Ok(file) => file,
            Err(err) => return Err(self.poison(err)),
        };
        let path = next.path().to_path_buf();
        debug!(path = %path.display(), first_index, "rolled to a new WAL segment");
        self.segments.insert(seq, SegmentFile { path, file });
        self.active_preamble_bytes = next.len_bytes();
        self.active = next;
        self.written = Position {
            segment: seq,
            offset: self.active.len_bytes(),
        };
        self.mark_durable();
        Ok(())
    }

    fn mark_durable(&mut self) {
        self.durable = self.written;
        self.durable_last_index = self.log.last();
    }

    fn apply_truncate(&mut self, index: Index) -> Result<()> {
        if let Err(why) = self.log.truncate(index) {
            return Err(self.poison(Error::InvalidArgument(why)));
        }
        self.cache.truncate_from(index);
        Ok(())
    }
}

fn apply_snapshot(log: &mut LogIndex, cache: &mut EntryCache, marker: SnapshotMarker) {
    if log.apply_snapshot(marker.index, marker.term) {
        cache.drop_through(marker.index);
    } else {
        cache.clear();
    }
}

/// The segment files in `dir` by sequence number, with their first index.
/// Leftover `.tmp` files of an interrupted segment creation are deleted.
fn list_segments(dir: &Path) -> Result<BTreeMap<u64, (Index, PathBuf)>> {
    let mut found = BTreeMap::new();
    let read = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for item in read {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = item.path();
        if let Some(base) = name.strip_suffix(TMP_SUFFIX) {
            if segment::parse_file_name(base).is_some() {
                warn!(path = %path.display(), "deleting a segment whose creation was interrupted");
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
            continue;
        }
        if let Some((seq, first_index)) = segment::parse_file_name(name) {
            found.insert(seq, (first_index, path));
        }
    }
    Ok(found)
}

/// The state rebuilt by replaying segments.
struct Recovery {
    dir: PathBuf,
    config: WalConfig,
    segments: BTreeMap<u64, SegmentFile>,
    log: LogIndex,
    cache: EntryCache,
    hard_state: HardState,
    snapshot: SnapshotMarker,
    info: RecoveryInfo,
}

impl Recovery {
    fn new(dir: PathBuf, config: WalConfig) -> Self {
        let cache = EntryCache::new(config.cache_bytes_max);
        Self {
            dir,
            config,
            segments: BTreeMap::new(),
            log: LogIndex::new(1),
            cache,
            hard_state: HardState::default(),
            snapshot: SnapshotMarker::default(),
            info: RecoveryInfo::default(),
        }
    }

    fn run(mut self, found: BTreeMap<u64, (Index, PathBuf)>) -> Result<Wal> {
        let mut expected_seq: Option<u64> = None;
        for (&seq, (_, path)) in &found {
            if seq == u64::MAX {
                return Err(Error::corruption(
                    path,
                    0,
                    "segment sequence number is exhausted",
                ));
            }
            if let Some(expected) = expected_seq {
                if seq != expected {
                    return Err(Error::corruption(
                        &self.dir,
                        0,
                        format!("segment {expected} is missing (the next present is {seq})"),
                    ));
                }
            }
            expected_seq = Some(seq + 1);
        }
        let count = found.len();
        let mut active = None;
        for (i, (&seq, (first_index, path))) in found.iter().enumerate() {
            let is_last = i + 1 == count;
            let bytes = segment::read_file(path)?;
            let end = self.replay(path, &bytes, seq, *first_index, i == 0, is_last)?;
            let mut valid_len = end.valid_len;
            let zeros_after = end.torn.is_none();
            if valid_len == 0 && end.torn.is_none() && !is_last {
                return Err(Error::corruption(path, 0, "segment file is empty"));
            }
            if valid_len == 0 && is_last {
                // Not even the header is whole: the segment holds nothing.
                return self.drop_headless_segment(path, seq, *first_index, count);
            }
            if let Some((offset, reason)) = end.torn {
                warn!(
                    path = %path.display(),
                    offset,
                    bytes_cut = bytes.len() as u64 - offset,
                    %reason,
                    "cutting the torn tail of the last WAL segment back to its last whole record"
                );
                self.info.torn_tail = Some(TornTail {
                    path: path.clone(),
                    offset,
                    bytes_cut: bytes.len() as u64 - offset,
                });
                valid_len = offset;
            }
            self.info.segments += 1;
            if is_last {
                let fill_limit = self.config.segment_size_bytes;
                active = Some(SegmentWriter::open_at(
                    path.clone(),
                    seq,
                    valid_len,
                    zeros_after,
                    fill_limit,
                )?);
            } else {
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                self.segments.insert(
                    seq,
                    SegmentFile {
                        path: path.clone(),
                        file,
                    },
                );
            }
        }
        let active = active.ok_or_else(|| Error::corruption(&self.dir, 0, "no segment found"))?;
        if self.log.first() > self.snapshot.index + 1 {
            return Err(Error::corruption(
                &self.dir,
                0,
                format!(
                    "entries {}..{} between the snapshot and the log are missing",
                    self.snapshot.index + 1,
                    self.log.first()
                ),
            ));
        }
        // A recovered segment may roll as soon as it is full.
        self.finish(active, 0)
    }

    /// Replays one segment's records into the state.
    fn replay(
        &mut self,
        path: &Path,
        bytes: &[u8],
        seq: u64,
        first_index: Index,
        is_first: bool,
        is_last: bool,
    ) -> Result<segment::ScanEnd> {
        let mut saw_header = false;
        segment::scan(path, bytes, is_last, |record, offset, len| {
            self.info.records += 1;
            let bad = |reason: String| Error::corruption(path, offset, reason);
            if !saw_header {
                saw_header = true;
                return match record {
                    Record::SegmentHeader { seq: s, first_index: f }
                        if s == seq && f == first_index && f <= INDEX_MAX =>
                    {
                        if is_first {
                            self.log = LogIndex::new(first_index);
                        } else if first_index != self.log.last() + 1 {
                            return Err(bad(format!(
                                "index gap: segment starts at {first_index}, the log ends at {}",
                                self.log.last()
                            )));
                        }
                        Ok(())
                    }
                    other => Err(bad(format!(
                        "expected the header of segment {seq} (first index {first_index}), found {other:?}"
                    ))),
                };
            }
            match record {
                Record::SegmentHeader { .. } => {
                    Err(bad("segment header in the middle of a segment".into()))
                }
                Record::Entry(entry) => {
                    let loc = EntryLoc {
                        seq,
                        offset,
                        len,
                        term: entry.term,
                    };
                    self.log.append(entry.index, loc).map_err(bad)?;
                    self.cache.push(&entry);
                    Ok(())
                }
                Record::HardState(hs) => {
                    self.hard_state = hs;
                    Ok(())
                }
                Record::Snapshot { index, term } => {
                    if index > INDEX_MAX {
                        return Err(bad(format!("snapshot marker {index} is beyond INDEX_MAX")));
                    }
                    if index < self.snapshot.index {
                        return Err(bad(format!(
                            "snapshot marker {index} is older than the earlier marker {}",
                            self.snapshot.index
                        )));
                    }
                    let marker = SnapshotMarker { index, term };
                    apply_snapshot(&mut self.log, &mut self.cache, marker);
                    self.snapshot = marker;
                    Ok(())
                }
                Record::Truncate { index } => {
                    if index <= self.snapshot.index {
                        return Err(bad(format!(
                            "truncation at {index} is at or below the snapshot {}",
                            self.snapshot.index
                        )));
                    }
                    self.log.truncate(index).map_err(bad)?;
                    self.cache.truncate_from(index);
                    Ok(())
                }
            }
        })
    }

    /// The last segment has no whole header: it was being created when the
    /// process crashed (only possible if its creation was not atomic, as
    /// when a file system reorders writes). It holds nothing; delete it and
    /// open again from the segments before it.
    fn drop_headless_segment(
        self,
        path: &Path,
        seq: u64,
        first_index: Index,
        count: usize,
    ) -> Result<Wal> {
        if count == 1 && (seq, first_index) != (0, 1) {
            return Err(Error::corruption(
                path,
                0,
                "the only segment has no whole header and is not the first of a new log",
            ));
        }
        warn!(path = %path.display(), "deleting a last WAL segment without a whole header");
        fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        segment::sync_dir(&self.dir)?;
        Wal::open(&self.dir, self.config)
    }

    /// Builds the WAL around its active segment, whose first
    /// `active_preamble_bytes` are header and carried-forward records.
    fn finish(mut self, active: SegmentWriter, active_preamble_bytes: u64) -> Result<Wal> {
        let file = active.reader()?;
        self.segments.insert(
            active.seq(),
            SegmentFile {
                path: active.path().to_path_buf(),
                file,
            },
        );
        let position = Position {
            segment: active.seq(),
            offset: active.len_bytes(),
        };
        info!(
            dir = %self.dir.display(),
            segments = self.segments.len(),
            first_index = self.log.first(),
            last_index = self.log.last(),
            snapshot_index = self.snapshot.index,
            "opened WAL"
        );
        let durable_last_index = self.log.last();
        Ok(Wal {
            dir: self.dir,
            config: self.config,
            segments: self.segments,
            active,
            active_preamble_bytes,
            log: self.log,
            cache: self.cache,
            hard_state: self.hard_state,
            snapshot: self.snapshot,
            written: position,
            durable: position,
            durable_last_index,
            poisoned: None,
            recovery: self.info,
            buf: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use raftkv_raft::EntryKind;

    use super::*;
    use crate::fault;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: Bytes::from(format!("entry {index}")),
        }
    }

    #[test]
    fn failed_fsync_poisons_every_later_call() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
        wal.append_entries(&[entry(1, 1)]).unwrap();
        wal.sync().unwrap();
        wal.append_entries(&[entry(2, 1)]).unwrap();
        fault::fail_syncs(true);
        let err = wal.sync().unwrap_err();
        fault::fail_syncs(false);
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert_eq!(wal.durable_last_index(), 1);
        // The disk works again, but the WAL must not pretend the failed
        // sync never happened.
        assert!(matches!(wal.sync(), Err(Error::Poisoned(_))));
        assert!(matches!(
            wal.append_entries(&[entry(3, 1)]),
            Err(Error::Poisoned(_))
        ));
        assert!(matches!(
            wal.set_hard_state(HardState {
                term: 1,
                vote: 1,
                commit: 1
            }),
            Err(Error::Poisoned(_))
        ));
        assert!(matches!(wal.entries(1, 2), Err(Error::Poisoned(_))));
        assert!(matches!(wal.release_segments(), Err(Error::Poisoned(_))));
        drop(wal);
        let wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
        assert!(wal.last_index() >= 1);
    }

    #[test]
    fn failed_fsync_while_rolling_poisons() {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig {
            segment_size_bytes: 200,
            ..WalConfig::default()
        };
        let mut wal = Wal::open(dir.path(), config).unwrap();
        wal.append_entries(&[entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 1)])
            .unwrap();
        fault::fail_syncs(true);
        let err = wal.append_entries(&[entry(5, 1), entry(6, 1), entry(7, 1), entry(8, 1)]);
        fault::fail_syncs(false);
        assert!(matches!(err, Err(Error::Io { .. })));
        assert!(matches!(wal.sync(), Err(Error::Poisoned(_))));
    }

    #[test]
    fn failed_write_poisons() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
        fault::fail_writes(true);
        let err = wal.append_entries(&[entry(1, 1)]);
        fault::fail_writes(false);
        assert!(matches!(err, Err(Error::Io { .. })));
        assert!(matches!(
            wal.append_entries(&[entry(1, 1)]),
            Err(Error::Poisoned(_))
        ));
    }

    #[test]
    fn caller_errors_leave_the_wal_usable() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), WalConfig::default()).unwrap();
        wal.append_entries(&[entry(1, 2)]).unwrap();
        let gap = wal.append_entries(&[entry(3, 2)]).unwrap_err();
        assert!(!gap.is_fatal());
        let lower_term = wal.append_entries(&[entry(2, 1)]).unwrap_err();
        assert!(!lower_term.is_fatal());
        assert!(matches!(wal.entries(1, 5), Err(Error::Unavailable { .. })));
        wal.append_entries(&[entry(2, 2)]).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.entries(1, 3).unwrap().len(), 2);
    }
}
