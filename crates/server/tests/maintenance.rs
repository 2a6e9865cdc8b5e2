//! The Maintenance service on real `raftkv` processes: Defragment, Hash
//! across a three-member cluster, Snapshot (chunks, countdown, SHA-256
//! trailer) with a restore into a new cluster, the NOSPACE alarm with a small
//! backend quota, and the same through the real etcdctl (Debian package
//! etcd-client; skipped where missing unless `RAFTKV_REQUIRE_ETCDCTL` is set).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{etcdctl_available, free_port, runtime, start, start_cluster};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::alarm_request::AlarmAction;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_server::snapshot_file::{self, RestoreOptions, SnapshotFileError};
use tonic::transport::Channel;
use tonic::Code;

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

async fn kv(port: u16) -> KvClient<Channel> {
    KvClient::connect(url(port)).await.expect("connect")
}

async fn maintenance(port: u16) -> MaintenanceClient<Channel> {
    MaintenanceClient::connect(url(port))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
}

async fn status(port: u16) -> pb::StatusResponse {
    maintenance(port)
        .await
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

fn put_op(key: &str, value: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

/// Writes `batches` txns of 100 puts of `value_bytes` each, keys
/// `{prefix}{batch:03}-{i:03}`.
async fn fill(port: u16, prefix: &str, batches: usize, value_bytes: usize) {
    let mut client = kv(port).await;
    let value = vec![b'v'; value_bytes];
    for batch in 0..batches {
        let ops = (0..100)
            .map(|i| put_op(&format!("{prefix}{batch:03}-{i:03}"), &value))
            .collect();
        client
            .txn(pb::TxnRequest {
                success: ops,
                ..Default::default()
            })
            .await
            .expect("txn of puts");
    }
}

async fn count(port: u16, prefix: &str) -> i64 {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    kv(port)
        .await
        .range(pb::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner()
        .count
}

async fn delete_prefix(port: u16, prefix: &str) -> i64 {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    kv(port)
        .await
        .delete_range(pb::DeleteRangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner()
        .deleted
}

async fn compact_all(port: u16) {
    let revision = status(port).await.header.expect("header").revision;
    kv(port)
        .await
        .compact(pb::CompactionRequest {
            revision,
            physical: true,
        })
        .await
        .expect("compact");
}

#[test]
fn defragment_shrinks_the_file_and_keeps_the_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), free_port(), &[]);
    let port = server.port;
    runtime().block_on(async {
        fill(port, "big/", 40, 4096).await;
        fill(port, "keep/", 1, 100).await;
        assert_eq!(delete_prefix(port, "big/").await, 4000);
        compact_all(port).await;
        let before = status(port).await;
        let hash = maintenance(port)
            .await
            .hash(pb::HashRequest {})
            .await
            .expect("hash")
            .into_inner();

        let resp = maintenance(port)
            .await
            .defragment(pb::DefragmentRequest {})
            .await
            .expect("defragment")
            .into_inner();
        let header = resp.header.expect("header");
        assert_eq!(header.member_id, before.header.expect("header").member_id);
        assert!(header.revision > 1);

        let after = status(port).await;
        assert!(
            after.db_size * 4 < before.db_size,
            "dbSize {} -> {}",
            before.db_size,
            after.db_size
        );
        let rehash = maintenance(port)
            .await
            .hash(pb::HashRequest {})
            .await
            .expect("hash")
            .into_inner();
        assert_eq!(rehash.hash, hash.hash, "same content after defragment");
        assert_eq!(count(port, "keep/").await, 100);
        assert_eq!(count(port, "big/").await, 0);
        let put = kv(port)
            .await
            .put(pb::PutRequest {
                key: b"after".to_vec(),
                value: b"defrag".to_vec(),
                ..Default::default()
            })
            .await
            .expect("put after defragment")
            .into_inner();
        assert_eq!(
            put.header.expect("header").revision,
            header.revision + 1,
            "writes go on at the next revision"
        );
    });
    assert!(server.stop().success());
}

#[test]
fn hash_is_equal_across_members_and_changes_with_a_write() {
    let base = tempfile::tempdir().expect("tempdir");
    let members = start_cluster(base.path(), 3);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    let rt = runtime();
    rt.block_on(async {
        fill(ports[0], "h/", 3, 50).await;
        let mut lease = LeaseClient::connect(url(ports[1])).await.expect("connect");
        lease
            .lease_grant(pb::LeaseGrantRequest { ttl: 600, id: 99 })
            .await
            .expect("grant");
        kv(ports[2])
            .await
            .delete_range(pb::DeleteRangeRequest {
                key: b"h/000-000".to_vec(),
                ..Default::default()
            })
            .await
            .expect("delete");
        let hashes = |ports: Vec<u16>| async move {
            let mut out = Vec::new();
            for port in ports {
                let resp = maintenance(port)
                    .await
                    .hash(pb::HashRequest {})
                    .await
                    .expect("hash")
                    .into_inner();
                let header = resp.header.expect("header");
                out.push((resp.hash, header.revision, header.member_id));
            }
            out
        };
        // Followers apply a moment after the leader: wait until all members
        // report the same revision, then compare.
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            let all = hashes(ports.clone()).await;
            if all.iter().all(|h| h.1 == all[0].1) {
                break all;
            }
            assert!(
                Instant::now() < deadline,
                "members did not converge: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            first.iter().all(|h| h.0 == first[0].0),
            "equal hashes at equal revisions: {first:?}"
        );
        let mut ids: Vec<u64> = first.iter().map(|h| h.2).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3, "each member answered for itself");

        kv(ports[0])
            .await
            .put(pb::PutRequest {
                key: b"h/one-more".to_vec(),
                value: b"x".to_vec(),
                ..Default::default()
            })
            .await
            .expect("put");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = hashes(ports.clone()).await;
            if all.iter().all(|h| h.1 == first[0].1 + 1) {
                assert!(all.iter().all(|h| h.0 == all[0].0), "{all:?}");
                assert_ne!(all[0].0, first[0].0, "a write changes the hash");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "members did not converge: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for member in members {
        if let Some(server) = member.server {
            assert!(server.stop().success());
        }
    }
}

#[test]
fn snapshot_streams_chunks_with_a_sha256_trailer_and_restores_into_a_new_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&dir.path().join("old"), free_port(), &[]);
    let port = server.port;
    let rt = runtime();
    let (revision, messages) = rt.block_on(async {
        fill(port, "s/", 3, 1000).await;
        kv(port)
            .await
            .delete_range(pb::DeleteRangeRequest {
                key: b"s/000-".to_vec(),
                range_end: b"s/000-050".to_vec(),
                ..Default::default()
            })
            .await
            .expect("delete");
        let revision = status(port).await.header.expect("header").revision;
        let mut stream = maintenance(port)
            .await
            .snapshot(pb::SnapshotRequest {})
            .await
            .expect("snapshot")
            .into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.message().await.expect("snapshot message") {
            messages.push(message);
        }
        (revision, messages)
    });
    assert!(server.stop().success());

    // 32 KiB chunks, remaining_bytes counting the image down to 0, then the
    // 32-byte SHA-256 of everything before it.
    assert!(messages.len() > 3, "{} messages", messages.len());
    let (trailer, chunks) = messages.split_last().expect("messages");
    assert_eq!(trailer.blob.len(), 32);
    assert_eq!(trailer.remaining_bytes, 0);
    let total: u64 = chunks.iter().map(|m| m.blob.len() as u64).sum();
    let mut sent = 0u64;
    for (i, chunk) in chunks.iter().enumerate() {
        assert!(chunk.blob.len() <= 32 * 1024);
        if i + 1 < chunks.len() {
            assert_eq!(chunk.blob.len(), 32 * 1024, "full chunks until the last");
        }
        sent += chunk.blob.len() as u64;
        assert_eq!(chunk.remaining_bytes, total - sent);
        assert_eq!(chunk.header.expect("header").revision, revision);
    }
    let mut file_bytes: Vec<u8> = chunks.iter().flat_map(|m| m.blob.clone()).collect();
    file_bytes.extend_from_slice(&trailer.blob);
    let file = dir.path().join("saved.snap");
    std::fs::write(&file, &file_bytes).expect("save");
    let info = snapshot_file::verify(&file).expect("trailer verifies");
    assert_eq!(info.image_bytes, total);

    // A flipped byte anywhere fails verification, and restore refuses it.
    let damaged = dir.path().join("damaged.snap");
    let mut bad = file_bytes.clone();
    bad[file_bytes.len() / 2] ^= 0x40;
    std::fs::write(&damaged, &bad).expect("write");
    assert!(matches!(
        snapshot_file::verify(&damaged),
        Err(SnapshotFileError::HashMismatch(_))
    ));
    let new_port = free_port();
    let new_dir = dir.path().join("new");
    let options = RestoreOptions {
        name: "restored".into(),
        data_dir: Some(new_dir.clone()),
        initial_advertise_peer_urls: url(new_port + 1),
        initial_cluster_token: "restored-cluster".into(),
        ..RestoreOptions::default()
    };
    assert!(matches!(
        snapshot_file::restore(&damaged, &options),
        Err(SnapshotFileError::HashMismatch(_))
    ));
    assert!(!new_dir.exists());

    let report = snapshot_file::restore(&file, &options).expect("restore");
    assert_eq!(report.revision, revision);
    let server = start(
        &new_dir,
        new_port,
        &[
            "--name",
            "restored",
            "--initial-cluster-token",
            "restored-cluster",
        ],
    );
    rt.block_on(async {
        let st = status(new_port).await;
        let header = st.header.expect("header");
        assert_eq!(header.member_id, report.member_id);
        assert_eq!(header.cluster_id, report.cluster_id);
        assert_eq!(header.revision, revision, "revision kept");
        assert_eq!(count(new_port, "s/").await, 250);
        let got = kv(new_port)
            .await
            .range(pb::RangeRequest {
                key: b"s/002-099".to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(got.kvs[0].value, vec![b'v'; 1000]);
        let put = kv(new_port)
            .await
            .put(pb::PutRequest {
                key: b"new".to_vec(),
                value: b"cluster".to_vec(),
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        assert_eq!(put.header.expect("header").revision, revision + 1);
    });
    assert!(server.stop().success());
}

fn nospace_alarm(member_id: u64) -> pb::AlarmMember {
    pb::AlarmMember {
        member_id,
        alarm: pb::AlarmType::Nospace as i32,
    }
}

async fn alarms(port: u16) -> Vec<pb::AlarmMember> {
    maintenance(port)
        .await
        .alarm(pb::AlarmRequest {
            action: AlarmAction::Get as i32,
            member_id: 0,
            alarm: pb::AlarmType::None as i32,
        })
        .await
        .expect("alarm list")
        .into_inner()
        .alarms
}

/// Puts 64 KiB values until one is refused (bounded); returns how many were
/// acknowledged and the error.
async fn put_until_refused(port: u16) -> (i64, tonic::Status) {
    let mut client = kv(port).await;
    let value = vec![b'q'; 64 * 1024];
    for i in 0..1000i64 {
        let result = client
            .put(pb::PutRequest {
                key: format!("fill/{i:04}").into_bytes(),
                value: value.clone(),
                ..Default::default()
            })
            .await;
        if let Err(status) = result {
            return (i, status);
        }
    }
    panic!("1000 puts of 64 KiB fit under a 4 MiB quota");
}

fn assert_no_space(status: &tonic::Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "etcdserver: mvcc: database space exceeded"
    );
}

#[test]
fn nospace_refuses_growth_until_compacted_defragmented_and_disarmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        free_port(),
        &["--quota-backend-bytes", "4194304"],
    );
    let port = server.port;
    runtime().block_on(async {
        let member_id = status(port).await.header.expect("header").member_id;
        let (acknowledged, refused) = put_until_refused(port).await;
        assert_no_space(&refused);
        assert!(acknowledged > 0);
        assert_eq!(alarms(port).await, vec![nospace_alarm(member_id)]);
        let st = status(port).await;
        assert_eq!(
            st.errors,
            vec![format!("memberID:{member_id} alarm:NOSPACE ")]
        );
        assert_eq!(st.db_size_quota, 4 << 20);

        // Growth is refused: put, txn with a put, txn with only a delete
        // (refused at apply, as etcd's capped applier does), lease grant.
        let mut client = kv(port).await;
        let small = pb::PutRequest {
            key: b"small".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        };
        assert_no_space(&client.put(small.clone()).await.expect_err("put refused"));
        let txn = pb::TxnRequest {
            success: vec![put_op("t", b"x")],
            ..Default::default()
        };
        assert_no_space(&client.txn(txn).await.expect_err("txn refused"));
        let delete_txn = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestDeleteRange(
                    pb::DeleteRangeRequest {
                        key: b"fill/0000".to_vec(),
                        ..Default::default()
                    },
                )),
            }],
            ..Default::default()
        };
        assert_no_space(&client.txn(delete_txn).await.expect_err("txn refused"));
        let mut lease = LeaseClient::connect(url(port)).await.expect("connect");
        assert_no_space(
            &lease
                .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
                .await
                .expect_err("grant refused"),
        );

        // Reads, deletes and compaction go on.
        assert_eq!(count(port, "fill/").await, acknowledged);
        let read_only = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key: b"fill/0000".to_vec(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        client
            .txn(read_only)
            .await
            .expect("a read-only txn is served");
        assert_eq!(delete_prefix(port, "fill/").await, acknowledged);
        compact_all(port).await;
        maintenance(port)
            .await
            .defragment(pb::DefragmentRequest {})
            .await
            .expect("defragment");
        assert!(status(port).await.db_size < 4 << 20, "back under the quota");

        // The alarm stays until disarmed, as in etcd.
        assert_no_space(&client.put(small.clone()).await.expect_err("still refused"));
        let disarmed = maintenance(port)
            .await
            .alarm(pb::AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id,
                alarm: pb::AlarmType::Nospace as i32,
            })
            .await
            .expect("disarm")
            .into_inner();
        assert_eq!(disarmed.alarms, vec![nospace_alarm(member_id)]);
        assert!(alarms(port).await.is_empty());
        assert!(status(port).await.errors.is_empty());
        client.put(small).await.expect("writes again");

        // ACTIVATE raises one by hand, DEACTIVATE of an absent one changes nothing.
        let raised = maintenance(port)
            .await
            .alarm(pb::AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id,
                alarm: pb::AlarmType::Nospace as i32,
            })
            .await
            .expect("activate")
            .into_inner();
        assert_eq!(raised.alarms, vec![nospace_alarm(member_id)]);
        assert_no_space(
            &client
                .put(pb::PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
                .await
                .expect_err("refused again"),
        );
        let none = maintenance(port)
            .await
            .alarm(pb::AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: member_id ^ 1,
                alarm: pb::AlarmType::Nospace as i32,
            })
            .await
            .expect("deactivate")
            .into_inner();
        assert!(none.alarms.is_empty());
    });
    // The alarm is replicated state: it survives a restart.
    assert!(server.stop().success());
    let server = start(dir.path(), port, &["--quota-backend-bytes", "4194304"]);
    runtime().block_on(async {
        assert_eq!(alarms(server.port).await.len(), 1);
    });
    assert!(server.stop().success());
}

fn etcdctl(port: u16, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{port}"))
        .arg("--command-timeout=20s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("etcdctl runs")
}

/// The output's lines with trailing spaces dropped (etcdctl prints alarms in
/// protobuf's compact text form, which ends in a space).
fn lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim_end().to_string()).collect()
}

fn ok(port: u16, args: &[&str]) -> String {
    let out = etcdctl(port, args);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn etcdctl_defrag_snapshot_save_and_alarms() {
    if !etcdctl_available("etcdctl_defrag_snapshot_save_and_alarms") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        &dir.path().join("data"),
        free_port(),
        &["--quota-backend-bytes", "4194304"],
    );
    let port = server.port;
    for i in 0..20 {
        ok(port, &["put", &format!("k{i:02}"), "value"]);
    }
    assert_eq!(
        ok(port, &["defrag"]),
        format!("Finished defragmenting etcd member[127.0.0.1:{port}]\n")
    );
    assert_eq!(ok(port, &["get", "k07", "--print-value-only"]), "value\n");

    let file = dir.path().join("saved.db");
    let file_arg = file.display().to_string();
    let out = ok(port, &["snapshot", "save", &file_arg]);
    assert!(
        out.contains(&format!("Snapshot saved at {file_arg}")),
        "{out}"
    );
    snapshot_file::verify(&file).expect("etcdctl's file carries a valid trailer");

    let member_id = runtime()
        .block_on(status(port))
        .header
        .expect("header")
        .member_id;
    let (_, refused) = runtime().block_on(put_until_refused(port));
    assert_no_space(&refused);
    let out = etcdctl(port, &["put", "one", "more"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("etcdserver: mvcc: database space exceeded"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nospace = vec![format!("memberID:{member_id} alarm:NOSPACE")];
    assert_eq!(lines(&ok(port, &["alarm", "list"])), nospace);
    ok(port, &["del", "fill/", "--prefix"]);
    let revision = runtime()
        .block_on(status(port))
        .header
        .expect("header")
        .revision;
    ok(port, &["compaction", "--physical", &revision.to_string()]);
    ok(port, &["defrag"]);
    assert_eq!(lines(&ok(port, &["alarm", "disarm"])), nospace);
    assert_eq!(ok(port, &["alarm", "list"]), "");
    assert_eq!(ok(port, &["put", "one", "more"]), "OK\n");
    assert!(server.stop().success());
}

/// etcdctl given its endpoints as URLs, as etcd's docs write them: the calls
/// that dial one member by itself (status, hashkv, defrag) send the URL as
/// the HTTP/2 `:authority`, which the server must take as etcd's does.
#[test]
fn etcdctl_reaches_each_member_by_its_url() {
    if !etcdctl_available("etcdctl_reaches_each_member_by_its_url") {
        return;
    }
    let base = tempfile::tempdir().expect("tempdir");
    let members = start_cluster(base.path(), 3);
    let urls: Vec<String> = members.iter().map(|m| url(m.port)).collect();
    let run = |args: &[&str]| {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", urls.join(",")))
            .arg("--command-timeout=20s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl runs");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(&["put", "k", "v"]), "OK\n");
    for args in [
        &["endpoint", "status"][..],
        &["endpoint", "status", "--cluster"],
    ] {
        let out = run(args);
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort();
        assert_eq!(lines.len(), 3, "{args:?}: {out}");
        let mut sorted_urls = urls.clone();
        sorted_urls.sort();
        for (line, url) in lines.iter().zip(&sorted_urls) {
            assert!(line.starts_with(&format!("{url}, ")), "{args:?}: {line}");
        }
        let leaders = lines
            .iter()
            .filter(|l| l.contains(", true, false, "))
            .count();
        assert_eq!(leaders, 1, "{args:?}: one leader in {out}");
    }
    // Followers apply a moment after the leader: hashes agree once they caught up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(&["endpoint", "hashkv", "--cluster"]);
        let hashes: Vec<&str> = out.lines().filter_map(|l| l.rsplit(", ").next()).collect();
        assert_eq!(hashes.len(), 3, "{out}");
        if hashes.iter().all(|h| *h == hashes[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "hashes differ: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run(&["defrag", "--cluster"]);
    for url in &urls {
        assert!(
            out.contains(&format!("Finished defragmenting etcd member[{url}]")),
            "{out}"
        );
    }
    assert_eq!(run(&["get", "k", "--print-value-only"]), "v\n");
    for member in members {
        if let Some(server) = member.server {
            assert!(server.stop().success());
        }
    }
}
