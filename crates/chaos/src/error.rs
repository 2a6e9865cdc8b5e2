//! What can go wrong in the harness itself (as opposed to what it finds
//! wrong in the servers, which goes into reports).

use std::path::{Path, PathBuf};

/// A harness failure.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file or process operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// What it was about.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cluster could not be set up or driven as asked.
    #[error("{0}")]
    Setup(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl HarnessError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
