//! A cluster of real server processes on loopback, every port behind a
//! [`Proxy`], with the faults the harness injects: kills and restarts,
//! pauses, cut links, and storage faults at start.
//!
//! Member `i` listens on its own address `127.0.<nonce>.<10+i>` (the nonce
//! keeps clusters of tests running side by side apart) and advertises the
//! proxies' addresses on 127.0.0.1, so members and clients reach each other
//! only through them:
//!
//! ```text
//!  clients ──▶ client proxy i ──▶ 127.0.n.(10+i):client  member i
//!  member j ─▶ peer proxy i ────▶ 127.0.n.(10+i):peer
//!  (from 127.0.n.(10+j), which names j as the source)
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tokio::time::Instant;

use crate::error::HarnessError;
use crate::process::{ServerKind, ServerProcess};
use crate::proxy::{Classifier, Endpoint, Link, LinkMode, Network, Proxy};
use crate::security::{ClusterSecurity, Principal};

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Members (3 or 5).
    pub size: usize,
    /// The program they run.
    pub server: ServerKind,
    /// `--heartbeat-interval` in milliseconds.
    pub heartbeat_ms: u64,
    /// `--election-timeout` in milliseconds.
    pub election_ms: u64,
    /// More flags for every member.
    pub extra_flags: Vec<String>,
    /// Run every member under libfaketime so its wall clock can be stepped
    /// (see [`crate::clock`]); starting fails if it is not installed.
    pub fake_clocks: bool,
    /// Auth enabled once the cluster runs (see [`crate::security`]).
    pub security: crate::security::SecurityConfig,
}

impl ClusterConfig {
    /// `size` members of `server`, with etcd's default timings.
    pub fn new(size: usize, server: ServerKind) -> Self {
        Self {
            size,
            server,
            heartbeat_ms: 100,
            election_ms: 1000,
            extra_flags: Vec::new(),
            fake_clocks: false,
            security: crate::security::SecurityConfig::default(),
        }
    }
}

/// One member: its addresses, data and process.
struct Member {
    name: String,
    ip: Ipv4Addr,
    client_port: u16,
    peer_port: u16,
    client_proxy: Proxy,
    peer_proxy: Proxy,
    data_dir: PathBuf,
    log: PathBuf,
    /// Environment of its next start (storage faults).
    env: Vec<(String, String)>,
    /// The file its wall-clock offset is read from, when clocks are faked.
    clock_file: PathBuf,
    /// The file its storage faults are read from, while it runs.
    fault_file: PathBuf,
    process: Option<ServerProcess>,
    /// Its member id, once a status answer told it.
    member_id: Option<u64>,
}

/// A running cluster. Dropping it kills every process it started.
pub struct Cluster {
    config: ClusterConfig,
    dir: tempfile::TempDir,
    members: Vec<Member>,
    network: Arc<Network>,
    initial_cluster: String,
    token: String,
    /// libfaketime, when the members' clocks are faked.
    faketime: Option<PathBuf>,
    /// What its clients present.
    security: crate::security::ClusterSecurity,
}

/// Longest a status query to one member may take.
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);

impl Cluster {
    /// Starts every member and waits for a leader.
    pub async fn start(config: ClusterConfig) -> Result<Self, HarnessError> {
        if config.size == 0 || config.size > 200 {
            return Err(HarnessError::Setup(format!(
                "a cluster of {} members",
                config.size
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("raftkv-chaos-")
            .tempdir()
            .map_err(|e| HarnessError::io(Path::new("tempdir"), e))?;
        let faketime = if config.fake_clocks {
            Some(crate::clock::library().ok_or_else(|| {
                HarnessError::Setup("clock jumps need libfaketime (Debian package faketime)".into())
            })?)
        } else {
            None
        };
        let nonce = 1 + (crate::entropy() % 250) as u8;
        let network = Arc::new(Network::default());
        let ips: Vec<Ipv4Addr> = (0..config.size)
            .map(|i| Ipv4Addr::new(127, 0, nonce, 10 + i as u8))
            .collect();
        let peer_classifier: Classifier = {
            let ips = ips.clone();
            Arc::new(move |source: IpAddr| match source {
                IpAddr::V4(v4) => ips
                    .iter()
                    .position(|ip| *ip == v4)
                    .map_or(Endpoint::Client, Endpoint::Node),
                IpAddr::V6(_) => Endpoint::Client,
            })
        };
        let client_classifier: Classifier = Arc::new(|_| Endpoint::Client);
        let proxy_listen: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let mut members = Vec::with_capacity(config.size);
        for (i, ip) in ips.iter().enumerate() {
            let client_port = free_port(*ip)?;
            let peer_port = free_port(*ip)?;
            let client_proxy = Proxy::start(
                proxy_listen,
                (*ip, client_port).into(),
                Endpoint::Node(i),
                client_classifier.clone(),
                network.clone(),
            )
            .await
            .map_err(|e| HarnessError::io(Path::new("client proxy"), e))?;
            let peer_proxy = Proxy::start(
                proxy_listen,
                (*ip, peer_port).into(),
                Endpoint::Node(i),
                peer_classifier.clone(),
                network.clone(),
            )
            .await
            .map_err(|e| HarnessError::io(Path::new("peer proxy"), e))?;
            let name = format!("n{i}");
            members.push(Member {
                data_dir: dir.path().join(format!("{name}.data")),
                log: dir.path().join(format!("{name}.log")),
                clock_file: dir.path().join(format!("{name}.clock")),
                fault_file: dir.path().join(format!("{name}.faults")),
                name,
                ip: *ip,
                client_port,
                peer_port,
                client_proxy,
                peer_proxy,
                env: Vec::new(),
                process: None,
                member_id: None,
            });
        }
        let tls = if config.security.tls {
            Some(crate::security::TlsFiles::create(dir.path(), &ips)?)
        } else {
            None
        };
        let security = ClusterSecurity::new(config.security.clone(), tls);
        let scheme = security.scheme();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={scheme}://{}", m.name, m.peer_proxy.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            config,
            dir,
            members,
            network,
            initial_cluster,
            token: format!("chaos-{nonce}"),
            faketime,
            security,
        };
        for i in 0..cluster.members.len() {
            if cluster.faketime.is_some() {
                cluster.set_clock_offset(i, 0)?;
            }
            cluster.spawn(i)?;
        }
        cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .map_err(|e| cluster.with_logs(e))?;
        let endpoints = cluster.client_endpoints();
        cluster
            .security
            .enable_auth(endpoints)
            .await
            .map_err(|e| cluster.with_logs(e))?;
        Ok(cluster)
    }

    /// Members in the cluster.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The server program.
    pub fn server(&self) -> &ServerKind {
        &self.config.server
    }

    /// The link modes every proxy obeys.
    pub fn network(&self) -> &Arc<Network> {
        &self.network
    }

    /// What the cluster's clients present (credentials when auth is on).
    pub fn security(&self) -> &ClusterSecurity {
        &self.security
    }

    /// Where the cluster's files are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Member `i`'s client address through its proxy (what clients use).
    pub fn client_endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_proxy.addr().port())
    }

    /// Every member's client address through its proxy.
    pub fn client_endpoints(&self) -> Vec<String> {
        (0..self.size()).map(|i| self.client_endpoint(i)).collect()
    }

    /// Member `i`'s own client address, past the proxy (for final checks).
    pub fn direct_endpoint(&self, i: usize) -> String {
        let m = &self.members[i];
        format!("{}://{}:{}", self.security.scheme(), m.ip, m.client_port)
    }

    /// Whether member `i` runs (paused or not).
    pub fn is_running(&mut self, i: usize) -> bool {
        self.members[i].process.is_some() && self.exit_status(i).is_none()
    }

    /// How member `i`'s process ended, if it has ended by itself (a member
    /// the harness killed has no process left to ask).
    pub fn exit_status(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.members[i].process.as_mut()?.exited()
    }

    /// Waits up to `limit` for member `i` to exit by itself; kills it if it
    /// is still running then, so it can be restarted.
    pub async fn wait_for_exit(&mut self, i: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.is_running(i) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(member = %self.members[i].name, "still stopping; killing it");
                self.kill(i);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether member `i` is paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.members[i]
            .process
            .as_ref()
            .is_some_and(ServerProcess::is_paused)
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// The tail of every member's log, appended to an error.
    pub fn with_logs(&self, err: HarnessError) -> HarnessError {
        let mut text = err.to_string();
        for (i, m) in self.members.iter().enumerate() {
            let log = self.log(i);
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            text.push_str(&format!("\n--- {} (last lines) ---\n", m.name));
            for line in tail.iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        HarnessError::Setup(text)
    }

    fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
        let args = self.args(i);
        let m = &mut self.members[i];
        if m.process.is_some() {
            return Err(HarnessError::Setup(format!(
                "{} is already running",
                m.name
            )));
        }
        let mut env = m.env.clone();
        env.push((
            "RAFTKV_FAULT_FILE".into(),
            m.fault_file.display().to_string(),
        ));
        if let Some(library) = &self.faketime {
            env.extend(crate::clock::environment(library, &m.clock_file));
        }
        m.process = Some(ServerProcess::spawn(
            self.config.server.binary(),
            &args,
            &env,
            &m.log,
        )?);
        Ok(())
    }

    fn args(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let scheme = self.security.scheme();
        let mut args: Vec<String> = [
            "--name",
            &m.name,
            "--data-dir",
            &m.data_dir.display().to_string(),
            "--listen-client-urls",
            &format!("{scheme}://{}:{}", m.ip, m.client_port),
            "--advertise-client-urls",
            &format!("{scheme}://{}", m.client_proxy.addr()),
            "--listen-peer-urls",
            &format!("{scheme}://{}:{}", m.ip, m.peer_port),
            "--initial-advertise-peer-urls",
            &format!("{scheme}://{}", m.peer_proxy.addr()),
            "--initial-cluster",
            &self.initial_cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &self.token,
            "--heartbeat-interval",
            &self.config.heartbeat_ms.to_string(),
            "--election-timeout",
            &self.config.election_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let ServerKind::Raftkv { .. } = self.config.server {
            args.push("--experimental-peer-source-ip".into());
            args.push(m.ip.to_string());
        }
        args.extend(self.security.server_flags());
        args.extend(self.config.extra_flags.iter().cloned());
        args
    }

    /// kill -9 of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(process) = self.members[i].process.take() {
            process.kill();
        }
    }

    /// SIGTERM to member `i`, then SIGKILL if it has not exited in `grace`.
    pub fn terminate(&mut self, i: usize, grace: Duration) {
        if let Some(process) = self.members[i].process.take() {
            process.terminate(grace);
        }
    }

    /// Starts member `i` again on its data (it must not be running).
    pub fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        if let Some(mut process) = self.members[i].process.take() {
            if process.exited().is_none() {
                self.members[i].process = Some(process);
                return Err(HarnessError::Setup(format!(
                    "{} is still running",
                    self.members[i].name
                )));
            }
        }
        self.spawn(i)
    }

    /// Sets the environment of member `i`'s next start; empty for none.
    pub fn set_env(&mut self, i: usize, env: Vec<(String, String)>) {
        self.members[i].env = env;
    }

    /// Switches storage faults in member `i` while it runs (raftkv's
    /// `fault-injection` build reads the file within 100 ms): lines
    /// `sync_delay_ms=N`, `sync_fail_after=N`; empty for none.
    pub fn set_storage_faults(&mut self, i: usize, settings: &str) -> Result<(), HarnessError> {
        let path = &self.members[i].fault_file;
        let staging = path.with_extension("new");
        std::fs::write(&staging, settings).map_err(|e| HarnessError::io(&staging, e))?;
        std::fs::rename(&staging, path).map_err(|e| HarnessError::io(path, e))
    }

    /// Whether members' wall clocks can be stepped.
    pub fn fake_clocks(&self) -> bool {
        self.faketime.is_some()
    }

    /// Steps member `i`'s wall clock to `seconds` from the real time (it
    /// takes effect within a second); an error if clocks are not faked.
    pub fn set_clock_offset(&mut self, i: usize, seconds: i64) -> Result<(), HarnessError> {
        if self.faketime.is_none() {
            return Err(HarnessError::Setup(
                "this cluster's clocks are not faked (ClusterConfig::fake_clocks)".into(),
            ));
        }
        crate::clock::set_offset(&self.members[i].clock_file, seconds)
    }

    /// SIGSTOP to member `i`.
    pub fn pause(&mut self, i: usize) -> Result<(), HarnessError> {
        match self.members[i].process.as_mut() {
            Some(process) if !process.is_paused() => process.pause(),
            _ => Ok(()),
        }
    }

    /// SIGCONT to member `i`.
    pub fn resume(&mut self, i: usize) -> Result<(), HarnessError> {
        match self.members[i].process.as_mut() {
            Some(process) if process.is_paused() => process.resume(),
            _ => Ok(()),
        }
    }

    /// Cuts every link between member `i` and the others, both ways.
    pub fn isolate(&self, i: usize) {
        let rest: Vec<usize> = (0..self.size()).filter(|j| *j != i).collect();
        self.partition(&[vec![i], rest]);
    }

    /// Cuts every link between members of different groups, both ways.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        for (g, group) in groups.iter().enumerate() {
            for other in groups.iter().skip(g + 1) {
                for &a in group {
                    for &b in other {
                        self.network.set(Link::nodes(a, b), LinkMode::Cut);
                        self.network.set(Link::nodes(b, a), LinkMode::Cut);
                    }
                }
            }
        }
    }

    /// Sets the mode of the link from member `from` to member `to`.
    pub fn set_link(&self, from: usize, to: usize, mode: LinkMode) {
        self.network.set(Link::nodes(from, to), mode);
    }

    /// Sets the mode of both directions between clients and member `i`.
    pub fn set_client_link(&self, i: usize, to_member: LinkMode, from_member: LinkMode) {
        let node = Endpoint::Node(i);
        self.network.set(
            Link {
                from: Endpoint::Client,
                to: node,
            },
            to_member,
        );
        self.network.set(
            Link {
                from: node,
                to: Endpoint::Client,
            },
            from_member,
        );
    }

    /// Every link passes again.
    pub fn heal(&self) {
        self.network.heal();
    }

    /// Member `i`'s status, straight from it (None when it does not answer).
    pub async fn status(&mut self, i: usize) -> Option<pb::StatusResponse> {
        if self.is_paused(i) || !self.is_running(i) {
            return None;
        }
        let status = status_of(&self.security, &self.direct_endpoint(i)).await?;
        if let Some(header) = &status.header {
            self.members[i].member_id = Some(header.member_id);
        }
        Some(status)
    }

    /// `key` as member `i` itself has it: a serializable read past the
    /// proxy (None when the key is absent).
    pub async fn read_own(
        &self,
        i: usize,
        key: &str,
    ) -> Result<Option<raftkv_proto::mvccpb::KeyValue>, HarnessError> {
        let url = self.direct_endpoint(i);
        let unreadable = |e: String| HarnessError::Setup(format!("reading {key} from {url}: {e}"));
        let conn = self
            .security
            .connect(&url, Principal::Root, Duration::from_secs(3))
            .await
            .ok_or_else(|| unreadable("no connection".into()))?;
        let mut client = KvClient::new(conn);
        let response = client
            .range(pb::RangeRequest {
                key: key.as_bytes().to_vec(),
                serializable: true,
                ..Default::default()
            })
            .await
            .map_err(|e| unreadable(e.message().to_string()))?;
        Ok(response.into_inner().kvs.into_iter().next())
    }

    /// Member `i`'s id, if a status answer has told it.
    pub fn member_id(&self, i: usize) -> Option<u64> {
        self.members[i].member_id
    }

    /// The leader the members with the highest term agree on, if any.
    pub async fn leader(&mut self) -> Option<usize> {
        let mut best: Option<(u64, u64)> = None;
        for i in 0..self.size() {
            let Some(status) = self.status(i).await else {
                continue;
            };
            let term = status.header.as_ref().map_or(0, |h| h.raft_term);
            if status.leader != 0 && best.is_none_or(|(t, _)| term > t) {
                best = Some((term, status.leader));
            }
        }
        let (_, leader) = best?;
        (0..self.size()).find(|&i| self.members[i].member_id == Some(leader))
    }

    /// Waits until a leader is known; its index.
    pub async fn wait_for_leader(&mut self, within: Duration) -> Result<usize, HarnessError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "no leader within {within:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A member other than `not`, that runs.
    pub fn other_than(&mut self, not: &[usize]) -> Option<usize> {
        (0..self.size()).find(|i| !not.contains(i) && self.is_running(*i))
    }

    /// Stops every member (SIGTERM, then SIGKILL after `grace`). With
    /// `RAFTKV_CHAOS_KEEP=1` the members' data and logs are kept (the path
    /// is logged) for a person to look into.
    pub fn stop_all(&mut self, grace: Duration) {
        for i in 0..self.size() {
            let _ = self.resume(i);
            self.terminate(i, grace);
        }
        if std::env::var_os("RAFTKV_CHAOS_KEEP").is_some() {
            let kept = self.dir.path().to_path_buf();
            if let Ok(replacement) = tempfile::tempdir() {
                let _ = std::mem::replace(&mut self.dir, replacement).keep();
                tracing::warn!(dir = %kept.display(), "kept the cluster's files");
                eprintln!("kept the cluster's files in {}", kept.display());
            }
        }
    }
}

/// A free port on `ip` (bound and released; the server binds it next).
fn free_port(ip: Ipv4Addr) -> Result<u16, HarnessError> {
    let listener = std::net::TcpListener::bind((ip, 0))
        .map_err(|e| HarnessError::io(Path::new(&ip.to_string()), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| HarnessError::io(Path::new(&ip.to_string()), e))
}

/// Maintenance.Status of the member at `url`, None if it does not answer.
/// Status needs no user, so none is authenticated for it.
pub async fn status_of(security: &ClusterSecurity, url: &str) -> Option<pb::StatusResponse> {
    let ask = async {
        let conn = security
            .connect(url, Principal::Anonymous, STATUS_TIMEOUT)
            .await?;
        MaintenanceClient::new(conn)
            .status(pb::StatusRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    };
    tokio::time::timeout(STATUS_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
}
