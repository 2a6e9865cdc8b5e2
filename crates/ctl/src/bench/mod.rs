//! `raftkvctl bench`: a load generator for etcd's v3 API, so raftkv and etcd
//! can be measured by the same client with the same requests.
//!
//! Requests are plain etcd requests: no `raftkv-client-id` metadata and no
//! retries, since a retry would hide the latency and the error a benchmark
//! is there to show. Every run is bounded by `--total` or `--duration`.
//!
//! - [`workload`]: what one operation is (put, get, txn-put, range, watch,
//!   lease keep-alive, mixed) and how keys and values are made.
//! - [`runner`]: connections, concurrent clients, rate limiting, progress.
//! - [`stats`]: the HDR histogram, error counts and the printed report.
//! - [`plot`]: the latency distribution as SVG.
//! - [`report`]: medians of many runs' JSON as a markdown comparison table
//!   (`bench report DIR`), used by `bench/compare-etcd.sh`.

pub mod plot;
pub mod report;
pub mod runner;
pub mod stats;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::error::CtlError;

/// `bench <workload> [options]`, or `bench report DIR`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// What to run.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The workloads, and the report over saved results.
#[derive(Subcommand, Clone, Debug)]
pub enum BenchCommand {
    /// Put keys (random, or sequential with --sequential-keys) over --key-space.
    Put(#[command(flatten)] LoadArgs),
    /// Get one key at a time (linearizable unless --serializable).
    Get(#[command(flatten)] LoadArgs),
    /// Compare-and-swap: Txn If mod_revision(k) == r Then Put(k) Else Get(k).
    TxnPut(#[command(flatten)] LoadArgs),
    /// Range over --range-size keys (linearizable unless --serializable).
    Range(#[command(flatten)] LoadArgs),
    /// Watch latency: time from a put to its event on a watch stream.
    Watch(#[command(flatten)] LoadArgs),
    /// Lease keep-alive round trips on one stream per client, over --leases
    /// leases granted before the run.
    LeaseKeepalive(#[command(flatten)] LoadArgs),
    /// Gets and puts mixed by --read-ratio.
    Mixed(#[command(flatten)] LoadArgs),
    /// Medians of the `--json` results saved in DIR, as a markdown table.
    Report(ReportArgs),
}

/// Which members the connections go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Spread the connections over every endpoint.
    All,
    /// Only the leader (asked with Maintenance.Status before the run).
    Leader,
}

/// Options shared by every workload.
#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// gRPC connections; clients are spread over them, and they over the
    /// endpoints.
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Operations to run in all (default 10000 when --duration is not given).
    #[arg(long)]
    pub total: Option<u64>,
    /// Run for this long instead (Go duration: 10s, 1m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Operations per second over all clients; 0 is unlimited.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Key size in bytes.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// Values log-uniform in size from this many bytes (with
    /// --val-size-max), one size for each key, picked by --seed.
    #[arg(long, requires = "val_size_max", conflicts_with = "val_size")]
    pub val_size_min: Option<usize>,
    /// The largest value when sizes are log-uniform.
    #[arg(long, requires = "val_size_min")]
    pub val_size_max: Option<usize>,
    /// Seed of the random keys and value sizes (by default from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Leases `lease-keepalive` keeps alive, its clients renewing them in
    /// turn (default: one per client).
    #[arg(long)]
    pub leases: Option<usize>,
    /// Stop at the first NOSPACE (`mvcc: database space exceeded`) and
    /// report the bytes written before it.
    #[arg(long)]
    pub stop_on_nospace: bool,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,
    /// Take keys in order (0, 1, 2, ...) rather than at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Serializable reads (answered by the member itself).
    #[arg(long)]
    pub serializable: bool,
    /// Share of reads in `mixed`, from 0 to 1.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Keys per request in `range`.
    #[arg(long, default_value_t = 100)]
    pub range_size: u64,
    /// Which members to connect to.
    #[arg(long, value_enum, default_value = "all")]
    pub target: Target,
    /// Print one JSON object instead of the text report (no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Draw the latency distribution into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// A name recorded in the JSON (for example `etcd` or `raftkv`), which
    /// `bench report` groups by.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Longest a single request may take before it counts as an error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// `bench report DIR`.
#[derive(Args, Clone, Debug)]
pub struct ReportArgs {
    /// Directory of `*.json` files written by `bench ... --json` and the
    /// comparison script's resource records.
    pub dir: PathBuf,
    /// The label compared against (the denominator of the ratios).
    #[arg(long, default_value = "etcd")]
    pub baseline: String,
    /// The label measured (the numerator).
    #[arg(long, default_value = "raftkv")]
    pub candidate: String,
    /// Which tables to print.
    #[arg(long, value_enum, default_value = "all")]
    pub part: Part,
}

/// The tables of `bench report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    /// Every table.
    All,
    /// Throughput and latency of the runs.
    Runs,
    /// Memory and disk after the load.
    Resources,
    /// The store-size records.
    StoreSize,
    /// The quota (NOSPACE) records.
    Quota,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
}

/// Runs `bench` against `endpoints` (the global `--endpoints`), on a
/// runtime of its own with a thread per core, since one thread cannot
/// keep many clients busy.
pub fn run(
    args: &BenchArgs,
    connection: &crate::client::ClientConfig,
    security: &crate::client::Security,
) -> Result<(), CtlError> {
    let (kind, load) = match &args.command {
        BenchCommand::Report(report_args) => return report::run(report_args),
        BenchCommand::Put(a) => (workload::Kind::Put, a),
        BenchCommand::Get(a) => (workload::Kind::Get, a),
        BenchCommand::TxnPut(a) => (workload::Kind::TxnPut, a),
        BenchCommand::Range(a) => (workload::Kind::Range, a),
        BenchCommand::Watch(a) => (workload::Kind::Watch, a),
        BenchCommand::LeaseKeepalive(a) => (workload::Kind::LeaseKeepalive, a),
        BenchCommand::Mixed(a) => (workload::Kind::Mixed, a),
    };
    let plan = runner::Plan::new(kind, load, connection, security)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::failed(format!("cannot start the runtime: {e}")))?;
    let summary = runtime.block_on(runner::run(&plan))?;
    if let Some(path) = &load.plot {
        plot::write_svg(path, &summary)
            .map_err(|e| CtlError::new(crate::error::ExitCode::Io, e.to_string()))?;
    }
    let text = if load.json {
        let mut json = summary.to_json().to_string();
        json.push('\n');
        json
    } else {
        summary.to_text()
    };
    crate::commands::emit(&text)
}
