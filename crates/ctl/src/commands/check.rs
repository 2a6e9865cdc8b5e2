//! `check HISTORY.jsonl`: the linearizability check of a recorded history
//! (raftkv's own; etcdctl has no such command). It needs no cluster.
//!
//! Exit codes are the verdict, so a script or CI job can branch on them:
//! 0 linearizable, 1 not linearizable, 2 undecided (the time budget ran
//! out) or a history that cannot be read.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use raftkv_check::history::History;
use raftkv_check::{check, CheckOptions, Verdict};

use crate::output::Format;

/// `check [--time-budget D] [--threads N] HISTORY.jsonl`.
#[derive(Args, Clone, Debug)]
pub struct CheckArgs {
    /// The history: JSON Lines, one operation per line.
    pub history: PathBuf,
    /// Wall time for the whole check; keys not decided by then make the
    /// verdict unknown.
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
    pub time_budget: Duration,
    /// Worker threads (0: one per available core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Exit code: the history is linearizable.
pub const EXIT_LINEARIZABLE: u8 = 0;
/// Exit code: the history is not linearizable.
pub const EXIT_NOT_LINEARIZABLE: u8 = 1;
/// Exit code: undecided, or the history could not be read.
pub const EXIT_UNKNOWN: u8 = 2;

/// Reads, checks and prints; returns the exit code. `json` prints the
/// report as JSON, any other format as text.
pub fn run(args: &CheckArgs, format: Format) -> u8 {
    let history = match read(args) {
        Ok(history) => history,
        Err(message) => {
            super::emit_err(&format!("Error: {message}\n"));
            return EXIT_UNKNOWN;
        }
    };
    let report = check(
        &history,
        CheckOptions {
            time_budget: args.time_budget,
            threads: args.threads,
        },
    );
    let text = match format {
        Format::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(err) => {
                super::emit_err(&format!("Error: cannot encode the report: {err}\n"));
                return EXIT_UNKNOWN;
            }
        },
        _ => report.to_string(),
    };
    if super::emit(&text).is_err() {
        return EXIT_UNKNOWN;
    }
    match report.verdict {
        Verdict::Linearizable => EXIT_LINEARIZABLE,
        Verdict::NotLinearizable => EXIT_NOT_LINEARIZABLE,
        Verdict::Unknown => EXIT_UNKNOWN,
    }
}

fn read(args: &CheckArgs) -> Result<History, String> {
    let path = args.history.display();
    let file = std::fs::File::open(&args.history).map_err(|e| format!("{path}: {e}"))?;
    History::read_jsonl(std::io::BufReader::new(file)).map_err(|e| format!("{path}: {e}"))
}
