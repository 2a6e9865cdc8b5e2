//! `raftkvctl`: etcdctl's v3 commands against raftkv or etcd. See the
//! library's docs for the exactly-once retry contract.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use raftkv_ctl::bench::BenchArgs;
use raftkv_ctl::client::{Client, ClientConfig, Credentials, RetryPolicy, Security};
use raftkv_ctl::commands::auth::{parse_go_bool, AuthCommand, Prepared, RoleCommand, UserCommand};
use raftkv_ctl::commands::check::CheckArgs;
use raftkv_ctl::commands::endpoint::EndpointCommand;
use raftkv_ctl::commands::kv::{CompactionArgs, DelArgs, GetArgs, PutArgs};
use raftkv_ctl::commands::lease::LeaseCommand;
use raftkv_ctl::commands::maintenance::{AlarmCommand, DefragArgs, SnapshotCommand};
use raftkv_ctl::commands::member::MemberCommand;
use raftkv_ctl::commands::txn::TxnArgs;
use raftkv_ctl::commands::watch::WatchArgs;
use raftkv_ctl::commands::{self, Context};
use raftkv_ctl::error::{CtlError, ExitCode as CtlExit};
use raftkv_ctl::output::{Format, Printer};
use raftkv_ctl::tls::TlsSettings;

/// A simple command line client for etcd3 and raftkv.
#[derive(Parser, Debug)]
// A flag given twice keeps its last value, as etcdctl's (pflag) does.
#[command(name = "raftkvctl", version, about, args_override_self = true)]
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
    /// Set the output format (simple, json, protobuf, table, fields).
    #[arg(short = 'w', long, global = true, value_enum, default_value = "simple")]
    write_out: Format,
    /// Print byte strings as hex encoded strings.
    #[arg(long, global = true)]
    hex: bool,
    /// Enable client-side debug logging (on stderr).
    #[arg(long, global = true)]
    debug: bool,
    /// Username[:password] for authentication (prompt if password is not supplied).
    #[arg(long, global = true, env = "ETCDCTL_USER", hide_env_values = true)]
    user: Option<String>,
    /// Password for authentication (if this option is used, --user option shouldn't include password).
    #[arg(long, global = true, env = "ETCDCTL_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Verify certificates of TLS-enabled secure servers using this CA bundle.
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    cacert: Option<String>,
    /// Identify secure client using this TLS certificate file.
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    cert: Option<String>,
    /// Identify secure client using this TLS key file.
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    key: Option<String>,
    /// Skip server certificate verification (CAUTION: this option should be enabled only for testing purposes).
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY", default_value = "false",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_go_bool)]
    insecure_skip_tls_verify: bool,
    /// Disable transport security for client connections.
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_TRANSPORT", default_value = "true",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_go_bool)]
    insecure_transport: bool,
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
    /// Enable or disable authentication.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// User related commands.
    #[command(subcommand)]
    User(UserCommand),
    /// Role related commands.
    #[command(subcommand)]
    Role(RoleCommand),
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

/// The flags raftkvctl reads from `ETCDCTL_*` variables, and the variables.
const ENV_FLAGS: &[(&str, &str)] = &[
    ("user", "ETCDCTL_USER"),
    ("password", "ETCDCTL_PASSWORD"),
    ("cacert", "ETCDCTL_CACERT"),
    ("cert", "ETCDCTL_CERT"),
    ("key", "ETCDCTL_KEY"),
    (
        "insecure_skip_tls_verify",
        "ETCDCTL_INSECURE_SKIP_TLS_VERIFY",
    ),
    ("insecure_transport", "ETCDCTL_INSECURE_TRANSPORT"),
];

/// A variable set in the environment (even empty) whose flag was also
/// given: etcdctl refuses to guess which one was meant.
fn shadowed_env(matches: &clap::ArgMatches) -> Option<&'static str> {
    ENV_FLAGS.iter().find_map(|&(id, env)| {
        let given = matches.value_source(id) == Some(ValueSource::CommandLine);
        (given && std::env::var_os(env).is_some()).then_some(env)
    })
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    raftkv_ctl::duration::parse(text)
}

fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let cli = match parsed {
        Ok((cli, matches)) => {
            if let Some(env) = shadowed_env(&matches) {
                // etcd's pkg/flags refuses this with a fatal capnslog line.
                commands::emit_err(&format!(
                    "{} C | pkg/flags: conflicting environment variable \"{env}\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)\n",
                    raftkv_ctl::output::gofmt::capnslog_time(std::time::SystemTime::now())
                ));
                return ExitCode::from(1);
            }
            cli
        }
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
    if let Command::Snapshot(SnapshotCommand::Restore(args)) = &cli.command {
        return commands::restore::run(args);
    }
    let endpoints: Vec<String> = cli
        .endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    // etcdctl reads a new user's password before it connects, and --user's
    // after that.
    let prepared = match &cli.command {
        Command::User(command) => commands::auth::prepare_user(command)?,
        _ => Prepared::default(),
    };
    let tls = tls_settings(&cli)?;
    let credentials = credentials(&cli)?;
    let config = ClientConfig {
        endpoints,
        dial_timeout: cli.dial_timeout,
        command_timeout: cli.command_timeout,
        retry: RetryPolicy {
            attempt_timeout: cli.attempt_timeout,
            ..RetryPolicy::default()
        },
    };
    let security = Security { tls, credentials };
    if let Command::Bench(args) = &cli.command {
        return raftkv_ctl::bench::run(args, &config, &security);
    }
    let client =
        Client::with_security(config, security).map_err(|e| CtlError::bad_args(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::failed(format!("cannot start the runtime: {e}")))?;
    // etcd's client authenticates when it is created; etcdctl exits with
    // its bad-connection code if that fails.
    runtime
        .block_on(client.authenticate())
        .map_err(|e| CtlError::new(CtlExit::BadConnection, e.to_string()))?;
    let ctx = Context {
        client,
        printer: Printer::new(cli.write_out, cli.hex),
    };
    runtime.block_on(dispatch(&ctx, &cli.command, &prepared))
}

/// The TLS flags, with etcdctl's refusal of an empty file name.
fn tls_settings(cli: &Cli) -> Result<TlsSettings, CtlError> {
    // Strings, not paths, in clap: it would refuse an empty path with its
    // own message before etcdctl's could be given.
    let file = |path: &Option<String>, flag: &str| match path.as_deref() {
        Some("") => Err(CtlError::bad_args(format!(
            "empty string is passed to --{flag} option"
        ))),
        other => Ok(other.map(PathBuf::from)),
    };
    Ok(TlsSettings {
        cert: file(&cli.cert, "cert")?,
        key: file(&cli.key, "key")?,
        cacert: file(&cli.cacert, "cacert")?,
        insecure_skip_verify: cli.insecure_skip_tls_verify,
        insecure_transport: cli.insecure_transport,
    })
}

/// `--user name[:password]` and `--password`, as etcdctl reads them: with
/// `--password` the whole `--user` is the name; without it the password
/// follows the first colon, or is asked for on the terminal.
fn credentials(cli: &Cli) -> Result<Option<Credentials>, CtlError> {
    let user = match cli.user.as_deref() {
        None | Some("") => return Ok(None),
        Some(user) => user,
    };
    if let Some(password) = cli.password.as_deref().filter(|p| !p.is_empty()) {
        return Ok(Some(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        }));
    }
    let (user, password) = match user.split_once(':') {
        Some((user, password)) => (user.to_string(), password.to_string()),
        None => {
            let password = commands::auth::ask_password("Password: ")
                .map_err(|e| CtlError::failed(e.to_string()))?;
            (user.to_string(), password)
        }
    };
    Ok(Some(Credentials { user, password }))
}

async fn dispatch(ctx: &Context, command: &Command, prepared: &Prepared) -> Result<(), CtlError> {
    use raftkv_ctl::commands::{auth, endpoint, kv, lease, maintenance, member, txn, watch};
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
        Command::Auth(command) => auth::auth(ctx, command).await,
        Command::User(command) => auth::user(ctx, command, prepared).await,
        Command::Role(command) => auth::role(ctx, command).await,
        Command::Version | Command::Check(_) | Command::Bench(_) => Ok(()),
    }
}
