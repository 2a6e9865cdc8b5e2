//! etcd's JSON gateway: `POST /v3/<service>/<method>` with a JSON request,
//! answered in JSON, as etcd's grpc-gateway does.
//!
//! Each route decodes the body into the protobuf request, calls the same
//! service instance gRPC calls (through its tonic trait method, so the two
//! cannot drift apart), and encodes the answer. The JSON is protobuf's
//! canonical mapping with the `.proto` field names (see `raftkv_proto`).
//!
//! - An empty body is an empty request; only the body's first JSON value is
//!   read. A body that is not JSON of the request's shape answers 400.
//! - Errors answer the HTTP status grpc-gateway maps the gRPC code to, with
//!   `{"error":msg,"code":n,"message":msg}`.
//! - `Grpc-Metadata-<key>` headers (and `Authorization`) become gRPC
//!   metadata, so exactly-once request ids work through the gateway too.
//! - `/v3/watch` and `/v3/lease/keepalive` stream: the body is a sequence of
//!   JSON requests, the answer one `{"result":...}` object per line (an error
//!   ends it with `{"error":{...}}`). A watch stays open after the body ends,
//!   until the client leaves, as etcd's does; a keep-alive stream ends once
//!   its requests are answered.
//! - `/v3beta/...` is an alias of `/v3/...`, as in etcd 3.4 and 3.5.
//! - A body larger than the limit answers 429 (gRPC's ResourceExhausted,
//!   what etcd's gRPC server says to an oversized message).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Extension;
use axum::Router;
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt as _;
use raftkv_proto::etcdserverpb::auth_server::Auth as AuthRpc;
use raftkv_proto::etcdserverpb::cluster_server::Cluster;
use raftkv_proto::etcdserverpb::kv_server::Kv;
use raftkv_proto::etcdserverpb::lease_server::Lease;
use raftkv_proto::etcdserverpb::maintenance_server::Maintenance;
use raftkv_proto::etcdserverpb::watch_server::Watch;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::{Code, Status, Streaming};

use crate::grpc::Services;
use crate::metrics::{GrpcMetrics, HandledGuard};
use crate::tls::ClientCertificate;

/// The verified client certificate of a request's connection, if any (put
/// there by [`crate::tls::carry_client_certificate`]).
type Cert = Option<Extension<ClientCertificate>>;

/// Stream requests decoded ahead of the service reading them.
const REQUESTS_QUEUED: usize = 16;

/// The gateway's routes over `services`, counted in `grpc` like gRPC calls
/// (etcd's gateway reaches its services through gRPC, so they count there
/// too); request bodies may be at most `body_bytes_max` long.
pub fn routes(services: &Services, grpc: Arc<GrpcMetrics>, body_bytes_max: usize) -> Router {
    let gw = Gateway {
        grpc,
        body_bytes_max,
    };
    let (kv, watch, lease) = (&services.kv, &services.watch, &services.lease);
    let (cluster, maintenance) = (&services.cluster, &services.maintenance);
    let auth = &services.auth;
    let table: Vec<(&[&str], MethodRouter)> = vec![
        (
            &["kv/range"],
            gw.unary(kv, "/etcdserverpb.KV/Range", |s, r| async move {
                Kv::range(&*s, r).await
            }),
        ),
        (
            &["kv/put"],
            gw.unary(kv, "/etcdserverpb.KV/Put", |s, r| async move {
                Kv::put(&*s, r).await
            }),
        ),
        (
            &["kv/deleterange"],
            gw.unary(kv, "/etcdserverpb.KV/DeleteRange", |s, r| async move {
                Kv::delete_range(&*s, r).await
            }),
        ),
        (
            &["kv/txn"],
            gw.unary(kv, "/etcdserverpb.KV/Txn", |s, r| async move {
                Kv::txn(&*s, r).await
            }),
        ),
        (
            &["kv/compaction"],
            gw.unary(kv, "/etcdserverpb.KV/Compact", |s, r| async move {
                Kv::compact(&*s, r).await
            }),
        ),
        (
            &["watch"],
            gw.stream(
                watch,
                "/etcdserverpb.Watch/Watch",
                true,
                |s, r| async move { Watch::watch(&*s, r).await },
            ),
        ),
        (
            &["lease/grant"],
            gw.unary(lease, "/etcdserverpb.Lease/LeaseGrant", |s, r| async move {
                Lease::lease_grant(&*s, r).await
            }),
        ),
        (
            &["lease/revoke", "kv/lease/revoke"],
            gw.unary(
                lease,
                "/etcdserverpb.Lease/LeaseRevoke",
                |s, r| async move { Lease::lease_revoke(&*s, r).await },
            ),
        ),
        (
            &["lease/keepalive"],
            gw.stream(
                lease,
                "/etcdserverpb.Lease/LeaseKeepAlive",
                false,
                |s, r| async move { Lease::lease_keep_alive(&*s, r).await },
            ),
        ),
        (
            &["lease/timetolive", "kv/lease/timetolive"],
            gw.unary(
                lease,
                "/etcdserverpb.Lease/LeaseTimeToLive",
                |s, r| async move { Lease::lease_time_to_live(&*s, r).await },
            ),
        ),
        (
            &["lease/leases", "kv/lease/leases"],
            gw.unary(
                lease,
                "/etcdserverpb.Lease/LeaseLeases",
                |s, r| async move { Lease::lease_leases(&*s, r).await },
            ),
        ),
        (
            &["cluster/member/list"],
            gw.unary(
                cluster,
                "/etcdserverpb.Cluster/MemberList",
                |s, r| async move { Cluster::member_list(&*s, r).await },
            ),
        ),
        (
            &["cluster/member/add"],
            gw.unary(
                cluster,
                "/etcdserverpb.Cluster/MemberAdd",
                |s, r| async move { Cluster::member_add(&*s, r).await },
            ),
        ),
        (
            &["cluster/member/remove"],
            gw.unary(
                cluster,
                "/etcdserverpb.Cluster/MemberRemove",
                |s, r| async move { Cluster::member_remove(&*s, r).await },
            ),
        ),
        (
            &["cluster/member/update"],
            gw.unary(
                cluster,
                "/etcdserverpb.Cluster/MemberUpdate",
                |s, r| async move { Cluster::member_update(&*s, r).await },
            ),
        ),
        (
            &["cluster/member/promote"],
            gw.unary(
                cluster,
                "/etcdserverpb.Cluster/MemberPromote",
                |s, r| async move { Cluster::member_promote(&*s, r).await },
            ),
        ),
        (
            &["maintenance/status"],
            gw.unary(
                maintenance,
                "/etcdserverpb.Maintenance/Status",
                |s, r| async move { Maintenance::status(&*s, r).await },
            ),
        ),
        (
            &["maintenance/alarm"],
            gw.unary(
                maintenance,
                "/etcdserverpb.Maintenance/Alarm",
                |s, r| async move { Maintenance::alarm(&*s, r).await },
            ),
        ),
        (
            &["maintenance/hash"],
            gw.unary(
                maintenance,
                "/etcdserverpb.Maintenance/Hash",
                |s, r| async move { Maintenance::hash(&*s, r).await },
            ),
        ),
        (
            &["maintenance/hashkv"],
            gw.unary(
                maintenance,
                "/etcdserverpb.Maintenance/HashKV",
                |s, r| async move { Maintenance::hash_kv(&*s, r).await },
            ),
        ),
        (
            &["maintenance/defragment"],
            gw.unary(
                maintenance,
                "/etcdserverpb.Maintenance/Defragment",
                |s, r| async move { Maintenance::defragment(&*s, r).await },
            ),
        ),
        (
            &["maintenance/transfer-leadership"],
            gw.unary(
                maintenance,
                "/etcdserverpb.Maintenance/MoveLeader",
                |s, r| async move { Maintenance::move_leader(&*s, r).await },
            ),
        ),
        (
            &["auth/enable"],
            gw.unary(auth, "/etcdserverpb.Auth/AuthEnable", |s, r| async move {
                AuthRpc::auth_enable(&*s, r).await
            }),
        ),
        (
            &["auth/disable"],
            gw.unary(auth, "/etcdserverpb.Auth/AuthDisable", |s, r| async move {
                AuthRpc::auth_disable(&*s, r).await
            }),
        ),
        (
            &["auth/status"],
            gw.unary(auth, "/etcdserverpb.Auth/AuthStatus", |s, r| async move {
                AuthRpc::auth_status(&*s, r).await
            }),
        ),
        (
            &["auth/authenticate"],
            gw.unary(auth, "/etcdserverpb.Auth/Authenticate", |s, r| async move {
                AuthRpc::authenticate(&*s, r).await
            }),
        ),
        (
            &["auth/user/add"],
            gw.unary(auth, "/etcdserverpb.Auth/UserAdd", |s, r| async move {
                AuthRpc::user_add(&*s, r).await
            }),
        ),
        (
            &["auth/user/get"],
            gw.unary(auth, "/etcdserverpb.Auth/UserGet", |s, r| async move {
                AuthRpc::user_get(&*s, r).await
            }),
        ),
        (
            &["auth/user/list"],
            gw.unary(auth, "/etcdserverpb.Auth/UserList", |s, r| async move {
                AuthRpc::user_list(&*s, r).await
            }),
        ),
        (
            &["auth/user/delete"],
            gw.unary(auth, "/etcdserverpb.Auth/UserDelete", |s, r| async move {
                AuthRpc::user_delete(&*s, r).await
            }),
        ),
        (
            &["auth/user/changepw"],
            gw.unary(
                auth,
                "/etcdserverpb.Auth/UserChangePassword",
                |s, r| async move { AuthRpc::user_change_password(&*s, r).await },
            ),
        ),
        (
            &["auth/user/grant"],
            gw.unary(
                auth,
                "/etcdserverpb.Auth/UserGrantRole",
                |s, r| async move { AuthRpc::user_grant_role(&*s, r).await },
            ),
        ),
        (
            &["auth/user/revoke"],
            gw.unary(
                auth,
                "/etcdserverpb.Auth/UserRevokeRole",
                |s, r| async move { AuthRpc::user_revoke_role(&*s, r).await },
            ),
        ),
        (
            &["auth/role/add"],
            gw.unary(auth, "/etcdserverpb.Auth/RoleAdd", |s, r| async move {
                AuthRpc::role_add(&*s, r).await
            }),
        ),
        (
            &["auth/role/get"],
            gw.unary(auth, "/etcdserverpb.Auth/RoleGet", |s, r| async move {
                AuthRpc::role_get(&*s, r).await
            }),
        ),
        (
            &["auth/role/list"],
            gw.unary(auth, "/etcdserverpb.Auth/RoleList", |s, r| async move {
                AuthRpc::role_list(&*s, r).await
            }),
        ),
        (
            &["auth/role/delete"],
            gw.unary(auth, "/etcdserverpb.Auth/RoleDelete", |s, r| async move {
                AuthRpc::role_delete(&*s, r).await
            }),
        ),
        (
            &["auth/role/grant"],
            gw.unary(
                auth,
                "/etcdserverpb.Auth/RoleGrantPermission",
                |s, r| async move { AuthRpc::role_grant_permission(&*s, r).await },
            ),
        ),
        (
            &["auth/role/revoke"],
            gw.unary(
                auth,
                "/etcdserverpb.Auth/RoleRevokePermission",
                |s, r| async move { AuthRpc::role_revoke_permission(&*s, r).await },
            ),
        ),
    ];
    let mut router = Router::new();
    for (suffixes, route) in table {
        for suffix in suffixes {
            for prefix in ["/v3/", "/v3beta/"] {
                router = router.route(&format!("{prefix}{suffix}"), route.clone());
            }
        }
    }
    router
}

#[derive(Clone)]
struct Gateway {
    grpc: Arc<GrpcMetrics>,
    body_bytes_max: usize,
}

impl Gateway {
    /// A route calling a unary method.
    fn unary<S, Req, Resp, F, Fut>(
        &self,
        service: &Arc<S>,
        path: &'static str,
        call: F,
    ) -> MethodRouter
    where
        S: Send + Sync + 'static,
        Req: DeserializeOwned + Default + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: FnOnce(Arc<S>, tonic::Request<Req>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
    {
        let service = service.clone();
        let counters = self.grpc.method(path);
        let limit = self.body_bytes_max;
        post(move |cert: Cert, hdrs: HeaderMap, body: Body| async move {
            let message = match read_body(body, limit)
                .await
                .and_then(|b| first_value::<Req>(&b))
            {
                Ok(message) => message.unwrap_or_default(),
                Err(status) => return error_response(&status),
            };
            // Counted like a gRPC call from here: etcd's gateway makes one
            // once it has a request.
            let mut guard = counters.map(HandledGuard::start);
            let answer = call(service, request(&hdrs, cert, message)).await;
            finish(
                &mut guard,
                answer.as_ref().map_or_else(Status::code, |_| Code::Ok),
            );
            match answer {
                Ok(response) => json_response(response.get_ref()),
                Err(status) => error_response(&status),
            }
        })
    }

    /// A route calling a bidirectional-streaming method; with `hold_open`
    /// the request stream stays open after the body ends.
    fn stream<S, Req, Resp, F, Fut, St>(
        &self,
        service: &Arc<S>,
        path: &'static str,
        hold_open: bool,
        call: F,
    ) -> MethodRouter
    where
        S: Send + Sync + 'static,
        Req: DeserializeOwned + prost::Message + Default + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: FnOnce(Arc<S>, tonic::Request<Streaming<Req>>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<St>, Status>> + Send + 'static,
        St: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
    {
        let service = service.clone();
        let counters = self.grpc.method(path);
        let limit = self.body_bytes_max;
        post(move |cert: Cert, hdrs: HeaderMap, body: Body| async move {
            let mut values = JsonValues::new(body, limit);
            // A first request that is not JSON is refused outright; later
            // ones end the request stream, as etcd's gateway does.
            let first = match values.next::<Req>().await {
                Ok(first) => first,
                Err(status) => return error_response(&status),
            };
            let mut guard = counters.map(HandledGuard::start);
            let (requests, alive) = forward(values, first, hold_open, limit);
            match call(service, request(&hdrs, cert, requests)).await {
                Ok(response) => {
                    let lines = JsonLines {
                        inner: response.into_inner(),
                        guard,
                        _alive: alive,
                        done: false,
                    };
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        Body::from_stream(lines),
                    )
                        .into_response()
                }
                Err(status) => {
                    finish(&mut guard, status.code());
                    error_response(&status)
                }
            }
        })
    }
}

fn finish(guard: &mut Option<HandledGuard>, code: Code) {
    if let Some(guard) = guard {
        guard.finish(code);
    }
}

/// The service's request: the metadata grpc-gateway passes on, and the
/// connection's verified client certificate (so a service sees the same
/// identity through the gateway as through gRPC).
fn request<T>(headers: &HeaderMap, cert: Cert, message: T) -> tonic::Request<T> {
    let mut extensions = tonic::Extensions::default();
    if let Some(Extension(cert)) = cert {
        extensions.insert(cert);
    }
    tonic::Request::from_parts(metadata(headers), extensions, message)
}

/// `Grpc-Metadata-<key>: value` becomes metadata `<key>: value`, and
/// `Authorization` is passed on, as grpc-gateway does.
fn metadata(headers: &HeaderMap) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
        let key = match name.as_str() {
            "authorization" => "authorization",
            other => match other.strip_prefix("grpc-metadata-") {
                Some(key) => key,
                None => continue,
            },
        };
        let key = AsciiMetadataKey::from_bytes(key.as_bytes());
        let value = value.to_str().ok().map(str::parse::<AsciiMetadataValue>);
        if let (Ok(key), Some(Ok(value))) = (key, value) {
            metadata.append(key, value);
        }
    }
    metadata
}

fn too_large(limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "gateway: request body larger than the limit of {limit} bytes"
    ))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Status> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
        Err(err) => Err(Status::invalid_argument(format!(
            "reading the request body: {err}"
        ))),
    }
}

/// The first JSON value of `bytes`; `None` if there is none (an empty body).
fn first_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, Status> {
    match serde_json::Deserializer::from_slice(bytes)
        .into_iter::<T>()
        .next()
    {
        None => Ok(None),
        Some(Ok(value)) => Ok(Some(value)),
        Some(Err(err)) => Err(malformed(&err)),
    }
}

fn malformed(err: &serde_json::Error) -> Status {
    Status::invalid_argument(format!("malformed JSON request: {err}"))
}

/// JSON values read one at a time from a body that may still be arriving.
struct JsonValues {
    body: Body,
    buffer: Vec<u8>,
    limit: usize,
    ended: bool,
}

impl JsonValues {
    fn new(body: Body, limit: usize) -> Self {
        Self {
            body,
            buffer: Vec::new(),
            limit,
            ended: false,
        }
    }

    /// The next value; `None` once the body ended between values.
    async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, Status> {
        loop {
            let blank = self
                .buffer
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            self.buffer.drain(..blank);
            if !self.buffer.is_empty() {
                let mut values = serde_json::Deserializer::from_slice(&self.buffer).into_iter();
                match values.next() {
                    Some(Ok(value)) => {
                        let used = values.byte_offset();
                        self.buffer.drain(..used);
                        return Ok(Some(value));
                    }
                    // Only the end of what arrived so far: read on.
                    Some(Err(err)) if err.is_eof() && !self.ended => {}
                    Some(Err(err)) => return Err(malformed(&err)),
                    None => {}
                }
            } else if self.ended {
                return Ok(None);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if self.buffer.len() + data.len() > self.limit {
                            return Err(too_large(self.limit));
                        }
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(err)) => {
                    return Err(Status::invalid_argument(format!(
                        "reading the request body: {err}"
                    )))
                }
                None => self.ended = true,
            }
        }
    }
}

/// Feeds the JSON requests still to come, after `first`, to a service as
/// its gRPC request stream. The returned sender is the response's: once it
/// is dropped (the client left), the request stream ends.
fn forward<Req>(
    mut values: JsonValues,
    first: Option<Req>,
    hold_open: bool,
    limit: usize,
) -> (Streaming<Req>, oneshot::Sender<()>)
where
    Req: DeserializeOwned + prost::Message + Default + Send + 'static,
{
    let (frames, incoming) = mpsc::channel::<Bytes>(REQUESTS_QUEUED);
    let (alive, mut gone) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut next = first;
        loop {
            if let Some(message) = next.take() {
                tokio::select! {
                    sent = frames.send(grpc_frame(&message)) => if sent.is_err() { return },
                    _ = &mut gone => return,
                }
            }
            tokio::select! {
                value = values.next::<Req>() => match value {
                    Ok(Some(message)) => next = Some(message),
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "gateway stream: request not understood; no more are read");
                        break;
                    }
                },
                _ = &mut gone => return,
            }
        }
        if hold_open {
            tokio::select! {
                _ = &mut gone => {}
                () = frames.closed() => {}
            }
        }
    });
    let body = http_body_util::StreamBody::new(
        ReceiverStream::new(incoming).map(|frame| Ok::<_, Infallible>(Frame::data(frame))),
    );
    let requests = Streaming::new_request(
        tonic_prost::ProstDecoder::<Req>::default(),
        body,
        None,
        Some(limit),
    );
    (requests, alive)
}

/// A message in gRPC's length-prefixed framing (uncompressed).
fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let encoded = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + encoded.len());
    frame.put_u8(0);
    // Bounded by the body limit, far below 4 GiB.
    frame.put_u32(u32::try_from(encoded.len()).unwrap_or(u32::MAX));
    frame.put_slice(&encoded);
    frame.freeze()
}

/// A service's response stream as JSON lines.
struct JsonLines<St> {
    inner: St,
    guard: Option<HandledGuard>,
    _alive: oneshot::Sender<()>,
    done: bool,
}

impl<St, Resp> Stream for JsonLines<St>
where
    St: Stream<Item = Result<Resp, Status>> + Unpin,
    Resp: Serialize,
{
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(message))) => match result_line(&message) {
                Ok(line) => Poll::Ready(Some(Ok(line))),
                Err(status) => {
                    this.done = true;
                    finish(&mut this.guard, status.code());
                    Poll::Ready(Some(Ok(error_line(&status))))
                }
            },
            Poll::Ready(Some(Err(status))) => {
                this.done = true;
                finish(&mut this.guard, status.code());
                Poll::Ready(Some(Ok(error_line(&status))))
            }
            Poll::Ready(None) => {
                this.done = true;
                finish(&mut this.guard, Code::Ok);
                Poll::Ready(None)
            }
        }
    }
}

#[derive(Serialize)]
struct ResultChunk<'a, T> {
    result: &'a T,
}

fn result_line<T: Serialize>(message: &T) -> Result<Bytes, Status> {
    let mut line = serde_json::to_vec(&ResultChunk { result: message })
        .map_err(|e| Status::internal(format!("encoding the response: {e}")))?;
    line.push(b'\n');
    Ok(line.into())
}

/// grpc-gateway's error chunk of a stream.
#[derive(Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    message: &'a str,
    http_status: &'a str,
}

#[derive(Serialize)]
struct ErrorChunk<'a> {
    error: StreamError<'a>,
}

fn error_line(status: &Status) -> Bytes {
    let http = http_status(status.code());
    let chunk = ErrorChunk {
        error: StreamError {
            grpc_code: status.code() as i32,
            http_code: http.as_u16(),
            message: status.message(),
            http_status: http.canonical_reason().unwrap_or(""),
        },
    };
    let mut line = serde_json::to_vec(&chunk).unwrap_or_default();
    line.push(b'\n');
    line.into()
}

fn json_response<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => error_response(&Status::internal(format!("encoding the response: {err}"))),
    }
}

/// grpc-gateway's error body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    code: i32,
    message: &'a str,
}

fn error_response(status: &Status) -> Response {
    let body = ErrorBody {
        error: status.message(),
        code: status.code() as i32,
        message: status.message(),
    };
    (
        http_status(status.code()),
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}

/// The HTTP status grpc-gateway answers a gRPC code with.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftkv_proto::etcdserverpb as pb;

    #[test]
    fn the_services_request_carries_the_client_certificate() {
        let cert = ClientCertificate {
            common_name: Some("alice".into()),
        };
        let with = request(&HeaderMap::new(), Some(Extension(cert)), ());
        assert_eq!(
            crate::tls::client_common_name(with.extensions()),
            Some("alice")
        );
        let without = request(&HeaderMap::new(), None, ());
        assert_eq!(crate::tls::client_common_name(without.extensions()), None);
    }

    #[test]
    fn gateway_metadata_headers_become_grpc_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-metadata-raftkv-client-id", "7".parse().unwrap());
        headers.insert("authorization", "tok".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        let md = metadata(&headers);
        assert_eq!(md.get("raftkv-client-id").unwrap(), "7");
        assert_eq!(md.get("authorization").unwrap(), "tok");
        assert!(md.get("content-type").is_none());
    }

    #[test]
    fn an_empty_body_is_an_empty_request_and_only_the_first_value_counts() {
        assert_eq!(first_value::<pb::RangeRequest>(b"  \n").unwrap(), None);
        let range = first_value::<pb::RangeRequest>(br#"{"key":"YQ=="} {"key":"Yg=="}"#)
            .unwrap()
            .unwrap();
        assert_eq!(range.key, b"a");
        let err = first_value::<pb::RangeRequest>(b"{\"key\":").unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn stream_values_are_read_as_they_complete_and_bounded() {
        let chunks: Vec<Result<Bytes, Infallible>> = vec![
            Ok(Bytes::from_static(b"{\"ID\":\"1")),
            Ok(Bytes::from_static(b"2\"}\n{\"ID\":3}")),
        ];
        let body = Body::from_stream(tokio_stream::iter(chunks));
        let mut values = JsonValues::new(body, 1024);
        let first: pb::LeaseKeepAliveRequest = values.next().await.unwrap().unwrap();
        let second: pb::LeaseKeepAliveRequest = values.next().await.unwrap().unwrap();
        assert_eq!((first.id, second.id), (12, 3));
        assert!(values
            .next::<pb::LeaseKeepAliveRequest>()
            .await
            .unwrap()
            .is_none());

        let big = Body::from(
            vec![b' '; 10]
                .into_iter()
                .chain(*b"{\"ID\":1}")
                .collect::<Vec<u8>>(),
        );
        let err = JsonValues::new(big, 8)
            .next::<pb::LeaseKeepAliveRequest>()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
    }

    #[test]
    fn codes_map_to_grpc_gateways_http_statuses() {
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
