//! The auth token and the exactly-once retry loop together, against a
//! scripted in-process server that records what each request carried: a
//! retried write sends the token and its one request id on every attempt;
//! a write refused for a stale token gets one fresh token and is sent
//! again with the same id; a second refusal is the answer.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::free_port;
use raftkv_ctl::client::{Client, ClientConfig, Credentials, Security, TOKEN_METADATA};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::auth_server::{Auth, AuthServer};
use raftkv_proto::etcdserverpb::kv_server::{Kv, KvServer};
use tonic::{Request, Response, Status};

/// What one request carried.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: &'static str,
    token: Option<String>,
    sequence: Option<String>,
}

#[derive(Default)]
struct State {
    /// Answers to the next puts, in order (then success).
    put_script: Vec<Status>,
    seen: Vec<Seen>,
    tokens_issued: usize,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn record<T>(&self, method: &'static str, request: &Request<T>) {
        let text = |key: &str| {
            request
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let seen = Seen {
            method,
            token: text(TOKEN_METADATA),
            sequence: text(raftkv_ctl::client::SEQUENCE_METADATA),
        };
        if let Ok(mut state) = self.0.lock() {
            state.seen.push(seen);
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.0.lock().map(|s| s.seen.clone()).unwrap_or_default()
    }
}

#[tonic::async_trait]
impl Kv for Fake {
    async fn range(
        &self,
        r: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.record("range", &r);
        Ok(Response::new(pb::RangeResponse::default()))
    }
    type RangeStreamStream = tokio_stream::Empty<Result<pb::RangeStreamResponse, Status>>;
    async fn range_stream(
        &self,
        _: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented("range_stream"))
    }
    async fn put(&self, r: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.record("put", &r);
        let next = self.0.lock().ok().and_then(|mut s| {
            if s.put_script.is_empty() {
                None
            } else {
                Some(s.put_script.remove(0))
            }
        });
        match next {
            Some(status) => Err(status),
            None => Ok(Response::new(pb::PutResponse::default())),
        }
    }
    async fn delete_range(
        &self,
        _: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("delete_range"))
    }
    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Err(Status::unimplemented("txn"))
    }
    async fn compact(
        &self,
        _: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Err(Status::unimplemented("compact"))
    }
}

#[tonic::async_trait]
impl Auth for Fake {
    async fn authenticate(
        &self,
        r: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        self.record("authenticate", &r);
        let body = r.into_inner();
        if (body.name.as_str(), body.password.as_str()) != ("root", "pw") {
            return Err(Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            ));
        }
        let mut state = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        state.tokens_issued += 1;
        Ok(Response::new(pb::AuthenticateResponse {
            token: format!("t{}", state.tokens_issued),
            ..Default::default()
        }))
    }
    // The Auth methods this fake does not serve (written out: async_trait
    // does not look inside macro calls).
    async fn auth_enable(
        &self,
        _: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        Err(Status::unimplemented("auth_enable"))
    }
    async fn auth_disable(
        &self,
        _: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        Err(Status::unimplemented("auth_disable"))
    }
    async fn auth_status(
        &self,
        _: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        Err(Status::unimplemented("auth_status"))
    }
    async fn user_add(
        &self,
        _: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        Err(Status::unimplemented("user_add"))
    }
    async fn user_get(
        &self,
        _: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        Err(Status::unimplemented("user_get"))
    }
    async fn user_list(
        &self,
        _: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        Err(Status::unimplemented("user_list"))
    }
    async fn user_delete(
        &self,
        _: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        Err(Status::unimplemented("user_delete"))
    }
    async fn user_change_password(
        &self,
        _: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        Err(Status::unimplemented("user_change_password"))
    }
    async fn user_grant_role(
        &self,
        _: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        Err(Status::unimplemented("user_grant_role"))
    }
    async fn user_revoke_role(
        &self,
        _: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        Err(Status::unimplemented("user_revoke_role"))
    }
    async fn role_add(
        &self,
        _: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        Err(Status::unimplemented("role_add"))
    }
    async fn role_get(
        &self,
        _: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        Err(Status::unimplemented("role_get"))
    }
    async fn role_list(
        &self,
        _: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        Err(Status::unimplemented("role_list"))
    }
    async fn role_delete(
        &self,
        _: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        Err(Status::unimplemented("role_delete"))
    }
    async fn role_grant_permission(
        &self,
        _: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        Err(Status::unimplemented("role_grant_permission"))
    }
    async fn role_revoke_permission(
        &self,
        _: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        Err(Status::unimplemented("role_revoke_permission"))
    }
}

/// Serves `fake` on a free loopback port until the runtime ends; returns
/// the endpoint once it accepts connections.
async fn serve(fake: Fake) -> String {
    let port = free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let server = tonic::transport::Server::builder()
        .add_service(KvServer::new(fake.clone()))
        .add_service(AuthServer::new(fake))
        .serve(addr);
    tokio::spawn(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return format!("127.0.0.1:{port}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the fake server did not start on {addr}");
}

fn client(endpoint: String, password: &str) -> Client {
    Client::with_security(
        ClientConfig {
            endpoints: vec![endpoint],
            ..ClientConfig::default()
        },
        Security {
            credentials: Some(Credentials {
                user: "root".into(),
                password: password.into(),
            }),
            ..Security::default()
        },
    )
    .expect("client")
}

fn put() -> pb::PutRequest {
    pb::PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }
}

fn seen(method: &'static str, token: Option<&str>, sequence: Option<&str>) -> Seen {
    Seen {
        method,
        token: token.map(str::to_string),
        sequence: sequence.map(str::to_string),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_retried_write_carries_the_token_and_its_one_id_on_every_attempt() {
    runtime().block_on(async {
        let fake = Fake::default();
        if let Ok(mut state) = fake.0.lock() {
            state.put_script = vec![Status::unavailable("etcdserver: leader changed")];
        }
        let client = client(serve(fake.clone()).await, "pw");
        client.authenticate().await.expect("authenticate");
        let id = client.next_request_id();
        client.put(put(), id).await.expect("put after one retry");
        let sequence = id.sequence.to_string();
        assert_eq!(
            fake.seen(),
            vec![
                seen("authenticate", None, None),
                seen("put", Some("t1"), Some(&sequence)),
                seen("put", Some("t1"), Some(&sequence)),
            ]
        );
    });
}

#[test]
fn a_write_refused_for_a_stale_token_is_sent_again_with_a_fresh_one() {
    runtime().block_on(async {
        let fake = Fake::default();
        if let Ok(mut state) = fake.0.lock() {
            state.put_script = vec![Status::unauthenticated("etcdserver: invalid auth token")];
        }
        let client = client(serve(fake.clone()).await, "pw");
        client.authenticate().await.expect("authenticate");
        let id = client.next_request_id();
        client.put(put(), id).await.expect("put with a fresh token");
        let sequence = id.sequence.to_string();
        assert_eq!(
            fake.seen(),
            vec![
                seen("authenticate", None, None),
                seen("put", Some("t1"), Some(&sequence)),
                seen("authenticate", None, None),
                seen("put", Some("t2"), Some(&sequence)),
            ]
        );
    });
}

#[test]
fn a_token_refused_twice_is_the_answer() {
    runtime().block_on(async {
        let fake = Fake::default();
        let stale = || Status::unauthenticated("etcdserver: invalid auth token");
        if let Ok(mut state) = fake.0.lock() {
            state.put_script = vec![stale(), stale(), stale()];
        }
        let client = client(serve(fake.clone()).await, "pw");
        client.authenticate().await.expect("authenticate");
        let err = client
            .put(put(), client.next_request_id())
            .await
            .expect_err("refused twice");
        assert_eq!(err.to_string(), "etcdserver: invalid auth token");
        let puts = fake.seen().iter().filter(|s| s.method == "put").count();
        assert_eq!(puts, 2, "one resend after one renewal: {:?}", fake.seen());
    });
}

#[test]
fn a_wrong_password_fails_authentication_and_no_password_sends_no_token() {
    runtime().block_on(async {
        let fake = Fake::default();
        let endpoint = serve(fake.clone()).await;
        let wrong = client(endpoint.clone(), "nope");
        let err = wrong.authenticate().await.expect_err("wrong password");
        assert_eq!(
            err.to_string(),
            "etcdserver: authentication failed, invalid user ID or password"
        );
        // etcd's client authenticates only with a password.
        let empty = client(endpoint, "");
        empty.authenticate().await.expect("nothing to do");
        assert!(!empty.has_token());
        empty
            .range(pb::RangeRequest::default())
            .await
            .expect("range");
        assert_eq!(
            fake.seen(),
            vec![seen("authenticate", None, None), seen("range", None, None)]
        );
    });
}
