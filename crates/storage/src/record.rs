//! The WAL record codec: how one record is laid out in bytes, and the
//! decoder that turns arbitrary bytes back into a record or says why not.
//!
//! This module knows nothing about files; [`crate::segment`] uses it to read
//! and write segments. The decoder is public so that it can be fuzzed: it
//! never panics and never allocates more than the input it is given.
//!
//! # Byte layout
//!
//! Every record, including the segment header, is framed the same way
//! (all integers little endian):
//!
//! ```text
//! offset  size  field
//! 0       4     crc     CRC32C (Castagnoli) of bytes [4, 9 + len): length, type and payload
//! 4       4     len     payload length in bytes (u32)
//! 8       1     type    record type, see below; 0 is never valid, so zeroed space is not a record
//! 9       len   payload
//! ```
//!
//! The checksum covers the length and the type, so a flipped bit in any of
//! the nine header bytes or in the payload is detected.
//!
//! Payloads by type:
//!
//! ```text
//! type 1  segment header  magic b"RKVWAL\r\n" (8) | version u32 (= 1) | segment seq u64 | first index u64
//! type 2  entry           term u64 | index u64 | kind u8 (0 normal, 1 conf change) | data (rest)
//! type 3  hard state      term u64 | vote u64 | commit u64
//! type 4  snapshot marker index u64 | term u64
//! type 5  truncate        index u64: entries with this index and above are discarded
//! ```
//!
//! A segment header is always the first record of a segment and appears
//! nowhere else; the other types may appear in any order after it.

use bytes::Bytes;
use raftkv_raft::{Entry, EntryKind, HardState, Index, Term};

/// Size of the frame in front of every payload: crc, length and type.
pub const RECORD_HEADER_BYTES: usize = 9;
/// Where in a record its type byte is (never zero in a record).
pub(crate) const RECORD_TYPE_OFFSET: usize = 8;

/// The largest payload the decoder accepts (1 GiB). Writers are limited
/// further by [`crate::WalConfig::entry_bytes_max`].
pub const RECORD_PAYLOAD_MAX_BYTES: u32 = 1 << 30;

/// Magic bytes that open every segment header payload.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RKVWAL\r\n";

/// The segment format version this code writes and reads.
pub const SEGMENT_VERSION: u32 = 1;

const TYPE_SEGMENT_HEADER: u8 = 1;
const TYPE_ENTRY: u8 = 2;
const TYPE_HARD_STATE: u8 = 3;
const TYPE_SNAPSHOT: u8 = 4;
const TYPE_TRUNCATE: u8 = 5;

const ENTRY_FIXED_BYTES: usize = 17;

/// One decoded WAL record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Opens every segment.
    SegmentHeader {
        /// The segment's sequence number; segments of one WAL are numbered
        /// without gaps.
        seq: u64,
        /// The index the next entry appended in this segment will have.
        first_index: Index,
    },
    /// A log entry.
    Entry(Entry),
    /// The node's hard state; the last one in the log wins.
    HardState(HardState),
    /// A snapshot covering the log up to `index` is durable elsewhere:
    /// entries up to `index` are no longer needed.
    Snapshot {
        /// The last index the snapshot covers.
        index: Index,
        /// The term of the entry at `index`.
        term: Term,
    },
    /// Entries with index `index` and above are discarded (a new leader
    /// overwrote them); entries appended after this record replace them.
    Truncate {
        /// The first discarded index.
        index: Index,
    },
}

/// Why bytes could not be decoded as a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the record does: `needed` bytes would be
    /// required in total. At the end of the last segment this is a torn write.
    #[error("record incomplete: {needed} bytes needed, {available} available")]
    Incomplete {
        /// Total bytes the record needs.
        needed: u64,
        /// Bytes the input has.
        available: usize,
    },
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// The checksum in the record.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// The length field is larger than any record may be.
    #[error("record length {0} exceeds the maximum")]
    TooLarge(u32),
    /// The checksum matched but the type is unknown.
    #[error("unknown record type {0}")]
    UnknownType(u8),
    /// The checksum matched but the payload does not fit its type.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// Appends the encoding of `record` to `out`.
///
/// Returns the number of bytes appended. Fails only if the payload would
/// exceed [`RECORD_PAYLOAD_MAX_BYTES`].
pub fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<usize, DecodeError> {
    let start = out.len();
    // Reserve the frame; the crc and the length are filled in at the end.
    out.extend_from_slice(&[0u8; RECORD_HEADER_BYTES]);
    let kind = match record {
        Record::SegmentHeader { seq, first_index } => {
            out.extend_from_slice(&SEGMENT_MAGIC);
            out.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&first_index.to_le_bytes());
            TYPE_SEGMENT_HEADER
        }
        Record::Entry(entry) => {
            out.extend_from_slice(&entry.term.to_le_bytes());
            out.extend_from_slice(&entry.index.to_le_bytes());
            out.push(match entry.kind {
                EntryKind::Normal => 0,
                EntryKind::ConfChange => 1,
            });
            out.extend_from_slice(&entry.data);
            TYPE_ENTRY
        }
        Record::HardState(hs) => {
            out.extend_from_slice(&hs.term.to_le_bytes());
            out.extend_from_slice(&hs.vote.to_le_bytes());
            out.extend_from_slice(&hs.commit.to_le_bytes());
            TYPE_HARD_STATE
        }
        Record::Snapshot { index, term } => {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&term.to_le_bytes());
            TYPE_SNAPSHOT
        }
        Record::Truncate { index } => {
            out.extend_from_slice(&index.to_le_bytes());
            TYPE_TRUNCATE
        }
    };
    let payload_len = out.len() - start - RECORD_HEADER_BYTES;
    let len = match u32::try_from(payload_len) {
        Ok(len) if len <= RECORD_PAYLOAD_MAX_BYTES => len,
        _ => {
            out.truncate(start);
            return Err(DecodeError::TooLarge(u32::MAX));
        }
    };
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8] = kind;
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(out.len() - start)
}

/// The encoded size of an entry record with `data_len` payload bytes.
pub fn entry_record_bytes(data_len: usize) -> usize {
    RECORD_HEADER_BYTES + ENTRY_FIXED_BYTES + data_len
}

/// Decodes the record at the start of `buf`.
///
/// On success returns the record and the number of bytes it occupies; bytes
/// after it are not looked at. Never panics, whatever `buf` holds, and
/// allocates at most a copy of the entry data it returns.
pub fn decode_record(buf: &[u8]) -> Result<(Record, usize), DecodeError> {
    if buf.len() < RECORD_HEADER_BYTES {
        return Err(DecodeError::Incomplete {
            needed: RECORD_HEADER_BYTES as u64,
            available: buf.len(),
        });
    }
    let stored = read_u32(&buf[0..4]);
    let len = read_u32(&buf[4..8]);
    if len > RECORD_PAYLOAD_MAX_BYTES {
        return Err(DecodeError::TooLarge(len));
    }
    let total = RECORD_HEADER_BYTES as u64 + u64::from(len);
    if (buf.len() as u64) < total {
        return Err(DecodeError::Incomplete {
            needed: total,
            available: buf.len(),
        });
    }
    // `total <= buf.len()`, so it fits in usize.
    let total = total as usize;
    let computed = crc32c::crc32c(&buf[4..total]);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let record = decode_payload(buf[RECORD_TYPE_OFFSET], &buf[RECORD_HEADER_BYTES..total])?;
    Ok((record, total))
}

fn decode_payload(kind: u8, payload: &[u8]) -> Result<Record, DecodeError> {
    match kind {
        TYPE_SEGMENT_HEADER => {
            let fields = fixed::<28>(payload, "segment header must be 28 bytes")?;
            if fields[0..8] != SEGMENT_MAGIC {
                return Err(DecodeError::Malformed("segment header has a bad magic"));
            }
            if read_u32(&fields[8..12]) != SEGMENT_VERSION {
                return Err(DecodeError::Malformed("unsupported segment version"));
            }
            Ok(Record::SegmentHeader {
                seq: read_u64(&fields[12..20]),
                first_index: read_u64(&fields[20..28]),
            })
        }
        TYPE_ENTRY => {
            if payload.len() < ENTRY_FIXED_BYTES {
                return Err(DecodeError::Malformed(
                    "entry shorter than its fixed fields",
                ));
            }
            let kind = match payload[16] {
                0 => EntryKind::Normal,
                1 => EntryKind::ConfChange,
                _ => return Err(DecodeError::Malformed("unknown entry kind")),
            };
            Ok(Record::Entry(Entry {
                term: read_u64(&payload[0..8]),
                index: read_u64(&payload[8..16]),
                kind,
                data: Bytes::copy_from_slice(&payload[ENTRY_FIXED_BYTES..]),
            }))
        }
        TYPE_HARD_STATE => {
            let fields = fixed::<24>(payload, "hard state must be 24 bytes")?;
            Ok(Record::HardState(HardState {
                term: read_u64(&fields[0..8]),
                vote: read_u64(&fields[8..16]),
                commit: read_u64(&fields[16..24]),
            }))
        }
        TYPE_SNAPSHOT => {
            let fields = fixed::<16>(payload, "snapshot marker must be 16 bytes")?;
            Ok(Record::Snapshot {
                index: read_u64(&fields[0..8]),
                term: read_u64(&fields[8..16]),
            })
        }
        TYPE_TRUNCATE => {
            let fields = fixed::<8>(payload, "truncate marker must be 8 bytes")?;
            Ok(Record::Truncate {
                index: read_u64(fields),
            })
        }
        other => Err(DecodeError::UnknownType(other)),
    }
}

fn fixed<'a, const N: usize>(
    payload: &'a [u8],
    what: &'static str,
) -> Result<&'a [u8], DecodeError> {
    if payload.len() == N {
        Ok(payload)
    } else {
        Err(DecodeError::Malformed(what))
    }
}

/// Reads a little-endian u32 from a slice of at least 4 bytes (callers slice exactly).
fn read_u32(bytes: &[u8]) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(raw)
}

/// Reads a little-endian u64 from a slice of at least 8 bytes (callers slice exactly).
fn read_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        vec![
            Record::SegmentHeader {
                seq: 7,
                first_index: 42,
            },
            Record::Entry(Entry {
                term: 3,
                index: 9,
                kind: EntryKind::Normal,
                data: Bytes::from_static(b"hello"),
            }),
            Record::Entry(Entry {
                term: 3,
                index: 10,
                kind: EntryKind::ConfChange,
                data: Bytes::new(),
            }),
            Record::HardState(HardState {
                term: 4,
                vote: 2,
                commit: 8,
            }),
            Record::Snapshot { index: 5, term: 2 },
            Record::Truncate { index: 6 },
        ]
    }

    #[test]
    fn every_record_type_round_trips() {
        for record in samples() {
            let mut buf = Vec::new();
            let written = encode_record(&record, &mut buf).unwrap();
            assert_eq!(written, buf.len());
            buf.extend_from_slice(b"trailing");
            let (decoded, used) = decode_record(&buf).unwrap();
            assert_eq!(decoded, record);
            assert_eq!(used, written);
        }
    }

    #[test]
    fn entry_record_size_matches_encoding() {
        let mut buf = Vec::new();
        let n = encode_record(&samples()[1], &mut buf).unwrap();
        assert_eq!(n, entry_record_bytes(5));
    }

    #[test]
    fn zeroed_bytes_are_not_a_record() {
        let zeros = [0u8; 64];
        assert!(decode_record(&zeros).is_err());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        for record in samples() {
            let mut buf = Vec::new();
            encode_record(&record, &mut buf).unwrap();
            for bit in 0..buf.len() * 8 {
                let mut copy = buf.clone();
                copy[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    decode_record(&copy).is_err(),
                    "flip of bit {bit} in {record:?}"
                );
            }
        }
    }

    #[test]
    fn every_short_prefix_is_incomplete() {
        for record in samples() {
            let mut buf = Vec::new();
            encode_record(&record, &mut buf).unwrap();
            for len in 0..buf.len() {
                assert!(matches!(
                    decode_record(&buf[..len]),
                    Err(DecodeError::Incomplete { .. })
                ));
            }
        }
    }
}
