//! `raftkv-chaos-node`: the `raftkv` server program, built with storage
//! fault injection (`RAFTKV_FAULT_SYNC_DELAY_MS`,
//! `RAFTKV_FAULT_SYNC_FAIL_AFTER` at start, `RAFTKV_FAULT_FILE` while it
//! runs) for the chaos harness.

fn main() -> std::process::ExitCode {
    raftkv_server::cli::main()
}
