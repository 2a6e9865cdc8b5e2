//! Putting a member together: open its data, start the node driver, serve
//! etcd's gRPC API on the client URLs, and stop cleanly on a signal.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use raftkv_mvcc::Store;
use raftkv_proto::etcdserverpb::cluster_server::ClusterServer;
use raftkv_proto::etcdserverpb::kv_server::KvServer;
use raftkv_proto::etcdserverpb::lease_server::LeaseServer;
use raftkv_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use raftkv_proto::etcdserverpb::watch_server::WatchServer;
use raftkv_proto::raftkvpeer::peer_server::PeerServer;
use raftkv_raft::Config as RaftConfig;

use crate::config::{ClusterState, ServerConfig};
use crate::grpc::cluster::{ClusterService, MemberInfo};
use crate::grpc::kv::KvService;
use crate::grpc::lease::{run_expiry, LeaseService};
use crate::grpc::maintenance::MaintenanceService;
use crate::grpc::watch::WatchService;
use crate::grpc::ServiceContext;
use crate::kv_state::KvStateMachine;
use crate::lessor::Lessor;
use crate::node::{self, NodeHandle, NodeOptions};
use crate::peer::service::PeerService;
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

/// How long request outcomes are remembered for exactly-once retries.
const OUTCOME_TTL: Duration = Duration::from_secs(600);

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

/// Serves the peer protocol on the first peer URL, in the background.
fn serve_peers(
    config: &ServerConfig,
    node: NodeHandle<Outcome>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let Some(&addr) = config.listen_peer.first() else {
        return Err(ServerError::Unsupported("no peer URL to listen on".into()));
    };
    let listener = bind(addr).map_err(|e| ServerError::Serve {
        addr,
        reason: e.to_string(),
    })?;
    let service = PeerServer::new(PeerService::new(config.cluster_id, node))
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
    tracing::info!(%addr, "serving peers");
    Ok(tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(err) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(%addr, %err, "peer listener failed");
        }
    }))
}

/// Largest peer batch accepted: appends are bounded by the Raft core's
/// message size, and a batch carries many of them.
const PEER_MESSAGE_BYTES_MAX: usize = 256 << 20;

/// Runs a member until `shutdown` resolves or the node fails.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    if config.cluster_state == ClusterState::Existing {
        return Err(ServerError::Unsupported(
            "--initial-cluster-state existing needs MemberAdd, which is not built yet".into(),
        ));
    }
    let member_dir = config.data_dir.join(MEMBER_DIR);
    std::fs::create_dir_all(&member_dir).map_err(|source| ServerError::DataDir {
        path: member_dir.clone(),
        source,
    })?;
    check_identity(&member_dir, &config)?;
    let mut store_config = raftkv_mvcc::Config::new(member_dir.join(STORE_FILE));
    store_config.max_txn_ops = config.max_txn_ops as usize;
    let store = Arc::new(Store::open(store_config)?);
    let hub = WatchHub::new();
    let lessor = Arc::new(Lessor::default());
    let state_machine = KvStateMachine::new(
        store.clone(),
        hub.clone(),
        lessor.clone(),
        OUTCOME_TTL.as_millis() as u64,
    )?;

    let mut raft = RaftConfig::new(config.member_id);
    raft.election_tick = config.election_ticks;
    raft.heartbeat_tick = 1;
    raft.seed = config.member_id ^ std::process::id() as u64;
    let bootstrap_voters = match config.cluster_state {
        ClusterState::New => config.initial_cluster.iter().map(|m| m.id).collect(),
        ClusterState::Existing => Vec::new(),
    };
    let options = NodeOptions {
        raft,
        bootstrap_voters,
        tick: config.tick,
        input_queue: 16 * 1024,
        snapshot_count: config.snapshot_count,
        catch_up_entries: SNAPSHOT_CATCH_UP_ENTRIES.min(config.snapshot_count),
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
    let peers: Vec<(u64, String)> = config
        .initial_cluster
        .iter()
        .filter(|m| m.id != config.member_id)
        .filter_map(|m| m.peer_urls.first().map(|url| (m.id, url.clone())))
        .collect();
    let transport = PeerTransport::start(config.cluster_id, peers, unreachable);
    let (node, driver) = node::start(
        options,
        &member_dir.join("wal"),
        &member_dir.join("snap"),
        state_machine,
        transport,
    )?;
    let _ = node_slot.set(node.clone());
    let peer_listener = serve_peers(&config, node.clone())?;

    let members = config
        .initial_cluster
        .iter()
        .map(|m| MemberInfo {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: if m.id == config.member_id {
                config.advertise_client_urls.clone()
            } else {
                Vec::new()
            },
        })
        .collect();
    let ctx = ServiceContext {
        node: node.clone(),
        store: store.clone(),
        cluster_id: config.cluster_id,
        member_id: config.member_id,
        max_request_bytes: config.max_request_bytes,
        max_txn_ops: config.max_txn_ops,
        request_timeout: Duration::from_secs(5) + config.tick * config.election_ticks * 2,
        members: Arc::new(members),
        quota_backend_bytes: config.quota_backend_bytes,
    };
    let expiry = tokio::spawn(run_expiry(
        ctx.clone(),
        lessor.clone(),
        LEASE_CHECK_INTERVAL,
    ));
    let quota_monitor = tokio::spawn(crate::alarm::run_quota_monitor(
        ctx.clone(),
        crate::alarm::QUOTA_CHECK_INTERVAL,
    ));
    let min_ttl = min_lease_ttl_seconds(&config);
    let served = serve_clients(&config, ctx, hub, lessor, min_ttl, shutdown).await;
    expiry.abort();
    quota_monitor.abort();
    hand_over_leadership(&node, config.tick * config.election_ticks).await;
    peer_listener.abort();
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

/// Records which member of which cluster a data directory belongs to, and
/// refuses to start on a directory of another member: flags that describe a
/// different member (other peer URLs, name or token) would otherwise start a
/// node that is not in its own configuration and never serves.
fn check_identity(member_dir: &std::path::Path, config: &ServerConfig) -> Result<(), ServerError> {
    let path = member_dir.join("identity");
    let mine = identity_text(config.member_id, config.cluster_id);
    match std::fs::read_to_string(&path) {
        Ok(found) if found == mine => Ok(()),
        Ok(found) => Err(ServerError::Unsupported(format!(
            "{} belongs to another member ({}), but the flags describe member {:x} of cluster {:x}",
            member_dir.display(),
            found.trim().replace('\n', ", "),
            config.member_id,
            config.cluster_id
        ))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => write_identity(member_dir, &mine)
            .map_err(|source| ServerError::DataDir { path, source }),
        Err(source) => Err(ServerError::DataDir { path, source }),
    }
}

async fn serve_clients(
    config: &ServerConfig,
    ctx: ServiceContext,
    hub: WatchHub,
    lessor: Arc<Lessor>,
    min_lease_ttl: i64,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let max_message_bytes = (config.max_request_bytes as usize).max(4 << 20) + (1 << 20);
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(
            KvServer::new(KvService::new(ctx.clone())).max_decoding_message_size(max_message_bytes),
        )
        .add_service(MaintenanceServer::new(MaintenanceService::new(ctx.clone())))
        .add_service(WatchServer::new(WatchService::new(ctx.clone(), hub)))
        .add_service(LeaseServer::new(LeaseService::new(
            ctx.clone(),
            lessor,
            min_lease_ttl,
        )))
        .add_service(ClusterServer::new(ClusterService::new(ctx)));
    let Some(&addr) = config.listen_client.first() else {
        return Err(ServerError::Unsupported(
            "no client URL to listen on".into(),
        ));
    };
    if config.listen_client.len() > 1 {
        tracing::warn!("serving only the first of --listen-client-urls");
    }
    let listener = bind(addr).map_err(|e| ServerError::Serve {
        addr,
        reason: e.to_string(),
    })?;
    tracing::info!(%addr, name = %config.name, member_id = format!("{:x}", config.member_id), "serving client requests");
    let (stop_serving, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = router.serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        async {
            let _ = stopped.await;
        },
    );
    tokio::pin!(serve);
    let served = tokio::select! {
        result = &mut serve => result,
        () = shutdown => {
            let _ = stop_serving.send(());
            // Let requests in flight finish, but do not wait on idle
            // client connections forever.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut serve).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::info!("closing client connections still open after the grace period");
                    Ok(())
                }
            }
        }
    };
    served.map_err(|e| ServerError::Serve {
        addr,
        reason: e.to_string(),
    })
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
