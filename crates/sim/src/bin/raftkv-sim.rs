//! Runs the Raft simulator over many seeds, or replays one.
//!
//! ```text
//! raftkv-sim [--seeds N] [--start S] [--threads T]   run seeds S..S+N
//! raftkv-sim --seed X [--verbose]                     replay one seed
//! ```

use std::process::ExitCode;
use std::time::Instant;

use raftkv_sim::{run, run_many, RunOptions};

struct Args {
    seeds: u64,
    start: u64,
    threads: usize,
    seed: Option<u64>,
    verbose: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 1_000,
        start: 0,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        seed: None,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--seeds" => args.seeds = value("--seeds")?,
            "--start" => args.start = value("--start")?,
            "--threads" => args.threads = value("--threads")? as usize,
            "--seed" => args.seed = Some(value("--seed")?),
            "--verbose" | "-v" => args.verbose = true,
            "--help" | "-h" => return Err(
                "usage: raftkv-sim [--seeds N] [--start S] [--threads T] | --seed X [--verbose]"
                    .into(),
            ),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    if let Some(seed) = args.seed {
        let mut options = RunOptions::new(seed);
        options.verbose = args.verbose;
        return match run(&options) {
            Ok(report) => {
                println!("seed {seed} passed: {report:?}");
                ExitCode::SUCCESS
            }
            Err(failure) => {
                eprintln!("{failure}");
                ExitCode::FAILURE
            }
        };
    }
    let summary = run_many(args.start, args.seeds, args.threads);
    let elapsed = started.elapsed();
    for failure in &summary.failures {
        eprintln!("{failure}\n");
    }
    println!("{summary}");
    println!(
        "took {:.1} s on {} threads",
        elapsed.as_secs_f64(),
        args.threads
    );
    if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
