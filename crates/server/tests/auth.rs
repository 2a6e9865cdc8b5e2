//! etcd's auth on a real `raftkv` process: users, roles and permissions
//! through the Auth service, and no way to a key or an administrative call
//! around them.
//!
//! The "no bypass" table calls every RPC (and the JSON gateway) five ways:
//! without credentials, with a token the server never gave out, with an
//! expired token, as a user lacking the permission, and as one holding it.
//! Only the last may succeed, each refusal with etcd's code and string, and
//! nothing a refused call asked for may be written.

mod common;

use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::time::Duration;

use common::{free_port, runtime, start};
use raftkv_proto::authpb;
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::auth_client::AuthClient;
use raftkv_proto::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use raftkv_proto::etcdserverpb::watch_client::WatchClient;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const ROOT_PASSWORD: &str = "root-secret";
const WRITER_PASSWORD: &str = "writer-secret";
const NOBODY_PASSWORD: &str = "nobody-secret";

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("token", token.parse().expect("ascii token"));
    }
    request
}

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

async fn authenticate(ch: &Channel, name: &str, password: &str) -> Result<String, Status> {
    let response = AuthClient::new(ch.clone())
        .authenticate(pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await?;
    Ok(response.into_inner().token)
}

fn perm(kind: authpb::permission::Type, key: &str, range_end: &str) -> authpb::Permission {
    authpb::Permission {
        perm_type: kind as i32,
        key: key.as_bytes().to_vec(),
        range_end: range_end.as_bytes().to_vec(),
    }
}

/// root (role root), writer (role rw: readwrite on the prefix `k/`),
/// nobody (no role); auth enabled.
async fn set_up_users(ch: &Channel) {
    let mut auth = AuthClient::new(ch.clone());
    for (name, password) in [
        ("root", ROOT_PASSWORD),
        ("writer", WRITER_PASSWORD),
        ("nobody", NOBODY_PASSWORD),
    ] {
        auth.user_add(pb::AuthUserAddRequest {
            name: name.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .expect("user add");
    }
    auth.role_add(pb::AuthRoleAddRequest { name: "rw".into() })
        .await
        .expect("role add");
    auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
        name: "rw".into(),
        perm: Some(perm(authpb::permission::Type::Readwrite, "k/", "k0")),
    })
    .await
    .expect("grant");
    let enable = auth.auth_enable(pb::AuthEnableRequest {}).await;
    assert_eq!(
        enable.expect_err("no root role yet").message(),
        "etcdserver: root user does not have root role"
    );
    auth.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await
    .expect("grant root");
    auth.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "writer".into(),
        role: "rw".into(),
    })
    .await
    .expect("grant rw");
    auth.auth_enable(pb::AuthEnableRequest {})
        .await
        .expect("enable");
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Credentials {
    None,
    Bogus,
    Expired,
    Lacking,
}

#[derive(Clone, Copy, PartialEq)]
enum Needs {
    /// A key permission `writer` has and `nobody` lacks.
    Key,
    /// Root.
    Root,
}

type Call =
    Box<dyn Fn(Channel, Option<String>) -> Pin<Box<dyn Future<Output = Result<(), Status>>>>>;

fn call<F, Fut>(f: F) -> Call
where
    F: Fn(Channel, Option<String>) -> Fut + 'static,
    Fut: Future<Output = Result<(), Status>> + 'static,
{
    Box::new(move |ch, token| Box::pin(f(ch, token)))
}

/// Every RPC that reads or writes a key or administers the cluster.
fn cases(lease_id: i64) -> Vec<(&'static str, Needs, Call)> {
    vec![
        (
            "Range",
            Needs::Key,
            call(|ch, t| async move {
                let req = pb::RangeRequest {
                    key: b"k/a".to_vec(),
                    ..Default::default()
                };
                KvClient::new(ch)
                    .range(with_token(req, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "Range serializable",
            Needs::Key,
            call(|ch, t| async move {
                let req = pb::RangeRequest {
                    key: b"k/".to_vec(),
                    range_end: b"k0".to_vec(),
                    serializable: true,
                    ..Default::default()
                };
                KvClient::new(ch)
                    .range(with_token(req, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "Put",
            Needs::Key,
            call(|ch, t| async move {
                let req = pb::PutRequest {
                    key: b"k/put".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                };
                KvClient::new(ch).put(with_token(req, t.as_deref())).await?;
                Ok(())
            }),
        ),
        (
            "Put with prev_kv",
            Needs::Key,
            call(|ch, t| async move {
                let req = pb::PutRequest {
                    key: b"k/a".to_vec(),
                    value: b"v2".to_vec(),
                    prev_kv: true,
                    ..Default::default()
                };
                KvClient::new(ch).put(with_token(req, t.as_deref())).await?;
                Ok(())
            }),
        ),
        (
            "DeleteRange",
            Needs::Key,
            call(|ch, t| async move {
                let req = pb::DeleteRangeRequest {
                    key: b"k/gone".to_vec(),
                    ..Default::default()
                };
                KvClient::new(ch)
                    .delete_range(with_token(req, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "Txn with a nested write",
            Needs::Key,
            call(|ch, t| async move {
                use pb::request_op::Request as Op;
                let put = pb::RequestOp {
                    request: Some(Op::RequestPut(pb::PutRequest {
                        key: b"k/txn".to_vec(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })),
                };
                let nested = pb::RequestOp {
                    request: Some(Op::RequestTxn(pb::TxnRequest {
                        success: vec![put],
                        ..Default::default()
                    })),
                };
                let req = pb::TxnRequest {
                    compare: vec![pb::Compare {
                        key: b"k/a".to_vec(),
                        target: pb::compare::CompareTarget::Version as i32,
                        result: pb::compare::CompareResult::Greater as i32,
                        target_union: Some(pb::compare::TargetUnion::Version(0)),
                        ..Default::default()
                    }],
                    success: vec![nested],
                    ..Default::default()
                };
                KvClient::new(ch).txn(with_token(req, t.as_deref())).await?;
                Ok(())
            }),
        ),
        (
            "Txn read-only",
            Needs::Key,
            call(|ch, t| async move {
                let req = pb::TxnRequest {
                    success: vec![pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                            key: b"k/a".to_vec(),
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                };
                KvClient::new(ch).txn(with_token(req, t.as_deref())).await?;
                Ok(())
            }),
        ),
        (
            "LeaseTimeToLive with keys",
            Needs::Key,
            call(move |ch, t| async move {
                let req = pb::LeaseTimeToLiveRequest {
                    id: lease_id,
                    keys: true,
                };
                LeaseClient::new(ch)
                    .lease_time_to_live(with_token(req, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "Watch",
            Needs::Key,
            call(|ch, t| async move {
                let create = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                        pb::WatchCreateRequest {
                            key: b"k/".to_vec(),
                            range_end: b"k0".to_vec(),
                            ..Default::default()
                        },
                    )),
                };
                let requests = tokio_stream::iter(vec![create]).chain(tokio_stream::pending());
                let mut responses = WatchClient::new(ch)
                    .watch(with_token(requests, t.as_deref()))
                    .await?
                    .into_inner();
                let first = responses.message().await?.expect("a created response");
                assert!(first.created);
                if first.canceled {
                    // A refused watch is created and cancelled at once, the
                    // reason being the refusal's message.
                    let code = match first.cancel_reason.as_str() {
                        "etcdserver: invalid auth token" => Code::Unauthenticated,
                        "etcdserver: permission denied" => Code::PermissionDenied,
                        _ => Code::InvalidArgument,
                    };
                    return Err(Status::new(code, first.cancel_reason));
                }
                Ok(())
            }),
        ),
        (
            "Snapshot",
            Needs::Root,
            call(|ch, t| async move {
                let mut stream = MaintenanceClient::new(ch)
                    .snapshot(with_token(pb::SnapshotRequest {}, t.as_deref()))
                    .await?
                    .into_inner();
                stream.message().await?;
                Ok(())
            }),
        ),
        (
            "Hash",
            Needs::Root,
            call(|ch, t| async move {
                MaintenanceClient::new(ch)
                    .hash(with_token(pb::HashRequest {}, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "HashKV",
            Needs::Root,
            call(|ch, t| async move {
                MaintenanceClient::new(ch)
                    .hash_kv(with_token(pb::HashKvRequest { revision: 0 }, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "Defragment",
            Needs::Root,
            call(|ch, t| async move {
                MaintenanceClient::new(ch)
                    .defragment(with_token(pb::DefragmentRequest {}, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "MemberRemove",
            Needs::Root,
            call(|ch, t| async move {
                // An unknown id: allowed, the answer is "member not found".
                let req = pb::MemberRemoveRequest { id: 12345 };
                match ClusterClient::new(ch)
                    .member_remove(with_token(req, t.as_deref()))
                    .await
                {
                    Err(s) if s.message() == "etcdserver: member not found" => Ok(()),
                    other => other.map(|_| ()),
                }
            }),
        ),
        (
            "MemberAdd",
            Needs::Root,
            call(|ch, t| async move {
                // A bad URL: allowed, the answer is "given member URLs are invalid".
                let req = pb::MemberAddRequest {
                    peer_ur_ls: vec!["not a url".into()],
                    is_learner: true,
                };
                match ClusterClient::new(ch)
                    .member_add(with_token(req, t.as_deref()))
                    .await
                {
                    Err(s) if s.code() == Code::InvalidArgument && s.message().contains("URL") => {
                        Ok(())
                    }
                    other => other.map(|_| ()),
                }
            }),
        ),
        (
            "UserList",
            Needs::Root,
            call(|ch, t| async move {
                AuthClient::new(ch)
                    .user_list(with_token(pb::AuthUserListRequest {}, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "UserGet of another user",
            Needs::Root,
            call(|ch, t| async move {
                let req = pb::AuthUserGetRequest {
                    name: "root".into(),
                };
                AuthClient::new(ch)
                    .user_get(with_token(req, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "RoleList",
            Needs::Root,
            call(|ch, t| async move {
                AuthClient::new(ch)
                    .role_list(with_token(pb::AuthRoleListRequest {}, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "AuthStatus",
            Needs::Root,
            call(|ch, t| async move {
                AuthClient::new(ch)
                    .auth_status(with_token(pb::AuthStatusRequest {}, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "RoleAdd",
            Needs::Root,
            call(|ch, t| async move {
                let req = pb::AuthRoleAddRequest {
                    name: format!("made-{}", t.as_deref().unwrap_or("none").len()),
                };
                AuthClient::new(ch)
                    .role_add(with_token(req, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "RoleGrantPermission",
            Needs::Root,
            call(|ch, t| async move {
                let req = pb::AuthRoleGrantPermissionRequest {
                    name: "rw".into(),
                    perm: Some(perm(authpb::permission::Type::Readwrite, "secret", "")),
                };
                AuthClient::new(ch)
                    .role_grant_permission(with_token(req, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "UserGrantRole",
            Needs::Root,
            call(|ch, t| async move {
                let req = pb::AuthUserGrantRoleRequest {
                    user: "nobody".into(),
                    role: "root".into(),
                };
                let result = AuthClient::new(ch.clone())
                    .user_grant_role(with_token(req, t.as_deref()))
                    .await;
                if result.is_ok() {
                    // Undo it, so `nobody` still lacks everything.
                    let undo = pb::AuthUserRevokeRoleRequest {
                        name: "nobody".into(),
                        role: "root".into(),
                    };
                    AuthClient::new(ch)
                        .user_revoke_role(with_token(undo, t.as_deref()))
                        .await?;
                }
                result.map(|_| ())
            }),
        ),
        (
            "UserAdd",
            Needs::Root,
            call(|ch, t| async move {
                let req = pb::AuthUserAddRequest {
                    name: "intruder".into(),
                    password: "x".into(),
                    ..Default::default()
                };
                AuthClient::new(ch)
                    .user_add(with_token(req, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
        (
            "UserChangePassword of root",
            Needs::Root,
            call(|ch, t| async move {
                let req = pb::AuthUserChangePasswordRequest {
                    name: "root".into(),
                    password: ROOT_PASSWORD.into(),
                    ..Default::default()
                };
                AuthClient::new(ch)
                    .user_change_password(with_token(req, t.as_deref()))
                    .await?;
                Ok(())
            }),
        ),
    ]
}

/// The refusal etcd answers a call without the permission with.
fn expected(credentials: Credentials) -> (Code, &'static str) {
    match credentials {
        Credentials::None => (Code::InvalidArgument, "etcdserver: user name is empty"),
        Credentials::Bogus | Credentials::Expired => {
            (Code::Unauthenticated, "etcdserver: invalid auth token")
        }
        Credentials::Lacking => (Code::PermissionDenied, "etcdserver: permission denied"),
    }
}

async fn revision(ch: &Channel, token: &str) -> i64 {
    let req = pb::RangeRequest {
        key: b"k/a".to_vec(),
        ..Default::default()
    };
    KvClient::new(ch.clone())
        .range(with_token(req, Some(token)))
        .await
        .expect("root reads")
        .into_inner()
        .header
        .expect("header")
        .revision
}

async fn auth_records(ch: &Channel, token: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut auth = AuthClient::new(ch.clone());
    let users = auth
        .user_list(with_token(pb::AuthUserListRequest {}, Some(token)))
        .await
        .expect("users")
        .into_inner()
        .users;
    let roles = auth
        .role_list(with_token(pb::AuthRoleListRequest {}, Some(token)))
        .await
        .expect("roles")
        .into_inner()
        .roles;
    let nobody = auth
        .user_get(with_token(
            pb::AuthUserGetRequest {
                name: "nobody".into(),
            },
            Some(token),
        ))
        .await
        .expect("nobody")
        .into_inner()
        .roles;
    (users, roles, nobody)
}

#[test]
fn no_call_gets_past_auth_without_the_permission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(
        &dir.path().join("m"),
        port,
        &["--auth-token-ttl", "2", "--bcrypt-cost", "4"],
    );
    runtime().block_on(async {
        let ch = channel(port).await;
        // Before auth is enabled, tokens are refused and writes are open.
        assert_eq!(
            authenticate(&ch, "root", "x")
                .await
                .expect_err("disabled")
                .message(),
            "etcdserver: authentication is not enabled"
        );
        set_up_users(&ch).await;
        let root = authenticate(&ch, "root", ROOT_PASSWORD)
            .await
            .expect("root");
        let writer = authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect("writer");
        let wrong = authenticate(&ch, "writer", "not-the-password").await;
        let wrong = wrong.expect_err("wrong password");
        assert_eq!(wrong.code(), Code::InvalidArgument);
        assert_eq!(
            wrong.message(),
            "etcdserver: authentication failed, invalid user ID or password"
        );
        let unknown = authenticate(&ch, "mallory", "x")
            .await
            .expect_err("unknown");
        assert_eq!(unknown.message(), wrong.message());
        // A token left unused past --auth-token-ttl expires.
        let expired = authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect("writer again");
        // Setup for the table: a key under k/, and a lease holding one.
        let mut kv = KvClient::new(ch.clone());
        kv.put(with_token(
            pb::PutRequest {
                key: b"k/a".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            },
            Some(&writer),
        ))
        .await
        .expect("writer writes k/a");
        let lease = LeaseClient::new(ch.clone())
            .lease_grant(with_token(
                pb::LeaseGrantRequest { ttl: 600, id: 0 },
                Some(&root),
            ))
            .await
            .expect("grant")
            .into_inner()
            .id;
        kv.put(with_token(
            pb::PutRequest {
                key: b"k/leased".to_vec(),
                value: b"v".to_vec(),
                lease,
                ..Default::default()
            },
            Some(&writer),
        ))
        .await
        .expect("writer attaches a key");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        // Fresh tokens for the table (the ones above expired with it).
        let root = authenticate(&ch, "root", ROOT_PASSWORD)
            .await
            .expect("root");
        let writer = authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect("writer");
        let nobody = authenticate(&ch, "nobody", NOBODY_PASSWORD)
            .await
            .expect("nobody");

        let before_revision = revision(&ch, &root).await;
        let before_records = auth_records(&ch, &root).await;
        for (name, needs, call) in cases(lease) {
            for credentials in [
                Credentials::None,
                Credentials::Bogus,
                Credentials::Expired,
                Credentials::Lacking,
            ] {
                let token = match credentials {
                    Credentials::None => None,
                    Credentials::Bogus => Some("bogus".to_string()),
                    Credentials::Expired => Some(expired.clone()),
                    Credentials::Lacking => Some(match needs {
                        Needs::Key => nobody.clone(),
                        Needs::Root => writer.clone(),
                    }),
                };
                let got = call(ch.clone(), token).await;
                let want = expected(credentials);
                match &got {
                    Err(status) => assert_eq!(
                        (status.code(), status.message()),
                        want,
                        "{name} with {credentials:?}"
                    ),
                    Ok(()) => panic!("{name} with {credentials:?} succeeded, want {want:?}"),
                }
            }
        }
        // Nothing a refused call asked for was written.
        let root = authenticate(&ch, "root", ROOT_PASSWORD)
            .await
            .expect("root");
        let writer = authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect("writer");
        let nobody = authenticate(&ch, "nobody", NOBODY_PASSWORD)
            .await
            .expect("nobody");
        assert_eq!(revision(&ch, &root).await, before_revision);
        assert_eq!(auth_records(&ch, &root).await, before_records);
        // With the permission, every call succeeds.
        for (name, needs, call) in cases(lease) {
            let token = match needs {
                Needs::Key => writer.clone(),
                Needs::Root => root.clone(),
            };
            if let Err(status) = call(ch.clone(), Some(token)).await {
                panic!("{name} with the permission: {status:?}");
            }
        }
        // LeaseRevoke needs WRITE on every key the lease holds.
        let revoke = |token: String| {
            let ch = ch.clone();
            async move {
                LeaseClient::new(ch)
                    .lease_revoke(with_token(
                        pb::LeaseRevokeRequest { id: lease },
                        Some(&token),
                    ))
                    .await
            }
        };
        let refused = revoke(nobody.clone()).await.expect_err("nobody revokes");
        assert_eq!(refused.code(), Code::PermissionDenied);
        revoke(writer.clone()).await.expect("writer revokes");
        // Compact: any user that exists; nobody without credentials.
        let compact = |token: Option<String>| {
            let ch = ch.clone();
            async move {
                KvClient::new(ch)
                    .compact(with_token(
                        pb::CompactionRequest {
                            revision: 2,
                            physical: false,
                        },
                        token.as_deref(),
                    ))
                    .await
            }
        };
        let refused = compact(None).await.expect_err("anonymous compaction");
        assert_eq!(refused.message(), "etcdserver: user name is empty");
        compact(Some(nobody.clone()))
            .await
            .expect("a user compacts");
        // The server kept serving throughout (root anew: the table changed
        // its password, which forgets its tokens).
        let root = authenticate(&ch, "root", ROOT_PASSWORD)
            .await
            .expect("root");
        revision(&ch, &root).await;
    });
    assert!(server.stop().success());
}

/// The gateway reads the token from `Authorization`, as etcd's does.
#[test]
fn the_gateway_checks_the_authorization_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(&dir.path().join("m"), port, &["--bcrypt-cost", "4"]);
    let (writer, nobody) = runtime().block_on(async {
        let ch = channel(port).await;
        set_up_users(&ch).await;
        (
            authenticate(&ch, "writer", WRITER_PASSWORD)
                .await
                .expect("writer"),
            authenticate(&ch, "nobody", NOBODY_PASSWORD)
                .await
                .expect("nobody"),
        )
    });
    let post = |path: &str, body: &str, token: Option<&str>| -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let auth = token
            .map(|t| format!("Authorization: {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("reply");
        let status = reply
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        (status, reply)
    };
    // base64: "k/a", "v"
    let put = r#"{"key":"ay9h","value":"dg=="}"#;
    let (status, reply) = post("/v3/kv/put", put, None);
    assert_eq!(status, 400, "{reply}");
    assert!(reply.contains("etcdserver: user name is empty"), "{reply}");
    let (status, reply) = post("/v3/kv/put", put, Some("bogus"));
    assert_eq!(status, 401, "{reply}");
    assert!(reply.contains("etcdserver: invalid auth token"), "{reply}");
    let (status, reply) = post("/v3/kv/put", put, Some(&nobody));
    assert_eq!(status, 403, "{reply}");
    assert!(reply.contains("etcdserver: permission denied"), "{reply}");
    let (status, reply) = post("/v3/kv/put", put, Some(&writer));
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = post("/v3/kv/range", r#"{"key":"ay9h"}"#, Some(&writer));
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"dg==\""), "{reply}");
    // The auth paths are served too.
    let (status, reply) = post(
        "/v3/auth/authenticate",
        r#"{"name":"writer","password":"writer-secret"}"#,
        None,
    );
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"token\""), "{reply}");
    let (status, _) = post("/v3/auth/user/list", "{}", Some(&writer));
    assert_eq!(status, 403);
    assert!(server.stop().success());
}

/// Users, roles and the enabled flag are replicated state: they survive a
/// restart, and a token from before is not honoured by a member that does
/// not know it.
#[test]
fn auth_state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let data = dir.path().join("m");
    let server = start(&data, port, &["--bcrypt-cost", "4"]);
    runtime().block_on(async {
        let ch = channel(port).await;
        set_up_users(&ch).await;
    });
    assert!(server.stop().success());
    let server = start(&data, port, &["--bcrypt-cost", "4"]);
    runtime().block_on(async {
        let ch = channel(port).await;
        let root = authenticate(&ch, "root", ROOT_PASSWORD)
            .await
            .expect("root after restart");
        let status = AuthClient::new(ch.clone())
            .auth_status(with_token(pb::AuthStatusRequest {}, Some(&root)))
            .await
            .expect("status")
            .into_inner();
        assert!(status.enabled);
        let roles = AuthClient::new(ch.clone())
            .user_get(with_token(
                pb::AuthUserGetRequest {
                    name: "writer".into(),
                },
                Some(&root),
            ))
            .await
            .expect("writer")
            .into_inner()
            .roles;
        assert_eq!(roles, vec!["rw".to_string()]);
        // Root cannot be removed while auth is on.
        let refused = AuthClient::new(ch.clone())
            .user_revoke_role(with_token(
                pb::AuthUserRevokeRoleRequest {
                    name: "root".into(),
                    role: "root".into(),
                },
                Some(&root),
            ))
            .await
            .expect_err("root keeps root");
        assert_eq!(refused.message(), "etcdserver: invalid auth management");
        // A changed password invalidates the user's tokens.
        let writer = authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect("writer");
        AuthClient::new(ch.clone())
            .user_change_password(with_token(
                pb::AuthUserChangePasswordRequest {
                    name: "writer".into(),
                    password: "new".into(),
                    ..Default::default()
                },
                Some(&root),
            ))
            .await
            .expect("change password");
        let stale = KvClient::new(ch.clone())
            .range(with_token(
                pb::RangeRequest {
                    key: b"k/a".to_vec(),
                    ..Default::default()
                },
                Some(&writer),
            ))
            .await
            .expect_err("old token");
        assert_eq!(stale.message(), "etcdserver: invalid auth token");
        authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect_err("old password");
        authenticate(&ch, "writer", "new")
            .await
            .expect("new password");
    });
    assert!(server.stop().success());
}

/// An exactly-once retry is checked anew, and a request id another user's
/// write used is not answered with that write's outcome.
#[test]
fn a_retry_is_never_answered_with_another_users_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(&dir.path().join("m"), port, &["--bcrypt-cost", "4"]);
    runtime().block_on(async {
        let ch = channel(port).await;
        set_up_users(&ch).await;
        let root = authenticate(&ch, "root", ROOT_PASSWORD)
            .await
            .expect("root");
        let writer = authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect("writer");
        let put = |token: String, value: &'static str| {
            let ch = ch.clone();
            async move {
                let mut request = with_token(
                    pb::PutRequest {
                        key: b"k/once".to_vec(),
                        value: value.as_bytes().to_vec(),
                        prev_kv: true,
                        ..Default::default()
                    },
                    Some(&token),
                );
                request
                    .metadata_mut()
                    .insert("raftkv-client-id", "4242".parse().expect("id"));
                request
                    .metadata_mut()
                    .insert("raftkv-sequence", "1".parse().expect("seq"));
                KvClient::new(ch).put(request).await.map(|r| r.into_inner())
            }
        };
        let first = put(writer.clone(), "first").await.expect("writer's put");
        let again = put(writer.clone(), "first").await.expect("writer's retry");
        assert_eq!(
            again.header, first.header,
            "answered with the first outcome"
        );
        // Root may write k/once, but this id is writer's: refused, not applied.
        let other = put(root.clone(), "second")
            .await
            .expect_err("root under writer's id");
        assert_eq!(other.code(), Code::PermissionDenied);
        let current = KvClient::new(ch.clone())
            .range(with_token(
                pb::RangeRequest {
                    key: b"k/once".to_vec(),
                    ..Default::default()
                },
                Some(&root),
            ))
            .await
            .expect("read")
            .into_inner();
        assert_eq!(current.kvs[0].value, b"first");
        // Writer loses the permission: the retry is refused now.
        AuthClient::new(ch.clone())
            .user_revoke_role(with_token(
                pb::AuthUserRevokeRoleRequest {
                    name: "writer".into(),
                    role: "rw".into(),
                },
                Some(&root),
            ))
            .await
            .expect("revoke");
        let refused = put(writer.clone(), "first")
            .await
            .expect_err("retry without permission");
        assert_eq!(refused.code(), Code::PermissionDenied);
    });
    assert!(server.stop().success());
}

/// `snapshot save` (root only) carries users, roles and the enabled flag,
/// and a member restored from it enforces them.
#[test]
fn a_restored_snapshot_keeps_users_roles_and_enforcement() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(&dir.path().join("m"), port, &["--bcrypt-cost", "4"]);
    let file = dir.path().join("backup.db");
    runtime().block_on(async {
        let ch = channel(port).await;
        set_up_users(&ch).await;
        let root = authenticate(&ch, "root", ROOT_PASSWORD)
            .await
            .expect("root");
        let mut stream = MaintenanceClient::new(ch)
            .snapshot(with_token(pb::SnapshotRequest {}, Some(&root)))
            .await
            .expect("root saves a snapshot")
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.message().await.expect("chunk") {
            bytes.extend_from_slice(&chunk.blob);
        }
        std::fs::write(&file, bytes).expect("write the snapshot");
    });
    assert!(server.stop().success());
    let port = free_port();
    let restored = dir.path().join("restored");
    let options = raftkv_server::snapshot_file::RestoreOptions {
        data_dir: Some(restored.clone()),
        initial_advertise_peer_urls: format!("http://127.0.0.1:{}", port + 1),
        ..Default::default()
    };
    raftkv_server::snapshot_file::restore(&file, &options).expect("restore");
    let server = start(&restored, port, &["--bcrypt-cost", "4"]);
    runtime().block_on(async {
        let ch = channel(port).await;
        let writer = authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect("writer's password came along");
        let outside = KvClient::new(ch.clone())
            .put(with_token(
                pb::PutRequest {
                    key: b"outside".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                },
                Some(&writer),
            ))
            .await
            .expect_err("still outside writer's permission");
        assert_eq!(outside.code(), Code::PermissionDenied);
        let anonymous = KvClient::new(ch)
            .range(pb::RangeRequest {
                key: b"k/a".to_vec(),
                ..Default::default()
            })
            .await
            .expect_err("auth still enabled");
        assert_eq!(anonymous.message(), "etcdserver: user name is empty");
    });
    assert!(server.stop().success());
}

/// `--auth-token jwt,...`: tokens are JWTs any member verifies; a token
/// from before an auth change is refused as old, an expired one as
/// invalid, and a forged one too.
#[test]
fn jwt_tokens_carry_their_revision_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let private = dir.path().join("jwt.key");
    let public = dir.path().join("jwt.pub");
    std::fs::write(&private, key.serialize_pem()).expect("private key");
    std::fs::write(&public, key.public_key_pem()).expect("public key");
    let token_flag = format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=2s",
        public.display(),
        private.display()
    );
    let port = free_port();
    let server = start(
        &dir.path().join("m"),
        port,
        &["--auth-token", &token_flag, "--bcrypt-cost", "4"],
    );
    runtime().block_on(async {
        let ch = channel(port).await;
        set_up_users(&ch).await;
        let root = authenticate(&ch, "root", ROOT_PASSWORD)
            .await
            .expect("root");
        let writer = authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect("writer");
        assert_eq!(writer.split('.').count(), 3, "a JWT: {writer}");
        let put = |token: String| {
            let ch = ch.clone();
            async move {
                KvClient::new(ch)
                    .put(with_token(
                        pb::PutRequest {
                            key: b"k/jwt".to_vec(),
                            value: b"v".to_vec(),
                            ..Default::default()
                        },
                        Some(&token),
                    ))
                    .await
            }
        };
        put(writer.clone()).await.expect("writer writes with a JWT");
        let mut forged = writer.clone();
        forged.truncate(forged.len() - 4);
        forged.push_str("AAAA");
        let refused = put(forged).await.expect_err("forged");
        assert_eq!(refused.message(), "etcdserver: invalid auth token");
        // Any auth change moves the revision on: older tokens are refused.
        AuthClient::new(ch.clone())
            .role_add(with_token(
                pb::AuthRoleAddRequest { name: "new".into() },
                Some(&root),
            ))
            .await
            .expect("role add");
        let old = put(writer.clone()).await.expect_err("old revision");
        assert_eq!(old.code(), Code::InvalidArgument);
        assert_eq!(old.message(), "etcdserver: revision of auth store is old");
        let fresh = authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect("again");
        put(fresh.clone()).await.expect("a fresh token writes");
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let expired = put(fresh).await.expect_err("expired");
        assert_eq!(expired.message(), "etcdserver: invalid auth token");
    });
    assert!(server.stop().success());
}

/// Bad `--auth-token` and `--bcrypt-cost` values stop the server at start
/// with a clear message.
#[test]
fn bad_auth_flags_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (flags, message) in [
        (vec!["--auth-token", "opaque"], "must be simple or jwt"),
        (
            vec!["--auth-token", "jwt,sign-method=RS256,pub-key=/nonexistent"],
            "cannot read /nonexistent",
        ),
        (
            vec!["--auth-token", "jwt,sign-method=NONE"],
            "invalid sign-method",
        ),
        (
            vec!["--bcrypt-cost", "3"],
            "--bcrypt-cost 3 is out of range",
        ),
        (
            vec!["--bcrypt-cost", "32"],
            "--bcrypt-cost 32 is out of range",
        ),
        (
            vec!["--auth-token-ttl", "0"],
            "--auth-token-ttl must be positive",
        ),
    ] {
        let port = free_port();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
            .arg("--data-dir")
            .arg(dir.path().join(format!("d{port}")))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{port}")])
            .args(&flags)
            .output()
            .expect("raftkv runs");
        assert!(!out.status.success(), "{flags:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
    }
}

/// On three members: a simple token given out through one member works on
/// every other at once (a member that has not applied its entry yet waits
/// for it), a permission granted through one member holds on all, and a
/// revocation through another is refused everywhere after it.
#[test]
fn tokens_and_permissions_hold_on_every_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let members = common::start_cluster_with(dir.path(), 3, &["--bcrypt-cost", "4"]);
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    runtime().block_on(async {
        let mut channels = Vec::new();
        for &port in &ports {
            channels.push(channel(port).await);
        }
        set_up_users(&channels[0]).await;
        let root = authenticate(&channels[1], "root", ROOT_PASSWORD)
            .await
            .expect("root");
        for round in 0..5 {
            // A token from member `round % 3`, used at once on the others.
            let from = round % 3;
            let writer = authenticate(&channels[from], "writer", WRITER_PASSWORD)
                .await
                .expect("writer");
            for (i, ch) in channels.iter().enumerate() {
                let key = format!("k/{round}/{i}");
                KvClient::new(ch.clone())
                    .put(with_token(
                        pb::PutRequest {
                            key: key.into_bytes(),
                            value: b"v".to_vec(),
                            ..Default::default()
                        },
                        Some(&writer),
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("token from m{from} on m{i}: {e:?}"));
            }
        }
        let writer = authenticate(&channels[2], "writer", WRITER_PASSWORD)
            .await
            .expect("writer");
        AuthClient::new(channels[1].clone())
            .role_revoke_permission(with_token(
                pb::AuthRoleRevokePermissionRequest {
                    role: "rw".into(),
                    key: b"k/".to_vec(),
                    range_end: b"k0".to_vec(),
                },
                Some(&root),
            ))
            .await
            .expect("revoke");
        for (i, ch) in channels.iter().enumerate() {
            let read = KvClient::new(ch.clone())
                .range(with_token(
                    pb::RangeRequest {
                        key: b"k/0/0".to_vec(),
                        ..Default::default()
                    },
                    Some(&writer),
                ))
                .await
                .expect_err("revoked everywhere");
            assert_eq!(read.code(), Code::PermissionDenied, "m{i}");
        }
    });
    drop(members);
}

async fn next(responses: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("a response within 5 s")
        .expect("the stream")
        .expect("a response")
}

/// A watch is checked when it is created, as etcd checks it: a running
/// watch goes on after its user loses the permission (etcd's behaviour),
/// while a new watch on the same stream, and any read, is refused at once.
#[test]
fn a_revoked_permission_refuses_new_watches_and_reads_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(&dir.path().join("m"), port, &["--bcrypt-cost", "4"]);
    runtime().block_on(async {
        let ch = channel(port).await;
        set_up_users(&ch).await;
        let root = authenticate(&ch, "root", ROOT_PASSWORD)
            .await
            .expect("root");
        let writer = authenticate(&ch, "writer", WRITER_PASSWORD)
            .await
            .expect("writer");
        let create = |key: &str| pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: key.as_bytes().to_vec(),
                    ..Default::default()
                },
            )),
        };
        let (requests, receiver) = tokio::sync::mpsc::channel(4);
        requests.send(create("k/a")).await.expect("send");
        let mut responses = WatchClient::new(ch.clone())
            .watch(with_token(
                tokio_stream::wrappers::ReceiverStream::new(receiver),
                Some(&writer),
            ))
            .await
            .expect("watch")
            .into_inner();
        let created = next(&mut responses).await;
        assert!(created.created && !created.canceled, "{created:?}");
        AuthClient::new(ch.clone())
            .role_revoke_permission(with_token(
                pb::AuthRoleRevokePermissionRequest {
                    role: "rw".into(),
                    key: b"k/".to_vec(),
                    range_end: b"k0".to_vec(),
                },
                Some(&root),
            ))
            .await
            .expect("revoke");
        // The read is refused at once, on the same token.
        let read = KvClient::new(ch.clone())
            .range(with_token(
                pb::RangeRequest {
                    key: b"k/a".to_vec(),
                    ..Default::default()
                },
                Some(&writer),
            ))
            .await
            .expect_err("revoked");
        assert_eq!(read.code(), Code::PermissionDenied);
        assert_eq!(read.message(), "etcdserver: permission denied");
        // So is a new watch on the running stream.
        requests.send(create("k/b")).await.expect("send");
        let refused = next(&mut responses).await;
        assert!(refused.created && refused.canceled, "{refused:?}");
        assert_eq!(refused.cancel_reason, "etcdserver: permission denied");
        // The watch created before the revocation still sees root's write.
        KvClient::new(ch.clone())
            .put(with_token(
                pb::PutRequest {
                    key: b"k/a".to_vec(),
                    value: b"after".to_vec(),
                    ..Default::default()
                },
                Some(&root),
            ))
            .await
            .expect("root writes");
        let event = next(&mut responses).await;
        assert_eq!(event.watch_id, created.watch_id);
        assert_eq!(event.events.len(), 1, "{event:?}");
    });
    drop(server);
}

/// With `--client-cert-auth` and auth enabled, a verified certificate's
/// Common Name is the user when no token is given (etcd's rule); a token
/// still wins, and a Common Name that is no user gets nothing.
#[test]
fn a_client_certificates_common_name_is_the_user() {
    use common::tls::{channel as tls_channel, client_config, wait_ready_url, Alpn, Ca, Validity};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("auth test CA");
    let server_cert = ca.issue("server", &["127.0.0.1", "localhost"], Validity::Current);
    let (cert, key) = server_cert.write(dir.path(), "server");
    let ca_file = ca.write(dir.path(), "ca");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let data = dir.path().join("m");
    let _server = common::spawn_with_urls(
        &data,
        port,
        &url,
        "http",
        &[
            "--cert-file",
            &cert.display().to_string(),
            "--key-file",
            &key.display().to_string(),
            "--trusted-ca-file",
            &ca_file.display().to_string(),
            "--client-cert-auth",
            "--bcrypt-cost",
            "4",
        ],
    );
    let as_cn = |cn: &str| {
        client_config(
            Some(&ca),
            Some(&ca.issue(cn, &[], Validity::Current)),
            Alpn::H2,
        )
    };
    let writer_tls = as_cn("writer");
    assert!(
        wait_ready_url(&url, Some(writer_tls.clone())),
        "TLS server ready"
    );
    runtime().block_on(async {
        let writer_ch = tls_channel(&url, Some(writer_tls))
            .await
            .expect("writer's connection");
        set_up_users(&writer_ch).await;
        let put = |ch: Channel, key: &'static str, token: Option<String>| async move {
            KvClient::new(ch)
                .put(with_token(
                    pb::PutRequest {
                        key: key.as_bytes().to_vec(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    },
                    token.as_deref(),
                ))
                .await
        };
        put(writer_ch.clone(), "k/cn", None)
            .await
            .expect("the certificate names writer");
        let outside = put(writer_ch.clone(), "other", None)
            .await
            .expect_err("outside");
        assert_eq!(outside.code(), Code::PermissionDenied);
        let nobody = authenticate(&writer_ch, "nobody", NOBODY_PASSWORD)
            .await
            .expect("nobody");
        let overridden = put(writer_ch.clone(), "k/cn", Some(nobody))
            .await
            .expect_err("the token wins over the certificate");
        assert_eq!(overridden.code(), Code::PermissionDenied);
        let stranger = tls_channel(&url, Some(as_cn("mallory")))
            .await
            .expect("connects");
        let refused = put(stranger, "k/cn", None).await.expect_err("no such user");
        assert_eq!(refused.code(), Code::PermissionDenied);
    });
}
