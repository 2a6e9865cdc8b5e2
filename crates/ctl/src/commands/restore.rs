//! `snapshot restore <file>`: builds the data directory of a member of a new
//! cluster from a file `snapshot save` wrote, with etcdctl 3.4's flags. It
//! runs offline: no endpoint is dialed.
//!
//! The work is the server's own [`raftkv_server::snapshot_file::restore`]:
//! the file's SHA-256 trailer is checked (unless `--skip-hash-check`), the
//! member and cluster ids are derived from the flags as `raftkv` derives
//! them, and the directory appears complete or not at all. Starting `raftkv`
//! with the same `--name`, `--initial-cluster`, `--initial-cluster-token`
//! and `--initial-advertise-peer-urls` then serves the restored data; with
//! several members, each restores the same file under its own `--name`.

use std::path::{Path, PathBuf};

use clap::Args;
use raftkv_server::snapshot_file::{self, RestoreOptions};

use super::emit;
use crate::error::CtlError;

/// `snapshot restore <file> [flags]`.
#[derive(Args, Clone, Debug)]
pub struct RestoreArgs {
    /// The snapshot file.
    pub args: Vec<String>,
    /// Path to the data directory to create (default `<name>.raftkv`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Human-readable name for this member.
    #[arg(long)]
    pub name: Option<String>,
    /// Initial cluster configuration for restore bootstrap (default: this
    /// member alone).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Initial cluster token for the etcd cluster during restore bootstrap.
    #[arg(long)]
    pub initial_cluster_token: Option<String>,
    /// List of this member's peer URLs to advertise to the rest of the
    /// cluster.
    #[arg(long)]
    pub initial_advertise_peer_urls: Option<String>,
    /// Ignore the snapshot's integrity hash (for a file not written by
    /// `snapshot save`).
    #[arg(long)]
    pub skip_hash_check: bool,
}

impl RestoreArgs {
    /// The restore options these flags give, the server's defaults for the
    /// flags not given.
    fn options(&self) -> RestoreOptions {
        let defaults = RestoreOptions::default();
        RestoreOptions {
            name: self.name.clone().unwrap_or(defaults.name),
            data_dir: self.data_dir.clone(),
            initial_cluster: self.initial_cluster.clone(),
            initial_cluster_token: self
                .initial_cluster_token
                .clone()
                .unwrap_or(defaults.initial_cluster_token),
            initial_advertise_peer_urls: self
                .initial_advertise_peer_urls
                .clone()
                .unwrap_or(defaults.initial_advertise_peer_urls),
            skip_hash_check: self.skip_hash_check,
        }
    }
}

/// Restores the file into a new data directory and says where.
pub fn run(args: &RestoreArgs) -> Result<(), CtlError> {
    let [file] = args.args.as_slice() else {
        return Err(CtlError::bad_args(
            "snapshot restore requires exactly one argument",
        ));
    };
    let report = snapshot_file::restore(Path::new(file), &args.options())
        .map_err(|e| CtlError::failed(e.to_string()))?;
    emit(&format!(
        "Restored snapshot {file} into {}: revision {}, compacted at {}, member {:x} of cluster {:x}\n",
        report.data_dir.display(),
        report.revision,
        report.compact_revision,
        report.member_id,
        report.cluster_id,
    ))
}
