//! The chaos harness: real server processes on loopback, faults injected
//! from outside (signals, a TCP proxy on every link, storage faults at
//! start, wall-clock jumps), concurrent clients whose every operation is recorded, and the
//! checks that decide whether anything went wrong.
//!
//! - [`proxy`]: the per-link network; [`process`]: processes and signals;
//!   [`cluster`]: a cluster of either raftkv or etcd behind the proxies.
//! - [`faults`]: the fault kinds and how each is undone; [`clock`]: wall-clock
//!   jumps through libfaketime.
//! - [`workload`]: recording clients (registers and lists);
//!   [`watches`]: recording watchers and the watch guarantees;
//!   [`leases`]: a lease probe (no early expiry, no endless lease).
//! - [`security`]: a cluster with etcd's auth enabled.
//! - [`run`]: a whole run and its report; [`cases`]: the seven
//!   leader-failure cases of the project's seed, staged on real servers.
//!
//! The history checks themselves live in `raftkv-check`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cases;
pub mod clock;
pub mod cluster;
pub mod error;
pub mod faults;
pub mod leases;
pub mod process;
pub mod proxy;
pub mod run;
pub mod security;
pub mod watches;
pub mod workload;

pub use cluster::{Cluster, ClusterConfig};
pub use error::HarnessError;
pub use faults::FaultKind;
pub use process::ServerKind;
pub use run::{run, RunConfig, RunReport};

/// A fresh random number for seeds and nonces, from the per-process keys
/// the standard library draws from the operating system.
pub fn entropy() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
