//! Snapshot files: a snapshot's metadata and data in one checksummed file,
//! written atomically, the newest few kept.
//!
//! # Files
//!
//! A snapshot at index `i` and term `t` is stored as
//! `{i:016x}-{t:016x}.snap` in the store's directory. It is written under
//! that name plus `.tmp`, synced, renamed and the directory synced, so a
//! file with a final name is always complete; `.tmp` files are leftovers of
//! a crash during a save and are deleted by [`SnapshotStore::open`].
//!
//! # Byte layout
//!
//! All integers little endian:
//!
//! ```text
//! magic          8   b"RKVSNAP\n"
//! version        4   u32 = 1
//! index          8   u64
//! term           8   u64
//! voters         4 + 8n  count u32, then the node ids (u64)
//! learners       4 + 8n
//! voters_out     4 + 8n
//! learners_next  4 + 8n
//! auto_leave     1   0 or 1
//! data length    8   u64
//! data           data length bytes
//! crc            4   CRC32C of every byte before it
//! ```
//!
//! # Order with the WAL
//!
//! Save the snapshot here first, then record its marker in the WAL
//! ([`crate::Wal::save_snapshot_marker`]), then release WAL segments. On
//! restart load the snapshot the WAL's marker names with
//! [`SnapshotStore::load`].

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftkv_raft::{ConfState, Index, NodeId, Snapshot, SnapshotMeta, Term};
use tracing::{debug, warn};

use crate::config::SnapshotConfig;
use crate::error::{Error, Result};
use crate::segment::{create_dir_durably, sync_dir};

const MAGIC: [u8; 8] = *b"RKVSNAP\n";
const VERSION: u32 = 1;
const EXT: &str = "snap";
const TMP_SUFFIX: &str = ".tmp";

/// A directory of snapshot files. See the [module docs](self).
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    config: SnapshotConfig,
}

impl SnapshotStore {
    /// Opens the store in `dir`, creating the directory if needed and
    /// deleting temporary files left by a crash during a save.
    ///
    /// Errors: [`Error::InvalidConfig`], or [`Error::Io`] if the directory
    /// cannot be created, read or cleaned.
    pub fn open(dir: impl AsRef<Path>, config: SnapshotConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        create_dir_durably(&dir)?;
        let mut removed = false;
        for item in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let item = item.map_err(|e| Error::io(&dir, e))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name
                .strip_suffix(TMP_SUFFIX)
                .is_some_and(|base| parse_name(base).is_some())
            {
                let path = item.path();
                warn!(path = %path.display(), "deleting a snapshot whose save was interrupted");
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&dir)?;
        }
        Ok(Self { dir, config })
    }

    /// Writes `snapshot` and makes it durable, then deletes the oldest
    /// snapshots beyond [`SnapshotConfig::keep_count`].
    ///
    /// When this returns `Ok` the snapshot survives a crash. On error the
    /// snapshot may or may not be there (a later [`SnapshotStore::load`]
    /// either finds it whole or not at all); do not record its marker in
    /// the WAL. A snapshot with the same index and term replaces the old.
    pub fn save(&self, snapshot: &Snapshot) -> Result<()> {
        let name = file_name(snapshot.meta.index, snapshot.meta.term);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        write_file(&tmp, snapshot).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir)?;
        debug!(path = %path.display(), bytes = snapshot.data.len(), "saved snapshot");
        self.release()?;
        Ok(())
    }

    /// Loads the snapshot at `index` and `term`: `Ok(None)` if there is no
    /// such file, [`Error::Corruption`] if it is damaged.
    pub fn load(&self, index: Index, term: Term) -> Result<Option<Snapshot>> {
        let path = self.dir.join(file_name(index, term));
        let bytes = match self.read_bounded(&path) {
            Ok(bytes) => bytes,
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(err) => return Err(err),
        };
        let snapshot =
            decode(&bytes).map_err(|(offset, why)| Error::corruption(&path, offset, why))?;
        if (snapshot.meta.index, snapshot.meta.term) != (index, term) {
            return Err(Error::corruption(
                &path,
                12,
                format!(
                    "file holds snapshot ({}, {}), its name says ({index}, {term})",
                    snapshot.meta.index, snapshot.meta.term
                ),
            ));
        }
        Ok(Some(snapshot))
    }

    /// Loads the newest snapshot that is whole, skipping (with a warning)
    /// damaged ones; `Ok(None)` if there is none.
    ///
    /// Prefer [`SnapshotStore::load`] with the WAL's snapshot marker: an
    /// older snapshot than the marker's may not connect to the WAL's log.
    pub fn load_newest(&self) -> Result<Option<Snapshot>> {
        for (index, term) in self.list()?.into_iter().rev() {
            match self.load(index, term) {
                Ok(Some(snapshot)) => return Ok(Some(snapshot)),
                Ok(None) => {}
                Err(err @ Error::Corruption { .. }) => {
                    warn!(index, term, error = %err, "skipping a damaged snapshot");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(None)
    }

    /// The (index, term) of every snapshot file, oldest first.
    pub fn list(&self) -> Result<Vec<(Index, Term)>> {
        let mut found = Vec::new();
        for item in fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))? {
            let item = item.map_err(|e| Error::io(&self.dir, e))?;
            if let Some(id) = item.file_name().to_str().and_then(parse_name) {
                found.push(id);
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    /// Deletes the oldest snapshots beyond [`SnapshotConfig::keep_count`].
    /// Returns how many were deleted. [`SnapshotStore::save`] calls it.
    pub fn release(&self) -> Result<usize> {
        let all = self.list()?;
        let excess = all.len().saturating_sub(self.config.keep_count);
        for &(index, term) in &all[..excess] {
            let path = self.dir.join(file_name(index, term));
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            debug!(path = %path.display(), "released snapshot");
        }
        if excess > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(excess)
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read_bounded(&self, path: &Path) -> Result<Vec<u8>> {
        let len = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        if len > self.config.snapshot_bytes_max {
            return Err(Error::corruption(
                path,
                0,
                format!(
                    "file has {len} bytes, more than snapshot_bytes_max {}",
                    self.config.snapshot_bytes_max
                ),
            ));
        }
        fs::read(path).map_err(|e| Error::io(path, e))
    }
}

fn file_name(index: Index, term: Term) -> String {
    format!("{index:016x}-{term:016x}.{EXT}")
}

fn parse_name(name: &str) -> Option<(Index, Term)> {
    let stem = name.strip_suffix(&format!(".{EXT}"))?;
    let (index, term) = stem.split_once('-')?;
    if index.len() != 16 || term.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(index, 16).ok()?,
        u64::from_str_radix(term, 16).ok()?,
    ))
}

/// Writes the whole file and syncs it (data and length).
fn write_file(path: &Path, snapshot: &Snapshot) -> io::Result<()> {
    let mut head = Vec::new();
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&snapshot.meta.index.to_le_bytes());
    head.extend_from_slice(&snapshot.meta.term.to_le_bytes());
    let conf = &snapshot.meta.conf_state;
    for set in [
        &conf.voters,
        &conf.learners,
        &conf.voters_outgoing,
        &conf.learners_next,
    ] {
        let count = u32::try_from(set.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many nodes"))?;
        head.extend_from_slice(&count.to_le_bytes());
        for id in set {
            head.extend_from_slice(&id.to_le_bytes());
        }
    }
    head.push(u8::from(conf.auto_leave));
    head.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head), &snapshot.data);

    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(&head)?;
    file.write_all(&snapshot.data)?;
    file.write_all(&crc.to_le_bytes())?;
    sync_all(&file)
}

fn sync_all(file: &File) -> io::Result<()> {
    #[cfg(any(test, feature = "fault-injection"))]
    crate::fault::check_sync()?;
    file.sync_all()
}

/// Decodes a whole snapshot file; on failure the byte offset and reason.
fn decode(bytes: &[u8]) -> std::result::Result<Snapshot, (u64, String)> {
    if bytes.len() < MAGIC.len() + 4 + 4 {
        return Err((0, format!("file of {} bytes is too short", bytes.len())));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc);
    let stored = u32::from_le_bytes(stored);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err((
            body.len() as u64,
            format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    let mut reader = Reader {
        bytes: body,
        pos: 0,
    };
    let field_error = |reader: &Reader<'_>, what: &str| (reader.pos as u64, what.to_string());
    if reader
        .take(8)
        .ok_or_else(|| field_error(&reader, "no magic"))?
        != MAGIC
    {
        return Err((0, "bad magic".into()));
    }
    if reader
        .u32()
        .ok_or_else(|| field_error(&reader, "no version"))?
        != VERSION
    {
        return Err((8, "unsupported snapshot version".into()));
    }
    let index = reader
        .u64()
        .ok_or_else(|| field_error(&reader, "no index"))?;
    let term = reader
        .u64()
        .ok_or_else(|| field_error(&reader, "no term"))?;
    let mut sets: [BTreeSet<NodeId>; 4] = Default::default();
    for set in &mut sets {
        let count = reader
            .u32()
            .ok_or_else(|| field_error(&reader, "no node count"))?;
        for _ in 0..count {
            set.insert(
                reader
                    .u64()
                    .ok_or_else(|| field_error(&reader, "node list cut short"))?,
            );
        }
    }
    let auto_leave = match reader
        .take(1)
        .ok_or_else(|| field_error(&reader, "no auto_leave"))?
    {
        [0] => false,
        [1] => true,
        _ => return Err(field_error(&reader, "auto_leave is neither 0 nor 1")),
    };
    let data_len = reader
        .u64()
        .ok_or_else(|| field_error(&reader, "no data length"))?;
    let remaining = (body.len() - reader.pos) as u64;
    if data_len != remaining {
        return Err(field_error(
            &reader,
            &format!("data length {data_len} but {remaining} bytes follow"),
        ));
    }
    let data = Bytes::copy_from_slice(&body[reader.pos..]);
    let [voters, learners, voters_outgoing, learners_next] = sets;
    Ok(Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            conf_state: ConfState {
                voters,
                learners,
                voters_outgoing,
                learners_next,
                auto_leave,
            },
        },
        data,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn u32(&mut self) -> Option<u32> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        Some(u32::from_le_bytes(raw))
    }

    fn u64(&mut self) -> Option<u64> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault;

    fn snapshot(index: Index, term: Term) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: ConfState {
                    voters: [1, 2, 3].into(),
                    learners: [4].into(),
                    voters_outgoing: [1, 2, 5].into(),
                    learners_next: [5].into(),
                    auto_leave: true,
                },
            },
            data: Bytes::from(format!("state at {index}").repeat(10)),
        }
    }

    #[test]
    fn failed_sync_during_save_leaves_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path(), SnapshotConfig::default()).unwrap();
        fault::fail_syncs(true);
        let err = store.save(&snapshot(5, 1));
        fault::fail_syncs(false);
        assert!(matches!(err, Err(Error::Io { .. })));
        assert_eq!(store.load(5, 1).unwrap(), None);
        // The leftover temporary file is cleaned on the next open.
        let store = SnapshotStore::open(dir.path(), SnapshotConfig::default()).unwrap();
        assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 0);
    }

    #[test]
    fn every_truncation_of_a_file_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let snap = snapshot(9, 2);
        write_file(&path, &snap).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(decode(&bytes).unwrap(), snap);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "length {len}");
        }
    }
}
