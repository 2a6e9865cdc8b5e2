//! `raftkvctl bench` against a real raftkv member: each workload runs to
//! its `--total`, reports it in `--json` without errors, and leaves the
//! keys it wrote where a client can read them.

mod common;

use common::{run, runtime, TestServer, Tool};
use raftkv_proto::etcdserverpb as pb;
use serde_json::Value;

/// Runs `bench <args> --json` and returns the parsed report.
fn bench(server: &TestServer, args: &[&str]) -> Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = run(Tool::Raftkvctl, &server.endpoint(), &all, None, None);
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "one JSON line: {}",
        out.stdout
    );
    serde_json::from_str(&out.stdout).expect("bench --json prints JSON")
}

fn assert_all_ok(report: &Value, workload: &str, total: u64) {
    assert_eq!(report["workload"], workload, "{report}");
    assert_eq!(report["ops"], total, "{report}");
    assert_eq!(report["ok"], total, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["throughput"].as_f64().unwrap() > 0.0, "{report}");
    let latency = &report["latency_ms"];
    let p50 = latency["p50"].as_f64().unwrap();
    let p99 = latency["p99"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{report}");
    assert!(p99 <= latency["max"].as_f64().unwrap(), "{report}");
}

fn read(server: &TestServer, key: &[u8]) -> pb::RangeResponse {
    runtime()
        .block_on(server.client().range(pb::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        }))
        .expect("read back")
}

#[test]
fn put_writes_its_total_of_keys() {
    let server = TestServer::start();
    let report = bench(
        &server,
        &[
            "put",
            "--total",
            "200",
            "--clients",
            "4",
            "--sequential-keys",
            "--key-space",
            "1000",
            "--val-size",
            "16",
            "--label",
            "raftkv",
        ],
    );
    assert_all_ok(&report, "put", 200);
    assert_eq!(report["clients"], 4);
    assert_eq!(report["label"], "raftkv");
    // Sequential keys 000..199, zero-padded to --key-size 8.
    for key in [&b"00000000"[..], b"00000199"] {
        let got = read(&server, key);
        assert_eq!(got.kvs.len(), 1, "{key:?} written");
        assert_eq!(got.kvs[0].value, vec![b'v'; 16]);
    }
    assert!(read(&server, b"00000200").kvs.is_empty());
}

/// The values of keys `0..count` (8 B keys), read back.
fn value_sizes(server: &TestServer, count: u64) -> Vec<usize> {
    (0..count)
        .map(|i| {
            let got = read(server, format!("{i:08}").as_bytes());
            got.kvs.first().map_or(0, |kv| kv.value.len())
        })
        .collect()
}

#[test]
fn log_uniform_values_follow_the_seed_and_their_bytes_are_counted() {
    let sized = |seed: &str| {
        let server = TestServer::start();
        let report = bench(
            &server,
            &[
                "put",
                "--total",
                "300",
                "--clients",
                "8",
                "--sequential-keys",
                "--key-space",
                "300",
                "--val-size-min",
                "10",
                "--val-size-max",
                "65536",
                "--seed",
                seed,
            ],
        );
        assert_all_ok(&report, "put", 300);
        assert!(report["val_size"].is_null(), "{report}");
        let sizes = value_sizes(&server, 300);
        let live: usize = sizes.iter().map(|s| s + 8).sum();
        assert_eq!(report["written_bytes"], live as u64, "{report}");
        assert_eq!(report["nospace"], false, "{report}");
        sizes
    };
    let sizes = sized("16");
    assert!(sizes.iter().all(|s| (10..=65_536).contains(s)), "{sizes:?}");
    assert!(sizes.iter().any(|&s| s < 100) && sizes.iter().any(|&s| s > 6_500));
    // Another server, another interleaving of 8 clients: the same sizes.
    assert_eq!(sized("16"), sizes);
    assert_ne!(sized("17"), sizes);
}

#[test]
fn put_stops_at_the_first_nospace_and_reports_what_it_wrote() {
    let server = TestServer::start_with(&["--quota-backend-bytes", "4194304"]);
    let started = std::time::Instant::now();
    let report = bench(
        &server,
        &[
            "put",
            "--total",
            "100000",
            "--duration",
            "60s",
            "--clients",
            "4",
            "--sequential-keys",
            "--key-space",
            "100000",
            "--val-size",
            "16384",
            "--stop-on-nospace",
        ],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(report["nospace"], true, "{report}");
    let ok = report["ok"].as_u64().unwrap();
    assert!(ok > 0 && ok < 100_000, "{report}");
    // Only NOSPACE errors, at most one per client in flight when it came.
    let errors = report["errors"].as_u64().unwrap();
    assert!((1..=4).contains(&errors), "{report}");
    let at = report["nospace_at_bytes"].as_u64().unwrap();
    let written = report["written_bytes"].as_u64().unwrap();
    assert!(at <= written && written == ok * (8 + 16_384), "{report}");
    assert!(at > 2 << 20 && at < 4 << 20, "{report}");
}

#[test]
fn linearizable_and_serializable_gets_run_to_their_total() {
    let server = TestServer::start();
    let report = bench(&server, &["get", "--total", "200", "--clients", "4"]);
    assert_all_ok(&report, "get", 200);
    assert_eq!(report["serializable"], false);
    let report = bench(
        &server,
        &["get", "--serializable", "--total", "100", "--clients", "2"],
    );
    assert_all_ok(&report, "get", 100);
    assert_eq!(report["serializable"], true);
}

#[test]
fn txn_put_swaps_values_by_mod_revision() {
    let server = TestServer::start();
    let report = bench(
        &server,
        &[
            "txn-put",
            "--total",
            "200",
            "--clients",
            "4",
            "--key-space",
            "8",
        ],
    );
    assert_all_ok(&report, "txn-put", 200);
    // Each client owns 2 of the 8 keys, fresh ones: every compare holds.
    assert_eq!(report["conflicts"], 0, "{report}");
    let written: Vec<pb::RangeResponse> = (0..8)
        .map(|i| read(&server, format!("{i:08}").as_bytes()))
        .filter(|r| !r.kvs.is_empty())
        .collect();
    assert!(!written.is_empty());
    // A second run reads the keys' revisions before it starts: no compare
    // fails on a key the first run wrote.
    let report = bench(
        &server,
        &[
            "txn-put",
            "--total",
            "100",
            "--clients",
            "4",
            "--key-space",
            "8",
        ],
    );
    assert_all_ok(&report, "txn-put", 100);
    assert_eq!(report["conflicts"], 0, "{report}");
}

#[test]
fn watch_measures_puts_until_their_events() {
    let server = TestServer::start();
    let report = bench(&server, &["watch", "--total", "100", "--clients", "4"]);
    assert_all_ok(&report, "watch", 100);
    let got = read(&server, b"bench-watch/00000003");
    assert_eq!(got.kvs.len(), 1);
}

#[test]
fn lease_keepalive_and_range_and_mixed_run_to_their_total() {
    let server = TestServer::start();
    let report = bench(
        &server,
        &["lease-keepalive", "--total", "100", "--clients", "2"],
    );
    assert_all_ok(&report, "lease-keepalive", 100);
    assert_eq!(report["leases"], 2, "one per client by default");
    let report = bench(
        &server,
        &[
            "lease-keepalive",
            "--total",
            "300",
            "--clients",
            "4",
            "--conns",
            "2",
            "--leases",
            "50",
        ],
    );
    assert_all_ok(&report, "lease-keepalive", 300);
    assert_eq!(report["leases"], 50, "{report}");
    let left = runtime()
        .block_on(server.client().lease_leases())
        .expect("lease list");
    assert!(left.leases.is_empty(), "revoked after the run: {left:?}");
    let report = bench(
        &server,
        &[
            "range",
            "--total",
            "50",
            "--range-size",
            "10",
            "--key-space",
            "100",
        ],
    );
    assert_all_ok(&report, "range", 50);
    let report = bench(
        &server,
        &[
            "mixed",
            "--total",
            "100",
            "--clients",
            "4",
            "--read-ratio",
            "0.5",
        ],
    );
    assert_all_ok(&report, "mixed", 100);
}

#[test]
fn a_duration_bounds_the_run_and_a_plot_is_drawn() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let svg = dir.path().join("latency.svg");
    let started = std::time::Instant::now();
    let report = bench(
        &server,
        &[
            "put",
            "--duration",
            "1s",
            "--rate",
            "50",
            "--plot",
            &svg.display().to_string(),
        ],
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let ops = report["ok"].as_u64().unwrap();
    // 50 ops/s for a second: about 50, never far more.
    assert!((10..=60).contains(&ops), "{report}");
    let drawn = std::fs::read_to_string(&svg).expect("svg written");
    assert!(drawn.starts_with("<svg") && drawn.contains("latency (ms)"));
}

#[test]
fn bad_options_are_refused_with_exit_128() {
    let server = TestServer::start();
    for args in [
        &["bench", "put", "--clients", "0"][..],
        &["bench", "put", "--clients", "2", "--conns", "3"],
        &["bench", "put", "--serializable"],
        &["bench", "mixed", "--read-ratio", "1.5"],
        &["bench", "put", "--leases", "10"],
        &["bench", "lease-keepalive", "--leases", "0"],
        &[
            "bench",
            "put",
            "--val-size-min",
            "0",
            "--val-size-max",
            "10",
        ],
        &[
            "bench",
            "put",
            "--val-size-min",
            "20",
            "--val-size-max",
            "10",
        ],
    ] {
        let out = run(Tool::Raftkvctl, &server.endpoint(), args, None, None);
        assert_eq!(out.code, 128, "{args:?}: {}", out.stderr);
    }
    // Options that go together, or not at all, are the parser's: exit 1.
    for args in [
        &["bench", "put", "--val-size-min", "10"][..],
        &[
            "bench",
            "put",
            "--val-size",
            "5",
            "--val-size-min",
            "1",
            "--val-size-max",
            "10",
        ],
    ] {
        let out = run(Tool::Raftkvctl, &server.endpoint(), args, None, None);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
    }
}

#[test]
fn report_builds_the_comparison_table_from_saved_runs() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    for (label, round) in [("etcd", 1), ("raftkv", 1), ("etcd", 2), ("raftkv", 2)] {
        let out = run(
            Tool::Raftkvctl,
            &server.endpoint(),
            &["bench", "put", "--total", "20", "--json", "--label", label],
            None,
            None,
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        std::fs::write(dir.path().join(format!("{label}-{round}.json")), out.stdout).unwrap();
    }
    let out = run(
        Tool::Raftkvctl,
        &server.endpoint(),
        &["bench", "report", &dir.path().display().to_string()],
        None,
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("| put | 1 |"))
        .unwrap_or_else(|| panic!("a put row: {}", out.stdout));
    assert!(row.ends_with("| 2 | 0/0 |"), "{row}");
}
