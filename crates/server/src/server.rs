//! Putting a member together: open its data, start the node driver, serve
//! etcd's gRPC API and its HTTP endpoints on the client URLs (and metrics on
//! the metrics URLs), and stop cleanly on a signal.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use raftkv_mvcc::{BackgroundSync, Store};
use raftkv_proto::etcdserverpb::cluster_server::ClusterServer;
use raftkv_proto::etcdserverpb::lease_server::LeaseServer;
use raftkv_proto::raftkvpeer::peer_client::PeerClient;
use raftkv_proto::raftkvpeer::peer_server::PeerServer;
use raftkv_proto::raftkvpeer::{Member, MembersRequest};
use raftkv_raft::Config as RaftConfig;

use crate::config::{ClusterState, ServerConfig};
use crate::grpc::cluster::ClusterService;
use crate::grpc::lease::{run_expiry, LeaseService};
use crate::grpc::maintenance::ETCD_VERSION;
use crate::grpc::{ServiceContext, Services};
use crate::http::HttpState;
use crate::kv_state::KvStateMachine;
use crate::lessor::Lessor;
use crate::members::MemberDirectory;
use crate::metrics::{served_methods, Metrics};
use crate::node::{self, NodeHandle, NodeOptions};
use crate::outcomes::ClusterClock;
use crate::peer::dial::PeerDialer;
use crate::peer::service::PeerService;
use crate::peer::snapshot::SnapshotReceiver;
use crate::peer::transport::{PeerTransport, UnreachableReport};
use crate::replicated::Outcome;
use crate::watch::WatchHub;

/// Why a member could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration cannot be served as given.
    #[error("{0}")]
    Unsupported(String),
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key-value store could not be opened.
    #[error("key-value store: {0}")]
    Store(#[from] raftkv_mvcc::MvccError),
    /// The node could not start or stopped on a fatal error.
    #[error("raft node: {0}")]
    Node(#[from] crate::error::NodeError),
    /// TLS could not be set up (a certificate, key, CA or CRL file).
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A listener failed.
    #[error("serving {addr}: {reason}")]
    Serve {
        /// The address.
        addr: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
}

/// The member's folder inside the data directory (as etcd's layout).
pub const MEMBER_DIR: &str = "member";
/// The key-value store's file inside the member folder.
pub const STORE_FILE: &str = "kv.redb";
/// Where snapshots from the leader are received, inside the member folder.
pub const SNAPSHOT_INCOMING_DIR: &str = "snap-incoming";

/// Entries kept below a compaction point for followers that lag a little
/// (etcd keeps 5000; never more than `--snapshot-count` here).
const SNAPSHOT_CATCH_UP_ENTRIES: u64 = 5000;

/// How often the leader looks for expired leases.
const LEASE_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// etcd's shortest lease: one and a half election timeouts, in whole
/// seconds, so a lease outlives a leader election.
fn min_lease_ttl_seconds(config: &ServerConfig) -> i64 {
    let election = config.tick * config.election_ticks;
    ((election.as_millis() as i64 * 3 / 2) + 999) / 1000
}

/// A leader that stops first hands leadership to a caught-up follower, so
/// the cluster does not sit out an election timeout without a leader.
/// Waits at most `timeout` for the new leader to take over.
async fn hand_over_leadership(node: &NodeHandle<Outcome>, timeout: Duration) {
    let Ok(Some(target)) = node.hand_over_leadership().await else {
        return;
    };
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        let leader = node.shared().leader_id();
        if leader == target {
            tracing::info!(leader = format!("{leader:x}"), "leadership handed over");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::warn!(
        target = format!("{target:x}"),
        "leadership hand-over did not finish in time"
    );
}

/// Serves the peer protocol on every peer URL (TLS on the `https://` ones),
/// in the background, with the Lease and Cluster services beside it:
/// followers hand the requests only a leader can answer (keep-alives,
/// promotions) to the leader there, as the peer URL is known from the
/// moment a member is added. With `--peer-client-cert-auth`, the TLS
/// handshake refuses a caller without a certificate the peer CA signed
/// before any of these services is reached.
fn serve_peers(
    config: &ServerConfig,
    tls: &PortTls,
    ctx: &ServiceContext,
    lessor: Arc<Lessor>,
    min_lease_ttl: i64,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServerError> {
    if config.listen_peer.is_empty() {
        return Err(ServerError::Unsupported("no peer URL to listen on".into()));
    }
    let member_dir = config.data_dir.join(MEMBER_DIR);
    let incoming = member_dir.join(SNAPSHOT_INCOMING_DIR);
    let snapshots = SnapshotReceiver::open(
        config.cluster_id,
        &incoming,
        // A bound on what a peer can make this member write: the image is
        // the store's logical content, which the quota bounds (a store may
        // pass its quota a little before the alarm stops writes).
        config.quota_backend_bytes.saturating_mul(2),
    )
    .map_err(|source| ServerError::DataDir {
        path: incoming,
        source,
    })?;
    let service = PeerServer::new(PeerService::new(
        config.cluster_id,
        ctx.node.clone(),
        ctx.members.clone(),
        Arc::new(snapshots),
    ))
    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
    let peer_ctx = ServiceContext {
        peer_port: true,
        ..ctx.clone()
    };
    let leases = LeaseServer::new(LeaseService::new(peer_ctx.clone(), lessor, min_lease_ttl));
    let cluster = ClusterServer::new(ClusterService::new(peer_ctx));
    let mut tasks = Vec::new();
    for listen in &config.listen_peer {
        let addr = listen.addr;
        let listener = bind(addr).map_err(|e| ServerError::Serve {
            addr,
            reason: e.to_string(),
        })?;
        let server_tls = tls.for_listener(listen)?;
        tracing::info!(%addr, tls = listen.tls, "serving peers");
        let (service, leases, cluster) = (service.clone(), leases.clone(), cluster.clone());
        tasks.push(tokio::spawn(async move {
            let incoming = crate::tls::listen::incoming(listener, server_tls);
            if let Err(err) = tonic::transport::Server::builder()
                .add_service(service)
                .add_service(leases)
                .add_service(cluster)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!(%addr, %err, "peer listener failed");
            }
        }));
    }
    Ok(tasks)
}

/// A port's TLS, made once at start: the server side its `https://`
/// listeners share (None when it has no certificate).
struct PortTls {
    server: Option<Arc<crate::tls::listen::ServerTls>>,
}

impl PortTls {
    fn new(options: &crate::tls::options::TlsOptions) -> Result<Self, ServerError> {
        let server = if options.has_certificate() {
            Some(crate::tls::server_tls(options)?)
        } else {
            None
        };
        Ok(Self { server })
    }

    /// The TLS of one listener: its port's for `https://`, none for `http://`.
    fn for_listener(
        &self,
        listen: &crate::config::ListenUrl,
    ) -> Result<Option<Arc<crate::tls::listen::ServerTls>>, ServerError> {
        if !listen.tls {
            if self.server.is_some() {
                // As etcd: the files serve the port's https:// URLs only.
                tracing::warn!(addr = %listen.addr, "scheme is HTTP while key and cert files are present; ignoring key and cert files for this URL");
            }
            return Ok(None);
        }
        match &self.server {
            Some(tls) => Ok(Some(tls.clone())),
            None => Err(ServerError::Unsupported(format!(
                "https://{} has no certificate to serve TLS with",
                listen.addr
            ))),
        }
    }
}

/// Auto TLS (`--auto-tls`, `--peer-auto-tls`): a self-signed certificate
/// for the port's URLs' hosts under `<data-dir>/fixtures/{client,peer}`,
/// used as if its files had been given.
fn apply_auto_tls(
    options: &mut crate::tls::options::TlsOptions,
    data_dir: &std::path::Path,
    urls: &[String],
) -> Result<(), ServerError> {
    if !options.auto_tls {
        return Ok(());
    }
    let dir = data_dir.join("fixtures").join(options.port.fixtures_dir());
    let hosts = crate::tls::auto::hosts_of(urls);
    let (cert, key) = crate::tls::auto::self_signed(&dir, &hosts)?;
    options.cert_file = Some(cert);
    options.key_file = Some(key);
    options.auto_tls = false;
    options.self_signed = true;
    Ok(())
}

/// Every this many applied batches, the store's commit is made durable
/// (fsynced) by a thread of its own; the commits between are not. The WAL
/// already made every applied entry durable, the store records its applied
/// index in the same commit as the data, and the log is only truncated up
/// to an index the store fsynced (`StateMachine::persist`), so a crash
/// loses nothing: the member replays the entries after the store's last
/// durable commit. An fsync per batch doubled the driver's fsyncs (WAL,
/// then store) on every Ready, which bounded write throughput; etcd
/// likewise commits its backend every 100 ms, not per entry. A short
/// period keeps the file growth of redb's lazily freed pages small (see
/// `raftkv_mvcc::store`). Made by the driver itself, the commit's fsync
/// stalled the write that drew it and a follower's next acknowledgement
/// (see `raftkv_mvcc::background_sync`). Made by the sync thread, it
/// competes with the WAL's fsyncs for the disk, the less the fewer pages
/// it has to write: one client writing, 8 against 16 batches gave a p99 of
/// 4.2 against 4.9 ms (better in 11 pairs of 12); 4 did no better than 8.
/// Since batches' commits are deferred to the next read or sync (see
/// `raftkv_mvcc::store`), a sync also writes the pages of the batches
/// before it, once: 32 instead of 8 then gave no consistent difference
/// (one client writing, 6 alternating runs).
const STORE_SYNC_EVERY_BATCHES: u64 = 8;

/// Should the sync thread fall this far behind, the driver makes the
/// durable commit itself, so the file's growth stays bounded.
const STORE_DURABLE_EVERY_BATCHES: u64 = 8 * STORE_SYNC_EVERY_BATCHES;

/// Largest peer batch accepted: appends are bounded by the Raft core's
/// message size, and a batch carries many of them.
const PEER_MESSAGE_BYTES_MAX: usize = 256 << 20;

/// Runs a member until `shutdown` resolves, the member is removed from its
/// cluster, or the node fails.
pub async fn run(
    mut config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let member_dir = config.data_dir.join(MEMBER_DIR);
    std::fs::create_dir_all(&member_dir).map_err(|source| ServerError::DataDir {
        path: member_dir.clone(),
        source,
    })?;
    let client_urls: Vec<String> = config.advertise_client_urls.clone();
    let peer_urls: Vec<String> = config.advertise_peer_urls.clone();
    let data_dir = config.data_dir.clone();
    apply_auto_tls(&mut config.client_tls, &data_dir, &client_urls)?;
    apply_auto_tls(&mut config.peer_tls, &data_dir, &peer_urls)?;
    // Every TLS file is loaded here, so a bad one stops the start.
    let client_tls = PortTls::new(&config.client_tls)?;
    let peer_tls = PortTls::new(&config.peer_tls)?;
    let peer_dialer = PeerDialer::new(
        config.peer_source_ip,
        crate::tls::client_config(&config.peer_tls)?,
    );
    let known_members = resolve_identity(&member_dir, &mut config, &peer_dialer).await?;
    let mut store_config = raftkv_mvcc::Config::new(member_dir.join(STORE_FILE));
    store_config.max_txn_ops = config.max_txn_ops as usize;
    store_config.durable_every_batches = STORE_DURABLE_EVERY_BATCHES;
    store_config.cache_size_bytes =
        usize::try_from(config.backend_cache_bytes).unwrap_or(usize::MAX);
    let store = Arc::new(Store::open(store_config)?);
    let metrics = Arc::new(Metrics::new(
        &served_methods(&crate::grpc::SERVED),
        ETCD_VERSION,
    ));
    let backend_commit = metrics.node.backend_commit.clone();
    store.set_commit_observer(Box::new(move |took| backend_commit.observe(took)));
    let hub = WatchHub::new().with_buffer_gauge(metrics.watch_buffered_bytes.clone());
    let lessor = Arc::new(Lessor::default());
    let members = MemberDirectory::new(config.member_id);
    members.seed(known_members.iter().cloned());
    let cluster_clock = ClusterClock::new(0);
    let jwt = match &config.auth_jwt_options {
        Some(options) => Some(
            crate::auth::jwt::JwtTokens::from_options(options)
                .map_err(|e| ServerError::Unsupported(e.to_string()))?,
        ),
        None => None,
    };
    let auth = crate::auth::Auth::new(
        crate::auth::AuthState::default(),
        config.auth_token_ttl,
        jwt,
        // As etcd: a verified client certificate's Common Name names the
        // user only with --client-cert-auth.
        config.client_tls.client_cert_auth,
        config.bcrypt_cost,
    );
    let state_machine = KvStateMachine::new(
        store.clone(),
        hub.clone(),
        lessor.clone(),
        members.clone(),
        cluster_clock.clone(),
        auth.clone(),
    )?
    .with_background_sync(BackgroundSync::start(
        store.clone(),
        STORE_SYNC_EVERY_BATCHES,
    )?);

    let mut raft = RaftConfig::new(config.member_id);
    raft.election_tick = config.election_ticks;
    raft.heartbeat_tick = 1;
    raft.seed = config.member_id ^ std::process::id() as u64;
    let bootstrap_voters = match config.cluster_state {
        // The founders' records ride on the bootstrap entries, so members
        // that join later learn them from the log.
        ClusterState::New => known_members
            .iter()
            .map(|m| (m.id, bytes::Bytes::from(prost::Message::encode_to_vec(m))))
            .collect(),
        ClusterState::Existing => Vec::new(),
    };
    let options = NodeOptions {
        raft,
        bootstrap_voters,
        tick: config.tick,
        input_queue: 16 * 1024,
        snapshot_count: config.snapshot_count,
        catch_up_entries: SNAPSHOT_CATCH_UP_ENTRIES.min(config.snapshot_count),
        metrics: metrics.node.clone(),
    };
    // The transport reports unreachable peers to the node it feeds, which
    // exists only once the node has started with the transport.
    let node_slot: Arc<std::sync::OnceLock<NodeHandle<Outcome>>> = Arc::default();
    let report_to = node_slot.clone();
    let unreachable: UnreachableReport = Arc::new(move |peer| {
        if let Some(node) = report_to.get() {
            node.report_unreachable(peer);
        }
    });
    let transport = PeerTransport::new(
        config.cluster_id,
        members.clone(),
        unreachable,
        peer_dialer.clone(),
    );
    let (node, driver) = node::start(
        options,
        &member_dir.join("wal"),
        &member_dir.join("snap"),
        state_machine,
        transport,
    )?;
    let _ = node_slot.set(node.clone());

    let ctx = ServiceContext {
        node: node.clone(),
        store: store.clone(),
        cluster_id: config.cluster_id,
        member_id: config.member_id,
        max_request_bytes: config.max_request_bytes,
        max_txn_ops: config.max_txn_ops,
        request_timeout: Duration::from_secs(5) + config.tick * config.election_ticks * 2,
        members: members.clone(),
        cluster_token: config.initial_cluster_token.clone(),
        max_learners: config.max_learners,
        leader_link: Arc::default(),
        peer_dialer,
        cluster_clock: cluster_clock.clone(),
        quota_backend_bytes: config.quota_backend_bytes,
        watch_progress_interval: config.watch_progress_interval,
        watch_stream_buffer_bytes: config.watch_stream_buffer_bytes,
        own_attributes: (config.name.clone(), config.advertise_client_urls.clone()),
        client_gate: Arc::default(),
        auth,
        peer_port: false,
    };
    let expiry = tokio::spawn(run_expiry(
        ctx.clone(),
        lessor.clone(),
        LEASE_CHECK_INTERVAL,
        config.lease_checkpoint_interval,
    ));
    let compactor = tokio::spawn(crate::compactor::run(ctx.clone(), config.auto_compaction));
    let outcome_expiry = tokio::spawn(crate::outcomes::run_expiry(
        ctx.clone(),
        cluster_clock,
        config.request_outcome_ttl,
    ));
    let publish = tokio::spawn(publish_self(
        ctx.clone(),
        config.name.clone(),
        config.advertise_client_urls.clone(),
    ));
    let quota_monitor = tokio::spawn(crate::alarm::run_quota_monitor(
        ctx.clone(),
        crate::alarm::QUOTA_CHECK_INTERVAL,
    ));
    let min_ttl = min_lease_ttl_seconds(&config);
    let peer_listeners = serve_peers(&config, &peer_tls, &ctx, lessor.clone(), min_ttl)?;
    let stop = async {
        tokio::select! {
            () = shutdown => {}
            () = members.self_removed() => {
                tracing::warn!("this member was removed from the cluster; stopping");
            }
            () = node.stopped() => {
                tracing::error!("the node stopped on a fatal error; stopping the server");
            }
        }
    };
    let services = Services::new(ctx.clone(), hub, lessor, min_ttl);
    let state = HttpState { ctx, metrics };
    let metrics_listeners = serve_metrics(&config, &state)?;
    let served = serve_clients(&config, &client_tls, &services, state, stop).await;
    for listener in metrics_listeners {
        listener.abort();
    }
    expiry.abort();
    publish.abort();
    compactor.abort();
    outcome_expiry.abort();
    quota_monitor.abort();
    hand_over_leadership(&node, config.tick * config.election_ticks).await;
    for listener in peer_listeners {
        listener.abort();
    }
    tracing::info!("stopping the node");
    node.stop().await;
    let driver_result = tokio::task::spawn_blocking(move || driver.join())
        .await
        .map_err(|e| ServerError::Unsupported(format!("node thread: {e}")))?;
    match driver_result {
        Ok(result) => result?,
        Err(_) => return Err(ServerError::Unsupported("the node thread panicked".into())),
    }
    store.sync()?;
    tracing::info!("stopped cleanly");
    served
}

/// How often a member looks for a leader to publish its name and client
/// URLs through, and retries a publish that failed. Client requests wait
/// for the publish, so this bounds how late a fresh member serves them.
const PUBLISH_RETRY: Duration = Duration::from_millis(50);

/// Records this member's name and client URLs in the replicated member
/// list once there is a leader (others learn them from MemberList), and
/// again whenever the flags changed them since; then opens the client gate
/// (see [`crate::http::ready`]).
async fn publish_self(ctx: ServiceContext, name: String, client_urls: Vec<String>) {
    use crate::replicated::replicated_request::Op;
    loop {
        let current = ctx.members.get(ctx.member_id);
        let Some(current) = current else {
            // Not (yet) a member as far as the applied log says.
            tokio::time::sleep(PUBLISH_RETRY).await;
            continue;
        };
        if current.name == name && current.client_urls == client_urls {
            ctx.client_gate.open();
            return;
        }
        if ctx.node.shared().leader_id() != 0 {
            let record = Member {
                id: ctx.member_id,
                name: name.clone(),
                client_urls: client_urls.clone(),
                ..Member::default()
            };
            let metadata = tonic::metadata::MetadataMap::new();
            match ctx
                .propose(
                    &crate::auth::Caller::Server,
                    &metadata,
                    Op::MemberPublish(record),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(%name, ?client_urls, "published this member's attributes");
                    ctx.client_gate.open();
                    return;
                }
                Err(status) => {
                    tracing::debug!(%status, "publishing this member's attributes failed; retrying")
                }
            }
        }
        tokio::time::sleep(PUBLISH_RETRY).await;
    }
}

/// The identity record of a member's data directory.
pub(crate) fn identity_text(member_id: u64, cluster_id: u64) -> String {
    format!("member_id={member_id:x}\ncluster_id={cluster_id:x}\n")
}

/// Writes the identity record durably (temporary name, fsync, rename).
pub(crate) fn write_identity(member_dir: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = member_dir.join("identity.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all())?;
    std::fs::rename(&tmp, member_dir.join("identity"))?;
    std::fs::File::open(member_dir).and_then(|d| d.sync_all())
}

/// Works out which member of which cluster this is, and returns the members
/// known before the log is read: the founders for a new cluster, or the
/// cluster's current members for one being joined.
///
/// A founder's ids derive from the flags. A member joining with
/// `--initial-cluster-state existing` asks the members named in
/// `--initial-cluster` for the cluster's id and finds itself in their list
/// by its peer URLs (it must have been added with MemberAdd first). Either
/// way the ids are written to the data directory, and a later start that
/// describes another member is refused.
async fn resolve_identity(
    member_dir: &std::path::Path,
    config: &mut ServerConfig,
    dialer: &PeerDialer,
) -> Result<Vec<Member>, ServerError> {
    let founders: Vec<Member> = config
        .initial_cluster
        .iter()
        .map(|m| Member {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect();
    let recorded = read_identity(member_dir)?;
    match config.cluster_state {
        ClusterState::New => {
            let mine = (config.member_id, config.cluster_id);
            match recorded {
                Some(found) if found != mine => Err(ServerError::Unsupported(format!(
                    "{} belongs to another member ({:x} of cluster {:x}), but the flags describe member {:x} of cluster {:x}",
                    member_dir.display(),
                    found.0,
                    found.1,
                    mine.0,
                    mine.1
                ))),
                Some(_) => Ok(founders),
                None => {
                    record_identity(member_dir, mine)?;
                    Ok(founders)
                }
            }
        }
        ClusterState::Existing => {
            let fetched = fetch_cluster(config, dialer).await;
            match (recorded, fetched) {
                // Restarting a member that joined before: its ids stand.
                (Some((member_id, cluster_id)), fetched) => {
                    config.member_id = member_id;
                    config.cluster_id = cluster_id;
                    Ok(fetched.map(|(_, members)| members).unwrap_or_default())
                }
                (None, Ok((cluster_id, members))) => {
                    let mut mine = config.advertise_peer_urls.clone();
                    mine.sort();
                    let me = members.iter().find(|m| {
                        let mut urls = m.peer_urls.clone();
                        urls.sort();
                        urls == mine
                    });
                    let Some(me) = me else {
                        return Err(ServerError::Unsupported(format!(
                            "no member of the cluster has peer URLs {}; add this member with MemberAdd (etcdctl member add) before starting it with --initial-cluster-state existing",
                            mine.join(",")
                        )));
                    };
                    config.member_id = me.id;
                    config.cluster_id = cluster_id;
                    tracing::info!(
                        member_id = format!("{:x}", me.id),
                        cluster_id = format!("{cluster_id:x}"),
                        "joining an existing cluster"
                    );
                    record_identity(member_dir, (me.id, cluster_id))?;
                    Ok(members)
                }
                (None, Err(reason)) => Err(ServerError::Unsupported(reason)),
            }
        }
    }
}

/// How long a joining member waits for each peer it asks.
const JOIN_ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks the other members named in `--initial-cluster` for the cluster's id
/// and members; the first that answers wins.
async fn fetch_cluster(
    config: &ServerConfig,
    dialer: &PeerDialer,
) -> Result<(u64, Vec<Member>), String> {
    let mut failures = Vec::new();
    let others = config
        .initial_cluster
        .iter()
        .flat_map(|m| m.peer_urls.iter())
        .filter(|url| !config.advertise_peer_urls.contains(url));
    for url in others {
        let ask = async {
            let mut client = dialer
                .connect(url)
                .await
                .map(PeerClient::new)
                .map_err(|e| error_chain(&e))?;
            client
                .members(MembersRequest {})
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| status.message().to_string())
        };
        match tokio::time::timeout(JOIN_ASK_TIMEOUT, ask).await {
            Ok(Ok(answer)) if !answer.members.is_empty() => {
                return Ok((answer.cluster_id, answer.members))
            }
            Ok(Ok(_)) => failures.push(format!("{url}: knows no members yet")),
            Ok(Err(reason)) => failures.push(format!("{url}: {reason}")),
            Err(_) => failures.push(format!("{url}: no answer")),
        }
    }
    if failures.is_empty() {
        return Err("--initial-cluster names no other member to join".into());
    }
    Err(format!(
        "cannot join the existing cluster: {}",
        failures.join("; ")
    ))
}

/// The (member id, cluster id) a data directory belongs to, if recorded.
fn read_identity(member_dir: &std::path::Path) -> Result<Option<(u64, u64)>, ServerError> {
    let path = member_dir.join("identity");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ServerError::DataDir { path, source }),
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    };
    match (field("member_id"), field("cluster_id")) {
        (Some(member), Some(cluster)) => Ok(Some((member, cluster))),
        _ => Err(ServerError::Unsupported(format!(
            "{} is not a member identity file",
            path.display()
        ))),
    }
}

/// Records which member of which cluster a data directory belongs to,
/// durably, so a restart with flags of another member is refused instead of
/// starting a node outside its own configuration.
fn record_identity(
    member_dir: &std::path::Path,
    (member, cluster): (u64, u64),
) -> Result<(), ServerError> {
    write_identity(member_dir, &identity_text(member, cluster)).map_err(|source| {
        ServerError::DataDir {
            path: member_dir.join("identity"),
            source,
        }
    })
}

/// Largest JSON gateway request body, set by `--max-request-bytes`: base64
/// makes bytes a third longer and JSON adds its syntax, so twice the
/// request limit, plus room for a request of many small operations.
fn gateway_body_bytes_max(max_request_bytes: u64) -> usize {
    usize::try_from(max_request_bytes.saturating_mul(2))
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20)
}

/// An error with its sources, as one line (tonic's transport errors say
/// only "transport error" at the top).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Serves gRPC and HTTP (the JSON gateway, `/health`, `/version`,
/// `/metrics`) on every client URL (TLS on the `https://` ones) until
/// `shutdown` resolves.
async fn serve_clients(
    config: &ServerConfig,
    tls: &PortTls,
    services: &Services,
    state: HttpState,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let max_message_bytes = (config.max_request_bytes as usize).max(4 << 20) + (1 << 20);
    let routes = crate::http::client_routes(
        services.routes(max_message_bytes).await,
        services,
        state,
        gateway_body_bytes_max(config.max_request_bytes),
    );
    if config.listen_client.is_empty() {
        return Err(ServerError::Unsupported(
            "no client URL to listen on".into(),
        ));
    }
    let (stop_serving, stopped) = tokio::sync::watch::channel(false);
    let mut listeners = tokio::task::JoinSet::new();
    for listen in &config.listen_client {
        let addr = listen.addr;
        let listener = bind(addr).map_err(|e| ServerError::Serve {
            addr,
            reason: e.to_string(),
        })?;
        let server_tls = tls.for_listener(listen)?;
        tracing::info!(%addr, tls = listen.tls, name = %config.name, member_id = format!("{:x}", config.member_id), "serving client requests");
        let routes = routes.clone();
        let mut stopped = stopped.clone();
        listeners.spawn(async move {
            let result = crate::http::serve(routes, listener, server_tls, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await;
            (addr, result)
        });
    }
    let failed = tokio::select! {
        Some(joined) = listeners.join_next() => Some(joined),
        () = shutdown => None,
    };
    let _ = stop_serving.send(true);
    if let Some(joined) = failed {
        // A listener ended before shutdown: that can only be a failure.
        return match joined {
            Ok((addr, Err(err))) => Err(ServerError::Serve {
                addr,
                reason: err.to_string(),
            }),
            Ok((addr, Ok(()))) => Err(ServerError::Serve {
                addr,
                reason: "the listener stopped".into(),
            }),
            Err(err) => Err(ServerError::Unsupported(format!(
                "a client listener task failed: {err}"
            ))),
        };
    }
    // Let requests in flight finish, but do not wait on idle client
    // connections (or open watches) forever.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        let mut first_error = Ok(());
        while let Some(joined) = listeners.join_next().await {
            if let Ok((addr, Err(err))) = joined {
                if first_error.is_ok() {
                    first_error = Err(ServerError::Serve {
                        addr,
                        reason: err.to_string(),
                    });
                }
            }
        }
        first_error
    })
    .await;
    match drained {
        Ok(result) => result,
        Err(_) => {
            tracing::info!("closing client connections still open after the grace period");
            Ok(())
        }
    }
}

/// Serves `/metrics` and `/health` on every `--listen-metrics-urls` address,
/// in the background.
fn serve_metrics(
    config: &ServerConfig,
    state: &HttpState,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServerError> {
    let mut tasks = Vec::new();
    for &addr in &config.listen_metrics {
        let listener = bind(addr).map_err(|e| ServerError::Serve {
            addr,
            reason: e.to_string(),
        })?;
        tracing::info!(%addr, "serving metrics and health");
        let routes = crate::http::metrics_routes(state.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(err) =
                crate::http::serve(routes, listener, None, std::future::pending()).await
            {
                tracing::error!(%addr, %err, "metrics listener failed");
            }
        }));
    }
    Ok(tasks)
}

/// How long requests in flight may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Binds with SO_REUSEADDR, as Go's listeners (and so etcd's) do, so a
/// restarted member gets its port back while old connections linger in
/// TIME_WAIT.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
