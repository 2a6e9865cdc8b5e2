//! Wall-clock jumps on real raftkv processes (through libfaketime, Debian
//! package `faketime`): members' clocks stepped a day ahead and hours back
//! while clients write, retry and hold leases. Skipped where libfaketime is
//! missing, unless `RAFTKV_REQUIRE_FAKETIME` is set (CI sets it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use raftkv_chaos::{clock, run, Cluster, ClusterConfig, FaultKind, RunConfig, ServerKind};
use raftkv_ctl::client::{request, Client, ClientConfig, RequestId, Target};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;

fn raftkv() -> ServerKind {
    ServerKind::Raftkv {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_raftkv-chaos-node")),
    }
}

fn clocks_available(test: &str) -> bool {
    if clock::library().is_some() {
        return true;
    }
    assert!(
        !clock::required(),
        "{test}: libfaketime is required but not installed"
    );
    eprintln!("{test}: libfaketime not installed, skipped");
    false
}

/// A put of `key` carrying request id `id` (a retry passes the same id);
/// the revision it was applied at (or first applied at, for a retry).
async fn put(client: &Client, key: &str, id: RequestId) -> i64 {
    let put = pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    client
        .unary(Target::Any, Some(id), |channel, id| {
            let put = put.clone();
            async move { KvClient::new(channel).put(request(put, id)).await }
        })
        .await
        .expect("put")
        .header
        .expect("header")
        .revision
}

fn client(endpoints: Vec<String>, client_id: u64) -> Client {
    Client::with_client_id(
        ClientConfig {
            endpoints,
            command_timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        },
        client_id,
    )
    .expect("client")
}

/// Exactly-once outcomes age by the cluster's replicated clock, read
/// through monotonic clocks: members whose wall clocks jump a day ahead
/// or hours back make nobody forget an outcome early (before, one member a
/// day ahead made every member forget every outcome at the next sweep, so
/// a retry was applied twice), and outcomes are still forgotten once the
/// TTL has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_does_not_make_members_forget_outcomes_early() {
    if !clocks_available("a_wall_clock_step_does_not_make_members_forget_outcomes_early") {
        return;
    }
    const TTL_SECONDS: u64 = 15;
    let mut config = ClusterConfig::new(3, raftkv());
    config.fake_clocks = true;
    config.extra_flags = vec!["--request-outcome-ttl".into(), format!("{TTL_SECONDS}s")];
    let mut cluster = Cluster::start(config).await.expect("cluster");
    let endpoints = cluster.client_endpoints();
    let writer = client(vec![endpoints[0].clone()], 4242);
    let id = RequestId {
        client_id: 4242,
        sequence: 1,
    };
    let first = put(&writer, "clock/w", id).await;
    let written = tokio::time::Instant::now();

    cluster.set_clock_offset(0, 2 * 86_400).expect("clock");
    cluster.set_clock_offset(1, -3 * 3_600).expect("clock");
    cluster.set_clock_offset(2, 3_600).expect("clock");
    // libfaketime reads its file again within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // More entries than the old sweep interval (4096), through every
    // member, each stamped by a member whose wall clock is off.
    let mut load = Vec::new();
    for task in 0..24u64 {
        let endpoint = endpoints[task as usize % endpoints.len()].clone();
        load.push(tokio::spawn(async move {
            let client = Arc::new(client(vec![endpoint], 10_000 + task));
            for n in 0..190 {
                let id = client.next_request_id();
                put(&client, &format!("clock/load/{task}/{n}"), id).await;
            }
        }));
    }
    for task in load {
        task.await.expect("load task");
    }
    assert!(
        written.elapsed() < Duration::from_secs(TTL_SECONDS - 2),
        "the load took too long to test within the TTL: {:?}",
        written.elapsed()
    );
    for (member, endpoint) in endpoints.iter().enumerate() {
        let retry = client(vec![endpoint.clone()], 4242);
        assert_eq!(
            put(&retry, "clock/w", id).await,
            first,
            "a retry through member {member} within the TTL was applied again"
        );
    }

    // After the TTL and the leader's check (a quarter TTL), it is forgotten.
    let forgotten_by = Duration::from_secs(TTL_SECONDS + TTL_SECONDS / 4 + 3);
    tokio::time::sleep(forgotten_by.saturating_sub(written.elapsed())).await;
    let again = put(&writer, "clock/w", id).await;
    assert!(
        again > first,
        "the outcome outlived its TTL ({again} vs {first})"
    );
    cluster.stop_all(Duration::from_secs(5));
}

/// A chaos run whose faults include clock jumps (leader a day ahead, a
/// follower hours back) between kills and isolations: linearizable, no
/// lost or doubled write, members converged, and the lease probe's lease
/// neither expired early nor lived on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_leases_hold_while_clocks_jump() {
    if !clocks_available("history_and_leases_hold_while_clocks_jump") {
        return;
    }
    let mut config = RunConfig::new(
        ClusterConfig::new(3, raftkv()),
        vec![
            FaultKind::ClockJumps,
            FaultKind::KillLeader,
            FaultKind::ClockJumps,
            FaultKind::IsolateLeader,
        ],
        Duration::from_secs(24),
    );
    config.quiet = Duration::from_millis(800);
    config.fault_length = Duration::from_millis(4000);
    let report = run(config, None).await.expect("run");
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert!(
        report.faults.get("clock_jumps").copied().unwrap_or(0) >= 2,
        "{:?}",
        report.faults
    );
    assert!(
        report.lease_keepalives > 0,
        "the lease probe kept its lease"
    );
}
