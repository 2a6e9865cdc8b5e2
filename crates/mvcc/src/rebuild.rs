//! Files built beside the store and swapped in for it: a defragmentation's copy and a
//! snapshot install's image. Both are written under a name of their own next to the store
//! (`<path>.defrag`, `<path>.install`), made durable, then renamed over the store with the
//! directory synced, and the open database swapped under the write gate. A crash before the
//! rename leaves the old file whole and a leftover that the next open removes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use redb::Database;

use crate::error::Result;
use crate::store::Store;

/// What a file beside the store is being built for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Rebuild {
    Defragment,
    Install,
}

impl Rebuild {
    const ALL: [Rebuild; 2] = [Rebuild::Defragment, Rebuild::Install];

    fn suffix(self) -> &'static str {
        match self {
            Rebuild::Defragment => ".defrag",
            Rebuild::Install => ".install",
        }
    }

    /// Where the file for the store at `path` is built.
    pub(crate) fn path(self, path: &Path) -> PathBuf {
        let mut name = OsString::from(path.as_os_str());
        name.push(self.suffix());
        PathBuf::from(name)
    }
}

/// Removes the half-built files a crash (or a failed run) left beside the store at `path`.
pub(crate) fn remove_leftovers(path: &Path) -> Result<()> {
    for rebuild in Rebuild::ALL {
        let tmp = rebuild.path(path);
        if remove_if_exists(&tmp)? {
            tracing::warn!(path = %tmp.display(), ?rebuild, "removed an unfinished rebuild of the store");
        }
    }
    Ok(())
}

/// Removes `path`; false if there was nothing there.
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// Renames the durable file `built` over the store's and swaps `fresh` (opened on it) in.
    /// The caller holds the write gate.
    pub(crate) fn replace_with(&self, built: &Path, fresh: Database) -> Result<()> {
        let path = &self.config.path;
        std::fs::rename(built, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.swap_db(fresh);
        Ok(())
    }
}
