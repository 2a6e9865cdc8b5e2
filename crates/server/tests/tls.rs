//! TLS on the client and peer ports: real `raftkv` processes on free
//! loopback ports, certificates made here with rcgen, clients built on
//! rustls (and the real etcdctl where it is installed).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{
    channel, client_config, http1, log_of, log_shows, put_get, read, served_certificate,
    wait_ready_url, Alpn, Ca, Issued, Validity,
};
use common::{etcdctl_available, free_port, runtime, spawn_with_urls, Server};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::cluster_client::ClusterClient;
use raftkv_proto::etcdserverpb::lease_client::LeaseClient;
use raftkv_proto::raftkvpeer::peer_client::PeerClient;

const LOCAL: &[&str] = &["127.0.0.1", "localhost"];

/// A server with an `https://` client URL (and a plain peer URL), TLS
/// flags `extra`; waits until `ready_tls` can read through it.
fn start_tls(dir: &Path, extra: &[&str], ready_tls: Arc<rustls::ClientConfig>) -> Server {
    let port = free_port();
    let server = spawn_with_urls(
        dir,
        port,
        &format!("https://127.0.0.1:{port}"),
        "http",
        extra,
    );
    let url = format!("https://127.0.0.1:{port}");
    assert!(
        wait_ready_url(&url, Some(ready_tls)),
        "raftkv with TLS not ready; its log:\n{}",
        log_of(dir, port)
    );
    server
}

fn https(server: &Server) -> String {
    format!("https://127.0.0.1:{}", server.port)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Whether the process is still running (it was not restarted or killed).
fn running(server: &mut Server) -> bool {
    matches!(server.child.try_wait(), Ok(None))
}

#[test]
fn a_tls_client_port_serves_grpc_the_gateway_health_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let (cert, key) = ca
        .issue("server", LOCAL, Validity::Current)
        .write(dir.path(), "server");
    let args = ["--cert-file", path(&cert), "--key-file", path(&key)];
    let h2 = client_config(Some(&ca), None, Alpn::H2);
    let server = start_tls(&dir.path().join("data"), &args, h2.clone());
    let url = https(&server);
    let rt = runtime();
    assert_eq!(
        rt.block_on(put_get(&url, Some(h2.clone()), "k", "over tls")),
        Ok("over tls".to_string())
    );
    let h1 = client_config(Some(&ca), None, Alpn::Http1);
    let (status, body) = rt
        .block_on(http1(
            server.port,
            Some(h1.clone()),
            "POST",
            "/v3/kv/range",
            r#"{"key":"aw=="}"#,
        ))
        .expect("gateway over TLS");
    assert_eq!(status, 200, "{body}");
    // "over tls" in base64.
    assert!(body.contains("b3ZlciB0bHM="), "{body}");
    let (status, body) = rt
        .block_on(http1(server.port, Some(h1.clone()), "GET", "/health", ""))
        .expect("health over TLS");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""health":"true""#), "{body}");
    let (status, body) = rt
        .block_on(http1(server.port, Some(h1), "GET", "/metrics", ""))
        .expect("metrics over TLS");
    assert_eq!(status, 200);
    assert!(body.contains("etcd_server_has_leader 1"), "{body}");
}

#[test]
fn mixed_listeners_refuse_the_wrong_protocol_clearly_and_keep_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let (cert, key) = ca
        .issue("server", LOCAL, Validity::Current)
        .write(dir.path(), "server");
    let data = dir.path().join("data");
    let port = free_port();
    let plain_port = free_port();
    let urls = format!("https://127.0.0.1:{port},http://127.0.0.1:{plain_port}");
    let _server = spawn_with_urls(
        &data,
        port,
        &urls,
        "http",
        &["--cert-file", path(&cert), "--key-file", path(&key)],
    );
    let tls_url = format!("https://127.0.0.1:{port}");
    let plain_url = format!("http://127.0.0.1:{plain_port}");
    let h2 = client_config(Some(&ca), None, Alpn::H2);
    assert!(
        wait_ready_url(&tls_url, Some(h2.clone())),
        "{}",
        log_of(&data, port)
    );
    assert!(wait_ready_url(&plain_url, None), "both listeners serve");
    let rt = runtime();

    // A plaintext HTTP client on the TLS port is told what it did wrong.
    let (status, body) = rt
        .block_on(http1(port, None, "GET", "/health", ""))
        .expect("an answer");
    assert_eq!(status, 400);
    assert!(
        body.contains("Client sent an HTTP request to an HTTPS server"),
        "{body}"
    );
    // A plaintext gRPC client on the TLS port fails.
    let plain_on_tls = rt.block_on(put_get(&format!("http://127.0.0.1:{port}"), None, "x", "y"));
    assert!(plain_on_tls.is_err(), "{plain_on_tls:?}");
    // A TLS client on the plaintext port fails its handshake.
    let tls_on_plain = rt.block_on(put_get(
        &format!("https://127.0.0.1:{plain_port}"),
        Some(h2.clone()),
        "x",
        "y",
    ));
    assert!(tls_on_plain.is_err(), "{tls_on_plain:?}");
    let tls_on_plain_http = rt.block_on(http1(
        plain_port,
        Some(client_config(Some(&ca), None, Alpn::Http1)),
        "GET",
        "/health",
        "",
    ));
    assert!(tls_on_plain_http.is_err(), "{tls_on_plain_http:?}");

    // Both listeners still serve, and share one store.
    assert_eq!(
        rt.block_on(put_get(&tls_url, Some(h2.clone()), "after", "tls")),
        Ok("tls".into())
    );
    assert_eq!(
        rt.block_on(read(&plain_url, None, "after")),
        Ok(Some("tls".into()))
    );
    assert!(
        log_shows(&data, port, "a plaintext client on a TLS port"),
        "the refusal is logged"
    );
}

#[test]
fn untrusted_missing_and_revoked_certificates_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let rogue = Ca::new("rogue ca");
    let (cert, key) = ca
        .issue("server", LOCAL, Validity::Current)
        .write(dir.path(), "server");
    let ca_file = ca.write(dir.path(), "ca");
    let good = ca.issue("alice", &[], Validity::Current);
    let revoked = ca.issue("mallory", &[], Validity::Current);
    let from_rogue = rogue.issue("alice", &[], Validity::Current);
    let crl = dir.path().join("crl.pem");
    std::fs::write(&crl, ca.crl(&[&revoked])).expect("crl");
    let args = [
        "--cert-file",
        path(&cert),
        "--key-file",
        path(&key),
        "--trusted-ca-file",
        path(&ca_file),
        "--client-cert-auth",
        "--client-crl-file",
        path(&crl),
    ];
    let server = start_tls(
        &dir.path().join("data"),
        &args,
        client_config(Some(&ca), Some(&good), Alpn::H2),
    );
    let url = https(&server);
    let rt = runtime();
    let attempt = |tls| rt.block_on(put_get(&url, Some(tls), "k", "v"));

    // The client does not trust the server's CA.
    let err = attempt(client_config(Some(&rogue), Some(&good), Alpn::H2)).unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    // The server does not trust the client's CA.
    assert!(attempt(client_config(Some(&ca), Some(&from_rogue), Alpn::H2)).is_err());
    // No client certificate while --client-cert-auth is on.
    assert!(attempt(client_config(Some(&ca), None, Alpn::H2)).is_err());
    // A certificate the CRL revokes.
    assert!(attempt(client_config(Some(&ca), Some(&revoked), Alpn::H2)).is_err());
    // The trusted one, and the server kept serving through the refusals.
    assert_eq!(
        attempt(client_config(Some(&ca), Some(&good), Alpn::H2)),
        Ok("v".into())
    );
    let data = dir.path().join("data");
    assert!(log_shows(&data, server.port, "TLS handshake failed"));
    assert!(
        log_shows(&data, server.port, "revoked"),
        "{}",
        log_of(&data, server.port)
    );
}

#[test]
fn expired_certificates_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let ca_file = ca.write(dir.path(), "ca");
    let good = ca.issue("alice", &[], Validity::Current);
    let expired_client = ca.issue("alice", &[], Validity::Expired);
    let (cert, key) = ca
        .issue("server", LOCAL, Validity::Current)
        .write(dir.path(), "server");
    let server = start_tls(
        &dir.path().join("a"),
        &[
            "--cert-file",
            path(&cert),
            "--key-file",
            path(&key),
            "--trusted-ca-file",
            path(&ca_file),
            "--client-cert-auth",
        ],
        client_config(Some(&ca), Some(&good), Alpn::H2),
    );
    let rt = runtime();
    let url = https(&server);
    let err = rt
        .block_on(put_get(
            &url,
            Some(client_config(Some(&ca), Some(&expired_client), Alpn::H2)),
            "k",
            "v",
        ))
        .unwrap_err();
    assert!(!err.is_empty());
    assert!(
        log_shows(&dir.path().join("a"), server.port, "expired"),
        "{}",
        log_of(&dir.path().join("a"), server.port)
    );

    // A server whose own certificate expired: clients refuse it.
    let (cert, key) = ca
        .issue("server", LOCAL, Validity::Expired)
        .write(dir.path(), "expired");
    let port = free_port();
    let data = dir.path().join("b");
    let _expired = spawn_with_urls(
        &data,
        port,
        &format!("https://127.0.0.1:{port}"),
        "http",
        &["--cert-file", path(&cert), "--key-file", path(&key)],
    );
    let url = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = rt.block_on(put_get(
            &url,
            Some(client_config(Some(&ca), None, Alpn::H2)),
            "k",
            "v",
        ));
        match result {
            Err(err) if err.to_lowercase().contains("expired") => break,
            other => {
                assert!(other.is_err(), "an expired server certificate was accepted");
                assert!(Instant::now() < deadline, "no expiry error: {other:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    // Clients that do not verify (as etcdctl --insecure-skip-tls-verify)
    // still reach it: the server itself serves.
    assert!(wait_ready_url(
        &url,
        Some(client_config(None, None, Alpn::H2))
    ));
}

#[test]
fn rotated_certificate_files_are_used_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let first = ca.issue("server-1", LOCAL, Validity::Current);
    let (cert, key) = first.write(dir.path(), "server");
    let h2 = client_config(Some(&ca), None, Alpn::H2);
    let mut server = start_tls(
        &dir.path().join("data"),
        &["--cert-file", path(&cert), "--key-file", path(&key)],
        h2.clone(),
    );
    let url = https(&server);
    let rt = runtime();
    assert_eq!(
        rt.block_on(served_certificate(server.port, h2.clone())),
        Ok(first.der())
    );
    // A connection made before the rotation.
    let early = rt
        .block_on(channel(&url, Some(h2.clone())))
        .expect("connect");

    let second = ca.issue("server-2", LOCAL, Validity::Current);
    // As a rotation tool would: each file replaced whole, key first.
    let replace = |target: &Path, text: &str| {
        let tmp = target.with_extension("new");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, target).expect("rename");
    };
    replace(&key, &second.key_pem);
    replace(&cert, &second.cert_pem);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = rt.block_on(served_certificate(server.port, h2.clone()));
        if served.as_ref() == Ok(&second.der()) {
            break;
        }
        assert!(Instant::now() < deadline, "still serving {served:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(running(&mut server), "no restart");
    // New connections and the old one both work.
    assert_eq!(
        rt.block_on(put_get(&url, Some(h2), "rotated", "yes")),
        Ok("yes".into())
    );
    let mut kv = raftkv_proto::etcdserverpb::kv_client::KvClient::new(early);
    let got = rt
        .block_on(kv.range(pb::RangeRequest {
            key: b"rotated".to_vec(),
            ..Default::default()
        }))
        .expect("the early connection still serves");
    assert_eq!(got.into_inner().kvs.len(), 1);
}

#[test]
fn auto_tls_makes_a_self_signed_certificate_and_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let insecure = client_config(None, None, Alpn::H2);
    let server = start_tls(&data, &["--auto-tls"], insecure.clone());
    let fixtures = data.join("fixtures").join("client");
    let cert_pem = std::fs::read_to_string(fixtures.join("cert.pem")).expect("cert.pem");
    assert!(fixtures.join("key.pem").is_file());
    let rt = runtime();
    use rustls_pki_types::pem::PemObject as _;
    let written =
        rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("pem");
    assert_eq!(
        rt.block_on(served_certificate(server.port, insecure.clone())),
        Ok(written)
    );
    assert_eq!(
        rt.block_on(put_get(&https(&server), Some(insecure), "auto", "tls")),
        Ok("tls".into())
    );
    // No CA signed it: a verifying client refuses it.
    let strict = client_config(Some(&Ca::new("some ca")), None, Alpn::H2);
    assert!(rt
        .block_on(put_get(&https(&server), Some(strict), "k", "v"))
        .is_err());
}

#[test]
fn a_missing_certificate_file_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let missing = dir.path().join("nowhere.pem");
    let mut server = spawn_with_urls(
        &dir.path().join("data"),
        port,
        &format!("https://127.0.0.1:{port}"),
        "http",
        &["--cert-file", path(&missing), "--key-file", path(&missing)],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "raftkv started without its cert");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let log = log_of(&dir.path().join("data"), port);
    assert!(log.contains("nowhere.pem"), "{log}");
}

/// The flags of member `i` of a TLS cluster (client and peer TLS, peer
/// client certificates required, CN `member` only).
struct TlsCluster {
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    ca: Ca,
}

impl TlsCluster {
    fn initial_cluster(&self) -> String {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("m{i}=https://127.0.0.1:{}", port + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn flags(&self, i: usize, peer: &Issued, extra: &[&str]) -> Vec<String> {
        let dir = self.dir.path();
        let (cert, key) = peer.write(dir, &format!("peer-{i}"));
        let server = self.ca.issue("server", LOCAL, Validity::Current);
        let (client_cert, client_key) = server.write(dir, &format!("client-{i}"));
        let ca = dir.join("ca.pem");
        let mut flags: Vec<String> = [
            "--name",
            &format!("m{i}"),
            "--initial-cluster",
            &self.initial_cluster(),
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--cert-file",
            path(&client_cert),
            "--key-file",
            path(&client_key),
            "--peer-cert-file",
            path(&cert),
            "--peer-key-file",
            path(&key),
            "--peer-trusted-ca-file",
            path(&ca),
            "--peer-client-cert-auth",
            "--peer-cert-allowed-cn",
            "member",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        flags.extend(extra.iter().map(|s| s.to_string()));
        flags
    }

    fn spawn(&self, i: usize, peer: &Issued, extra: &[&str]) -> Server {
        let flags = self.flags(i, peer, extra);
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        let port = self.ports[i];
        spawn_with_urls(
            &self.dir.path().join(format!("m{i}")),
            port,
            &format!("https://127.0.0.1:{port}"),
            "https",
            &args,
        )
    }
}

#[test]
fn a_peer_tls_cluster_refuses_untrusted_callers_and_members() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("cluster ca");
    ca.write(dir.path(), "ca");
    let cluster = TlsCluster {
        ports: vec![free_port(), free_port(), free_port()],
        dir,
        ca,
    };
    let member_cert = cluster.ca.issue("member", LOCAL, Validity::Current);
    let mut servers: Vec<Server> = (0..3)
        .map(|i| cluster.spawn(i, &member_cert, &[]))
        .collect();
    let h2 = client_config(Some(&cluster.ca), None, Alpn::H2);
    for (i, port) in cluster.ports.iter().enumerate() {
        assert!(
            wait_ready_url(&format!("https://127.0.0.1:{port}"), Some(h2.clone())),
            "member {i}: {}",
            log_of(&cluster.dir.path().join(format!("m{i}")), *port)
        );
    }
    let rt = runtime();
    let client_url = |i: usize| format!("https://127.0.0.1:{}", cluster.ports[i]);
    assert_eq!(
        rt.block_on(put_get(&client_url(0), Some(h2.clone()), "k", "replicated")),
        Ok("replicated".into())
    );
    assert_eq!(
        rt.block_on(put_get(&client_url(2), Some(h2.clone()), "k2", "too")),
        Ok("too".into())
    );
    assert_eq!(
        rt.block_on(read(&client_url(1), Some(h2.clone()), "k")),
        Ok(Some("replicated".into()))
    );

    // Followers hand lease questions to the leader over the peer port: TLS
    // with the members' certificates.
    let lease = rt
        .block_on(async {
            let channel = channel(&client_url(0), Some(h2.clone())).await?;
            LeaseClient::new(channel)
                .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
                .await
                .map(|r| r.into_inner().id)
                .map_err(|s| s.to_string())
        })
        .expect("lease grant");
    for i in 0..3 {
        let ttl = rt.block_on(async {
            let channel = channel(&client_url(i), Some(h2.clone())).await?;
            LeaseClient::new(channel)
                .lease_time_to_live(pb::LeaseTimeToLiveRequest {
                    id: lease,
                    keys: false,
                })
                .await
                .map(|r| r.into_inner().ttl)
                .map_err(|s| s.to_string())
        });
        assert!(matches!(ttl, Ok(t) if t > 0), "member {i}: {ttl:?}");
    }

    // The peer port's services, called by strangers.
    let peer_url = format!("https://127.0.0.1:{}", cluster.ports[0] + 1);
    let member_list = |tls: Option<Arc<rustls::ClientConfig>>, url: &str| {
        rt.block_on(async {
            let channel = channel(url, tls).await?;
            ClusterClient::new(channel)
                .member_list(pb::MemberListRequest::default())
                .await
                .map(|r| r.into_inner().members.len())
                .map_err(|s| s.to_string())
        })
    };
    let lease_grant = |tls: Option<Arc<rustls::ClientConfig>>| {
        rt.block_on(async {
            let channel = channel(&peer_url, tls).await?;
            LeaseClient::new(channel)
                .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
        })
    };
    let peer_members = |tls: Option<Arc<rustls::ClientConfig>>| {
        rt.block_on(async {
            let channel = channel(&peer_url, tls).await?;
            PeerClient::new(channel)
                .members(raftkv_proto::raftkvpeer::MembersRequest {})
                .await
                .map(|_| ())
                .map_err(|s| s.to_string())
        })
    };
    let rogue = Ca::new("rogue ca");
    let no_cert = client_config(Some(&cluster.ca), None, Alpn::H2);
    let untrusted = client_config(
        Some(&cluster.ca),
        Some(&rogue.issue("member", LOCAL, Validity::Current)),
        Alpn::H2,
    );
    let other_cn = client_config(
        Some(&cluster.ca),
        Some(&cluster.ca.issue("intruder", LOCAL, Validity::Current)),
        Alpn::H2,
    );
    let trusted = client_config(Some(&cluster.ca), Some(&member_cert), Alpn::H2);
    for (what, tls) in [
        ("no certificate", no_cert),
        ("an untrusted certificate", untrusted),
        ("another CN", other_cn),
    ] {
        assert!(
            member_list(Some(tls.clone()), &peer_url).is_err(),
            "{what}: MemberList"
        );
        assert!(
            lease_grant(Some(tls.clone())).is_err(),
            "{what}: LeaseGrant"
        );
        assert!(peer_members(Some(tls)).is_err(), "{what}: Members");
    }
    let plain_peer = format!("http://127.0.0.1:{}", cluster.ports[0] + 1);
    assert!(member_list(None, &plain_peer).is_err(), "plaintext");
    // A caller with the members' certificate is served: the refusals
    // above are the certificate checks.
    assert_eq!(member_list(Some(trusted.clone()), &peer_url), Ok(3));
    assert_eq!(peer_members(Some(trusted)), Ok(()));

    // A member added, then started with an untrusted certificate.
    let joiner_port = free_port();
    let joiner_peer = format!("https://127.0.0.1:{}", joiner_port + 1);
    let added = rt
        .block_on(async {
            let channel = channel(&client_url(0), Some(h2.clone())).await?;
            ClusterClient::new(channel)
                .member_add(pb::MemberAddRequest {
                    peer_ur_ls: vec![joiner_peer.clone()],
                    is_learner: false,
                })
                .await
                .map_err(|s| s.to_string())
        })
        .expect("member add");
    assert_eq!(added.into_inner().members.len(), 4);
    let mut ports = cluster.ports.clone();
    ports.push(joiner_port);
    let joining = TlsCluster {
        ports,
        dir: tempfile::tempdir().expect("tempdir"),
        ca: Ca::new("unused"),
    };
    std::fs::write(joining.dir.path().join("ca.pem"), &cluster.ca.pem).expect("ca");
    // It trusts the cluster's CA, but its own certificate is not the CA's.
    let rogue_member = rogue.issue("member", LOCAL, Validity::Current);
    let mut joiner = joining.spawn(3, &rogue_member, &["--initial-cluster-state", "existing"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(status)) = joiner.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the untrusted member kept running: {}",
            log_of(&joining.dir.path().join("m3"), joiner_port)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the untrusted member could not join");
    let joiner_log = log_of(&joining.dir.path().join("m3"), joiner_port);
    assert!(
        joiner_log.contains("cannot join the existing cluster"),
        "{joiner_log}"
    );
    // The cluster is unaffected: it still writes (a quorum of 3 of 4) and
    // every original member still serves.
    assert_eq!(
        rt.block_on(put_get(&client_url(1), Some(h2.clone()), "after", "join")),
        Ok("join".into())
    );
    for (i, server) in servers.iter_mut().enumerate() {
        assert!(running(server), "member {i} still runs");
    }
    assert!(
        log_shows(
            &cluster.dir.path().join("m0"),
            cluster.ports[0],
            "TLS handshake failed"
        ),
        "m0 logged the refusals"
    );
}

#[test]
fn etcdctl_talks_to_a_tls_client_port() {
    if !etcdctl_available("etcdctl_talks_to_a_tls_client_port") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let ca_file = ca.write(dir.path(), "ca");
    let (cert, key) = ca
        .issue("server", LOCAL, Validity::Current)
        .write(dir.path(), "server");
    let (client_cert, client_key) = ca
        .issue("root", &[], Validity::Current)
        .write(dir.path(), "client");
    let etcdctl = |endpoint: &str, tls: &[&str], args: &[&str]| {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg("--command-timeout=10s")
            .args(tls)
            .args(args)
            .output()
            .expect("etcdctl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Client certificates required: --cacert/--cert/--key.
    let strict = start_tls(
        &dir.path().join("strict"),
        &[
            "--cert-file",
            path(&cert),
            "--key-file",
            path(&key),
            "--trusted-ca-file",
            path(&ca_file),
            "--client-cert-auth",
        ],
        client_config(
            Some(&ca),
            Some(&ca.issue("probe", &[], Validity::Current)),
            Alpn::H2,
        ),
    );
    let endpoint = https(&strict);
    let tls = [
        "--cacert",
        path(&ca_file),
        "--cert",
        path(&client_cert),
        "--key",
        path(&client_key),
    ];
    let (ok, out, err) = etcdctl(&endpoint, &tls, &["put", "foo", "bar"]);
    assert!(ok, "{err}");
    assert_eq!(out, "OK\n");
    let (ok, out, err) = etcdctl(&endpoint, &tls, &["get", "foo"]);
    assert!(ok, "{err}");
    assert_eq!(out, "foo\nbar\n");
    let (ok, _, err) = etcdctl(&endpoint, &tls, &["endpoint", "health"]);
    assert!(ok, "{err}");
    // Without its client certificate etcdctl is refused.
    let (ok, _, _) = etcdctl(&endpoint, &["--cacert", path(&ca_file)], &["get", "foo"]);
    assert!(!ok, "no client certificate, yet served");

    // No client certificates asked for: --insecure-skip-tls-verify.
    let open = start_tls(
        &dir.path().join("open"),
        &["--cert-file", path(&cert), "--key-file", path(&key)],
        client_config(Some(&ca), None, Alpn::H2),
    );
    let insecure = ["--insecure-transport=false", "--insecure-skip-tls-verify"];
    let (ok, out, err) = etcdctl(&https(&open), &insecure, &["put", "k", "v"]);
    assert!(ok, "{err}");
    assert_eq!(out, "OK\n");
    let (ok, out, err) = etcdctl(
        &https(&open),
        &insecure,
        &["get", "k", "--print-value-only"],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "v\n");
}

/// Answers Range with the Common Name of the caller's verified client
/// certificate, as the request's extensions carry it.
struct EchoCn;

fn echoed(extensions: &http::Extensions) -> Vec<u8> {
    raftkv_server::tls::client_common_name(extensions)
        .unwrap_or("<none>")
        .as_bytes()
        .to_vec()
}

#[tonic::async_trait]
impl raftkv_proto::etcdserverpb::kv_server::Kv for EchoCn {
    async fn range(
        &self,
        request: tonic::Request<pb::RangeRequest>,
    ) -> Result<tonic::Response<pb::RangeResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::RangeResponse {
            kvs: vec![raftkv_proto::mvccpb::KeyValue {
                key: b"cn".to_vec(),
                value: echoed(request.extensions()),
                ..Default::default()
            }],
            ..Default::default()
        }))
    }
    async fn put(
        &self,
        _: tonic::Request<pb::PutRequest>,
    ) -> Result<tonic::Response<pb::PutResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn delete_range(
        &self,
        _: tonic::Request<pb::DeleteRangeRequest>,
    ) -> Result<tonic::Response<pb::DeleteRangeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn txn(
        &self,
        _: tonic::Request<pb::TxnRequest>,
    ) -> Result<tonic::Response<pb::TxnResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    type RangeStreamStream = tokio_stream::Once<Result<pb::RangeStreamResponse, tonic::Status>>;
    async fn range_stream(
        &self,
        _: tonic::Request<pb::RangeRequest>,
    ) -> Result<tonic::Response<Self::RangeStreamStream>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn compact(
        &self,
        _: tonic::Request<pb::CompactionRequest>,
    ) -> Result<tonic::Response<pb::CompactionResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
}

#[tokio::test]
async fn grpc_and_http_requests_carry_the_client_certificate_cn() {
    use raftkv_server::tls::options::{Port, TlsOptions, TlsProtocol};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let ca_file = ca.write(dir.path(), "ca");
    let (cert, key) = ca
        .issue("server", LOCAL, Validity::Current)
        .write(dir.path(), "server");
    let options = TlsOptions {
        port: Port::Client,
        cert_file: Some(cert),
        key_file: Some(key),
        trusted_ca_file: Some(ca_file),
        // Optional client certificates would do as well; required here so
        // a request without one cannot pass as "<none>" by accident.
        client_cert_auth: true,
        auto_tls: false,
        crl_file: None,
        allowed_cn: None,
        allowed_hostname: None,
        protocol: TlsProtocol::default(),
        self_signed: false,
    };
    let tls = raftkv_server::tls::server_tls(&options).expect("server TLS");
    let grpc =
        tonic::service::Routes::new(raftkv_proto::etcdserverpb::kv_server::KvServer::new(EchoCn));
    let http_routes = axum::Router::new().route(
        "/v3/kv/range",
        axum::routing::post(|request: axum::extract::Request| async move {
            echoed(request.extensions())
        }),
    );
    let routes = tonic::service::Routes::from(grpc.into_axum_router().merge(http_routes));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(raftkv_server::http::serve(
        routes,
        listener,
        Some(tls),
        async {
            let _ = stopped.await;
        },
    ));
    let alice = ca.issue("alice", &[], Validity::Current);
    let url = format!("https://127.0.0.1:{port}");
    let channel = channel(&url, Some(client_config(Some(&ca), Some(&alice), Alpn::H2)))
        .await
        .expect("connect");
    let answer = raftkv_proto::etcdserverpb::kv_client::KvClient::new(channel)
        .range(pb::RangeRequest {
            key: b"x".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(answer.kvs[0].value, b"alice", "gRPC sees the CN");
    let bob = ca.issue("bob", &[], Validity::Current);
    let (status, body) = http1(
        port,
        Some(client_config(Some(&ca), Some(&bob), Alpn::Http1)),
        "POST",
        "/v3/kv/range",
        "{}",
    )
    .await
    .expect("http");
    assert_eq!((status, body.as_str()), (200, "bob"), "HTTP sees the CN");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

#[test]
fn client_cert_allowed_hostname_refuses_certificates_for_other_hosts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    let ca_file = ca.write(dir.path(), "ca");
    let (cert, key) = ca
        .issue("server", LOCAL, Validity::Current)
        .write(dir.path(), "server");
    let allowed = ca.issue("app", &["app.example"], Validity::Current);
    let other = ca.issue("app", &["other.example"], Validity::Current);
    let server = start_tls(
        &dir.path().join("data"),
        &[
            "--cert-file",
            path(&cert),
            "--key-file",
            path(&key),
            "--trusted-ca-file",
            path(&ca_file),
            "--client-cert-auth",
            "--client-cert-allowed-hostname",
            "app.example",
        ],
        client_config(Some(&ca), Some(&allowed), Alpn::H2),
    );
    let rt = runtime();
    let url = https(&server);
    assert!(rt
        .block_on(put_get(
            &url,
            Some(client_config(Some(&ca), Some(&other), Alpn::H2)),
            "k",
            "v"
        ))
        .is_err());
    assert_eq!(
        rt.block_on(put_get(
            &url,
            Some(client_config(Some(&ca), Some(&allowed), Alpn::H2)),
            "k",
            "v"
        )),
        Ok("v".into())
    );
}

#[test]
fn a_peer_auto_tls_cluster_replicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("m{i}=https://127.0.0.1:{}", port + 1))
        .collect();
    let initial = initial.join(",");
    let _servers: Vec<Server> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let name = format!("m{i}");
            spawn_with_urls(
                &dir.path().join(&name),
                port,
                &format!("http://127.0.0.1:{port}"),
                "https",
                &[
                    "--name",
                    &name,
                    "--initial-cluster",
                    &initial,
                    "--heartbeat-interval",
                    "50",
                    "--election-timeout",
                    "500",
                    "--peer-auto-tls",
                ],
            )
        })
        .collect();
    for (i, port) in ports.iter().enumerate() {
        assert!(
            wait_ready_url(&format!("http://127.0.0.1:{port}"), None),
            "member {i}: {}",
            log_of(&dir.path().join(format!("m{i}")), *port)
        );
        let fixtures = dir.path().join(format!("m{i}/fixtures/peer"));
        assert!(fixtures.join("cert.pem").is_file() && fixtures.join("key.pem").is_file());
    }
    let rt = runtime();
    assert_eq!(
        rt.block_on(put_get(
            &format!("http://127.0.0.1:{}", ports[0]),
            None,
            "k",
            "v"
        )),
        Ok("v".into())
    );
    assert_eq!(
        rt.block_on(put_get(
            &format!("http://127.0.0.1:{}", ports[2]),
            None,
            "k",
            "w"
        )),
        Ok("w".into())
    );
    // The peer port speaks TLS only.
    let plain_peer = format!("http://127.0.0.1:{}", ports[1] + 1);
    assert!(rt
        .block_on(async {
            let channel = channel(&plain_peer, None).await?;
            ClusterClient::new(channel)
                .member_list(pb::MemberListRequest::default())
                .await
                .map_err(|s| s.to_string())
        })
        .is_err());
}

/// The TLS version and suite a handshake with 127.0.0.1:`port` settles on.
fn negotiate(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(rustls::ProtocolVersion, rustls::CipherSuite), String> {
    runtime().block_on(async {
        let uri: http::Uri = format!("https://127.0.0.1:{port}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let stream = raftkv_server::tls::dial::Connector {
            tls: Some(tls),
            local_address: None,
        }
        .open(&uri)
        .await
        .map_err(|e| e.to_string())?;
        stream.negotiated().ok_or_else(|| "no TLS".to_string())
    })
}

/// A client offering only TLS 1.2, or only TLS 1.3.
fn client_for(
    ca: &Ca,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("ca"))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        raftkv_server::tls::crypto_provider(),
    ))
    .with_protocol_versions(&[version])
    .expect("version")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

#[test]
fn cipher_suites_and_tls_versions_are_what_the_flags_say() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("test ca");
    // rcgen's keys are ECDSA P-256: the ECDSA suites apply.
    let (cert, key) = ca
        .issue("server", LOCAL, Validity::Current)
        .write(dir.path(), "server");
    let tls12 = start_tls(
        &dir.path().join("a"),
        &[
            "--cert-file",
            path(&cert),
            "--key-file",
            path(&key),
            "--tls-max-version",
            "TLS1.2",
            "--cipher-suites",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        ],
        client_config(Some(&ca), None, Alpn::H2),
    );
    // A client offering every suite gets the one the flag allows.
    assert_eq!(
        negotiate(tls12.port, client_config(Some(&ca), None, Alpn::H2)),
        Ok((
            rustls::ProtocolVersion::TLSv1_2,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        ))
    );
    assert!(negotiate(tls12.port, client_for(&ca, &rustls::version::TLS13)).is_err());

    let tls13 = start_tls(
        &dir.path().join("b"),
        &[
            "--cert-file",
            path(&cert),
            "--key-file",
            path(&key),
            "--tls-min-version",
            "TLS1.3",
        ],
        client_config(Some(&ca), None, Alpn::H2),
    );
    assert!(negotiate(tls13.port, client_for(&ca, &rustls::version::TLS12)).is_err());
    assert!(matches!(
        negotiate(tls13.port, client_for(&ca, &rustls::version::TLS13)),
        Ok((rustls::ProtocolVersion::TLSv1_3, _))
    ));
}

#[test]
fn a_bad_tls_flag_stops_the_start_with_etcds_message() {
    for (flags, message) in [
        (
            &["--cipher-suites", "TLS_NOPE"][..],
            "unexpected TLS cipher suite \"TLS_NOPE\"",
        ),
        (
            &["--tls-min-version", "TLS1.0"][..],
            "TLS1.2 and TLS1.3 only",
        ),
        (
            &["--listen-client-urls", "https://127.0.0.1:1"][..],
            "must be provided for client url https://127.0.0.1:1 with HTTPS scheme",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftkv"))
            .args(flags)
            .output()
            .expect("raftkv runs");
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
    }
}
