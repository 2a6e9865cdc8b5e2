//! `--auto-compaction-mode` on a real `raftkv` process: history older than
//! the retention is compacted without anyone asking.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, runtime, start};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;

async fn put(port: u16, key: &str, value: &str) -> i64 {
    let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    kv.put(pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .map_or(0, |h| h.revision)
}

async fn compacted_revision(port: u16) -> Option<i64> {
    let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    // Reading at revision 1 fails once anything was compacted; etcd's Status
    // does not report the compaction point, so probe with reads.
    match kv
        .range(pb::RangeRequest {
            key: b"k".to_vec(),
            revision: 1,
            ..Default::default()
        })
        .await
    {
        Ok(_) => None,
        Err(status) => {
            assert_eq!(
                status.message(),
                "etcdserver: mvcc: required revision has been compacted"
            );
            Some(1)
        }
    }
}

fn wait_for_compaction(port: u16, within: Duration) -> bool {
    let rt = runtime();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if rt.block_on(compacted_revision(port)).is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn periodic_mode_compacts_history_older_than_the_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(
        dir.path(),
        port,
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1s",
        ],
    );
    let rt = runtime();
    let first = rt.block_on(put(port, "k", "1"));
    rt.block_on(put(port, "k", "2"));
    assert!(first >= 2);
    assert!(
        wait_for_compaction(port, Duration::from_secs(10)),
        "history older than a second was compacted"
    );
    // The latest value stays readable, and the server keeps serving.
    rt.block_on(async {
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let got = kv
            .range(pb::RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(got.kvs[0].value, b"2");
        let mut maintenance = MaintenanceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        maintenance
            .status(pb::StatusRequest {})
            .await
            .expect("status");
    });
    assert!(server.stop().success());
}

#[test]
fn without_the_flag_history_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);
    let rt = runtime();
    rt.block_on(put(port, "k", "1"));
    rt.block_on(put(port, "k", "2"));
    assert!(
        !wait_for_compaction(port, Duration::from_secs(2)),
        "nothing compacts history unasked"
    );
    assert!(server.stop().success());
}
