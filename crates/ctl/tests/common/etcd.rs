//! A real etcd 3.4 server for raftkvctl's tests: `/usr/bin/etcd` (or
//! `RAFTKV_ETCD_BIN`) on free loopback ports, in its own temporary data
//! directory, stopped by its PID when dropped.
//!
//! Two servers started with the same [`Identity`] have the same member and
//! cluster ids (etcd derives them from the name, the advertised peer URL
//! and the cluster token), so the same commands in the same order get byte
//! for byte the same answers from both, headers included.
//!
//! Without the binary the tests print SKIPPED, unless `RAFTKV_REQUIRE_ETCD`
//! is set (scripts/test.sh sets it), in which case they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_ctl::client::{Client, ClientConfig, Security};
use raftkv_ctl::tls::TlsSettings;
use raftkv_proto::etcdserverpb as pb;

use super::{free_port, runtime};

/// The etcd binary, or `None` (after saying why) when it is missing and
/// not required.
pub fn etcd_binary(test: &str) -> Option<PathBuf> {
    let binary =
        PathBuf::from(std::env::var("RAFTKV_ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into()));
    if binary.exists() {
        return Some(binary);
    }
    assert!(
        std::env::var_os("RAFTKV_REQUIRE_ETCD").is_none(),
        "{} is missing (RAFTKV_REQUIRE_ETCD is set): install Debian's etcd-server",
        binary.display()
    );
    eprintln!(
        "SKIPPED {test}: {} is missing (apt-get install etcd-server)",
        binary.display()
    );
    None
}

/// What makes two servers' ids equal.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The peer URL advertised (never listened on).
    pub peer_port: u16,
}

impl Identity {
    /// A fresh identity.
    pub fn new() -> Self {
        Self {
            peer_port: free_port(),
        }
    }
}

/// Server-side TLS files (PEM paths).
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA client certificates must be signed by (`--client-cert-auth`),
    /// which also signed the server's.
    pub client_ca: PathBuf,
    /// A client certificate and key it signed, to see the server is ready.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A running etcd.
pub struct EtcdServer {
    pub port: u16,
    child: Child,
    tls: bool,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    /// An etcd 3.4 with `identity`, plaintext or with `tls`; `extra` flags
    /// are added as given.
    pub fn start(
        binary: &Path,
        identity: &Identity,
        tls: Option<&ServerTls>,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let listen_peer = free_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{}", identity.peer_port);
        let mut cmd = Command::new(binary);
        cmd.arg("--name=twin")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{listen_peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=twin={peer_url}"))
            .arg("--initial-cluster-token=raftkvctl-auth-test")
            .arg("--initial-cluster-state=new")
            .args(extra);
        if let Some(tls) = tls {
            cmd.arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()))
                .arg(format!("--trusted-ca-file={}", tls.client_ca.display()))
                .arg("--client-cert-auth");
        }
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        let server = Self {
            port,
            child,
            tls: tls.is_some(),
            _dir: dir,
        };
        server.wait_ready(tls);
        server
    }

    /// `127.0.0.1:port` (TLS or not, as etcdctl takes a bare endpoint).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:port` or `http://...`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Ready once it answers a read (over TLS with the client's files when
    /// `tls` is given), within 30 s.
    fn wait_ready(&self, tls: Option<&ServerTls>) {
        let settings = match tls {
            None => TlsSettings::plaintext(),
            Some(t) => TlsSettings {
                cacert: Some(t.client_ca.clone()),
                cert: Some(t.client_cert.clone()),
                key: Some(t.client_key.clone()),
                ..TlsSettings::plaintext()
            },
        };
        let client = Client::with_security(
            ClientConfig {
                endpoints: vec![self.url()],
                command_timeout: Duration::from_millis(500),
                ..ClientConfig::default()
            },
            Security {
                tls: settings,
                credentials: None,
            },
        )
        .expect("client");
        let runtime = runtime();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let read = runtime.block_on(client.range(pb::RangeRequest {
                key: b"ready?".to_vec(),
                ..Default::default()
            }));
            if read.is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd on port {} not ready within 30 s", self.port);
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // Child::kill signals this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
