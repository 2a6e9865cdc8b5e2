//! The generated servers and clients talk over real HTTP/2 on loopback, under etcd's
//! service names and method paths; and, where Debian's etcdctl 3.4 is installed, a real
//! etcd client reads through the generated KV server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::kv_server::{Kv, KvServer};
use raftkv_proto::etcdserverpb::{
    auth_server, cluster_server, lease_server, maintenance_server, watch_server, CompactionRequest,
    CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RangeStreamResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use raftkv_proto::mvccpb::KeyValue;
use raftkv_proto::{v3electionpb, v3lockpb};
use tonic::server::NamedService;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};

/// The one key-value pair the test server knows.
fn fixed_kv() -> KeyValue {
    KeyValue {
        key: b"foo".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 2,
        value: b"bar".to_vec(),
        lease: 0,
    }
}

/// A KV service whose Range answers [`fixed_kv`] to any request and records the requests;
/// every other method is unimplemented.
#[derive(Default)]
struct FixedKv {
    seen: Arc<Mutex<Vec<RangeRequest>>>,
}

#[tonic::async_trait]
impl Kv for FixedKv {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        self.seen.lock().unwrap().push(req.into_inner());
        Ok(Response::new(RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 4,
            }),
            kvs: vec![fixed_kv()],
            more: false,
            count: 1,
        }))
    }

    type RangeStreamStream = tokio_stream::Empty<Result<RangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _: Request<RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented("range_stream"))
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Err(Status::unimplemented("put"))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("delete_range"))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("txn"))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("compact"))
    }
}

/// Serves `kv` on 127.0.0.1, port chosen by the OS, until the test's runtime ends.
async fn serve(kv: FixedKv) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        Server::builder()
            .add_service(KvServer::new(kv))
            .serve_with_incoming(incoming),
    );
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// Calls `path` with the generic gRPC client, so the test, not the generated client, names
/// the method.
async fn call_path(
    channel: Channel,
    path: &'static str,
    req: RangeRequest,
) -> Result<RangeResponse, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<RangeRequest, RangeResponse>::default();
    grpc.unary(
        Request::new(req),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_kv_client_reads_from_generated_kv_server() {
    let kv = FixedKv::default();
    let seen = Arc::clone(&kv.seen);
    let addr = serve(kv).await;
    let mut client = KvClient::new(channel(addr).await);

    let resp = client
        .range(RangeRequest {
            key: b"foo".to_vec(),
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("Range succeeds")
        .into_inner();
    assert_eq!(resp.kvs, vec![fixed_kv()]);
    assert_eq!(resp.header.unwrap().raft_term, 4);
    assert_eq!(resp.count, 1);

    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key, b"foo");
    assert!(got[0].serializable);

    let err = client
        .put(PutRequest::default())
        .await
        .expect_err("Put is not implemented by the test server");
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_range_is_served_at_etcds_method_path() {
    let addr = serve(FixedKv::default()).await;
    let ch = channel(addr).await;

    let resp = call_path(
        ch.clone(),
        "/etcdserverpb.KV/Range",
        RangeRequest::default(),
    )
    .await
    .expect("/etcdserverpb.KV/Range is routed");
    assert_eq!(resp.kvs, vec![fixed_kv()]);

    // gRPC paths are case-sensitive: prost's Rust name `Kv` must not leak into the path.
    for wrong in [
        "/etcdserverpb.Kv/Range",
        "/etcdserverpb.KV/range",
        "/KV/Range",
    ] {
        let err = call_path(ch.clone(), wrong, RangeRequest::default())
            .await
            .expect_err(wrong);
        assert_eq!(err.code(), Code::Unimplemented, "{wrong}");
    }
}

#[test]
fn every_server_has_etcds_service_name() {
    // `NamedService::NAME` is what tonic's router matches the path prefix against.
    let names = [
        <KvServer<()> as NamedService>::NAME,
        <watch_server::WatchServer<()> as NamedService>::NAME,
        <lease_server::LeaseServer<()> as NamedService>::NAME,
        <cluster_server::ClusterServer<()> as NamedService>::NAME,
        <maintenance_server::MaintenanceServer<()> as NamedService>::NAME,
        <auth_server::AuthServer<()> as NamedService>::NAME,
        <v3lockpb::lock_server::LockServer<()> as NamedService>::NAME,
        <v3electionpb::election_server::ElectionServer<()> as NamedService>::NAME,
    ];
    assert_eq!(
        names,
        [
            "etcdserverpb.KV",
            "etcdserverpb.Watch",
            "etcdserverpb.Lease",
            "etcdserverpb.Cluster",
            "etcdserverpb.Maintenance",
            "etcdserverpb.Auth",
            "v3lockpb.Lock",
            "v3electionpb.Election",
        ]
    );
}

/// Whether `etcdctl` can be run; Debian's package `etcd-client` provides it.
fn etcdctl_available() -> bool {
    std::process::Command::new("etcdctl")
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_get_reads_through_generated_kv_server() {
    if !etcdctl_available() {
        assert!(
            std::env::var_os("RAFTKV_REQUIRE_ETCDCTL").is_none(),
            "etcdctl is required here (RAFTKV_REQUIRE_ETCDCTL is set) but not on PATH"
        );
        eprintln!(
            "SKIPPED etcdctl_get_reads_through_generated_kv_server: etcdctl not on PATH \
             (apt-get install etcd-client)"
        );
        return;
    }
    let kv = FixedKv::default();
    let seen = Arc::clone(&kv.seen);
    let addr = serve(kv).await;

    let mut cmd = tokio::process::Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={addr}"))
        .args(["--dial-timeout=5s", "--command-timeout=10s"])
        .args(["get", "foo", "-w", "json"])
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("etcdctl finishes within 30s")
        .expect("etcdctl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "etcdctl failed: {stderr}\nstdout: {stdout}"
    );
    // JSON output carries bytes as base64: "foo" = Zm9v, "bar" = YmFy.
    assert!(stdout.contains(r#""key":"Zm9v""#), "stdout: {stdout}");
    assert!(stdout.contains(r#""value":"YmFy""#), "stdout: {stdout}");
    assert!(stdout.contains(r#""raft_term":4"#), "stdout: {stdout}");

    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "etcdctl get sends exactly one Range");
    assert_eq!(got[0].key, b"foo");
    assert!(got[0].range_end.is_empty());
    assert!(
        !got[0].serializable,
        "etcdctl reads are linearizable by default"
    );
}
