//! Full-state snapshots: streaming one out while writes go on, and installing one.
//!
//! A [`SnapshotReader`] reads from one redb read transaction, an MVCC snapshot: batches
//! committed after it started do not show, however long the stream takes. Only the source of
//! truth is streamed (changes, leases, server records, counters); `lease_keys` and the key
//! index are rebuilt on install.
//!
//! Stream format (integers little endian):
//!
//! ```text
//! magic  "RKVSNAP2"
//! frame* tag u8 | len u32 | payload[len] | crc32c(tag | len | payload) u32
//!   tag 1 META   current i64, compact i64, applied index u64, applied term u64 (first)
//!   tag 2 KV     main i64, sub i64, kv record (see `layout`; always with its whole
//!                value, kind 0 or 1, however the file stores it)  (strict (main,sub) order)
//!   tag 3 LEASE  id i64, ttl i64
//!   tag 4 AUX    namespace len u32, namespace, key len u32, key, value
//!   tag 255 END  frames before it u64, crc32c over their crcs u32  (last)
//! ```
//!
//! Every frame is checked, and END proves that nothing was cut or dropped. Installing builds
//! a new file and swaps it in (see [`Store::install_snapshot`]): the old state stays whole
//! until the new one is.
//!
//! Streams of the first format (magic "RKVSNAP1", written before changes were stored by
//! revision) are still installed: the same frames, except that tag 2 carries key length u32,
//! key, main i64, sub i64 and a record without the key (kind u8, then for a put create,
//! version and lease i64 and the value), in strict (key, main, sub) order.

use std::io::{self, Read};

use std::sync::PoisonError;

use redb::{Database, Durability, ReadOnlyTable, ReadableTable};

use crate::error::{MvccError, Result};
use crate::index::KeyIndex;
use crate::layout::{
    decode_record, encode_put, encode_tombstone, store_put, whole_record, ValuesKey, AUX, KVS,
    LAYOUT_VERSION, LEASES, LEASE_KEYS, META, META_APPLIED_INDEX, META_APPLIED_TERM, META_COMPACT,
    META_INSTALLS, META_LAYOUT, META_REV, VALUES,
};
use crate::read::KvsKey;
use crate::rebuild::{remove_if_exists, Rebuild};
use crate::store::Store;
use crate::types::{AppliedIndex, KeyValue};

const MAGIC: &[u8; 8] = b"RKVSNAP2";
/// The first format, still installed.
const MAGIC_V1: &[u8; 8] = b"RKVSNAP1";
const TAG_META: u8 = 1;
const TAG_KV: u8 = 2;
const TAG_LEASE: u8 = 3;
const TAG_AUX: u8 = 4;
const TAG_END: u8 = 255;
/// Largest frame accepted on install: bounds memory against a corrupt length.
const FRAME_BYTES_MAX: usize = 64 << 20;
/// Size a chunk grows to before it is handed out.
const CHUNK_BYTES: usize = 256 << 10;

/// What a snapshot describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Store revision.
    pub revision: i64,
    /// Compaction revision.
    pub compact_revision: i64,
    /// Applied raft entry.
    pub applied: AppliedIndex,
}

enum Phase {
    Kvs,
    Leases,
    Aux,
    Done,
}

/// A snapshot being streamed: an [`Iterator`] of checksummed chunks and an [`io::Read`] of
/// the same bytes (use one or the other).
pub struct SnapshotReader {
    meta: SnapshotMeta,
    kvs: redb::Range<'static, KvsKey, &'static [u8]>,
    /// Where the chunks of split values are read from.
    values: ReadOnlyTable<ValuesKey, &'static [u8]>,
    leases: redb::Range<'static, i64, i64>,
    aux: redb::Range<'static, (&'static str, &'static [u8]), &'static [u8]>,
    phase: Phase,
    frames: u64,
    crc_of_crcs: u32,
    buf: Vec<u8>,
    pos: usize,
}

impl SnapshotReader {
    /// What the snapshot describes.
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }

    fn frame(&mut self, tag: u8, payload: &[u8]) {
        let start = self.buf.len();
        self.buf.push(tag);
        // Frames are bounded by key + value sizes, far below 4 GiB.
        self.buf
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(payload);
        let crc = crc32c::crc32c(&self.buf[start..]);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        if tag != TAG_END {
            self.frames += 1;
            self.crc_of_crcs = crc32c::crc32c_append(self.crc_of_crcs, &crc.to_le_bytes());
        }
    }

    /// Produces the next chunk, `None` at the end.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        self.buf.clear();
        let mut payload = Vec::new();
        while self.buf.len() < CHUNK_BYTES {
            match self.phase {
                Phase::Kvs => match self.kvs.next() {
                    Some(e) => {
                        let (k, v) = e?;
                        let (main, sub) = k.value();
                        payload.clear();
                        payload.extend_from_slice(&main.to_le_bytes());
                        payload.extend_from_slice(&sub.to_le_bytes());
                        payload.extend_from_slice(&whole_record(
                            &self.values,
                            (main, sub),
                            v.value(),
                        )?);
                        self.frame(TAG_KV, &payload);
                    }
                    None => self.phase = Phase::Leases,
                },
                Phase::Leases => match self.leases.next() {
                    Some(e) => {
                        let (k, v) = e?;
                        payload.clear();
                        payload.extend_from_slice(&k.value().to_le_bytes());
                        payload.extend_from_slice(&v.value().to_le_bytes());
                        self.frame(TAG_LEASE, &payload);
                    }
                    None => self.phase = Phase::Aux,
                },
                Phase::Aux => match self.aux.next() {
                    Some(e) => {
                        let (k, v) = e?;
                        let (namespace, key) = k.value();
                        payload.clear();
                        payload.extend_from_slice(&(namespace.len() as u32).to_le_bytes());
                        payload.extend_from_slice(namespace.as_bytes());
                        payload.extend_from_slice(&(key.len() as u32).to_le_bytes());
                        payload.extend_from_slice(key);
                        payload.extend_from_slice(v.value());
                        self.frame(TAG_AUX, &payload);
                    }
                    None => {
                        payload.clear();
                        payload.extend_from_slice(&self.frames.to_le_bytes());
                        payload.extend_from_slice(&self.crc_of_crcs.to_le_bytes());
                        self.frame(TAG_END, &payload);
                        self.phase = Phase::Done;
                        break;
                    }
                },
                Phase::Done => break,
            }
        }
        if self.buf.is_empty() {
            Ok(None)
        } else {
            Ok(Some(std::mem::take(&mut self.buf)))
        }
    }
}

impl Iterator for SnapshotReader {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos < self.buf.len() {
            // Left over from a partial `read`.
            let rest = self.buf.split_off(self.pos);
            self.buf.clear();
            self.pos = 0;
            return Some(Ok(rest));
        }
        self.next_chunk().transpose()
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.buf.len() {
            self.pos = 0;
            match self.next_chunk() {
                Ok(Some(chunk)) => self.buf = chunk,
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Store {
    /// Starts a snapshot of the last committed state. Writes may go on while it is read.
    pub fn snapshot(&self) -> Result<SnapshotReader> {
        let txn = self.begin_read()?;
        self.snapshot_in(&txn)
    }

    /// Starts a snapshot of the last committed state and measures it: the reader and the
    /// exact number of bytes it will yield. Both come from one read transaction, so the
    /// count is exact however writes go on meanwhile. Measuring reads the whole state once
    /// (without keeping it), before streaming reads it again.
    pub fn snapshot_sized(&self) -> Result<(SnapshotReader, u64)> {
        let txn = self.begin_read()?;
        let mut total = 0u64;
        for chunk in self.snapshot_in(&txn)? {
            total += chunk?.len() as u64;
        }
        Ok((self.snapshot_in(&txn)?, total))
    }

    fn snapshot_in(&self, txn: &redb::ReadTransaction) -> Result<SnapshotReader> {
        let t = self.read_tables_in(txn)?;
        let kvs: ReadOnlyTable<KvsKey, &'static [u8]> = txn.open_table(KVS)?;
        let leases: ReadOnlyTable<i64, i64> = txn.open_table(LEASES)?;
        let aux: ReadOnlyTable<(&'static str, &'static [u8]), &'static [u8]> =
            txn.open_table(AUX)?;
        let mut r = SnapshotReader {
            meta: t,
            kvs: kvs.range::<KvsKey>(..)?,
            values: txn.open_table(VALUES)?,
            leases: leases.range::<i64>(..)?,
            aux: aux.range::<(&str, &[u8])>(..)?,
            phase: Phase::Kvs,
            frames: 0,
            crc_of_crcs: 0,
            buf: Vec::new(),
            pos: 0,
        };
        let mut payload = Vec::with_capacity(32);
        payload.extend_from_slice(&t.revision.to_le_bytes());
        payload.extend_from_slice(&t.compact_revision.to_le_bytes());
        payload.extend_from_slice(&t.applied.index.to_le_bytes());
        payload.extend_from_slice(&t.applied.term.to_le_bytes());
        r.buf.extend_from_slice(MAGIC);
        r.frame(TAG_META, &payload);
        tracing::info!(
            revision = t.revision,
            applied_index = t.applied.index,
            "snapshot started"
        );
        Ok(r)
    }

    fn read_tables_in(&self, txn: &redb::ReadTransaction) -> Result<SnapshotMeta> {
        let meta = txn.open_table(META)?;
        let get = |name| crate::batch::meta_get(&meta, name);
        Ok(SnapshotMeta {
            revision: crate::batch::to_rev(get(META_REV)?)?,
            compact_revision: crate::batch::to_rev(get(META_COMPACT)?)?,
            applied: AppliedIndex {
                index: get(META_APPLIED_INDEX)?,
                term: get(META_APPLIED_TERM)?,
            },
        })
    }

    /// Replaces the whole state with the snapshot read from `r`, atomically and durably.
    /// On any error (I/O, checksum, truncation) the store is left as it was.
    ///
    /// The image is built into a new file beside the store (`<path>.install`) while reads
    /// and writes go on, then renamed over the store and swapped in under the write gate, as
    /// a defragmentation is. Built in place, in one transaction, the file had to hold the old
    /// state and the new one at once (twice the store, and redb grows by doubling: a 1.1 GiB
    /// image took a follower's file to 8 GiB and raised NOSPACE for the whole cluster), and
    /// its one commit flushed the whole image at once.
    pub fn install_snapshot(&self, r: impl Read) -> Result<SnapshotMeta> {
        let mut r = io::BufReader::with_capacity(CHUNK_BYTES, r);
        let mut magic = [0u8; 8];
        read_exact(&mut r, &mut magic)?;
        let format = match &magic {
            MAGIC => Format::ByRevision,
            MAGIC_V1 => Format::ByKey,
            _ => return Err(MvccError::Corruption("snapshot: bad magic".into())),
        };
        let installs = {
            let txn = self.db().begin_read()?;
            let meta = txn.open_table(META)?;
            crate::batch::meta_get(&meta, META_INSTALLS)? + 1
        };
        let tmp = Rebuild::Install.path(&self.config.path);
        remove_if_exists(&tmp)?;
        let built = Database::builder()
            .set_cache_size(self.config.cache_size_bytes)
            .create(&tmp)
            .map_err(MvccError::from)
            .and_then(|fresh| {
                let (meta, index) = install_frames(&fresh, &mut r, format, installs)?;
                Ok((fresh, meta, index))
            });
        let (fresh, meta, index) = match built {
            Ok(built) => built,
            Err(err) => {
                if let Err(cleanup) = remove_if_exists(&tmp) {
                    tracing::warn!(path = %tmp.display(), error = %cleanup, "cannot remove an unfinished snapshot install");
                }
                return Err(err);
            }
        };
        let mut gate = self.write_gate();
        // The batches applied so far are committed first: they belong to the old file, and
        // if the swap fails the store is left where the applied index says it is.
        self.commit_pending(&mut gate)?;
        // Readers find the index and the file changed together: one that began on the old
        // file and reads the new index (or the reverse) is told to read again.
        let mut current_index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        self.replace_with(&tmp, fresh)?;
        *current_index = index;
        drop(current_index);
        self.bump_generation();
        drop(gate);
        tracing::info!(
            revision = meta.revision,
            applied_index = meta.applied.index,
            "snapshot installed"
        );
        Ok(meta)
    }
}

impl Store {
    /// Prepares a store restored from a snapshot to found a new cluster: forgets the applied
    /// raft position (index and term 0, since the new cluster's log starts empty and its
    /// entries must all apply) and drops the server records of `namespaces` (state that
    /// belonged to the old cluster). Revisions, history and leases are kept. Durable.
    pub fn rebase_for_new_cluster(&self, namespaces: &[&str]) -> Result<()> {
        let mut gate = self.write_gate();
        self.commit_pending(&mut gate)?;
        let mut txn = self.db().begin_write()?;
        txn.set_durability(Durability::Immediate);
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_APPLIED_INDEX, 0)?;
            meta.insert(META_APPLIED_TERM, 0)?;
            let mut aux = txn.open_table(AUX)?;
            for namespace in namespaces {
                let keys: Vec<Vec<u8>> = crate::store::scan_aux(&aux, namespace)?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
                for key in &keys {
                    aux.remove((*namespace, key.as_slice()))?;
                }
            }
        }
        txn.commit()?;
        self.bump_generation();
        Ok(())
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            MvccError::Corruption("snapshot: truncated".into())
        } else {
            MvccError::Io(e)
        }
    })
}

fn corrupt(what: &str) -> MvccError {
    MvccError::Corruption(format!("snapshot: {what}"))
}

/// Little-endian field reader over one frame payload.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(corrupt("short frame"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| corrupt("short frame"))?,
        ))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(
            b.try_into().map_err(|_| corrupt("short frame"))?,
        ))
    }
}

/// The two stream formats (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    ByKey,
    ByRevision,
}

/// A change of the first format: its place in that format's order, and today's record.
type ChangeOfV1 = ((Vec<u8>, i64, i64), Vec<u8>);

/// Reads a change of a stream of the first format.
fn change_of_v1(f: &mut Fields<'_>) -> Result<ChangeOfV1> {
    let klen = f.u32()? as usize;
    let key = f.take(klen)?.to_vec();
    let main = f.i64()?;
    let sub = f.i64()?;
    let record = match f.take(1)?[0] {
        0 => encode_put(&KeyValue {
            key: key.clone(),
            create_revision: f.i64()?,
            mod_revision: main,
            version: f.i64()?,
            lease: f.i64()?,
            value: f.0.to_vec(),
        }),
        1 => encode_tombstone(&key),
        k => return Err(corrupt(&format!("history record kind {k}"))),
    };
    Ok(((key, main, sub), record))
}

/// Stores a change of a stream (a record with its whole value) as the file keeps it: a put
/// with its value split if it is large, a tombstone as it is. A record of any other form is
/// refused.
fn install_change(
    kvs: &mut redb::Table<'_, KvsKey, &'static [u8]>,
    values: &mut redb::Table<'_, ValuesKey, &'static [u8]>,
    revision: KvsKey,
    record: &[u8],
) -> Result<()> {
    match decode_record(revision.0, record, true)? {
        Some(kv) => store_put(kvs, values, revision, &kv),
        None => {
            kvs.insert(revision, record)?;
            Ok(())
        }
    }
}

/// Frame bytes written to a new file between its commits while an image is installed. The
/// file is not the store until it is complete, so each commit may be durable: the disk then
/// takes the image in steady steps, not in one flush of the whole of it at the end (which,
/// on a disk shared with other members, held their log syncs for seconds).
const INSTALL_COMMIT_BYTES: usize = 64 << 20;

/// What reading the frames of a stream has found so far.
#[derive(Default)]
struct FramesRead {
    meta: Option<SnapshotMeta>,
    frames: u64,
    crc_of_crcs: u32,
    prev_by_revision: Option<(i64, i64)>,
    prev_by_key: Option<(Vec<u8>, i64, i64)>,
    payload: Vec<u8>,
    ended: bool,
}

/// Writes the frames of `r` into the new database `db`, committing durably every
/// [`INSTALL_COMMIT_BYTES`]; returns what the snapshot describes and the key index of the
/// state installed.
fn install_frames(
    db: &Database,
    r: &mut impl Read,
    format: Format,
    installs: u64,
) -> Result<(SnapshotMeta, KeyIndex)> {
    let mut read = FramesRead::default();
    loop {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        install_some_frames(&txn, r, format, &mut read)?;
        if read.ended {
            let found = finish_install(&txn, read, installs)?;
            txn.commit()?;
            return Ok(found);
        }
        txn.commit()?;
    }
}

/// Reads frames of `r` into `txn` until [`INSTALL_COMMIT_BYTES`] or the END frame.
fn install_some_frames(
    txn: &redb::WriteTransaction,
    r: &mut impl Read,
    format: Format,
    read: &mut FramesRead,
) -> Result<()> {
    let mut kvs = txn.open_table(KVS)?;
    let mut values = txn.open_table(VALUES)?;
    let mut leases = txn.open_table(LEASES)?;
    let mut aux = txn.open_table(AUX)?;
    let mut written = 0usize;
    while written < INSTALL_COMMIT_BYTES {
        let mut head = [0u8; 5];
        read_exact(r, &mut head)?;
        let tag = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > FRAME_BYTES_MAX {
            return Err(corrupt("frame too large"));
        }
        let payload = &mut read.payload;
        payload.resize(len, 0);
        read_exact(r, payload)?;
        written += len;
        let mut crc_b = [0u8; 4];
        read_exact(r, &mut crc_b)?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head), payload);
        if crc != u32::from_le_bytes(crc_b) {
            return Err(corrupt(&format!(
                "checksum mismatch in frame {}",
                read.frames
            )));
        }
        let mut f = Fields(payload);
        if tag != TAG_META && read.meta.is_none() {
            return Err(corrupt("first frame is not META"));
        }
        match tag {
            TAG_META if read.meta.is_none() => {
                read.meta = Some(SnapshotMeta {
                    revision: f.i64()?,
                    compact_revision: f.i64()?,
                    applied: AppliedIndex {
                        index: f.u64()?,
                        term: f.u64()?,
                    },
                });
            }
            TAG_KV if format == Format::ByRevision => {
                let revision = (f.i64()?, f.i64()?);
                if read.prev_by_revision.is_some_and(|p| p >= revision) {
                    return Err(corrupt("changes out of order"));
                }
                install_change(&mut kvs, &mut values, revision, f.0)?;
                read.prev_by_revision = Some(revision);
            }
            TAG_KV => {
                let (this, record) = change_of_v1(&mut f)?;
                if read.prev_by_key.as_ref().is_some_and(|p| *p >= this) {
                    return Err(corrupt("history out of order"));
                }
                if kvs.get((this.1, this.2))?.is_some() {
                    return Err(corrupt("two changes at one revision"));
                }
                install_change(&mut kvs, &mut values, (this.1, this.2), &record)?;
                read.prev_by_key = Some(this);
            }
            TAG_LEASE => {
                let id = f.i64()?;
                let ttl = f.i64()?;
                leases.insert(id, ttl)?;
            }
            TAG_AUX => {
                let namespace_len = f.u32()? as usize;
                let namespace = std::str::from_utf8(f.take(namespace_len)?)
                    .map_err(|_| corrupt("aux namespace is not UTF-8"))?
                    .to_string();
                let key_len = f.u32()? as usize;
                let key = f.take(key_len)?.to_vec();
                aux.insert((namespace.as_str(), key.as_slice()), f.0)?;
            }
            TAG_END => {
                let n = f.u64()?;
                let c = f.u32()?;
                if n != read.frames || c != read.crc_of_crcs {
                    return Err(corrupt("frame count or checksum of checksums mismatch"));
                }
                read.ended = true;
                return Ok(());
            }
            t => return Err(corrupt(&format!("unexpected frame tag {t}"))),
        }
        read.frames += 1;
        read.crc_of_crcs = crc32c::crc32c_append(read.crc_of_crcs, &crc.to_le_bytes());
    }
    Ok(())
}

/// Checks what the stream described against what it held, and writes the tables derived
/// from the changes (the lease keys, the counters).
fn finish_install(
    txn: &redb::WriteTransaction,
    read: FramesRead,
    installs: u64,
) -> Result<(SnapshotMeta, KeyIndex)> {
    let kvs = txn.open_table(KVS)?;
    let mut lease_keys = txn.open_table(LEASE_KEYS)?;
    let mut meta_t = txn.open_table(META)?;
    let meta = read.meta.ok_or_else(|| corrupt("no META frame"))?;
    if meta.revision < 1 || meta.compact_revision < 0 || meta.compact_revision > meta.revision {
        return Err(corrupt("bad revisions in META"));
    }
    if let Some(e) = kvs.last()? {
        if e.0.value().0 > meta.revision {
            return Err(corrupt("a change above the snapshot's revision"));
        }
    }
    let index = KeyIndex::build(&kvs, meta.compact_revision, installs)?;
    for (key, main, sub) in index.latest() {
        let Some(record) = kvs.get((main, sub))? else {
            return Err(corrupt("indexed change not stored"));
        };
        if let Some(kv) = decode_record(main, record.value(), false)? {
            if kv.lease != 0 {
                lease_keys.insert((kv.lease, key), ())?;
            }
        }
    }
    meta_t.insert(META_REV, meta.revision as u64)?;
    meta_t.insert(META_COMPACT, meta.compact_revision as u64)?;
    meta_t.insert(META_APPLIED_INDEX, meta.applied.index)?;
    meta_t.insert(META_APPLIED_TERM, meta.applied.term)?;
    meta_t.insert(META_LAYOUT, LAYOUT_VERSION)?;
    meta_t.insert(META_INSTALLS, installs)?;
    Ok((meta, index))
}
