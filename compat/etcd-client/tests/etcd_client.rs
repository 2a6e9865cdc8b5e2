//! The `etcd-client` crate, an independent Rust client of etcd's v3 API,
//! against a real `raftkv` process on a free loopback port: KV, txn, watch
//! from a past revision, leases (grant, keep-alive, expiry), member list and
//! maintenance.
//!
//! The server binary is the workspace's release build: `$RAFTKV_BIN` if set,
//! else `target/release/raftkv` under `$CARGO_TARGET_DIR` or the repository.
//! `scripts/test.sh` builds it (through the workspace tests) before running
//! these; run alone, build it first with
//! `cargo build --release -p raftkv-server --bin raftkv`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, Compare, CompareOp, EventType, GetOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

fn raftkv_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RAFTKV_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("release/raftkv");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --release -p raftkv-server --bin raftkv` \
         (scripts/test.sh does), or point RAFTKV_BIN at a raftkv binary",
        path.display()
    );
    path
}

/// A `raftkv` process this test started; killed by its PID when dropped.
struct Server {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port whose successor is free too (for the peer URL).
fn free_port() -> u16 {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local addr").port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no free pair of ports");
}

/// Starts a one-member raftkv with short Raft timers (so the shortest lease
/// is one second) and waits until it answers a linearizable read.
async fn start() -> (Server, Client) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let client_url = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{}", port + 1);
    let log = std::fs::File::create(dir.path().join("raftkv.log")).expect("log file");
    let child = Command::new(raftkv_binary())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--name", "compat"])
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("raftkv starts");
    let server = Server {
        child,
        endpoint: format!("127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut client) = Client::connect([server.endpoint.as_str()], None).await {
            if client.get("ready?", None).await.is_ok() {
                return (server, client);
            }
        }
        assert!(
            Instant::now() < deadline,
            "raftkv at {} not ready within 20 s",
            server.endpoint
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kv_put_get_delete() {
    let (_server, mut client) = start().await;
    let put = client.put("greeting", "hello", None).await.expect("put");
    let first = put.header().expect("header").revision();
    assert_eq!(first, 2, "an empty store is at revision 1");
    let put = client
        .put("greeting", "world", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put with prev_kv");
    assert_eq!(put.prev_key().expect("prev kv").value(), b"hello");

    let got = client.get("greeting", None).await.expect("get");
    let kv = &got.kvs()[0];
    assert_eq!(kv.value_str().expect("utf-8"), "world");
    assert_eq!(kv.create_revision(), first);
    assert_eq!(kv.mod_revision(), first + 1);
    assert_eq!(kv.version(), 2);

    for key in ["p/a", "p/b", "p/c", "q"] {
        client.put(key, "v", None).await.expect("put");
    }
    let prefix = client
        .get("p/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("prefix get");
    assert_eq!(prefix.count(), 3);
    let past = client
        .get("greeting", Some(GetOptions::new().with_revision(first)))
        .await
        .expect("get at a past revision");
    assert_eq!(past.kvs()[0].value(), b"hello");

    let deleted = client
        .delete("p/", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .expect("delete");
    assert_eq!(deleted.deleted(), 3);
    assert!(client.get("p/a", None).await.expect("get").kvs().is_empty());
    assert_eq!(client.get("q", None).await.expect("get").count(), 1);
}

#[tokio::test]
async fn txn_compares_and_branches() {
    let (_server, mut client) = start().await;
    client.put("balance", "10", None).await.expect("put");
    let txn = Txn::new()
        .when([Compare::value("balance", CompareOp::Equal, "10")])
        .and_then([
            TxnOp::put("balance", "5", None),
            TxnOp::put("spent", "5", None),
        ])
        .or_else([TxnOp::get("balance", None)]);
    let resp = client.txn(txn).await.expect("txn");
    assert!(resp.succeeded());
    assert_eq!(resp.op_responses().len(), 2);

    let txn = Txn::new()
        .when([Compare::value("balance", CompareOp::Equal, "10")])
        .and_then([TxnOp::put("balance", "0", None)])
        .or_else([TxnOp::get("balance", None)]);
    let resp = client.txn(txn).await.expect("txn");
    assert!(!resp.succeeded());
    match &resp.op_responses()[0] {
        TxnOpResponse::Get(get) => assert_eq!(get.kvs()[0].value(), b"5"),
        other => panic!("expected a get response, got {other:?}"),
    }
    let spent = client.get("spent", None).await.expect("get");
    assert_eq!(
        spent.kvs()[0].mod_revision(),
        client.get("balance", None).await.expect("get").kvs()[0].mod_revision(),
        "one revision for the whole txn"
    );
}

#[tokio::test]
async fn watch_from_a_past_revision_replays_history_then_streams() {
    let (_server, mut client) = start().await;
    let start_revision = client
        .put("w/1", "a", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();
    client.put("w/2", "b", None).await.expect("put");
    client.delete("w/1", None).await.expect("delete");
    client.put("other", "x", None).await.expect("put");

    let mut stream = client
        .watch(
            "w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(start_revision)
                    .with_prev_key(),
            ),
        )
        .await
        .expect("watch");
    let mut seen: Vec<(EventType, String, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut live_written = false;
    while seen.len() < 4 {
        assert!(Instant::now() < deadline, "events seen so far: {seen:?}");
        let Ok(message) = tokio::time::timeout(Duration::from_secs(5), stream.message()).await
        else {
            panic!("no watch message within 5 s; seen {seen:?}");
        };
        let resp = message.expect("watch message").expect("stream open");
        for event in resp.events() {
            let kv = event.kv().expect("kv");
            seen.push((
                event.event_type(),
                kv.key_str().expect("utf-8").to_string(),
                kv.mod_revision(),
            ));
            if event.event_type() == EventType::Delete {
                assert_eq!(event.prev_kv().expect("prev kv").value(), b"a");
            }
        }
        if seen.len() == 3 && !live_written {
            client.put("w/3", "c", None).await.expect("live put");
            live_written = true;
        }
    }
    assert_eq!(
        seen,
        vec![
            (EventType::Put, "w/1".to_string(), start_revision),
            (EventType::Put, "w/2".to_string(), start_revision + 1),
            (EventType::Delete, "w/1".to_string(), start_revision + 2),
            (EventType::Put, "w/3".to_string(), start_revision + 4),
        ]
    );
}

#[tokio::test]
async fn lease_keep_alive_holds_a_key_and_expiry_removes_it() {
    let (_server, mut client) = start().await;
    let lease = client.lease_grant(2, None).await.expect("grant");
    assert_eq!(lease.ttl(), 2);
    let id = lease.id();
    client
        .put("session", "alive", Some(PutOptions::new().with_lease(id)))
        .await
        .expect("put with lease");

    // Kept alive for twice its TTL: the key stays.
    let (mut keeper, mut responses) = client.lease_keep_alive(id).await.expect("keep-alive");
    for _ in 0..8 {
        keeper.keep_alive().await.expect("send keep-alive");
        let resp = tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("keep-alive answered in time")
            .expect("keep-alive response")
            .expect("stream open");
        assert_eq!(resp.id(), id);
        assert_eq!(resp.ttl(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(client.get("session", None).await.expect("get").count(), 1);
    let ttl = client
        .lease_time_to_live(
            id,
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .expect("time to live");
    assert!(ttl.ttl() > 0);
    assert_eq!(ttl.keys(), [b"session".to_vec()]);
    drop(keeper);
    drop(responses);

    // No more keep-alives: the lease expires and takes the key with it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.get("session", None).await.expect("get").count() != 0 {
        assert!(
            Instant::now() < deadline,
            "key of an expired lease still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ttl = client
        .lease_time_to_live(id, None)
        .await
        .expect("time to live");
    assert_eq!(ttl.ttl(), -1, "an expired lease is unknown");
}

#[tokio::test]
async fn member_list_names_this_member_and_its_urls() {
    let (server, mut client) = start().await;
    let list = client.member_list().await.expect("member list");
    assert_eq!(list.members().len(), 1);
    let member = &list.members()[0];
    assert_eq!(member.name(), "compat");
    assert_eq!(
        member.client_urls(),
        [format!("http://{}", server.endpoint)]
    );
    assert_eq!(list.header().expect("header").member_id(), member.id());
}

#[tokio::test]
async fn maintenance_status_alarms_defragment_hash_and_snapshot() {
    let (_server, mut client) = start().await;
    client.put("m", "v", None).await.expect("put");
    let status = client.status().await.expect("status");
    assert!(status.db_size() > 0);
    assert_eq!(
        status.leader(),
        status.header().expect("header").member_id()
    );
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None::<AlarmOptions>)
        .await
        .expect("alarm list");
    assert!(alarms.alarms().is_empty());
    client.defragment().await.expect("defragment");
    let first = client.hash().await.expect("hash").hash();
    assert_eq!(client.hash().await.expect("hash").hash(), first);
    client.put("m", "w", None).await.expect("put");
    assert_ne!(client.hash().await.expect("hash").hash(), first);

    let mut stream = client.snapshot().await.expect("snapshot");
    let mut last = None;
    let mut bytes = 0usize;
    while let Some(message) = stream.message().await.expect("snapshot message") {
        bytes += message.blob().len();
        last = Some(message);
    }
    let last = last.expect("at least one message");
    assert_eq!(last.blob().len(), 32, "SHA-256 trailer");
    assert_eq!(last.remaining_bytes(), 0);
    assert_eq!((bytes - 32) % 512, 0, "image padded as etcd's files are");
}
