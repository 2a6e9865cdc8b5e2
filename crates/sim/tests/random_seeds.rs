//! Random simulation runs: every seed must keep every safety property at
//! every step and recover once faults stop.
//!
//! `RAFTKV_SIM_SEEDS` sets how many seeds run (default 2,000 in release
//! builds, 100 in debug builds); `RAFTKV_SIM_START` the first seed. A failure
//! prints the seed and the command that replays it.

use raftkv_sim::run_many;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_seeds_keep_raft_safe_and_live() {
    let default_seeds = if cfg!(debug_assertions) { 100 } else { 2_000 };
    let seeds = env_u64("RAFTKV_SIM_SEEDS").unwrap_or(default_seeds);
    let start = env_u64("RAFTKV_SIM_START").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = std::time::Instant::now();
    let summary = run_many(start, seeds, threads);
    println!("{summary}");
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    for failure in &summary.failures {
        eprintln!("{failure}\n");
    }
    assert!(
        summary.failures.is_empty(),
        "{} of {seeds} seeds failed",
        summary.failures.len()
    );
    assert_eq!(summary.seeds, seeds, "every seed ran");
    assert!(summary.committed > seeds, "runs made progress");
}

/// Seeds that once broke a property (each fixed since): they stay in every run.
#[test]
fn seeds_that_once_failed_pass() {
    let seeds = [
        41, 43, 210, 264, 334, 1658, 5966, 22729, 28295, 35528, 36135, 42298, 43093, 67395, 70987,
        80878, 89580,
    ];
    for seed in seeds {
        if let Err(failure) = raftkv_sim::run(&raftkv_sim::RunOptions::new(seed)) {
            panic!("{failure}");
        }
    }
}
