//! `raftkvctl`: etcdctl's v3 commands against raftkv or etcd. See the
//! library's docs for the exactly-once retry contract.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use raftkv_ctl::bench::BenchArgs;
use raftkv_ctl::client::{Client, ClientConfig, RetryPolicy};
use raftkv_ctl::commands::check::CheckArgs;
use raftkv_ctl::commands::endpoint::EndpointCommand;
use raftkv_ctl::commands::kv::{CompactionArgs, DelArgs, GetArgs, PutArgs};
use raftkv_ctl::commands::lease::LeaseCommand;
use raftkv_ctl::commands::maintenance::{AlarmCommand, DefragArgs, SnapshotCommand};
use raftkv_ctl::commands::member::MemberCommand;
use raftkv_ctl::commands::txn::TxnArgs;
use raftkv_ctl::commands::watch::WatchArgs;
use raftkv_ctl::commands::{self, Context};
use raftkv_ctl::error::CtlError;
use raftkv_ctl::output::{Format, Printer};

/// A simple command line client for etcd3 and raftkv.
#[derive(Parser, Debug)]
#[command(name = "raftkvctl", version, about)]
struct Cli {
    /// gRPC endpoints, comma separated.
    #[arg(long, global = true, default_value = "127.0.0.1:2379")]
    endpoints: String,
    /// Dial timeout for client connections.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    dial_timeout: Duration,
    /// Timeout for short running command (excluding dial timeout), retries included.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    command_timeout: Duration,
    /// Longest a single attempt may take before it is retried on the next endpoint.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    attempt_timeout: Duration,
    /// Set the output format (simple, json, table, fields).
    #[arg(short = 'w', long, global = true, value_enum, default_value = "simple")]
    write_out: Format,
    /// Print byte strings as hex encoded strings.
    #[arg(long, global = true)]
    hex: bool,
    /// Enable client-side debug logging (on stderr).
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Puts the given key into the store.
    Put(PutArgs),
    /// Gets the key or a range of keys.
    Get(GetArgs),
    /// Removes the specified key or range of keys [key, range_end).
    Del(DelArgs),
    /// Txn processes all the requests in one transaction.
    Txn(TxnArgs),
    /// Compacts the event history in etcd.
    Compaction(CompactionArgs),
    /// Watches events stream on keys or prefixes.
    Watch(WatchArgs),
    /// Lease related commands.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Membership related commands.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Endpoint related commands.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Alarm related commands.
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// Defragments the storage of the etcd members with given endpoints.
    Defrag(DefragArgs),
    /// Manages etcd node snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Transfers leadership to another etcd cluster member.
    MoveLeader {
        /// The transferee's member id (hex).
        args: Vec<String>,
    },
    /// Prints the version of raftkvctl.
    Version,
    /// Checks a recorded history (JSON Lines) for linearizability; exit 0
    /// linearizable, 1 not, 2 unknown or unreadable.
    Check(CheckArgs),
    /// Benchmarks etcd's v3 API (raftkv or etcd) and reports on the results.
    Bench(BenchArgs),
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    raftkv_ctl::duration::parse(text)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if cli.debug {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("raftkv_ctl=debug"))
            .with_writer(std::io::stderr)
            .init();
    }
    if let Command::Check(args) = &cli.command {
        return ExitCode::from(commands::check::run(args, cli.write_out));
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // An empty message: the failures were already reported.
            if !err.message.is_empty() {
                commands::emit_err(&format!("Error: {}\n", err.message));
            }
            ExitCode::from(err.code as u8)
        }
    }
}

fn run(cli: Cli) -> Result<(), CtlError> {
    if let Command::Version = cli.command {
        return commands::emit(&format!(
            "raftkvctl version: {}\nAPI version: 3.4\n",
            env!("CARGO_PKG_VERSION")
        ));
    }
    let endpoints: Vec<String> = cli
        .endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if let Command::Bench(args) = &cli.command {
        return raftkv_ctl::bench::run(args, &endpoints, cli.dial_timeout);
    }
    if let Command::Snapshot(SnapshotCommand::Restore(args)) = &cli.command {
        return commands::restore::run(args);
    }
    let config = ClientConfig {
        endpoints,
        dial_timeout: cli.dial_timeout,
        command_timeout: cli.command_timeout,
        retry: RetryPolicy {
            attempt_timeout: cli.attempt_timeout,
            ..RetryPolicy::default()
        },
    };
    let client = Client::new(config).map_err(|e| CtlError::bad_args(e.to_string()))?;
    let ctx = Context {
        client,
        printer: Printer::new(cli.write_out, cli.hex),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::failed(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(dispatch(&ctx, &cli.command))
}

async fn dispatch(ctx: &Context, command: &Command) -> Result<(), CtlError> {
    use raftkv_ctl::commands::{endpoint, kv, lease, maintenance, member, txn, watch};
    match command {
        Command::Put(args) => kv::put(ctx, args).await,
        Command::Get(args) => kv::get(ctx, args).await,
        Command::Del(args) => kv::del(ctx, args).await,
        Command::Txn(args) => txn::txn(ctx, args).await,
        Command::Compaction(args) => kv::compaction(ctx, args).await,
        Command::Watch(args) => watch::watch(ctx, args).await,
        Command::Lease(command) => lease::run(ctx, command).await,
        Command::Member(command) => member::run(ctx, command).await,
        Command::Endpoint(command) => endpoint::run(ctx, command).await,
        Command::Alarm(command) => maintenance::alarm(ctx, command).await,
        Command::Defrag(args) => maintenance::defrag(ctx, args).await,
        Command::Snapshot(command) => maintenance::snapshot(ctx, command).await,
        Command::MoveLeader { args } => maintenance::move_leader(ctx, args).await,
        Command::Version | Command::Check(_) | Command::Bench(_) => Ok(()),
    }
}
