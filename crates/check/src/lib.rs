//! Checking what clients of a raftkv cluster saw.
//!
//! A chaos test records every client operation (what was asked, when, and
//! what came back) while it injects faults; this crate decides afterwards
//! whether some single order of those operations, consistent with their
//! real-time order, explains every answer (linearizability), and whether
//! recorded watch streams kept etcd's watch guarantees.
//!
//! - [`history`]: the recorded operations and their JSON Lines file format.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod history;
