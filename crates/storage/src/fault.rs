//! Test-only fault injection for the calls that make data durable.
//!
//! Compiled only under `cfg(test)`: release and ordinary debug builds of the
//! crate contain no trace of it. Faults are per thread, so tests running in
//! parallel do not disturb each other.

use std::cell::Cell;
use std::io;

thread_local! {
    static FAIL_SYNCS: Cell<bool> = const { Cell::new(false) };
    static FAIL_WRITES: Cell<bool> = const { Cell::new(false) };
}

/// From now on every sync (file or directory) on this thread fails, or
/// succeeds again when `on` is false.
pub(crate) fn fail_syncs(on: bool) {
    FAIL_SYNCS.with(|flag| flag.set(on));
}

/// From now on every write on this thread fails, or succeeds again when `on`
/// is false.
pub(crate) fn fail_writes(on: bool) {
    FAIL_WRITES.with(|flag| flag.set(on));
}

pub(crate) fn check_sync() -> io::Result<()> {
    if FAIL_SYNCS.with(Cell::get) {
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
