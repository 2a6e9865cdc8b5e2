//! Chaos runs on real raftkv processes: every fault kind in one short run
//! (on every CI run), a 5-member cluster split and isolated, a member whose
//! fsync fails, and on demand long runs:
//!
//! ```sh
//! RAFTKV_CHAOS_RUNS=50 RAFTKV_CHAOS_SECONDS=60 \
//!   cargo test --release -p raftkv-chaos --test faults -- --ignored --nocapture long_runs
//! ```

use std::path::PathBuf;
use std::time::Duration;

use raftkv_chaos::security::SecurityConfig;
use raftkv_chaos::{run, ClusterConfig, FaultKind, RunConfig, ServerKind};

fn raftkv() -> ServerKind {
    ServerKind::Raftkv {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_raftkv-chaos-node")),
    }
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_once_on_three_members() {
    init_logs();
    let mut config = RunConfig::new(
        ClusterConfig::new(3, raftkv()),
        FaultKind::ALL.to_vec(),
        Duration::from_secs(56),
    );
    config.quiet = Duration::from_millis(800);
    config.fault_length = Duration::from_millis(2500);
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("history.jsonl");
    let report = run(config, Some(&history)).await.expect("run");
    println!("{report}");
    assert!(report.passed(), "{report}\nhistory kept at {}", {
        let keep = std::env::temp_dir().join(format!("raftkv-chaos-{}.jsonl", report.seed));
        let _ = std::fs::copy(&history, &keep);
        keep.display().to_string()
    });
    let clocks = raftkv_chaos::clock::library().is_some() || raftkv_chaos::clock::required();
    for kind in FaultKind::ALL {
        if kind.needs_fake_clock() && !clocks {
            eprintln!("libfaketime is not installed: {kind} left out");
            continue;
        }
        assert!(
            report.faults.contains_key(&kind.to_string()),
            "{kind} was never injected: {:?}",
            report.faults
        );
    }
    assert!(report.total_operations() > 500, "{:?}", report.operations);
    assert!(report.watch_events > 0, "the watchers saw events");
    assert!(
        report.lease_keepalives > 0,
        "the lease probe kept its lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_split_isolated_and_killed() {
    init_logs();
    let mut config = RunConfig::new(
        ClusterConfig::new(5, raftkv()),
        vec![
            FaultKind::SplitMajorityMinority,
            FaultKind::KillMajority,
            FaultKind::IsolateLeader,
            FaultKind::OneWayToLeader,
        ],
        Duration::from_secs(20),
    );
    config.quiet = Duration::from_millis(800);
    config.fault_length = Duration::from_millis(2500);
    let report = run(config, None).await.expect("run");
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert!(report.total_faults() >= 4, "{:?}", report.faults);
}

/// A 30 s run of `faults` on three members secured by `security`, which
/// must pass every check.
async fn secured_run(security: SecurityConfig, faults: Vec<FaultKind>) {
    init_logs();
    let mut cluster = ClusterConfig::new(3, raftkv());
    cluster.security = security;
    cluster.extra_flags = vec!["--bcrypt-cost".into(), "4".into()];
    let mut config = RunConfig::new(cluster, faults, Duration::from_secs(30));
    config.quiet = Duration::from_millis(800);
    config.fault_length = Duration::from_millis(2500);
    let report = run(config, None).await.expect("run");
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert!(report.total_faults() >= 4, "{:?}", report.faults);
    assert!(report.total_operations() > 200, "{:?}", report.operations);
    assert!(report.watch_events > 0, "the watchers saw events");
}

/// With etcd's auth enabled (the workload as a user that is not root, so
/// every request is checked), the same checks hold under kills, pauses,
/// partitions, one-way cuts and lost answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_enabled_every_check_holds() {
    let security = SecurityConfig {
        auth: true,
        tls: false,
    };
    secured_run(
        security,
        vec![
            FaultKind::KillLeader,
            FaultKind::PauseFollower,
            FaultKind::IsolateLeader,
            FaultKind::OneWayToLeader,
            FaultKind::ClientAnswersLost,
            FaultKind::KillFollower,
        ],
    )
    .await;
}

/// As production clusters run: TLS on the client and peer ports with
/// client certificates required on both (the proxies carry the TLS bytes
/// untouched, so kills, cuts and lost answers hit TLS connections), and
/// auth on top. The same checks hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_on_both_ports_and_auth_every_check_holds() {
    let security = SecurityConfig {
        auth: true,
        tls: true,
    };
    secured_run(
        security,
        vec![
            FaultKind::KillLeader,
            FaultKind::PauseLeader,
            FaultKind::IsolateLeader,
            FaultKind::OneWayFromLeader,
            FaultKind::ClientAnswersLost,
            FaultKind::KillFollower,
        ],
    )
    .await;
}

/// The secured cluster the run above uses is secured: its client port
/// answers a client with the CA and its certificate, and no plaintext
/// client or client without a certificate (so the run would fail without
/// TLS in place, rather than pass over plaintext).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_answers_only_clients_with_a_certificate() {
    use raftkv_chaos::security::Principal;
    use raftkv_ctl::client::{Client, ClientConfig, Security, Target};
    use raftkv_ctl::tls::TlsSettings;
    use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use raftkv_proto::etcdserverpb::StatusRequest;

    init_logs();
    let mut config = ClusterConfig::new(3, raftkv());
    config.security.tls = true;
    let mut cluster = raftkv_chaos::Cluster::start(config).await.expect("cluster");
    let secure = cluster.direct_endpoint(0);
    assert!(secure.starts_with("https://"), "{secure}");
    assert!(
        cluster.status(0).await.is_some(),
        "the harness's own client"
    );
    let timeout = Duration::from_secs(2);
    let certified = cluster
        .security()
        .connect(&secure, Principal::Anonymous, timeout);
    assert!(certified.await.is_some());

    let plaintext = secure.replacen("https://", "http://", 1);
    let refused = raftkv_chaos::security::ClusterSecurity::default()
        .connect(&plaintext, Principal::Anonymous, timeout)
        .await;
    let answered = match refused {
        Some(conn) => MaintenanceClient::new(conn)
            .status(StatusRequest {})
            .await
            .is_ok(),
        None => false,
    };
    assert!(!answered, "a plaintext client was answered");

    let without_certificate = Security {
        tls: TlsSettings {
            cacert: Some(cluster.dir().join("ca.pem")),
            insecure_transport: false,
            ..TlsSettings::default()
        },
        credentials: None,
    };
    let client_config = ClientConfig {
        endpoints: vec![secure.clone()],
        dial_timeout: timeout,
        command_timeout: timeout,
        ..ClientConfig::default()
    };
    let client = Client::with_security(client_config, without_certificate).expect("client");
    let answered = match client.stream_channel(Target::One(0)).await {
        Ok((_, conn)) => MaintenanceClient::new(conn)
            .status(StatusRequest {})
            .await
            .is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "a client without a certificate was answered");
    assert!(cluster.status(0).await.is_some(), "the member kept serving");
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run on demand (RAFTKV_CHAOS_RUNS, RAFTKV_CHAOS_SECONDS)"]
async fn long_runs() {
    init_logs();
    let runs = env_number("RAFTKV_CHAOS_RUNS", 50);
    let seconds = env_number("RAFTKV_CHAOS_SECONDS", 60);
    let (mut operations, mut faults, mut failed) = (0, 0, Vec::new());
    let (mut lost, mut violations) = (0, 0);
    for n in 0..runs {
        let size = if n % 3 == 2 { 5 } else { 3 };
        let config = RunConfig::new(
            ClusterConfig::new(size, raftkv()),
            FaultKind::ALL.to_vec(),
            Duration::from_secs(seconds),
        );
        let report = run(config, None).await.expect("run");
        println!("run {}/{runs} ({size} members): {report}", n + 1);
        operations += report.total_operations();
        faults += report.total_faults();
        lost += report.lost_writes.len();
        violations += report.violations.len();
        if !report.passed() {
            failed.push(report.seed);
        }
    }
    println!(
        "{runs} runs of {seconds} s: {operations} operations, {faults} faults, \
         {violations} linearizability violations, {lost} lost writes, failed seeds {failed:?}"
    );
    assert!(failed.is_empty(), "failed runs: {failed:?}");
}

/// A member whose fsync fails stops with exit status 1 instead of serving
/// on: the write it could not make durable is not acknowledged through it,
/// and the other members go on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_fsync_fails_stops_without_acknowledging() {
    use raftkv_ctl::client::{request, Client, ClientConfig, Target};
    use raftkv_proto::etcdserverpb as pb;
    use raftkv_proto::etcdserverpb::kv_client::KvClient;

    init_logs();
    let mut cluster = raftkv_chaos::Cluster::start(ClusterConfig::new(3, raftkv()))
        .await
        .expect("cluster");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    cluster
        .set_storage_faults(leader, "sync_fail_after=0")
        .expect("faults");
    // The member reads the file at its next sync, at most 100 ms apart.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let put = |endpoint: String| async move {
        let client = Client::new(ClientConfig {
            endpoints: vec![endpoint],
            command_timeout: Duration::from_secs(3),
            ..ClientConfig::default()
        })
        .expect("client");
        let id = Some(client.next_request_id());
        client
            .unary(Target::Any, id, |channel, id| async move {
                let put = pb::PutRequest {
                    key: b"fsync/k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                };
                KvClient::new(channel).put(request(put, id)).await
            })
            .await
    };
    let through_leader = put(cluster.client_endpoint(leader)).await;
    assert!(
        through_leader.is_err(),
        "a member whose fsync failed acknowledged a write: {through_leader:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = cluster.exit_status(leader) {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the member whose fsync failed is still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1), "{status}");
    let other = (leader + 1) % cluster.size();
    put(cluster.client_endpoint(other))
        .await
        .expect("the others serve on");
    cluster.stop_all(Duration::from_secs(5));
}
