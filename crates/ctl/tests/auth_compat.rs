//! raftkvctl's auth, user and role commands and its `--user`/`--password`
//! flags print what etcdctl 3.4 prints, against a real etcd 3.4.
//!
//! Two etcd servers run with the same identity (so the same member and
//! cluster ids in every header); etcdctl drives one, raftkvctl the other,
//! and each step's stdout, stderr (without etcdctl's JSON log lines) and
//! exit code must be equal once the ports are normalized.
//!
//! [`compare_scenario`] takes the two endpoints, so the same steps can be
//! run with raftkvctl against a raftkv server (started with the same
//! identity) once raftkv serves auth.
//!
//! Without etcd or etcdctl the tests print SKIPPED, unless
//! `RAFTKV_REQUIRE_ETCD` / `RAFTKV_REQUIRE_ETCDCTL` are set.

mod common;

use std::time::Duration;

use common::etcd::{etcd_binary, EtcdServer, Identity};
use common::{etcdctl_available, run, runtime, Run, Tool};
use raftkv_ctl::client::{Client, ClientConfig, Credentials, Security};
use raftkv_proto::etcdserverpb as pb;

/// One command of a scenario, with what to feed its stdin.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub args: &'static [&'static str],
    pub stdin: Option<&'static str>,
}

const fn step(args: &'static [&'static str]) -> Step {
    Step { args, stdin: None }
}

const fn with_stdin(args: &'static [&'static str], stdin: &'static str) -> Step {
    Step {
        args,
        stdin: Some(stdin),
    }
}

const ROOT: &str = "--user=root:rootpw";

/// The scenario: users and roles made and shown in every output format,
/// auth enabled, requests with and without users and permissions, then
/// everything taken down again.
pub fn auth_scenario() -> Vec<Step> {
    let formats = |args: &'static [&'static str]| -> Vec<Step> {
        // Each format of one read-only command.
        let mut steps = vec![step(args)];
        for format in ["-w=json", "-w=fields", "-w=table", "-w=protobuf"] {
            let mut with: Vec<&'static str> = args.to_vec();
            with.push(format);
            steps.push(step(Box::leak(with.into_boxed_slice())));
        }
        steps
    };
    let mut steps = vec![
        // No root user yet: etcd refuses.
        step(&["auth", "enable"]),
        step(&["auth", "enable", "extra"]),
        step(&["user", "add", "root", "--new-user-password=rootpw"]),
        // Interactive prompts, fed from stdin.
        with_stdin(&["user", "add", "alice"], "alicepw\nalicepw\n"),
        with_stdin(&["user", "add", "bob"], "bobpw\nother\n"),
        with_stdin(&["user", "add", "bob"], "\n"),
        step(&["user", "add", "carol", "--no-password"]),
        with_stdin(&["user", "add", "dave", "--interactive=false"], "davepw\n"),
        step(&["user", "add", "erin:erinpw", "-w=json"]),
        step(&["user", "add", "frank:frankpw", "-w=fields"]),
        step(&["user", "add", "gina:ginapw", "-w=table"]),
        step(&["user", "add", ":nopw"]),
        step(&["user", "add", "root:again"]),
        step(&["user", "add"]),
        step(&["user", "add", "a", "b"]),
    ];
    steps.extend(formats(&["user", "list"]));
    steps.extend([
        step(&["role", "add", "reader"]),
        step(&["role", "add", "writer", "-w=json"]),
        step(&["role", "add", "spare", "-w=fields"]),
        step(&["role", "add", "reader"]),
        step(&["role", "add"]),
        step(&["role", "grant-permission", "reader", "read", "foo"]),
        step(&[
            "role",
            "grant-permission",
            "reader",
            "read",
            "pre/",
            "--prefix",
        ]),
        step(&[
            "role",
            "grant-permission",
            "reader",
            "READ",
            "from",
            "--from-key",
        ]),
        step(&["role", "grant-permission", "reader", "readwrite", "a", "c"]),
        step(&[
            "role",
            "grant-permission",
            "--prefix",
            "reader",
            "write",
            "",
        ]),
        step(&[
            "role",
            "grant-permission",
            "writer",
            "write",
            "foo",
            "-w=json",
        ]),
        step(&[
            "role",
            "grant-permission",
            "writer",
            "readwrite",
            "w",
            "-w=fields",
        ]),
        step(&["role", "grant-permission", "reader", "admin", "foo"]),
        step(&[
            "role",
            "grant-permission",
            "reader",
            "read",
            "x",
            "--prefix",
            "--from-key",
        ]),
        step(&[
            "role",
            "grant-permission",
            "reader",
            "read",
            "x",
            "y",
            "--prefix",
        ]),
        step(&[
            "role",
            "grant-permission",
            "reader",
            "read",
            "x",
            "y",
            "--from-key",
        ]),
        step(&["role", "grant-permission", "reader", "read"]),
        step(&["role", "grant-permission", "nobody", "read", "foo"]),
    ]);
    steps.extend(formats(&["role", "get", "reader"]));
    steps.extend(formats(&["role", "get", "writer"]));
    steps.extend(formats(&["role", "list"]));
    steps.extend([
        step(&["role", "get", "nobody"]),
        step(&["user", "grant-role", "alice", "reader"]),
        step(&["user", "grant-role", "alice", "writer", "-w=json"]),
        step(&["user", "grant-role", "dave", "spare", "-w=fields"]),
        step(&["user", "grant-role", "alice", "nobody"]),
        step(&["user", "grant-role", "alice"]),
    ]);
    steps.extend(formats(&["user", "get", "alice"]));
    steps.extend(formats(&["user", "get", "alice", "--detail"]));
    steps.extend([
        step(&["user", "get", "nobody"]),
        // root exists without the root role: etcdctl adds and grants it.
        step(&["auth", "enable"]),
        step(&["auth", "enable"]),
        // No user, a wrong password, a user lacking permission.
        step(&["get", "foo"]),
        step(&["put", "foo", "bar"]),
        step(&["user", "list"]),
        step(&["put", "foo", "bar", ROOT]),
        step(&["get", "foo", ROOT, "-w=json"]),
        // --user without a password asks for it.
        with_stdin(&["get", "foo", "--user=root"], "rootpw\n"),
        with_stdin(&["get", "foo", "--user=root"], "wrong\n"),
        step(&["get", "foo", "--user=root:"]),
        step(&["get", "foo", "--user=root:wrong"]),
        // An empty name gets no token at all.
        step(&["get", "foo", "--user=:pw"]),
        step(&["get", "foo", "--user=nobody:pw"]),
        step(&["get", "foo", "--user=alice:alicepw"]),
        step(&["get", "foo", "--user=alice", "--password=alicepw"]),
        step(&["get", "pre/x", "--user=alice:alicepw"]),
        step(&["get", "b", "--user=alice:alicepw", "-w=fields"]),
        step(&["get", "zzz", "--user=alice:alicepw"]),
        step(&["put", "foo", "x", "--user=alice:alicepw"]),
        step(&["put", "w1", "x", "--user=alice:alicepw"]),
        step(&["get", "foo", "--user=dave:davepw"]),
        step(&["get", "foo", "--user=carol:any"]),
        step(&["user", "list", "--user=alice:alicepw"]),
        step(&["user", "list", ROOT]),
        // Changes as root.
        step(&["role", "revoke-permission", "reader", "foo", ROOT]),
        step(&[
            "role",
            "revoke-permission",
            "reader",
            "pre/",
            "--prefix",
            ROOT,
        ]),
        step(&[
            "role",
            "revoke-permission",
            "reader",
            "from",
            "--from-key",
            ROOT,
            "-w=json",
        ]),
        step(&[
            "role",
            "revoke-permission",
            "reader",
            "a",
            "c",
            ROOT,
            "-w=fields",
        ]),
        step(&["role", "revoke-permission", "reader", "", "--prefix", ROOT]),
        step(&["role", "revoke-permission", "reader", "foo", ROOT]),
        step(&["role", "revoke-permission", "reader", ROOT]),
        step(&["role", "get", "reader", ROOT]),
        step(&["get", "foo", "--user=alice:alicepw"]),
        step(&["user", "revoke-role", "alice", "reader", ROOT]),
        step(&["user", "revoke-role", "alice", "writer", ROOT, "-w=json"]),
        step(&["user", "revoke-role", "alice", "reader", ROOT]),
        step(&["user", "revoke-role", "alice", ROOT]),
        with_stdin(
            &["user", "passwd", "alice", "--interactive=false", ROOT],
            "newpw\n",
        ),
        with_stdin(&["user", "passwd", "alice", ROOT], "newpw2\nnewpw2\n"),
        with_stdin(
            &["user", "passwd", "alice", ROOT, "-w=json"],
            "newpw3\nnewpw3\n",
        ),
        step(&["user", "passwd", ROOT]),
        step(&["get", "foo", "--user=alice:alicepw"]),
        step(&["get", "foo", "--user=alice:newpw3"]),
        step(&["user", "delete", "alice", ROOT]),
        step(&["user", "delete", "bob", ROOT, "-w=json"]),
        step(&["user", "delete", "dave", ROOT, "-w=fields"]),
        step(&["user", "delete", "nobody", ROOT]),
        step(&["user", "delete", ROOT]),
        step(&["role", "delete", "reader", ROOT]),
        step(&["role", "delete", "writer", ROOT, "-w=json"]),
        step(&["role", "delete", "nobody", ROOT]),
        step(&["role", "delete", ROOT]),
        step(&["auth", "disable"]),
        step(&["auth", "disable", ROOT]),
        step(&["auth", "disable"]),
        step(&["get", "foo"]),
        step(&["user", "list", "-w=json"]),
        step(&["role", "list"]),
        // Bad input.
        step(&["get", "foo", "--cacert=/nonexistent/ca.pem"]),
        step(&["get", "foo", "--cert=/nonexistent/c.pem"]),
        step(&["get", "foo", "--cacert="]),
    ]);
    steps
}

/// What differs between two servers of one identity: the port.
fn normalize(run: Run, endpoint: &str) -> Run {
    let fix = |text: &str| text.replace(endpoint, "ENDPOINT");
    Run {
        code: run.code,
        stdout: fix(&run.stdout),
        stderr: fix(&run.stderr),
    }
}

/// Runs `steps` with etcdctl against `etcdctl_endpoint` and raftkvctl
/// against `raftkvctl_endpoint` (two servers of one identity, in the same
/// state), step by step, and fails at the first difference.
pub fn compare_scenario(steps: &[Step], etcdctl_endpoint: &str, raftkvctl_endpoint: &str) {
    compare_scenario_with(steps, etcdctl_endpoint, raftkvctl_endpoint, |run| run);
}

/// Cluster and member ids blanked: raftkv derives them from the peer URLs
/// and token otherwise than etcd does, so its headers carry other numbers.
fn without_ids(run: Run) -> Run {
    let ids = regex::Regex::new(r#"("cluster_id"|"member_id"|"ClusterID" : |"MemberID" : ):?\d+"#)
        .expect("regex");
    let fix = |text: &str| ids.replace_all(text, "${1}ID").into_owned();
    Run {
        code: run.code,
        stdout: fix(&run.stdout),
        stderr: fix(&run.stderr),
    }
}

/// [`compare_scenario`], with `adjust` applied to both sides' runs.
fn compare_scenario_with(
    steps: &[Step],
    etcdctl_endpoint: &str,
    raftkvctl_endpoint: &str,
    adjust: impl Fn(Run) -> Run,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (n, step) in steps.iter().enumerate() {
        let expected = adjust(normalize(
            run(
                Tool::Etcdctl,
                etcdctl_endpoint,
                step.args,
                step.stdin,
                Some(dir.path()),
            ),
            etcdctl_endpoint,
        ));
        let actual = adjust(normalize(
            run(
                Tool::Raftkvctl,
                raftkvctl_endpoint,
                step.args,
                step.stdin,
                Some(dir.path()),
            ),
            raftkvctl_endpoint,
        ));
        if std::env::var_os("CTL_TEST_DEBUG").is_some() {
            eprintln!("step {n} {:?}: {expected:?}", step.args);
        }
        assert_eq!(
            actual, expected,
            "step {n}: {:?} (stdin {:?}): raftkvctl (left) differs from etcdctl (right)",
            step.args, step.stdin
        );
    }
}

#[test]
fn auth_user_and_role_commands_print_as_etcdctl_does() {
    let test = "auth_user_and_role_commands_print_as_etcdctl_does";
    let Some(binary) = etcd_binary(test) else {
        return;
    };
    if !etcdctl_available(test) {
        return;
    }
    let identity = Identity::new();
    let for_etcdctl = EtcdServer::start(&binary, &identity, None, &[]);
    let for_raftkvctl = EtcdServer::start(&binary, &identity, None, &[]);
    compare_scenario(
        &auth_scenario(),
        &for_etcdctl.endpoint(),
        &for_raftkvctl.endpoint(),
    );
}

/// The same scenario with raftkvctl against raftkv: what a user of etcdctl
/// and etcd sees, a user of raftkvctl and raftkv sees too.
#[test]
fn auth_commands_against_raftkv_print_as_etcdctl_against_etcd() {
    let test = "auth_commands_against_raftkv_print_as_etcdctl_against_etcd";
    let Some(binary) = etcd_binary(test) else {
        return;
    };
    if !etcdctl_available(test) {
        return;
    }
    let identity = Identity::new();
    let etcd = EtcdServer::start(&binary, &identity, None, &[]);
    let raftkv = common::TestServer::start_as(identity.peer_port, None);
    // Protobuf output holds the ids in binary; the etcd-against-etcd test
    // compares it.
    let steps: Vec<Step> = auth_scenario()
        .into_iter()
        .filter(|s| !s.args.iter().any(|a| a.contains("protobuf")))
        .collect();
    compare_scenario_with(&steps, &etcd.endpoint(), &raftkv.endpoint(), without_ids);
}

#[test]
fn auth_status_is_unimplemented_by_etcd_3_4() {
    let Some(binary) = etcd_binary("auth_status_is_unimplemented_by_etcd_3_4") else {
        return;
    };
    let server = EtcdServer::start(&binary, &Identity::new(), None, &[]);
    let out = run(
        Tool::Raftkvctl,
        &server.endpoint(),
        &["auth", "status"],
        None,
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr,
        "Error: rpc error: code = Unimplemented desc = unknown method AuthStatus for service etcdserverpb.Auth\n"
    );
}

/// A library client whose token expired gets a new one and resends the
/// call, a write with the same request id.
#[test]
fn an_expired_token_is_renewed_and_the_call_sent_again() {
    let Some(binary) = etcd_binary("an_expired_token_is_renewed_and_the_call_sent_again") else {
        return;
    };
    // Simple tokens live for --auth-token-ttl seconds unless used.
    let server = EtcdServer::start(&binary, &Identity::new(), None, &["--auth-token-ttl=1"]);
    let rt = runtime();
    let admin = enable_auth(&server);
    let root = Client::with_security(
        ClientConfig {
            endpoints: vec![server.endpoint()],
            ..ClientConfig::default()
        },
        Security {
            credentials: Some(Credentials {
                user: "root".into(),
                password: "rootpw".into(),
            }),
            ..Security::default()
        },
    )
    .expect("client");
    rt.block_on(async {
        root.authenticate().await.expect("authenticate");
        assert!(root.has_token());
        // Let the token expire (etcd sweeps expired simple tokens about
        // every second).
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let put = pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        let id = root.next_request_id();
        let first = root
            .put(put, id)
            .await
            .expect("put after the token expired");
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let read = root
            .range(pb::RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
            .expect("get after the token expired");
        assert_eq!(read.kvs.len(), 1);
        assert_eq!(
            read.kvs[0].mod_revision,
            first.header.unwrap_or_default().revision
        );
        // Without credentials the same request is refused.
        let refused = admin
            .range(pb::RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
            .expect_err("no token");
        assert_eq!(refused.to_string(), "etcdserver: user name is empty");
    });
}

/// `ETCDCTL_USER` and `ETCDCTL_PASSWORD` stand for `--user` and
/// `--password`, and `ETCDCTL_CACERT` for `--cacert`, in etcdctl and
/// raftkvctl alike; a flag given as well is refused.
#[test]
fn credentials_from_the_environment_work_as_the_flags_do() {
    let test = "credentials_from_the_environment_work_as_the_flags_do";
    let Some(binary) = etcd_binary(test) else {
        return;
    };
    if !etcdctl_available(test) {
        return;
    }
    let server = EtcdServer::start(&binary, &Identity::new(), None, &[]);
    enable_auth(&server);
    // capnslog's time stamp differs by the moment.
    let stamp = regex::Regex::new(r"(?m)^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} ").expect("regex");
    type Env = &'static [(&'static str, &'static str)];
    let cases: [(Env, &[&str]); 6] = [
        (&[("ETCDCTL_USER", "root:rootpw")], &["put", "k", "v"]),
        (
            &[("ETCDCTL_USER", "root"), ("ETCDCTL_PASSWORD", "rootpw")],
            &["get", "k"],
        ),
        (&[("ETCDCTL_USER", "root:wrong")], &["get", "k"]),
        // A flag and its variable both given: refused.
        (
            &[("ETCDCTL_USER", "root:wrong")],
            &["get", "k", "--user=root:rootpw"],
        ),
        (&[("ETCDCTL_CACERT", "")], &["get", "k", "--cacert=/x"]),
        (&[("ETCDCTL_CACERT", "/nonexistent/ca.pem")], &["get", "k"]),
    ];
    for (env, args) in cases {
        let mut outputs = Vec::new();
        for tool in [Tool::Etcdctl, Tool::Raftkvctl] {
            let mut cmd = match tool {
                Tool::Etcdctl => std::process::Command::new("etcdctl"),
                Tool::Raftkvctl => std::process::Command::new(env!("CARGO_BIN_EXE_raftkvctl")),
            };
            cmd.env("ETCDCTL_API", "3")
                .envs(env.iter().copied())
                .arg(format!("--endpoints={}", server.endpoint()))
                .args(args)
                .stdin(std::process::Stdio::null());
            let out = cmd.output().expect("client runs");

            outputs.push((
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                stamp
                    .replace_all(&String::from_utf8_lossy(&out.stderr), "TIME ")
                    .lines()
                    .filter(|l| !l.starts_with("{\"level\""))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
        assert_eq!(
            outputs[1], outputs[0],
            "{env:?} {args:?}: raftkvctl (left), etcdctl (right)"
        );
    }
}

/// Adds root (password `rootpw`) with the root role and enables auth;
/// returns a client without credentials.
fn enable_auth(server: &EtcdServer) -> Client {
    let rt = runtime();
    let admin = Client::new(ClientConfig {
        endpoints: vec![server.endpoint()],
        ..ClientConfig::default()
    })
    .expect("client");
    rt.block_on(async {
        let id = admin.next_request_id();
        admin
            .user_add(
                pb::AuthUserAddRequest {
                    name: "root".into(),
                    password: "rootpw".into(),
                    ..Default::default()
                },
                id,
            )
            .await
            .expect("user add");
        let id = admin.next_request_id();
        admin
            .role_add(
                pb::AuthRoleAddRequest {
                    name: "root".into(),
                },
                id,
            )
            .await
            .expect("role add");
        let id = admin.next_request_id();
        admin
            .user_grant_role(
                pb::AuthUserGrantRoleRequest {
                    user: "root".into(),
                    role: "root".into(),
                },
                id,
            )
            .await
            .expect("grant");
        let id = admin.next_request_id();
        admin
            .auth_enable(pb::AuthEnableRequest {}, id)
            .await
            .expect("auth enable");
    });
    admin
}
