//! Test-only fault injection for the calls that make data durable.
//!
//! Compiled only under `cfg(test)` or the `fault-injection` feature: builds
//! of the server binary without that feature contain no trace of it.
//!
//! - Unit tests set per-thread faults ([`fail_syncs`], [`fail_writes`]), so
//!   tests running in parallel do not disturb each other.
//! - Whole processes (the chaos harness's servers) take process-wide faults
//!   from the environment at start: `RAFTKV_FAULT_SYNC_DELAY_MS` slows every
//!   sync by that many milliseconds, and `RAFTKV_FAULT_SYNC_FAIL_AFTER=N`
//!   lets N syncs succeed and fails every later one. With
//!   `RAFTKV_FAULT_FILE` they also change while the process runs, whenever
//!   that file does (see [`CONTROL_FILE_ENV`]).

use std::cell::Cell;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

thread_local! {
    static FAIL_SYNCS: Cell<bool> = const { Cell::new(false) };
    static FAIL_WRITES: Cell<bool> = const { Cell::new(false) };
}

#[cfg(test)]
/// From now on every sync (file or directory) on this thread fails, or
/// succeeds again when `on` is false.
pub(crate) fn fail_syncs(on: bool) {
    FAIL_SYNCS.with(|flag| flag.set(on));
}

#[cfg(test)]
/// From now on every write on this thread fails, or succeeds again when `on`
/// is false.
pub(crate) fn fail_writes(on: bool) {
    FAIL_WRITES.with(|flag| flag.set(on));
}

/// Names a file whose contents replace the process-wide faults whenever it
/// changes: lines `sync_delay_ms=N` and `sync_fail_after=N` (N more syncs
/// succeed from when the file is read); an empty file clears both.
pub(crate) const CONTROL_FILE_ENV: &str = "RAFTKV_FAULT_FILE";

/// How often the control file is looked at, at most.
const CONTROL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Process-wide faults in force.
#[derive(Debug, Default)]
struct ProcessFaults {
    sync_delay: Option<Duration>,
    /// Syncs (counted from the process start) after which syncs fail.
    sync_fail_at: Option<u64>,
    control: Option<ControlFile>,
}

#[derive(Debug)]
struct ControlFile {
    path: PathBuf,
    modified: Option<SystemTime>,
    checked: Instant,
}

fn setting(name: &str, text: &str) -> Option<u64> {
    match text.trim().parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            tracing::warn!(name, text, "ignoring a fault setting that is not a number");
            None
        }
    }
}

impl ProcessFaults {
    fn from_environment() -> Self {
        let number = |name: &str| setting(name, &std::env::var(name).ok()?);
        let faults = Self {
            sync_delay: number("RAFTKV_FAULT_SYNC_DELAY_MS").map(Duration::from_millis),
            sync_fail_at: number("RAFTKV_FAULT_SYNC_FAIL_AFTER"),
            control: std::env::var_os(CONTROL_FILE_ENV).map(|path| ControlFile {
                path: PathBuf::from(path),
                modified: None,
                checked: Instant::now() - CONTROL_CHECK_INTERVAL,
            }),
        };
        if faults.sync_delay.is_some() || faults.sync_fail_at.is_some() {
            tracing::warn!(?faults, "storage fault injection is active");
        }
        faults
    }

    /// Reads the control file again if it changed since it was last read.
    fn refresh(&mut self, syncs_so_far: u64) {
        let Some(control) = self.control.as_mut() else {
            return;
        };
        if control.checked.elapsed() < CONTROL_CHECK_INTERVAL {
            return;
        }
        control.checked = Instant::now();
        let modified = std::fs::metadata(&control.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_none() || modified == control.modified {
            return;
        }
        control.modified = modified;
        let text = std::fs::read_to_string(&control.path).unwrap_or_default();
        self.sync_delay = None;
        self.sync_fail_at = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("sync_delay_ms", n)) => {
                    self.sync_delay = setting("sync_delay_ms", n).map(Duration::from_millis);
                }
                Some(("sync_fail_after", n)) => {
                    self.sync_fail_at =
                        setting("sync_fail_after", n).map(|n| syncs_so_far.saturating_add(n));
                }
                _ if line.trim().is_empty() => {}
                _ => tracing::warn!(line, "ignoring an unknown fault setting"),
            }
        }
        tracing::warn!(faults = ?self, "storage faults changed");
    }
}

fn process_faults() -> &'static Mutex<ProcessFaults> {
    static FAULTS: OnceLock<Mutex<ProcessFaults>> = OnceLock::new();
    FAULTS.get_or_init(|| Mutex::new(ProcessFaults::from_environment()))
}

/// Syncs done so far by this process, for the failing-sync fault.
static SYNCS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn check_sync() -> io::Result<()> {
    if FAIL_SYNCS.with(Cell::get) {
        return Err(io::Error::other("injected fsync failure"));
    }
    let done = SYNCS.fetch_add(1, Ordering::Relaxed);
    let (delay, fail_at) = {
        let mut faults = process_faults().lock().unwrap_or_else(|e| e.into_inner());
        faults.refresh(done);
        (faults.sync_delay, faults.sync_fail_at)
    };
    if let Some(delay) = delay {
        std::thread::sleep(delay);
    }
    if fail_at.is_some_and(|limit| done >= limit) {
        return Err(io::Error::other("injected fsync failure"));
    }
    Ok(())
}

pub(crate) fn check_write() -> io::Result<()> {
    if FAIL_WRITES.with(Cell::get) {
        return Err(io::Error::other("injected write failure"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watching(path: &std::path::Path) -> ProcessFaults {
        ProcessFaults {
            control: Some(ControlFile {
                path: path.to_path_buf(),
                modified: None,
                checked: Instant::now() - CONTROL_CHECK_INTERVAL,
            }),
            ..ProcessFaults::default()
        }
    }

    /// Writes the control file as its `generation`th version (a distinct
    /// modification time) and lets the next refresh look at it at once.
    fn rewrite(path: &std::path::Path, text: &str, generation: u64, faults: &mut ProcessFaults) {
        std::fs::write(path, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(generation))
            .unwrap();
        if let Some(control) = faults.control.as_mut() {
            control.checked = Instant::now() - CONTROL_CHECK_INTERVAL;
        }
    }

    #[test]
    fn the_control_file_switches_faults_on_and_off_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults");
        let mut faults = watching(&path);
        faults.refresh(10);
        assert!(
            faults.sync_delay.is_none() && faults.sync_fail_at.is_none(),
            "no file yet"
        );

        rewrite(
            &path,
            "sync_delay_ms=25\nsync_fail_after=3\n",
            1,
            &mut faults,
        );
        faults.refresh(10);
        assert_eq!(faults.sync_delay, Some(Duration::from_millis(25)));
        assert_eq!(faults.sync_fail_at, Some(13), "three more syncs from now");

        // Unchanged file: nothing is read again.
        faults.refresh(50);
        assert_eq!(faults.sync_fail_at, Some(13));

        rewrite(&path, "", 2, &mut faults);
        faults.refresh(60);
        assert!(
            faults.sync_delay.is_none() && faults.sync_fail_at.is_none(),
            "cleared"
        );

        rewrite(&path, "sync_delay_ms=soon\nbogus\n", 3, &mut faults);
        faults.refresh(70);
        assert!(faults.sync_delay.is_none(), "a bad setting is ignored");
    }
}
