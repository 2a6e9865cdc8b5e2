//! The server's settings, taken from etcd's flags with etcd's names and
//! defaults, so a script that starts etcd starts raftkv by changing only the
//! binary's name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::error::ConfigError;
use crate::tls::options::{Port, TlsFlags, TlsOptions, TlsProtocol};

/// Command-line flags, named and defaulted as etcd's.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A Raft-replicated key-value store that speaks etcd's v3 API"
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: `<name>.raftkv`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub listen_client_urls: String,
    /// Client URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    pub listen_peer_urls: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping: `name=url,name=url`.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// `new` to bootstrap a cluster, `existing` to join one.
    #[arg(long, default_value = "new")]
    pub initial_cluster_state: String,
    /// Initial cluster token, which makes cluster and member ids unique.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1_572_864)]
    pub max_request_bytes: u64,
    /// Maximum number of learners in the cluster.
    #[arg(long, default_value_t = 1)]
    pub max_learners: u32,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    pub max_txn_ops: u32,
    /// Raise alarms when backend size exceeds the given quota (0 means 2 GiB).
    #[arg(long, default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// Memory for the store's page cache, in bytes (raftkv's own flag; at
    /// least 1 MiB). Pages beyond it are read from the OS page cache.
    #[arg(long, default_value_t = DEFAULT_BACKEND_CACHE_BYTES)]
    pub backend_cache_bytes: u64,
    /// `periodic` or `revision`.
    #[arg(long, default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Auto compaction retention: a duration (`1h`, `30m`, or hours as a
    /// plain number) in periodic mode, a revision count in revision mode; 0
    /// disables it.
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,
    /// Additional URLs to serve `/metrics` and `/health` on.
    #[arg(long)]
    pub listen_metrics_urls: Option<String>,
    /// Checkpoint leases' time left through Raft, so that a leader change
    /// does not restart their clocks (on by default, unlike etcd 3.4).
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub experimental_enable_lease_checkpoint: bool,
    /// How often the leader checkpoints the time left of leases longer
    /// than this.
    #[arg(long, default_value = "5m0s")]
    pub experimental_lease_checkpoint_interval: String,
    /// How often watchers created with progress_notify hear progress.
    #[arg(long, default_value = "10m0s")]
    pub experimental_watch_progress_notify_interval: String,
    /// Bytes of responses a watch stream may hold for a client that does
    /// not read them (raftkv's own flag; at least 64 KiB). A stream past it
    /// holds no more events: it catches up from history once the client
    /// reads again.
    #[arg(long, default_value_t = DEFAULT_WATCH_STREAM_BUFFER_BYTES)]
    pub watch_stream_buffer_bytes: u64,
    /// How long the outcome of a write that carries a client id and a
    /// sequence number is remembered, so a retry within that time is
    /// answered with it instead of applied again. The leader's value is the
    /// one that counts; give every member the same.
    #[arg(long, default_value = "10m0s")]
    pub request_outcome_ttl: String,
    /// Local IP address to open peer connections from (default: chosen by
    /// the operating system).
    #[arg(long)]
    pub experimental_peer_source_ip: Option<std::net::IpAddr>,
    /// Kind of auth token: `simple` (etcd's default; random tokens each
    /// member keeps in memory) or
    /// `jwt,pub-key=FILE,priv-key=FILE,sign-method=RS256,ttl=5m` (signed
    /// tokens any member verifies).
    #[arg(long, default_value = "simple")]
    pub auth_token: String,
    /// Seconds a simple token lives after its last use.
    #[arg(long, default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// The bcrypt cost of stored password hashes (4 to 31).
    #[arg(long, default_value_t = 10)]
    pub bcrypt_cost: u32,
    /// Path to the client server TLS cert file.
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file (clients must
    /// then present a certificate it signed, as in etcd).
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication (needs --trusted-ca-file).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub client_cert_auth: bool,
    /// Client TLS using generated certificates (when no --cert-file is given).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub auto_tls: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long)]
    pub client_crl_file: Option<PathBuf>,
    /// Allowed TLS host name for client cert authentication (empty: any).
    #[arg(long, default_value = "")]
    pub client_cert_allowed_hostname: String,
    /// Path to the peer server TLS cert file.
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication (needs --peer-trusted-ca-file).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub peer_client_cert_auth: bool,
    /// Peer TLS using self-generated certificates (when no --peer-cert-file
    /// is given).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub peer_auto_tls: bool,
    /// Allowed CN for inter peer authentication (empty: any).
    #[arg(long, default_value = "")]
    pub peer_cert_allowed_cn: String,
    /// Allowed TLS host name for inter peer authentication (empty: any).
    #[arg(long, default_value = "")]
    pub peer_cert_allowed_hostname: String,
    /// Path to the peer certificate revocation list file.
    #[arg(long)]
    pub peer_crl_file: Option<PathBuf>,
    /// Comma-separated list of supported TLS cipher suites between client
    /// and server and between peers, Go's names (empty: the defaults).
    #[arg(long, default_value = "")]
    pub cipher_suites: String,
    /// Minimum TLS version supported: TLS1.2 or TLS1.3.
    #[arg(long, default_value = "TLS1.2")]
    pub tls_min_version: String,
    /// Maximum TLS version supported: TLS1.2 or TLS1.3 (empty: the highest).
    #[arg(long, default_value = "")]
    pub tls_max_version: String,
}

/// How automatic compaction is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Never compact automatically.
    Off,
    /// Keep history for this long.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(u64),
}

/// Whether this member founds a cluster or joins one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster with the initial members.
    New,
    /// Join a running cluster that already added this member.
    Existing,
}

/// A member named in `--initial-cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's name.
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
    /// Its id, derived from its peer URLs and the cluster token.
    pub id: u64,
}

/// Validated server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This member's name.
    pub name: String,
    /// This member's id.
    pub member_id: u64,
    /// The cluster's id, derived from the founding members.
    pub cluster_id: u64,
    /// Where the WAL, snapshots and key-value store live.
    pub data_dir: PathBuf,
    /// Client listen addresses.
    pub listen_client: Vec<ListenUrl>,
    /// Client URLs advertised to others.
    pub advertise_client_urls: Vec<String>,
    /// Peer listen addresses.
    pub listen_peer: Vec<ListenUrl>,
    /// Peer URLs advertised to others.
    pub advertise_peer_urls: Vec<String>,
    /// The founding members (this one included).
    pub initial_cluster: Vec<InitialMember>,
    /// Found or join.
    pub cluster_state: ClusterState,
    /// The token that makes cluster and member ids unique.
    pub initial_cluster_token: String,
    /// Most learners MemberAdd lets in.
    pub max_learners: u32,
    /// Length of one Raft tick.
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: u32,
    /// Applied entries between two snapshots.
    pub snapshot_count: u64,
    /// Largest client request accepted.
    pub max_request_bytes: u64,
    /// Most operations in one txn.
    pub max_txn_ops: u32,
    /// Backend size that raises the NOSPACE alarm.
    pub quota_backend_bytes: u64,
    /// The store's page cache.
    pub backend_cache_bytes: u64,
    /// Automatic compaction.
    pub auto_compaction: AutoCompaction,
    /// Extra addresses serving metrics and health.
    pub listen_metrics: Vec<SocketAddr>,
    /// How often lease time left is checkpointed; zero for never.
    pub lease_checkpoint_interval: Duration,
    /// How often watchers created with progress_notify hear progress.
    pub watch_progress_interval: Duration,
    /// What a watch stream may hold for a client that does not read.
    pub watch_stream_buffer_bytes: u32,
    /// Source address of outgoing peer connections.
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// How long exactly-once outcomes are kept (by the cluster clock).
    pub request_outcome_ttl: Duration,
    /// How long a simple auth token lives after its last use.
    pub auth_token_ttl: Duration,
    /// The options of `--auth-token jwt,...` (validated), if JWTs are used.
    pub auth_jwt_options: Option<String>,
    /// The bcrypt cost of password hashes.
    pub bcrypt_cost: u32,
    /// TLS of the client port's `https://` listeners.
    pub client_tls: TlsOptions,
    /// TLS of the peer port's `https://` listeners and of dialing
    /// `https://` peers.
    pub peer_tls: TlsOptions,
}

/// A URL to listen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenUrl {
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it is `https://` (TLS).
    pub tls: bool,
}

/// Default of `--backend-cache-bytes`. Measured with 1 million keys of 256 B
/// on 3 members: 64 MiB against 256 MiB took the peak memory after the load
/// from about 480 to 315 MB a member, and the leader's after 16 s of random
/// gets from 940 to 404 MB, at the same get and put rates (the OS page cache
/// holds the file either way).
pub const DEFAULT_BACKEND_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Least `--backend-cache-bytes` accepted.
pub const MIN_BACKEND_CACHE_BYTES: u64 = 1024 * 1024;

/// Default of `--watch-stream-buffer-bytes`: a stream that keeps up never
/// comes near it (etcd holds up to 128 responses a stream, which with
/// 256 KiB values is 32 MiB), and a stuck one holds at most this much.
pub const DEFAULT_WATCH_STREAM_BUFFER_BYTES: u64 = 4 * 1024 * 1024;
/// Least `--watch-stream-buffer-bytes` accepted.
pub const MIN_WATCH_STREAM_BUFFER_BYTES: u32 = 64 * 1024;

/// The backend quota etcd applies when `--quota-backend-bytes` is 0.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;

impl ServerConfig {
    /// Validates flags into settings.
    pub fn from_flags(flags: &Flags) -> Result<Self, ConfigError> {
        if flags.name.is_empty() {
            return Err(ConfigError::Invalid("--name must not be empty".into()));
        }
        let advertise_peer_urls = split_urls(&flags.initial_advertise_peer_urls);
        let initial_cluster_text = flags
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", flags.name, flags.initial_advertise_peer_urls));
        let initial_cluster =
            parse_initial_cluster(&initial_cluster_text, &flags.initial_cluster_token)?;
        let me = initial_cluster
            .iter()
            .find(|m| m.name == flags.name)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "--initial-cluster has no member named {:?}",
                    flags.name
                ))
            })?;
        let mut mine = me.peer_urls.clone();
        let mut advertised = advertise_peer_urls.clone();
        mine.sort();
        advertised.sort();
        if mine != advertised {
            return Err(ConfigError::Invalid(format!(
                "--initial-advertise-peer-urls {advertised:?} do not match --initial-cluster's {mine:?} for {}",
                flags.name
            )));
        }
        let cluster_state = match flags.initial_cluster_state.as_str() {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "--initial-cluster-state must be new or existing, not {other:?}"
                )))
            }
        };
        if flags.heartbeat_interval == 0 {
            return Err(ConfigError::Invalid(
                "--heartbeat-interval must be positive".into(),
            ));
        }
        if flags.election_timeout < 5 * flags.heartbeat_interval {
            // etcd's rule: an election timeout shorter than five heartbeats
            // makes spurious elections likely.
            return Err(ConfigError::Invalid(format!(
                "--election-timeout[{}ms] should be at least 5 times --heartbeat-interval[{}ms]",
                flags.election_timeout, flags.heartbeat_interval
            )));
        }
        if flags.election_timeout > 50_000 {
            return Err(ConfigError::Invalid(
                "--election-timeout is longer than 50000ms".into(),
            ));
        }
        if flags.max_txn_ops == 0 || flags.max_request_bytes == 0 {
            return Err(ConfigError::Invalid(
                "--max-txn-ops and --max-request-bytes must be positive".into(),
            ));
        }
        if flags.backend_cache_bytes < MIN_BACKEND_CACHE_BYTES {
            return Err(ConfigError::Invalid(format!(
                "--backend-cache-bytes is {}, the least accepted is {MIN_BACKEND_CACHE_BYTES} (1 MiB)",
                flags.backend_cache_bytes
            )));
        }
        let watch_stream_buffer_bytes = u32::try_from(flags.watch_stream_buffer_bytes)
            .ok()
            .filter(|&bytes| bytes >= MIN_WATCH_STREAM_BUFFER_BYTES)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "--watch-stream-buffer-bytes is {}, accepted are {MIN_WATCH_STREAM_BUFFER_BYTES} (64 KiB) to {}",
                    flags.watch_stream_buffer_bytes,
                    u32::MAX
                ))
            })?;
        let cluster_id = cluster_id(&initial_cluster);
        let (client_tls, peer_tls) = tls_options(flags, &initial_cluster)?;
        Ok(Self {
            name: flags.name.clone(),
            member_id: me.id,
            cluster_id,
            data_dir: flags
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.raftkv", flags.name))),
            listen_client: parse_listen(&flags.listen_client_urls, "--listen-client-urls")?,
            advertise_client_urls: split_urls(&flags.advertise_client_urls),
            listen_peer: parse_listen(&flags.listen_peer_urls, "--listen-peer-urls")?,
            advertise_peer_urls,
            initial_cluster,
            cluster_state,
            initial_cluster_token: flags.initial_cluster_token.clone(),
            max_learners: flags.max_learners,
            tick: Duration::from_millis(flags.heartbeat_interval),
            election_ticks: (flags.election_timeout / flags.heartbeat_interval) as u32,
            snapshot_count: flags.snapshot_count.max(1),
            max_request_bytes: flags.max_request_bytes,
            max_txn_ops: flags.max_txn_ops,
            quota_backend_bytes: if flags.quota_backend_bytes == 0 {
                DEFAULT_QUOTA_BACKEND_BYTES
            } else {
                flags.quota_backend_bytes
            },
            backend_cache_bytes: flags.backend_cache_bytes,
            auto_compaction: parse_auto_compaction(
                &flags.auto_compaction_mode,
                &flags.auto_compaction_retention,
            )?,
            lease_checkpoint_interval: if flags.experimental_enable_lease_checkpoint {
                positive_duration(
                    &flags.experimental_lease_checkpoint_interval,
                    "--experimental-lease-checkpoint-interval",
                )?
            } else {
                Duration::ZERO
            },
            watch_stream_buffer_bytes,
            watch_progress_interval: positive_duration(
                &flags.experimental_watch_progress_notify_interval,
                "--experimental-watch-progress-notify-interval",
            )?,
            listen_metrics: match &flags.listen_metrics_urls {
                Some(urls) => plain_addrs(urls, "--listen-metrics-urls")?,
                None => Vec::new(),
            },
            peer_source_ip: flags.experimental_peer_source_ip,
            request_outcome_ttl: positive_duration(
                &flags.request_outcome_ttl,
                "--request-outcome-ttl",
            )?,
            auth_token_ttl: parse_auth_token(&flags.auth_token, flags.auth_token_ttl)?,
            auth_jwt_options: jwt_options(&flags.auth_token)?,
            bcrypt_cost: if crate::auth::BCRYPT_COSTS.contains(&flags.bcrypt_cost) {
                flags.bcrypt_cost
            } else {
                return Err(ConfigError::Invalid(format!(
                    "--bcrypt-cost {} is out of range (4 to 31)",
                    flags.bcrypt_cost
                )));
            },
            client_tls,
            peer_tls,
        })
    }
}

/// Validates `--auth-token` and `--auth-token-ttl`; the token TTL.
fn parse_auth_token(kind: &str, ttl_seconds: u64) -> Result<Duration, ConfigError> {
    let kind_name = kind.split(',').next().unwrap_or_default();
    match kind_name {
        "simple" if kind == "simple" => {}
        "simple" => {
            return Err(ConfigError::Invalid(format!(
                "--auth-token {kind:?}: simple tokens take no options"
            )))
        }
        "jwt" => {}
        _ => {
            return Err(ConfigError::Invalid(format!(
                "--auth-token {kind:?}: the token kind must be simple or jwt"
            )))
        }
    }
    if ttl_seconds == 0 {
        return Err(ConfigError::Invalid(
            "--auth-token-ttl must be positive".into(),
        ));
    }
    Ok(Duration::from_secs(ttl_seconds))
}

/// The options of `--auth-token jwt,...`, once their keys load.
fn jwt_options(kind: &str) -> Result<Option<String>, ConfigError> {
    let Some(options) = kind.strip_prefix("jwt") else {
        return Ok(None);
    };
    let options = options.strip_prefix(',').unwrap_or(options).to_string();
    crate::auth::jwt::JwtTokens::from_options(&options)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(Some(options))
}

/// The client and peer ports' TLS settings, validated as etcd validates them.
fn tls_options(
    flags: &Flags,
    initial_cluster: &[InitialMember],
) -> Result<(TlsOptions, TlsOptions), ConfigError> {
    let protocol = TlsProtocol::from_flags(
        &flags.tls_min_version,
        &flags.tls_max_version,
        &flags.cipher_suites,
    )?;
    let client = TlsOptions::from_flags(
        Port::Client,
        TlsFlags {
            cert_file: &flags.cert_file,
            key_file: &flags.key_file,
            trusted_ca_file: &flags.trusted_ca_file,
            client_cert_auth: flags.client_cert_auth,
            auto_tls: flags.auto_tls,
            crl_file: &flags.client_crl_file,
            allowed_cn: "",
            allowed_hostname: &flags.client_cert_allowed_hostname,
        },
        &protocol,
        &split_urls(&flags.listen_client_urls),
    )?;
    let peer = TlsOptions::from_flags(
        Port::Peer,
        TlsFlags {
            cert_file: &flags.peer_cert_file,
            key_file: &flags.peer_key_file,
            trusted_ca_file: &flags.peer_trusted_ca_file,
            client_cert_auth: flags.peer_client_cert_auth,
            auto_tls: flags.peer_auto_tls,
            crl_file: &flags.peer_crl_file,
            allowed_cn: &flags.peer_cert_allowed_cn,
            allowed_hostname: &flags.peer_cert_allowed_hostname,
        },
        &protocol,
        &split_urls(&flags.listen_peer_urls),
    )?;
    // Dialing an https:// peer verifies its certificate: raftkv has no
    // system trust store, so that takes the peer CA (auto TLS certificates
    // are not verified, as in etcd).
    let dials_tls = initial_cluster
        .iter()
        .flat_map(|m| m.peer_urls.iter())
        .chain(split_urls(&flags.listen_peer_urls).iter())
        .any(|url| url.starts_with("https://"));
    if dials_tls && peer.trusted_ca_file.is_none() && !peer.auto_tls {
        return Err(ConfigError::Invalid(
            "https:// peer URLs need --peer-trusted-ca-file to verify peers' certificates against (or --peer-auto-tls)".into(),
        ));
    }
    Ok((client, peer))
}

fn split_urls(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `http://host:port`, `https://host:port` (or a bare `host:port`)
/// into a socket address. Host names other than `localhost` are not
/// resolved: a server binds to addresses, and a name that resolves
/// differently later is a trap.
pub fn parse_url_addr(url: &str) -> Result<SocketAddr, ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .or_else(|| url.strip_prefix("unix://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    let rest = match rest.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => rest.to_string(),
    };
    rest.parse()
        .map_err(|e| ConfigError::Invalid(format!("{url}: not an http://ip:port URL ({e})")))
}

fn parse_listen(text: &str, flag: &str) -> Result<Vec<ListenUrl>, ConfigError> {
    let urls = split_urls(text);
    if urls.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{flag} must name at least one URL"
        )));
    }
    urls.iter()
        .map(|u| {
            Ok(ListenUrl {
                addr: parse_url_addr(u)?,
                tls: u.starts_with("https://"),
            })
        })
        .collect()
}

/// Addresses of plaintext-only URLs (the metrics listeners).
fn plain_addrs(text: &str, flag: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let listen = parse_listen(text, flag)?;
    if listen.iter().any(|l| l.tls) {
        return Err(ConfigError::Invalid(format!(
            "{flag}: https:// is not supported there (metrics listeners serve plain HTTP)"
        )));
    }
    Ok(listen.into_iter().map(|l| l.addr).collect())
}

/// Parses `name=url,name=url` and derives each member's id.
pub fn parse_initial_cluster(text: &str, token: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part.split_once('=').ok_or_else(|| {
            ConfigError::Invalid(format!("--initial-cluster entry {part:?} is not name=url"))
        })?;
        parse_url_addr(url)?;
        by_name
            .entry(name.to_string())
            .or_default()
            .push(url.to_string());
    }
    if by_name.is_empty() {
        return Err(ConfigError::Invalid("--initial-cluster is empty".into()));
    }
    let members: Vec<InitialMember> = by_name
        .into_iter()
        .map(|(name, mut peer_urls)| {
            peer_urls.sort();
            let id = member_id(&peer_urls, token);
            InitialMember {
                name,
                peer_urls,
                id,
            }
        })
        .collect();
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != members.len() {
        return Err(ConfigError::Invalid(
            "two members of --initial-cluster share peer URLs".into(),
        ));
    }
    Ok(members)
}

/// A member's id: a hash of its sorted peer URLs and the cluster token, as
/// etcd derives it, so every member computes the same ids independently.
pub fn member_id(sorted_peer_urls: &[String], token: &str) -> u64 {
    let mut text = sorted_peer_urls.join("");
    text.push_str(token);
    nonzero(fnv1a(text.as_bytes()))
}

fn cluster_id(members: &[InitialMember]) -> u64 {
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    nonzero(fnv1a(&bytes))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn nonzero(id: u64) -> u64 {
    if id == 0 {
        1
    } else {
        id
    }
}

fn parse_auto_compaction(mode: &str, retention: &str) -> Result<AutoCompaction, ConfigError> {
    let invalid = || {
        ConfigError::Invalid(format!(
            "--auto-compaction-retention {retention:?} is invalid for mode {mode}"
        ))
    };
    match mode {
        "periodic" => {
            let duration = if let Ok(hours) = retention.parse::<u64>() {
                Duration::from_secs(hours * 3600)
            } else {
                parse_duration(retention).ok_or_else(invalid)?
            };
            Ok(if duration.is_zero() {
                AutoCompaction::Off
            } else {
                AutoCompaction::Periodic(duration)
            })
        }
        "revision" => {
            let revisions: u64 = retention.parse().map_err(|_| invalid())?;
            Ok(if revisions == 0 {
                AutoCompaction::Off
            } else {
                AutoCompaction::Revision(revisions)
            })
        }
        other => Err(ConfigError::Invalid(format!(
            "--auto-compaction-mode must be periodic or revision, not {other:?}"
        ))),
    }
}

/// A flag's positive duration, or why it is not one.
fn positive_duration(text: &str, flag: &str) -> Result<Duration, ConfigError> {
    parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ConfigError::Invalid(format!("{flag} {text:?} is not a positive duration")))
}

/// Parses a Go duration as etcd's flags take them: `90s`, `1h30m`,
/// `500ms`, `1.5s`, `5m0s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "\u{b5}s" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * seconds_per_unit;
    }
    (!text.is_empty() && total.is_finite()).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut all = vec!["raftkv"];
        all.extend_from_slice(args);
        Flags::parse_from(all)
    }

    #[test]
    fn no_flags_make_a_one_node_cluster_on_etcds_ports() {
        let config = ServerConfig::from_flags(&flags(&[])).expect("defaults are valid");
        assert_eq!(config.name, "default");
        assert_eq!(config.data_dir, PathBuf::from("default.raftkv"));
        let plain = |addr: &str| ListenUrl {
            addr: addr.parse().expect("addr"),
            tls: false,
        };
        assert_eq!(config.listen_client, vec![plain("127.0.0.1:2379")]);
        assert_eq!(config.listen_peer, vec![plain("127.0.0.1:2380")]);
        assert_eq!(config.initial_cluster.len(), 1);
        assert_eq!(config.election_ticks, 10);
        assert_eq!(config.quota_backend_bytes, DEFAULT_QUOTA_BACKEND_BYTES);
        assert_eq!(config.backend_cache_bytes, DEFAULT_BACKEND_CACHE_BYTES);
        let small = ServerConfig::from_flags(&flags(&["--backend-cache-bytes", "1048576"]));
        assert_eq!(small.map(|c| c.backend_cache_bytes).ok(), Some(1 << 20));
        assert_eq!(config.auto_compaction, AutoCompaction::Off);
        assert_eq!(
            u64::from(config.watch_stream_buffer_bytes),
            DEFAULT_WATCH_STREAM_BUFFER_BYTES
        );
        for refused in ["65535", "4294967296"] {
            let err = ServerConfig::from_flags(&flags(&["--watch-stream-buffer-bytes", refused]));
            assert!(
                matches!(&err, Err(ConfigError::Invalid(m)) if m.contains("--watch-stream-buffer-bytes")),
                "{refused}: {:?}",
                err.map(|_| ())
            );
        }
    }

    #[test]
    fn a_three_member_cluster_agrees_on_ids() {
        let cluster = "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381,c=http://127.0.0.1:2382";
        let configs: Vec<ServerConfig> = [("a", 2380), ("b", 2381), ("c", 2382)]
            .iter()
            .map(|(name, port)| {
                let url = format!("http://127.0.0.1:{port}");
                ServerConfig::from_flags(&flags(&[
                    "--name",
                    name,
                    "--initial-cluster",
                    cluster,
                    "--initial-advertise-peer-urls",
                    &url,
                    "--listen-peer-urls",
                    &url,
                ]))
                .expect("valid member")
            })
            .collect();
        let cluster_ids: Vec<u64> = configs.iter().map(|c| c.cluster_id).collect();
        assert!(
            cluster_ids.windows(2).all(|w| w[0] == w[1]),
            "one cluster id"
        );
        let mut member_ids: Vec<u64> = configs.iter().map(|c| c.member_id).collect();
        member_ids.dedup();
        assert_eq!(member_ids.len(), 3, "distinct member ids");
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        let cases: &[&[&str]] = &[
            &["--initial-cluster-state", "maybe"],
            &["--initial-cluster", "other=http://127.0.0.1:2380"],
            &["--initial-cluster", "default=http://127.0.0.1:9999"],
            &["--listen-client-urls", "http://nowhere:x"],
            &["--listen-client-urls", "https://127.0.0.1:2379"],
            &["--listen-metrics-urls", "https://127.0.0.1:2381"],
            &["--heartbeat-interval", "100", "--election-timeout", "200"],
            &["--auto-compaction-mode", "sometimes"],
            &[
                "--auto-compaction-mode",
                "revision",
                "--auto-compaction-retention",
                "1h",
            ],
            &["--max-txn-ops", "0"],
            &["--backend-cache-bytes", "1048575"],
            &["--experimental-lease-checkpoint-interval", "soon"],
            &["--experimental-lease-checkpoint-interval", "0s"],
            &["--experimental-watch-progress-notify-interval", "0"],
            &["--request-outcome-ttl", "0"],
            &["--request-outcome-ttl", "forever"],
        ];
        for args in cases {
            let result = ServerConfig::from_flags(&flags(args));
            assert!(
                matches!(result, Err(ConfigError::Invalid(_))),
                "{args:?} accepted"
            );
        }
    }

    #[test]
    fn tls_flags_default_to_no_tls() {
        let config = ServerConfig::from_flags(&flags(&[])).expect("defaults");
        for tls in [&config.client_tls, &config.peer_tls] {
            assert!(tls.cert_file.is_none() && tls.trusted_ca_file.is_none());
            assert!(!tls.client_cert_auth && !tls.auto_tls && !tls.has_certificate());
            assert!(tls.allowed_cn.is_none() && tls.allowed_hostname.is_none());
            assert_eq!(tls.protocol.versions().len(), 2, "TLS1.2 and TLS1.3");
            assert!(tls.protocol.tls12_cipher_suites.is_empty());
        }
        assert!(config.listen_client.iter().all(|l| !l.tls));
    }

    #[test]
    fn tls_flags_cross_as_etcds() {
        let https = [
            "--listen-client-urls",
            "https://127.0.0.1:2379,http://127.0.0.1:22379",
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
        ];
        let config = ServerConfig::from_flags(&flags(&https)).expect("https with a cert");
        assert_eq!(
            config
                .listen_client
                .iter()
                .map(|l| l.tls)
                .collect::<Vec<_>>(),
            vec![true, false]
        );
        let auto = ServerConfig::from_flags(&flags(&[
            "--listen-client-urls",
            "https://127.0.0.1:2379",
            "--auto-tls",
        ]))
        .expect("https with auto TLS");
        assert!(auto.client_tls.auto_tls && auto.client_tls.has_certificate());
        // A given certificate wins over auto TLS, as in etcd.
        let both = ServerConfig::from_flags(&flags(&[&https[..], &["--auto-tls"]].concat()))
            .expect("valid");
        assert!(!both.client_tls.auto_tls);
        let suites = ServerConfig::from_flags(&flags(&[
            "--cipher-suites",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "--tls-max-version",
            "TLS1.2",
        ]))
        .expect("known suites");
        assert_eq!(suites.client_tls.protocol.tls12_cipher_suites.len(), 2);
        assert_eq!(suites.peer_tls.protocol.versions().len(), 1, "TLS1.2 only");
        let only13 =
            ServerConfig::from_flags(&flags(&["--tls-min-version", "TLS1.3"])).expect("valid");
        assert_eq!(only13.client_tls.protocol.versions().len(), 1);
        let cn = ServerConfig::from_flags(&flags(&[
            "--peer-cert-allowed-cn",
            "member",
            "--peer-trusted-ca-file",
            "ca.pem",
            "--peer-client-cert-auth",
        ]))
        .expect("valid");
        assert_eq!(cn.peer_tls.allowed_cn.as_deref(), Some("member"));
        assert!(cn.peer_tls.requires_client_certificate());
    }

    #[test]
    fn bad_tls_flags_are_refused_with_etcds_reasons() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--listen-client-urls", "https://127.0.0.1:2379"],
                "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme",
            ),
            (
                &["--cert-file", "c.pem"],
                "--cert-file and --key-file must both be given",
            ),
            (
                &["--client-cert-auth"],
                "--client-cert-auth needs --trusted-ca-file",
            ),
            (
                &["--peer-client-cert-auth"],
                "--peer-client-cert-auth needs --peer-trusted-ca-file",
            ),
            (
                &[
                    "--listen-peer-urls",
                    "https://127.0.0.1:2380",
                    "--initial-advertise-peer-urls",
                    "https://127.0.0.1:2380",
                ],
                "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url",
            ),
            (
                &[
                    "--listen-peer-urls",
                    "https://127.0.0.1:2380",
                    "--initial-advertise-peer-urls",
                    "https://127.0.0.1:2380",
                    "--peer-cert-file",
                    "c.pem",
                    "--peer-key-file",
                    "k.pem",
                ],
                "https:// peer URLs need --peer-trusted-ca-file",
            ),
            (
                &["--cipher-suites", "TLS_NOPE"],
                "unexpected TLS cipher suite \"TLS_NOPE\"",
            ),
            (
                &["--cipher-suites", "TLS_RSA_WITH_AES_128_CBC_SHA"],
                "not supported by raftkv's TLS (rustls)",
            ),
            (
                &[
                    "--tls-min-version",
                    "TLS1.3",
                    "--cipher-suites",
                    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                ],
                "cipher suites cannot be configured when only TLS1.3 is enabled",
            ),
            (&["--tls-min-version", "TLS1.1"], "TLS1.2 and TLS1.3 only"),
            (&["--tls-max-version", "TLS1.0"], "TLS1.2 and TLS1.3 only"),
            (
                &["--tls-min-version", "SSL3"],
                "unexpected TLS version \"SSL3\" (must be one of: TLS1.2, TLS1.3)",
            ),
            (
                &["--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"],
                "min version (TLS1.3) is greater than max version (TLS1.2)",
            ),
            (
                &[
                    "--peer-cert-allowed-cn",
                    "a",
                    "--peer-cert-allowed-hostname",
                    "b",
                ],
                "AllowedCN and AllowedHostname are mutually exclusive",
            ),
            (
                &["--peer-cert-allowed-hostname", "not a host!"],
                "is not a host name or IP address",
            ),
            (
                &["--client-cert-allowed-hostname", "not a host!"],
                "--client-cert-allowed-hostname \"not a host!\" is not a host name",
            ),
            (
                &["--listen-metrics-urls", "https://127.0.0.1:2381"],
                "metrics listeners serve plain HTTP",
            ),
        ];
        for (args, message) in cases {
            match ServerConfig::from_flags(&flags(args)) {
                Err(ConfigError::Invalid(text)) => {
                    assert!(
                        text.contains(message),
                        "{args:?}: {text:?} lacks {message:?}"
                    )
                }
                Ok(_) => panic!("{args:?} accepted"),
            }
        }
    }

    #[test]
    fn auto_compaction_retention_takes_etcds_forms() {
        let periodic = |r: &str| parse_auto_compaction("periodic", r).expect("valid");
        assert_eq!(
            periodic("1"),
            AutoCompaction::Periodic(Duration::from_secs(3600))
        );
        assert_eq!(
            periodic("30m"),
            AutoCompaction::Periodic(Duration::from_secs(1800))
        );
        assert_eq!(
            periodic("1h30m"),
            AutoCompaction::Periodic(Duration::from_secs(5400))
        );
        assert_eq!(periodic("0"), AutoCompaction::Off);
        assert_eq!(
            parse_auto_compaction("revision", "1000").expect("valid"),
            AutoCompaction::Revision(1000)
        );
    }

    #[test]
    fn durations_take_gos_forms() {
        let d = |text: &str| parse_duration(text);
        assert_eq!(d("5m0s"), Some(Duration::from_secs(300)));
        assert_eq!(d("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d(""), None);
        assert_eq!(d("5"), None);
        assert_eq!(d("5x"), None);
    }

    #[test]
    fn lease_checkpoints_are_on_by_default_and_can_be_turned_off() {
        let config = ServerConfig::from_flags(&flags(&[])).expect("defaults");
        assert_eq!(config.lease_checkpoint_interval, Duration::from_secs(300));
        let config =
            ServerConfig::from_flags(&flags(&["--experimental-enable-lease-checkpoint=false"]))
                .expect("valid");
        assert_eq!(config.lease_checkpoint_interval, Duration::ZERO);
        let config =
            ServerConfig::from_flags(&flags(&["--experimental-lease-checkpoint-interval", "2s"]))
                .expect("valid");
        assert_eq!(config.lease_checkpoint_interval, Duration::from_secs(2));
    }
}
