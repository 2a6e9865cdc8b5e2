//! Durable storage for a Raft node: the write-ahead log of entries, hard
//! state and snapshot markers ([`Wal`]), and snapshot files
//! ([`SnapshotStore`]).
//!
//! The Raft core keeps its log in memory and hands the application, through
//! its `Ready`, entries to append, a hard state and snapshots to persist.
//! This crate makes those durable and gives them back on restart:
//!
//! - [`Wal::open`] recovers the hard state, the latest snapshot marker and
//!   every entry after it, cutting a torn tail left by a crash and refusing
//!   to start on real corruption;
//! - [`Wal::append_entries`], [`Wal::set_hard_state`] and
//!   [`Wal::save_snapshot_marker`] write, and one [`Wal::sync`] makes a whole
//!   batch durable (group commit);
//! - [`SnapshotStore`] keeps the snapshot files the markers point at.
//!
//! Module map: [`record`] is the byte format of one record, [`segment`]
//! one segment file, [`wal`] the log over all segments, [`snapshot`] the
//! snapshot files, [`config`] the tunables and [`error`] what can fail.
//!
//! *Architecture invariant:* nothing reaches the disk except through a
//! `write` followed by a sync before it is reported durable, and no error a
//! disk or input can cause panics.

#![deny(missing_docs, unsafe_code)]

mod cache;
pub mod config;
pub mod error;
#[cfg(any(test, feature = "fault-injection"))]
mod fault;
mod log_index;
pub mod record;
pub mod segment;
pub mod snapshot;
pub mod wal;

pub use config::{SnapshotConfig, WalConfig};
pub use error::{Error, Result};
pub use record::{decode_record, encode_record, DecodeError, Record};
pub use snapshot::SnapshotStore;
pub use wal::{Position, RecoveryInfo, SnapshotMarker, TornTail, Wal, INDEX_MAX};
