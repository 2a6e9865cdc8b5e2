//! A real `raftkv` process on a free loopback port, driven by the real
//! etcdctl (Debian package etcd-client) and by a Rust gRPC client.
//!
//! Where etcdctl is missing the etcdctl tests print SKIPPED, unless
//! `RAFTKV_REQUIRE_ETCDCTL` is set (the project's test script sets it, after
//! installing the package), in which case they fail.

mod common;

use std::process::{Command, Output, Stdio};

use common::{etcdctl_available, free_port, runtime, start};

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use tonic::Code;

fn etcdctl(port: u16, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{port}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("etcdctl runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("etcdctl finishes")
}

fn ok(port: u16, args: &[&str]) -> String {
    let out = etcdctl(port, args, None);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails_with(port: u16, args: &[&str], message: &str) {
    let out = etcdctl(port, args, None);
    assert!(!out.status.success(), "etcdctl {args:?} should fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(message),
        "etcdctl {args:?}: expected {message:?} in {stderr}"
    );
}

#[test]
fn etcdctl_reads_and_writes_like_against_etcd() {
    if !etcdctl_available("etcdctl_reads_and_writes_like_against_etcd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), free_port(), &[]);
    let port = server.port;

    assert_eq!(ok(port, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(ok(port, &["get", "foo"]), "foo\nbar\n");
    let json = ok(port, &["get", "foo", "-w", "json"]);
    assert!(
        json.contains(r#""key":"Zm9v""#) && json.contains(r#""value":"YmFy""#),
        "{json}"
    );
    assert!(
        json.contains(r#""create_revision":2"#) && json.contains(r#""version":1"#),
        "{json}"
    );
    assert_eq!(
        ok(port, &["put", "foo", "baz", "--prev-kv"]),
        "OK\nfoo\nbar\n"
    );
    assert_eq!(ok(port, &["get", "foo", "--print-value-only"]), "baz\n");
    for key in ["a1", "a2", "a3", "b1"] {
        ok(port, &["put", key, "v"]);
    }
    assert_eq!(
        ok(port, &["get", "a", "--prefix", "--keys-only"]),
        "a1\n\na2\n\na3\n\n"
    );
    assert!(ok(port, &["get", "a", "--prefix", "-w", "json"]).contains(r#""count":3"#));
    assert_eq!(
        ok(
            port,
            &[
                "get",
                "a",
                "--prefix",
                "--limit",
                "1",
                "--order",
                "DESCEND",
                "--print-value-only"
            ]
        ),
        "v\n"
    );
    assert_eq!(ok(port, &["del", "a", "--prefix"]), "3\n");
    assert_eq!(ok(port, &["get", "a", "--prefix"]), "");

    let txn = "mod(\"foo\") > \"0\"\n\nput t yes\n\nput t no\n\n";
    let out = etcdctl(port, &["txn"], Some(txn));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SUCCESS\n\nOK\n");
    assert_eq!(ok(port, &["get", "t", "--print-value-only"]), "yes\n");

    let status = ok(port, &["endpoint", "status", "-w", "json"]);
    assert!(status.contains(r#""version":"3.5.13""#), "{status}");
    assert!(ok(port, &["member", "list"]).contains("default"));

    // History, then compaction.
    assert_eq!(
        ok(port, &["get", "foo", "--rev", "2", "--print-value-only"]),
        "bar\n"
    );
    assert_eq!(ok(port, &["compaction", "3"]), "compacted revision 3\n");
    fails_with(
        port,
        &["get", "foo", "--rev", "2"],
        "etcdserver: mvcc: required revision has been compacted",
    );
    fails_with(
        port,
        &["get", "foo", "--rev", "1000"],
        "etcdserver: mvcc: required revision is a future revision",
    );
    fails_with(port, &["put", "", "x"], "etcdserver: key is not provided");
    assert_eq!(
        ok(port, &["get", "foo", "--print-value-only"]),
        "baz\n",
        "still serving"
    );

    assert!(server.stop().success(), "SIGTERM exits 0");
}

#[test]
fn writes_survive_a_restart_and_kill_9() {
    survive_kill_9(&[]);
}

#[test]
fn writes_survive_kill_9_after_the_log_was_compacted() {
    // A snapshot every 5 entries: the restart starts from a compacted log.
    survive_kill_9(&["--snapshot-count", "5"]);
}

fn survive_kill_9(flags: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, flags);
    let rt = runtime();
    let url = format!("http://127.0.0.1:{port}");
    let put = |key: &str| {
        rt.block_on(async {
            let mut kv = KvClient::connect(url.clone()).await.expect("connect");
            kv.put(pb::PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .expect("put acknowledged")
            .into_inner()
        })
    };
    for i in 0..20 {
        put(&format!("k{i:02}"));
    }
    // kill -9: no flush, no goodbye. Every acknowledged write must be there.
    drop(server);
    let server = start(dir.path(), port, flags);
    let count = rt.block_on(async {
        let mut kv = KvClient::connect(url.clone()).await.expect("connect");
        kv.range(pb::RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner()
        .count
    });
    assert_eq!(count, 20, "every acknowledged write survived kill -9");
    assert!(server.stop().success());
}

#[test]
fn a_retried_write_with_the_same_request_id_is_applied_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);
    let rt = runtime();
    rt.block_on(async {
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let put = |sequence: u64| {
            let mut request = tonic::Request::new(pb::PutRequest {
                key: b"counter".to_vec(),
                value: format!("attempt {sequence}").into_bytes(),
                prev_kv: true,
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("raftkv-client-id", "4242".parse().expect("ascii"));
            request
                .metadata_mut()
                .insert("raftkv-sequence", "7".parse().expect("ascii"));
            request
        };
        let first = kv.put(put(1)).await.expect("first").into_inner();
        // The client lost the answer and retries the same request.
        let retry = kv.put(put(2)).await.expect("retry").into_inner();
        assert_eq!(
            first.header.as_ref().map(|h| h.revision),
            retry.header.as_ref().map(|h| h.revision),
            "the retry returns the first outcome"
        );
        let got = kv
            .range(pb::RangeRequest {
                key: b"counter".to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(got.kvs[0].version, 1, "applied once, not twice");
        assert_eq!(got.kvs[0].value, b"attempt 1");
    });
    assert!(server.stop().success());
}

#[test]
fn bad_requests_get_etcds_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(
        dir.path(),
        port,
        &["--max-request-bytes", "1024", "--max-txn-ops", "4"],
    );
    let rt = runtime();
    rt.block_on(async {
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let err = kv
            .put(pb::PutRequest {
                key: b"big".to_vec(),
                value: vec![b'x'; 2048],
                ..Default::default()
            })
            .await
            .expect_err("too large");
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, "etcdserver: request is too large")
        );

        let put = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        };
        let err = kv
            .txn(pb::TxnRequest {
                success: vec![put.clone(); 5],
                ..Default::default()
            })
            .await
            .expect_err("too many ops");
        assert_eq!(
            err.message(),
            "etcdserver: too many operations in txn request"
        );

        let err = kv
            .txn(pb::TxnRequest {
                success: vec![put.clone(), put],
                ..Default::default()
            })
            .await
            .expect_err("duplicate key");
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            )
        );

        let err = kv
            .put(pb::PutRequest {
                key: b"k".to_vec(),
                lease: 99,
                ..Default::default()
            })
            .await
            .expect_err("unknown lease");
        assert_eq!(
            (err.code(), err.message()),
            (Code::NotFound, "etcdserver: requested lease not found")
        );

        let err = kv
            .range(pb::RangeRequest {
                key: b"k".to_vec(),
                sort_order: 9,
                ..Default::default()
            })
            .await
            .expect_err("bad sort");
        assert_eq!(err.message(), "etcdserver: invalid sort option");

        let ok = kv
            .put(pb::PutRequest {
                key: b"k".to_vec(),
                value: b"fine".to_vec(),
                ..Default::default()
            })
            .await;
        assert!(ok.is_ok(), "still serving after bad input");
    });
    assert!(server.stop().success());
}

#[test]
fn etcdctl_adds_updates_promotes_and_removes_members_like_etcd() {
    if !etcdctl_available("etcdctl_adds_updates_promotes_and_removes_members_like_etcd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);
    let learner_peer = format!("http://127.0.0.1:{}", free_port());
    let added = ok(
        port,
        &[
            "member",
            "add",
            "learner",
            &format!("--peer-urls={learner_peer}"),
            "--learner",
        ],
    );
    let first = added.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("Member ") && first.contains(" added to cluster "),
        "{added}"
    );
    let id = first
        .split_whitespace()
        .nth(1)
        .expect("member id")
        .to_string();
    // Members come in id order, as etcd lists them.
    let founder = format!("default=http://127.0.0.1:{}", port + 1);
    let newcomer = format!("learner={learner_peer}");
    assert!(
        added.contains(&format!("ETCD_INITIAL_CLUSTER=\"{founder},{newcomer}\""))
            || added.contains(&format!("ETCD_INITIAL_CLUSTER=\"{newcomer},{founder}\"")),
        "{added}"
    );
    assert!(
        added.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{added}"
    );

    // Listed as an unstarted learner until it runs.
    let listed = ok(port, &["member", "list"]);
    assert!(
        listed.contains(&format!("{id}, unstarted, , {learner_peer}, , true")),
        "{listed}"
    );
    fails_with(
        port,
        &[
            "member",
            "add",
            "again",
            &format!("--peer-urls={learner_peer}"),
        ],
        "etcdserver: Peer URLs already exists",
    );
    // etcdctl checks URLs itself; other clients meet the server's check.
    let refused = common::runtime().block_on(async {
        let mut client = raftkv_proto::etcdserverpb::cluster_client::ClusterClient::connect(
            format!("http://127.0.0.1:{port}"),
        )
        .await
        .expect("connect");
        client
            .member_add(raftkv_proto::etcdserverpb::MemberAddRequest {
                peer_ur_ls: vec!["127.0.0.1:1".into()],
                is_learner: true,
            })
            .await
            .expect_err("a URL without a scheme")
    });
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "etcdserver: given member URLs are invalid"
    );
    // It never started, so it is not in sync with the leader.
    fails_with(
        port,
        &["member", "promote", &id],
        "etcdserver: can only promote a learner member which is in sync with leader",
    );
    let moved = format!("http://127.0.0.1:{}", free_port());
    let updated = ok(
        port,
        &["member", "update", &id, &format!("--peer-urls={moved}")],
    );
    assert!(
        updated.starts_with(&format!("Member {id:>16} updated in cluster ")),
        "{updated}"
    );
    assert!(ok(port, &["member", "list"]).contains(&moved));
    let removed = ok(port, &["member", "remove", &id]);
    assert!(
        removed.starts_with(&format!("Member {id:>16} removed from cluster ")),
        "{removed}"
    );
    fails_with(
        port,
        &["member", "remove", &id],
        "etcdserver: member not found",
    );
    assert_eq!(ok(port, &["member", "list"]).lines().count(), 1);
    // The one voter is not a learner.
    let listed = ok(port, &["member", "list"]);
    let own_id = listed
        .split(',')
        .next()
        .expect("the member's id")
        .to_string();
    assert!(listed.contains(", started, default, "), "{listed}");
    fails_with(
        port,
        &["member", "promote", &own_id],
        "etcdserver: can only promote a learner member",
    );
    assert!(server.stop().success());
}

#[test]
fn a_data_dir_of_another_member_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);
    assert!(server.stop().success());
    // Same data, different identity (another name makes another member).
    let url = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", port + 1);
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args([
            "--data-dir",
            &dir.path().display().to_string(),
            "--name",
            "other",
        ])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args([
            "--initial-cluster",
            &format!("other={peer}"),
            "--initial-cluster-token",
            "another",
        ])
        .output()
        .expect("raftkv runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("belongs to another member"), "{stderr}");
}

#[test]
fn etcdctl_watch_prints_history_and_compaction_like_etcd() {
    if !etcdctl_available("etcdctl_watch_prints_history_and_compaction_like_etcd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), free_port(), &[]);
    let port = server.port;
    ok(port, &["put", "w", "1"]);
    ok(port, &["put", "w", "2"]);
    ok(port, &["del", "w"]);
    // A watch from revision 2 prints the history, then is stopped by the
    // command timeout (etcdctl watch never ends by itself).
    let out = Command::new("timeout")
        .args([
            "2",
            "etcdctl",
            &format!("--endpoints=127.0.0.1:{port}"),
            "watch",
            "w",
            "--rev=2",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl watch runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "PUT\nw\n1\nPUT\nw\n2\nDELETE\nw\n\n"
    );
    ok(port, &["compaction", "3"]);
    let out = Command::new("timeout")
        .args([
            "5",
            "etcdctl",
            &format!("--endpoints=127.0.0.1:{port}"),
            "watch",
            "w",
            "--rev=1",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl watch runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("etcdserver: mvcc: required revision has been compacted"),
        "{all}"
    );
    assert!(server.stop().success());
}

#[test]
fn etcdctl_leases_expire_keep_alive_and_revoke_like_etcd() {
    if !etcdctl_available("etcdctl_leases_expire_keep_alive_and_revoke_like_etcd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), free_port(), &[]);
    let port = server.port;
    let lease_of = |out: String| -> String {
        // "lease 694d77aa9e38260f granted with TTL(2s)"
        out.split_whitespace().nth(1).expect("lease id").to_string()
    };

    // Expiry: the key goes with the lease.
    let short = lease_of(ok(port, &["lease", "grant", "2"]));
    ok(port, &["put", "temp", "v", "--lease", &short]);
    let ttl = ok(port, &["lease", "timetolive", &short, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(2s)") && ttl.contains("attached keys([temp])"),
        "{ttl}"
    );
    assert!(ok(port, &["lease", "list"]).contains(&short));
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert_eq!(
        ok(port, &["get", "temp"]),
        "",
        "the key expired with its lease"
    );
    assert!(ok(port, &["lease", "timetolive", &short]).contains("already expired"));

    // Keep-alive holds a lease past its TTL.
    let kept = lease_of(ok(port, &["lease", "grant", "2"]));
    ok(port, &["put", "kept", "v", "--lease", &kept]);
    let mut keep_alive = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints=127.0.0.1:{port}"),
            "lease",
            "keep-alive",
            &kept,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keep-alive runs");
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert_eq!(
        ok(port, &["get", "kept", "--print-value-only"]),
        "v\n",
        "kept alive"
    );
    let _ = keep_alive.kill();
    let _ = keep_alive.wait();

    // Revoke deletes at once; unknown leases get etcd's error.
    assert!(ok(port, &["lease", "revoke", &kept]).contains("revoked"));
    assert_eq!(ok(port, &["get", "kept"]), "");
    fails_with(
        port,
        &["lease", "revoke", "1234"],
        "etcdserver: requested lease not found",
    );
    fails_with(
        port,
        &["put", "x", "v", "--lease", "1234"],
        "etcdserver: requested lease not found",
    );
    assert!(server.stop().success());
}
