//! raftkvctl's client TLS flags behave as etcdctl 3.4's, against a real
//! etcd 3.4 serving https with client certificates required.
//!
//! The certificates are made here with rcgen: a CA, a server certificate
//! for 127.0.0.1 and localhost, a client certificate, and a second CA that
//! signed neither. Each step runs with etcdctl and then raftkvctl against
//! the one server; stdout, stderr (without etcdctl's JSON log lines) and
//! the exit code must be equal (the steps print no headers, so sharing the
//! server keeps them comparable).

mod common;

use std::path::{Path, PathBuf};

use common::etcd::{etcd_binary, EtcdServer, Identity, ServerTls};
use common::{etcdctl_available, run, Run, Tool};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// The PEM files of one test.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, flag: &str, name: &str) -> String {
        format!("--{flag}={}", self.path(name).display())
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a PEM file");
}

/// A CA, and certificates it signed for the server (127.0.0.1, localhost)
/// and a client; a second CA signed nothing here.
fn make_pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = |name: &str| {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("raftkvctl test CA");
    let (other_cert, _) = ca("another CA");
    write(dir.path(), "ca.pem", &ca_cert.pem());
    write(dir.path(), "other-ca.pem", &other_cert.pem());
    let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose, file: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("signed certificate");
        write(dir.path(), &format!("{file}.pem"), &cert.pem());
        write(dir.path(), &format!("{file}-key.pem"), &key.serialize_pem());
    };
    leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "etcd",
        ExtendedKeyUsagePurpose::ServerAuth,
        "server",
    );
    leaf(
        vec![],
        "client",
        ExtendedKeyUsagePurpose::ClientAuth,
        "client",
    );
    write(dir.path(), "garbage.pem", "not a certificate\n");
    Pki { dir }
}

/// etcdctl and raftkvctl give the same answer to `args`.
fn same(endpoint: &str, args: &[&str]) -> Run {
    let expected = run(Tool::Etcdctl, endpoint, args, None, None);
    let actual = run(Tool::Raftkvctl, endpoint, args, None, None);
    if std::env::var_os("CTL_TEST_DEBUG").is_some() {
        eprintln!("{args:?}: {expected:?}");
    }
    assert_eq!(
        actual, expected,
        "{args:?} at {endpoint}: raftkvctl (left) differs from etcdctl (right)"
    );
    actual
}

#[test]
fn tls_flags_connect_and_refuse_as_etcdctl_does() {
    let test = "tls_flags_connect_and_refuse_as_etcdctl_does";
    let Some(binary) = etcd_binary(test) else {
        return;
    };
    if !etcdctl_available(test) {
        return;
    }
    let pki = make_pki();
    let tls = ServerTls {
        cert: pki.path("server.pem"),
        key: pki.path("server-key.pem"),
        client_ca: pki.path("ca.pem"),
        client_cert: pki.path("client.pem"),
        client_key: pki.path("client-key.pem"),
    };
    let server = EtcdServer::start(&binary, &Identity::new(), Some(&tls), &[]);
    let url = server.url();
    let bare = server.endpoint();
    let plain_url = format!("http://{bare}");
    let ca = pki.arg("cacert", "ca.pem");
    let cert = pki.arg("cert", "client.pem");
    let key = pki.arg("key", "client-key.pem");
    // Failing connections: short timeouts (etcdctl waits for its command
    // timeout, then says "context deadline exceeded").
    let quick = ["--dial-timeout=1s", "--command-timeout=2s"];

    let ok = same(&url, &[&ca, &cert, &key, "put", "k", "v"]);
    assert_eq!((ok.code, ok.stdout.as_str()), (0, "OK\n"));
    let ok = same(&bare, &[&ca, &cert, &key, "get", "k"]);
    assert_eq!((ok.code, ok.stdout.as_str()), (0, "k\nv\n"));
    // No CA: verification off.
    let ok = same(
        &bare,
        &["--insecure-skip-tls-verify", &cert, &key, "get", "k"],
    );
    assert_eq!((ok.code, ok.stdout.as_str()), (0, "k\nv\n"), "{ok:?}");
    let ok = same(
        &url,
        &[
            "--insecure-skip-tls-verify=true",
            &cert,
            &key,
            "get",
            "k",
            "--print-value-only",
        ],
    );
    assert_eq!((ok.code, ok.stdout.as_str()), (0, "v\n"));

    // Refused: no client certificate, a CA that did not sign the server's,
    // plaintext to a TLS port, the system's roots only.
    let other_ca = pki.arg("cacert", "other-ca.pem");
    let refusals: Vec<Vec<&str>> = vec![
        vec![&ca, "get", "k"],
        vec![&other_ca, &cert, &key, "get", "k"],
        vec![&other_ca, &cert, &key, "put", "k", "v2"],
        vec!["--insecure-transport=false", &cert, &key, "get", "k"],
    ];
    for args in refusals {
        let args: Vec<&str> = quick.iter().copied().chain(args).collect();
        let refused = same(&bare, &args);
        assert_ne!(refused.code, 0, "{args:?}: {refused:?}");
    }
    let refused = same(
        &plain_url,
        &[quick[0], quick[1], &ca, &cert, &key, "get", "k"],
    );
    assert_ne!(refused.code, 0, "{refused:?}");

    // Files that cannot be used.
    let garbage_cert = pki.arg("cert", "garbage.pem");
    let garbage_key = pki.arg("key", "garbage.pem");
    let server_key = pki.arg("key", "server-key.pem");
    let bad: Vec<Vec<&str>> = vec![
        vec![&ca, &cert, "--key=/nonexistent/key.pem", "get", "k"],
        vec![&ca, "--cert=/nonexistent/cert.pem", &key, "get", "k"],
        vec![&ca, &key, "get", "k"],
        vec![&ca, &garbage_cert, &key, "get", "k"],
        vec![&ca, &cert, &garbage_key, "get", "k"],
        vec![&ca, &cert, &server_key, "get", "k"],
        vec!["--key=", "get", "k"],
    ];
    for args in bad {
        let out = same(&bare, &args);
        assert_eq!(out.code, 128, "{args:?}: {out:?}");
    }
}

#[test]
fn bench_runs_over_tls_with_a_client_certificate() {
    let Some(binary) = etcd_binary("bench_runs_over_tls_with_a_client_certificate") else {
        return;
    };
    let pki = make_pki();
    let tls = ServerTls {
        cert: pki.path("server.pem"),
        key: pki.path("server-key.pem"),
        client_ca: pki.path("ca.pem"),
        client_cert: pki.path("client.pem"),
        client_key: pki.path("client-key.pem"),
    };
    let server = EtcdServer::start(&binary, &Identity::new(), Some(&tls), &[]);
    let ca = pki.arg("cacert", "ca.pem");
    let cert = pki.arg("cert", "client.pem");
    let key = pki.arg("key", "client-key.pem");
    let out = run(
        Tool::Raftkvctl,
        &server.url(),
        &[
            &ca,
            &cert,
            &key,
            "bench",
            "put",
            "--total",
            "50",
            "--clients",
            "2",
            "--json",
        ],
        None,
        None,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    assert_eq!(report["ok"], 50, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
}
