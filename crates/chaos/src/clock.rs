//! Wall-clock jumps for member processes, without root: each member runs
//! under libfaketime (Debian package `faketime`) with its own offset file,
//! which the harness rewrites to step that member's wall clock forward or
//! back while it runs, as NTP or an operator would. Monotonic clocks are
//! left alone (`FAKETIME_DONT_FAKE_MONOTONIC`), as a real step leaves them.

use std::path::{Path, PathBuf};

use crate::error::HarnessError;

/// Names the library explicitly (otherwise the usual Debian paths are tried).
pub const LIBRARY_ENV: &str = "RAFTKV_FAKETIME_LIB";
/// Set (to anything but `0`) when a missing libfaketime must fail the run
/// instead of leaving clock jumps out; CI sets it.
pub const REQUIRED_ENV: &str = "RAFTKV_REQUIRE_FAKETIME";

/// libfaketime's multi-threaded build, if installed.
pub fn library() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(LIBRARY_ENV) {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    let mut candidates = vec![PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1")];
    if let Ok(dirs) = std::fs::read_dir("/usr/lib") {
        candidates.extend(
            dirs.flatten()
                .map(|dir| dir.path().join("faketime/libfaketimeMT.so.1")),
        );
    }
    candidates.into_iter().find(|p| p.exists())
}

/// Whether clock jumps must be available.
pub fn required() -> bool {
    std::env::var(REQUIRED_ENV).is_ok_and(|v| v != "0")
}

/// The environment that puts a process's wall clock under `offset_file`.
pub fn environment(library: &Path, offset_file: &Path) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), library.display().to_string()),
        (
            "FAKETIME_TIMESTAMP_FILE".into(),
            offset_file.display().to_string(),
        ),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        // The file is read again at most this many seconds after a change.
        ("FAKETIME_CACHE_DURATION".into(), "1".into()),
    ]
}

/// Sets the wall-clock offset, in seconds, of the process reading
/// `offset_file`. Written to a new file and renamed, so the process never
/// reads half of it.
pub fn set_offset(offset_file: &Path, seconds: i64) -> Result<(), HarnessError> {
    let text = format!("{seconds:+}s\n");
    let staging = offset_file.with_extension("new");
    std::fs::write(&staging, text).map_err(|e| HarnessError::io(&staging, e))?;
    std::fs::rename(&staging, offset_file).map_err(|e| HarnessError::io(offset_file, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_written_as_libfaketime_reads_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("clock");
        set_offset(&file, 86_400).expect("write");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "+86400s\n");
        set_offset(&file, -10_800).expect("write");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "-10800s\n");
        set_offset(&file, 0).expect("write");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "+0s\n");
    }

    /// A process under the environment sees the offset its file gives.
    /// Skipped where libfaketime is not installed, unless required.
    #[test]
    fn a_process_sees_its_clock_jump() {
        let Some(library) = library() else {
            assert!(!required(), "libfaketime is required but not installed");
            eprintln!("libfaketime not installed: skipped");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("clock");
        let date = |file: &Path| -> i64 {
            let out = std::process::Command::new("date")
                .arg("+%s")
                .envs(environment(&library, file))
                .output()
                .expect("date runs");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("seconds")
        };
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        };
        set_offset(&file, 86_400).expect("write");
        let ahead = date(&file) - now();
        assert!((86_390..86_410).contains(&ahead), "{ahead}");
        set_offset(&file, -3_600).expect("write");
        let behind = date(&file) - now();
        assert!((-3_610..-3_590).contains(&behind), "{behind}");
    }
}
