//! Test-only fault injection for the calls that make data durable.
//!
//! Compiled only under `cfg(test)` or the `fault-injection` feature: builds
//! of the server binary without that feature contain no trace of it.
//!
//! - Unit tests set per-thread faults ([`fail_syncs`], [`fail_writes`]), so
//!   tests running in parallel do not disturb each other.
//! - Whole processes (the chaos harness's servers) read process-wide faults
//!   once from the environment: `RAFTKV_FAULT_SYNC_DELAY_MS` slows every
//!   sync by that many milliseconds, and `RAFTKV_FAULT_SYNC_FAIL_AFTER=N`
//!   lets N syncs succeed and fails every later one.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

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

/// Faults the environment asked for, read on the first sync.
#[derive(Debug, Default)]
struct ProcessFaults {
    sync_delay: Option<Duration>,
    sync_fail_after: Option<u64>,
}

fn process_faults() -> &'static ProcessFaults {
    static FAULTS: OnceLock<ProcessFaults> = OnceLock::new();
    FAULTS.get_or_init(|| {
        let number = |name: &str| {
            let text = std::env::var(name).ok()?;
            match text.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    tracing::warn!(name, text, "ignoring a fault setting that is not a number");
                    None
                }
            }
        };
        let faults = ProcessFaults {
            sync_delay: number("RAFTKV_FAULT_SYNC_DELAY_MS").map(Duration::from_millis),
            sync_fail_after: number("RAFTKV_FAULT_SYNC_FAIL_AFTER"),
        };
        if faults.sync_delay.is_some() || faults.sync_fail_after.is_some() {
            tracing::warn!(?faults, "storage fault injection is active");
        }
        faults
    })
}

/// Syncs done so far by this process, for `RAFTKV_FAULT_SYNC_FAIL_AFTER`.
static SYNCS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn check_sync() -> io::Result<()> {
    if FAIL_SYNCS.with(Cell::get) {
        return Err(io::Error::other("injected fsync failure"));
    }
    let faults = process_faults();
    if let Some(delay) = faults.sync_delay {
        std::thread::sleep(delay);
    }
    if let Some(limit) = faults.sync_fail_after {
        if SYNCS.fetch_add(1, Ordering::Relaxed) >= limit {
            return Err(io::Error::other(
                "injected fsync failure (RAFTKV_FAULT_SYNC_FAIL_AFTER)",
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_write() -> io::Result<()> {
    if FAIL_WRITES.with(Cell::get) {
        return Err(io::Error::other("injected write failure"));
    }
    Ok(())
}
