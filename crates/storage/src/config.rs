//! Tunables of the WAL and the snapshot store, with their defaults and the
//! ranges [`WalConfig::validate`] and [`SnapshotConfig::validate`] accept.

use crate::error::{Error, Result};
use crate::record::{entry_record_bytes, RECORD_PAYLOAD_MAX_BYTES};

/// Smallest segment size accepted: small enough for tests to roll segments
/// after a few records, far below anything useful in production.
pub const SEGMENT_SIZE_MIN_BYTES: u64 = 128;

/// Settings of a [`crate::Wal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// Size at which the active segment is closed and a new one started.
    ///
    /// Checked before each append call: a segment is rolled when the records
    /// of the call would take it past this size, so a segment exceeds it only
    /// when a single call is larger than a whole segment. Default 64 MiB
    /// (etcd's segment size). At least [`SEGMENT_SIZE_MIN_BYTES`].
    pub segment_size_bytes: u64,
    /// Largest entry payload accepted by [`crate::Wal::append_entries`];
    /// larger entries are refused with [`Error::InvalidArgument`]. Default 16 MiB.
    pub entry_bytes_max: u32,
    /// Bytes of recent entry payloads kept in memory, so that reads of the
    /// tail of the log (what followers usually need) do not touch the disk.
    /// Older entries are read from their segment. Zero disables the cache.
    /// Default 16 MiB.
    pub cache_bytes_max: usize,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_size_bytes: 64 * 1024 * 1024,
            entry_bytes_max: 16 * 1024 * 1024,
            cache_bytes_max: 16 * 1024 * 1024,
        }
    }
}

impl WalConfig {
    /// Checks every field against its documented range.
    ///
    /// Returns [`Error::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.segment_size_bytes < SEGMENT_SIZE_MIN_BYTES {
            return Err(Error::InvalidConfig(format!(
                "segment_size_bytes is {}, the minimum is {SEGMENT_SIZE_MIN_BYTES}",
                self.segment_size_bytes
            )));
        }
        let entry_payload_max = RECORD_PAYLOAD_MAX_BYTES as usize - entry_record_bytes(0);
        if self.entry_bytes_max == 0 || self.entry_bytes_max as usize > entry_payload_max {
            return Err(Error::InvalidConfig(format!(
                "entry_bytes_max is {}, it must be in 1..={entry_payload_max}",
                self.entry_bytes_max
            )));
        }
        Ok(())
    }
}

/// Settings of a [`crate::SnapshotStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotConfig {
    /// How many snapshot files to keep: after each save the oldest beyond
    /// this count are deleted. Keeping more than one lets a node fall back
    /// to an older snapshot if the newest is damaged. Default 5 (as etcd's
    /// `--max-snapshots`). At least 1.
    pub keep_count: usize,
    /// Largest snapshot file accepted by a load, as a guard against reading
    /// a damaged length into memory. Default 8 GiB.
    pub snapshot_bytes_max: u64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            keep_count: 5,
            snapshot_bytes_max: 8 * 1024 * 1024 * 1024,
        }
    }
}

impl SnapshotConfig {
    /// Checks every field against its documented range.
    ///
    /// Returns [`Error::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.keep_count == 0 {
            return Err(Error::InvalidConfig("keep_count must be at least 1".into()));
        }
        if self.snapshot_bytes_max == 0 {
            return Err(Error::InvalidConfig(
                "snapshot_bytes_max must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        WalConfig::default().validate().unwrap();
        SnapshotConfig::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let tiny = WalConfig {
            segment_size_bytes: 1,
            ..WalConfig::default()
        };
        assert!(matches!(tiny.validate(), Err(Error::InvalidConfig(_))));
        let no_entries = WalConfig {
            entry_bytes_max: 0,
            ..WalConfig::default()
        };
        assert!(no_entries.validate().is_err());
        let keep_none = SnapshotConfig {
            keep_count: 0,
            ..SnapshotConfig::default()
        };
        assert!(keep_none.validate().is_err());
    }
}
