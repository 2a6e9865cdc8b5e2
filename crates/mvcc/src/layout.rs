//! The storage layout in redb: table definitions and the byte encoding of records.
//!
//! ```text
//! kvs        (main, sub) -> KvRecord          every change of every key (puts and tombstones),
//!                                             by revision: the source of truth
//! leases     lease id -> ttl seconds
//! lease_keys (lease id, key) -> ()            keys attached to each lease (revoke)
//! meta       name -> u64                      current/compact revision, applied index/term,
//!                                             layout version, installs
//! aux        (namespace, key) -> bytes        the server's own replicated records (request
//!                                             outcomes, members), outside the revision model
//! values     (main, sub, n) -> bytes          chunk n of a value too large to keep whole in
//!                                             its `kvs` record
//! ```
//!
//! Why changes are keyed by revision, with the keys in memory (the `index` module): a write
//! then appends to the right edge of one B-tree, so a batch of puts to random keys dirties
//! a few pages instead of one leaf per key (and per table) spread over the file. Measured on
//! redb with batches of 25 puts of 256 B over 10,000 keys: 8.5 µs of CPU per put appended
//! by revision, against 25 µs per put into a table keyed by key, and 84 µs per put for the
//! former layout of three tables (`hist` by key, `live`, `revs`). etcd keys bbolt by
//! revision for the same reason. The price is the key index in memory (no values) and a
//! scan of `kvs` to rebuild it when the store opens.
//!
//! `KvRecord` (little endian): kind u8 (0 put, 1 tombstone, 2 split put), key length u32,
//! key, then for a put: create i64, version i64, lease i64 and the value bytes. A split put
//! has, after the lease, a chunk count u32 `n`; its value is chunks 0..n of `values` at the
//! same revision, [`VALUE_CHUNK_BYTES`] each, followed by the bytes left in the record. The
//! mod revision is the `main` of the table key.
//!
//! Why values are split (issue 16): redb gives a leaf that holds one large entry a page of
//! 2^k × 4 KiB, so a 33 KiB value took 64 KiB. Loaded with 40,000 values of log-uniform size
//! between 10 B and 64 KiB (288 MiB), the file had 422 MiB of allocated pages (1.47×) with
//! every value whole in its record, and 310 MiB (1.08×) with values cut into chunks of
//! 2,022 B, the remainder kept in the record (`examples/store_size.rs`). Two such chunks fill
//! a 4 KiB leaf exactly, and redb's split of an overflowing leaf at half its bytes then
//! leaves full leaves behind; chunks the size of a whole page did worse (1.09×: the records
//! holding remainders of up to 4 KiB pack worse), and so did putting the remainder in a chunk
//! of its own (1.13×: it sits alone in a leaf). Snapshots, hashes and reads see whole values:
//! the split is a matter of this file only.

use redb::{ReadableTable, Table, TableDefinition};

use crate::error::{MvccError, Result};
use crate::index::Generation;
use crate::types::KeyValue;

/// Every change of every key, by revision.
pub(crate) const KVS: TableDefinition<(i64, i64), &[u8]> = TableDefinition::new("kvs");
/// Lease id -> ttl.
pub(crate) const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
/// (lease id, key) for each key attached to a lease.
pub(crate) const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");
/// Server records kept with the data: (namespace, key) -> value.
pub(crate) const AUX: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("aux");
/// Named counters.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Key of the `values` table: (main, sub) revision and chunk number.
pub(crate) type ValuesKey = (i64, i64, u32);
/// The chunks of split values (see the module doc).
pub(crate) const VALUES: TableDefinition<ValuesKey, &[u8]> = TableDefinition::new("values");

/// Bytes of value in each chunk of `values`: two chunks fill one 4 KiB redb leaf exactly.
/// A redb leaf with fixed-width keys is a 4 B header, a 4 B end offset per value, then the
/// keys (20 B each here) and values: 4 + 2 × (4 + 20 + 2022) = 4096.
pub(crate) const VALUE_CHUNK_BYTES: usize = 2022;

/// `meta` name of the current store revision.
pub(crate) const META_REV: &str = "current_revision";
/// `meta` name of the compaction revision.
pub(crate) const META_COMPACT: &str = "compact_revision";
/// `meta` name of the applied raft index.
pub(crate) const META_APPLIED_INDEX: &str = "applied_index";
/// `meta` name of the applied raft term.
pub(crate) const META_APPLIED_TERM: &str = "applied_term";
/// `meta` name of the layout version of the file.
pub(crate) const META_LAYOUT: &str = "layout_version";
/// `meta` name of the number of snapshots installed into the file: the key index is valid
/// for one value of it.
pub(crate) const META_INSTALLS: &str = "snapshot_installs";

/// The layout written by this version (1 was `hist`/`live`/`revs`, keyed by key; 2 kept
/// every value whole in its record, and is read as it is: it has no split records).
pub(crate) const LAYOUT_VERSION: u64 = 3;
/// The layout before values were split, opened and marked as [`LAYOUT_VERSION`].
pub(crate) const LAYOUT_WHOLE_VALUES: u64 = 2;

const KIND_PUT: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
const KIND_SPLIT_PUT: u8 = 2;
const HEADER: usize = 5;
const PUT_FIELDS: usize = 24;
const CHUNK_COUNT: usize = 4;

/// Encodes the record of a put with its whole value: the form snapshots and hashes carry.
pub(crate) fn encode_put(kv: &KeyValue) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + kv.key.len() + PUT_FIELDS + kv.value.len());
    b.push(KIND_PUT);
    push_key(&mut b, &kv.key);
    b.extend_from_slice(&kv.create_revision.to_le_bytes());
    b.extend_from_slice(&kv.version.to_le_bytes());
    b.extend_from_slice(&kv.lease.to_le_bytes());
    b.extend_from_slice(&kv.value);
    b
}

/// Encodes the record of a put as it is stored, and the number of [`VALUE_CHUNK_BYTES`]
/// chunks at the start of the value that go to `values` instead (0: the record holds all).
pub(crate) fn encode_stored_put(kv: &KeyValue) -> (Vec<u8>, usize) {
    let chunks = kv.value.len() / VALUE_CHUNK_BYTES;
    // Values are bounded far below 4 GiB by the request size limits.
    let Ok(count) = u32::try_from(chunks) else {
        return (encode_put(kv), 0);
    };
    if chunks == 0 {
        return (encode_put(kv), 0);
    }
    let tail = &kv.value[chunks * VALUE_CHUNK_BYTES..];
    let mut b = Vec::with_capacity(HEADER + kv.key.len() + PUT_FIELDS + CHUNK_COUNT + tail.len());
    b.push(KIND_SPLIT_PUT);
    push_key(&mut b, &kv.key);
    b.extend_from_slice(&kv.create_revision.to_le_bytes());
    b.extend_from_slice(&kv.version.to_le_bytes());
    b.extend_from_slice(&kv.lease.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(tail);
    (b, chunks)
}

/// Writes the put `kv` at revision `(main, sub)`: its record in `kvs` and the chunks of a
/// split value in `values`.
pub(crate) fn store_put(
    kvs: &mut Table<'_, (i64, i64), &'static [u8]>,
    values: &mut Table<'_, ValuesKey, &'static [u8]>,
    (main, sub): (i64, i64),
    kv: &KeyValue,
) -> Result<()> {
    let (record, chunks) = encode_stored_put(kv);
    for (n, chunk) in kv
        .value
        .chunks_exact(VALUE_CHUNK_BYTES)
        .take(chunks)
        .enumerate()
    {
        values.insert((main, sub, n as u32), chunk)?;
    }
    kvs.insert((main, sub), record.as_slice())?;
    Ok(())
}

/// Removes the change at `(main, sub)` and the chunks of its value; false if there was none.
pub(crate) fn remove_change(
    kvs: &mut Table<'_, (i64, i64), &'static [u8]>,
    values: &mut Table<'_, ValuesKey, &'static [u8]>,
    (main, sub): (i64, i64),
) -> Result<bool> {
    let chunks = match kvs.remove((main, sub))? {
        Some(record) => split_chunks(record.value())?,
        None => return Ok(false),
    };
    for n in 0..chunks {
        if values.remove((main, sub, n))?.is_none() {
            return Err(missing_chunk(main, sub, n));
        }
    }
    Ok(true)
}

fn missing_chunk(main: i64, sub: i64, n: u32) -> MvccError {
    MvccError::Corruption(format!(
        "chunk {n} of the value at {main}.{sub} is not stored"
    ))
}

/// The number of chunks of a split put's value in `values` (0 for any other record).
fn split_chunks(b: &[u8]) -> Result<u32> {
    if b.first() != Some(&KIND_SPLIT_PUT) {
        return Ok(0);
    }
    let (key, _) = record_key(b)?;
    let at = HEADER + key.len() + PUT_FIELDS;
    b.get(at..at + CHUNK_COUNT)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| corrupt(b))
}

/// The record stored at `(main, sub)` with its whole value, as [`encode_put`] makes it:
/// borrowed unless the value was split.
pub(crate) fn whole_record<'b, T>(
    values: &T,
    (main, sub): (i64, i64),
    b: &'b [u8],
) -> Result<std::borrow::Cow<'b, [u8]>>
where
    T: ReadableTable<ValuesKey, &'static [u8]>,
{
    if b.first() != Some(&KIND_SPLIT_PUT) {
        return Ok(std::borrow::Cow::Borrowed(b));
    }
    let chunks = split_chunks(b)?;
    let (key, _) = record_key(b)?;
    let fields_end = HEADER + key.len() + PUT_FIELDS;
    let tail = &b[fields_end + CHUNK_COUNT..];
    let mut out = Vec::with_capacity(fields_end + chunks as usize * VALUE_CHUNK_BYTES + tail.len());
    out.push(KIND_PUT);
    out.extend_from_slice(&b[1..fields_end]);
    for n in 0..chunks {
        let chunk = values
            .get((main, sub, n))?
            .ok_or_else(|| missing_chunk(main, sub, n))?;
        out.extend_from_slice(chunk.value());
    }
    out.extend_from_slice(tail);
    Ok(std::borrow::Cow::Owned(out))
}

/// Decodes the record stored at `(main, sub)`, reading a split value's chunks from `values`
/// when `with_value`: `None` for a tombstone.
pub(crate) fn decode_stored<T>(
    values: &T,
    (main, sub): (i64, i64),
    b: &[u8],
    with_value: bool,
) -> Result<Option<KeyValue>>
where
    T: ReadableTable<ValuesKey, &'static [u8]>,
{
    if with_value && b.first() == Some(&KIND_SPLIT_PUT) {
        return decode_record(main, &whole_record(values, (main, sub), b)?, true);
    }
    decode_record(main, b, with_value)
}

/// Encodes the record of a deletion of `key`.
pub(crate) fn encode_tombstone(key: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + key.len());
    b.push(KIND_TOMBSTONE);
    push_key(&mut b, key);
    b
}

fn push_key(b: &mut Vec<u8>, key: &[u8]) {
    // Keys are bounded far below 4 GiB by the request size limits.
    b.extend_from_slice(&(key.len() as u32).to_le_bytes());
    b.extend_from_slice(key);
}

fn corrupt(b: &[u8]) -> MvccError {
    MvccError::Corruption(format!("kv record of {} bytes is malformed", b.len()))
}

fn i64_at(b: &[u8], at: usize) -> Result<i64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(i64::from_le_bytes)
        .ok_or_else(|| corrupt(b))
}

/// The key of a record and whether the record is a tombstone, without decoding the rest.
pub(crate) fn record_key(b: &[u8]) -> Result<(&[u8], bool)> {
    let tombstone = match b.first() {
        Some(&KIND_PUT | &KIND_SPLIT_PUT) => false,
        Some(&KIND_TOMBSTONE) => true,
        _ => return Err(corrupt(b)),
    };
    let len = b
        .get(1..HEADER)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| corrupt(b))? as usize;
    let key = b.get(HEADER..HEADER + len).ok_or_else(|| corrupt(b))?;
    Ok((key, tombstone))
}

/// The key of a record and, for a put, the generation fields the key index keeps
/// (`None`: a tombstone).
pub(crate) fn record_generation(b: &[u8]) -> Result<(&[u8], Option<Generation>)> {
    let (key, tombstone) = record_key(b)?;
    if tombstone {
        return Ok((key, None));
    }
    let at = HEADER + key.len();
    if b.len() < at + PUT_FIELDS {
        return Err(corrupt(b));
    }
    let generation = Generation {
        create_revision: i64_at(b, at)?,
        version: i64_at(b, at + 8)?,
        lease: i64_at(b, at + 16)?,
    };
    Ok((key, Some(generation)))
}

/// Decodes the record stored at revision `main`: `None` for a tombstone. `with_value`
/// false leaves the value empty (keys_only, compares). A split put's value is not in its
/// record: decoding one with its value is refused (see [`decode_stored`]).
pub(crate) fn decode_record(main: i64, b: &[u8], with_value: bool) -> Result<Option<KeyValue>> {
    let (key, Some(generation)) = record_generation(b)? else {
        return Ok(None);
    };
    if with_value && b.first() == Some(&KIND_SPLIT_PUT) {
        return Err(MvccError::Corruption(format!(
            "the value at revision {main} is split; decoded without its chunks"
        )));
    }
    Ok(Some(KeyValue {
        key: key.to_vec(),
        create_revision: generation.create_revision,
        mod_revision: main,
        version: generation.version,
        lease: generation.lease,
        value: if with_value {
            b[HEADER + key.len() + PUT_FIELDS..].to_vec()
        } else {
            Vec::new()
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_malformed_ones_are_refused() {
        let kv = KeyValue {
            key: b"k1".to_vec(),
            create_revision: 3,
            mod_revision: 9,
            version: 2,
            lease: 7,
            value: b"value".to_vec(),
        };
        let b = encode_put(&kv);
        assert_eq!(record_key(&b).unwrap(), (&b"k1"[..], false));
        let generation = Generation {
            create_revision: 3,
            version: 2,
            lease: 7,
        };
        assert_eq!(
            record_generation(&b).unwrap(),
            (&b"k1"[..], Some(generation))
        );
        assert_eq!(decode_record(9, &b, true).unwrap(), Some(kv.clone()));
        let keys_only = decode_record(9, &b, false).unwrap().unwrap();
        assert!(keys_only.value.is_empty());
        let t = encode_tombstone(b"k1");
        assert_eq!(record_key(&t).unwrap(), (&b"k1"[..], true));
        assert_eq!(record_generation(&t).unwrap(), (&b"k1"[..], None));
        assert_eq!(decode_record(9, &t, true).unwrap(), None);
        for bad in [&b[..0], &b[..3], &b[..10], &[9u8, 0, 0, 0, 0][..]] {
            assert!(decode_record(9, bad, true).is_err(), "{bad:?}");
        }
    }
}
