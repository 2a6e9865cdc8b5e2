//! A saved Maintenance snapshot: checking it and restoring it into a new data
//! directory, as `etcdctl snapshot restore` does for etcd.
//!
//! The file is what the Snapshot RPC streams, concatenated: the store's image
//! (see [`raftkv_mvcc::snapshot`]) followed by the 32-byte SHA-256 of the
//! image. [`verify`] recomputes the digest while streaming the file (never
//! holding it in memory). [`restore`] builds the data directory of a member of
//! a *new* cluster from it: member and cluster ids come from the options
//! (name, initial cluster, advertised peer URLs, token) exactly as the server
//! derives them from its flags; revisions, history and leases are kept; the
//! old cluster's raft position, member list, alarms and exactly-once records
//! are dropped.
//! Starting `raftkv` with the same flags then bootstraps the cluster on top of
//! the restored data. With several members in the initial cluster, every
//! member restores the same file with its own `--name`.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use clap::Parser;
use sha2::Digest as _;

use crate::config::{Flags, ServerConfig};
use crate::error::ConfigError;

/// Length of the SHA-256 trailer.
pub const TRAILER_BYTES: u64 = 32;

/// Why a snapshot file could not be verified or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// The file could not be read or the data directory written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is shorter than its trailer.
    #[error("{0}: too short to be a snapshot ({1} bytes)")]
    TooShort(PathBuf, u64),
    /// The trailer does not match the bytes before it: damaged or cut.
    #[error("{0}: SHA-256 mismatch: the snapshot is corrupt or incomplete")]
    HashMismatch(PathBuf),
    /// The image inside is not a valid store image.
    #[error("snapshot image: {0}")]
    Store(#[from] raftkv_mvcc::MvccError),
    /// The options do not describe a valid member.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Restoring never overwrites data.
    #[error("data-dir {0} exists")]
    DataDirExists(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SnapshotFileError + '_ {
    move |source| SnapshotFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a verified file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotFileInfo {
    /// Bytes of the image (the file less its trailer).
    pub image_bytes: u64,
    /// The trailer.
    pub sha256: [u8; 32],
}

/// Checks that the file's last 32 bytes are the SHA-256 of the bytes before
/// them.
pub fn verify(path: &Path) -> Result<SnapshotFileInfo, SnapshotFileError> {
    let mut file = std::fs::File::open(path).map_err(io_at(path))?;
    let len = file.metadata().map_err(io_at(path))?.len();
    if len < TRAILER_BYTES {
        return Err(SnapshotFileError::TooShort(path.to_path_buf(), len));
    }
    let image_bytes = len - TRAILER_BYTES;
    let mut sha = sha2::Sha256::new();
    let copied = io::copy(&mut (&mut file).take(image_bytes), &mut sha).map_err(io_at(path))?;
    let mut trailer = [0u8; 32];
    file.read_exact(&mut trailer).map_err(io_at(path))?;
    if copied != image_bytes || sha.finalize().as_slice() != trailer {
        return Err(SnapshotFileError::HashMismatch(path.to_path_buf()));
    }
    Ok(SnapshotFileInfo {
        image_bytes,
        sha256: trailer,
    })
}

/// How to restore: the flags of the member that will run on the restored
/// directory (etcdctl's `snapshot restore` options).
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// `--name` (default `default`).
    pub name: String,
    /// `--data-dir` (default `<name>.raftkv`); must not exist yet.
    pub data_dir: Option<PathBuf>,
    /// `--initial-cluster` (default: this member alone, at its peer URLs).
    pub initial_cluster: Option<String>,
    /// `--initial-cluster-token` (default `etcd-cluster`).
    pub initial_cluster_token: String,
    /// `--initial-advertise-peer-urls` (default `http://127.0.0.1:2380`).
    pub initial_advertise_peer_urls: String,
    /// Restore even if the trailer does not match (etcd's
    /// `--skip-hash-check`, for a file copied out of a data directory).
    pub skip_hash_check: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            name: "default".into(),
            data_dir: None,
            initial_cluster: None,
            initial_cluster_token: "etcd-cluster".into(),
            initial_advertise_peer_urls: "http://127.0.0.1:2380".into(),
            skip_hash_check: false,
        }
    }
}

impl RestoreOptions {
    /// The server configuration these options describe, derived as the
    /// server derives it from the same flags.
    pub fn server_config(&self) -> Result<ServerConfig, ConfigError> {
        let mut flags = Flags::try_parse_from(["raftkv"])
            .map_err(|e| ConfigError::Invalid(format!("default flags: {e}")))?;
        flags.name = self.name.clone();
        flags.data_dir = self.data_dir.clone();
        flags.initial_cluster = self.initial_cluster.clone();
        flags.initial_cluster_token = self.initial_cluster_token.clone();
        flags.initial_advertise_peer_urls = self.initial_advertise_peer_urls.clone();
        ServerConfig::from_flags(&flags)
    }
}

/// What a restore produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// The new data directory.
    pub data_dir: PathBuf,
    /// The member id the directory belongs to.
    pub member_id: u64,
    /// The new cluster's id.
    pub cluster_id: u64,
    /// The store revision restored.
    pub revision: i64,
    /// The compaction revision restored.
    pub compact_revision: i64,
}

/// Verifies `snapshot` (unless told not to) and restores it into a new data
/// directory for the member `options` describe. The directory is built under
/// a temporary name and renamed into place, so it either appears complete or
/// not at all.
pub fn restore(
    snapshot: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport, SnapshotFileError> {
    let config = options.server_config()?;
    let data_dir = config.data_dir.clone();
    if data_dir.exists() {
        return Err(SnapshotFileError::DataDirExists(data_dir));
    }
    let image_bytes = if options.skip_hash_check {
        let len = std::fs::metadata(snapshot).map_err(io_at(snapshot))?.len();
        len.saturating_sub(TRAILER_BYTES)
    } else {
        verify(snapshot)?.image_bytes
    };
    let mut building = data_dir.clone().into_os_string();
    building.push(".restoring");
    let building = PathBuf::from(building);
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(io_at(&building))?;
    }
    let member_dir = building.join(crate::server::MEMBER_DIR);
    std::fs::create_dir_all(&member_dir).map_err(io_at(&member_dir))?;
    let meta = {
        let store = raftkv_mvcc::Store::open(raftkv_mvcc::Config::new(
            member_dir.join(crate::server::STORE_FILE),
        ))?;
        let file = std::fs::File::open(snapshot).map_err(io_at(snapshot))?;
        let meta = store.install_snapshot(io::BufReader::new(file).take(image_bytes))?;
        // The new cluster's members are the ones its flags describe (their
        // records come with its bootstrap entries), not the old cluster's.
        store.rebase_for_new_cluster(&[
            crate::members::MEMBERS,
            crate::members::REMOVED,
            crate::alarm::ALARMS,
            crate::outcomes::OUTCOMES,
            crate::outcomes::CLOCK,
        ])?;
        store.close()?;
        meta
    };
    let identity = crate::server::identity_text(config.member_id, config.cluster_id);
    crate::server::write_identity(&member_dir, &identity).map_err(io_at(&member_dir))?;
    std::fs::rename(&building, &data_dir).map_err(io_at(&data_dir))?;
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_at(parent))?;
    }
    tracing::info!(
        data_dir = %data_dir.display(),
        member_id = format!("{:x}", config.member_id),
        cluster_id = format!("{:x}", config.cluster_id),
        revision = meta.revision,
        "restored a snapshot"
    );
    Ok(RestoreReport {
        data_dir,
        member_id: config.member_id,
        cluster_id: config.cluster_id,
        revision: meta.revision,
        compact_revision: meta.compact_revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, image: &[u8]) {
        let mut bytes = image.to_vec();
        bytes.extend_from_slice(&sha2::Sha256::digest(image));
        std::fs::write(path, bytes).expect("write");
    }

    #[test]
    fn a_file_verifies_only_with_its_own_trailer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.db");
        write(&path, b"some image bytes");
        let info = verify(&path).expect("verifies");
        assert_eq!(info.image_bytes, 16);

        let mut bytes = std::fs::read(&path).expect("read");
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            verify(&path),
            Err(SnapshotFileError::HashMismatch(_))
        ));
        std::fs::write(&path, &bytes[..10]).expect("write");
        assert!(matches!(
            verify(&path),
            Err(SnapshotFileError::TooShort(..))
        ));
    }

    #[test]
    fn restore_refuses_an_existing_data_dir_and_a_corrupt_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.db");
        write(&path, b"not a store image");
        let options = RestoreOptions {
            data_dir: Some(dir.path().to_path_buf()),
            ..RestoreOptions::default()
        };
        assert!(matches!(
            restore(&path, &options),
            Err(SnapshotFileError::DataDirExists(_))
        ));
        let options = RestoreOptions {
            data_dir: Some(dir.path().join("new")),
            ..RestoreOptions::default()
        };
        assert!(matches!(
            restore(&path, &options),
            Err(SnapshotFileError::Store(_))
        ));
        assert!(!dir.path().join("new").exists());
    }
}
