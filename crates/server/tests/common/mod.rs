//! Helpers for tests that run real `raftkv` processes on loopback.
#![allow(dead_code)]

pub mod tls;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;

/// A `raftkv` process this test started.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

/// A free port whose successor is free too (for the peer URL), and neither
/// of them handed out before in this process: a port whose successor was
/// free when one test picked it is just as free for the next pick, and
/// members started together (or tests running side by side) would then
/// listen on each other's peer ports.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local addr").port();
        if port == u16::MAX || TcpListener::bind(("127.0.0.1", port + 1)).is_err() {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        // Taken: `port` or `port + 1` is some earlier pick's port or peer port.
        if handed_out.iter().any(|&p| p.abs_diff(port) <= 1) {
            continue;
        }
        handed_out.push(port);
        return port;
    }
}

pub fn start(data_dir: &Path, port: u16, extra: &[&str]) -> Server {
    let server = spawn(data_dir, port, extra);
    if !wait_ready(port) {
        let log_path = data_dir.join(format!("raftkv-{port}.log"));
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("raftkv on port {port} not ready within 20 s; its log:\n{log}");
    }
    server
}

/// Starts a `raftkv` process without waiting for it to serve: client URL on
/// `port`, peer URL on `port + 1`, log next to the data directory.
pub fn spawn(data_dir: &Path, port: u16, extra: &[&str]) -> Server {
    spawn_with_urls(
        data_dir,
        port,
        &format!("http://127.0.0.1:{port}"),
        "http",
        extra,
    )
}

/// Like [`spawn`], with the client URLs (listened on and advertised) and
/// the peer URL's scheme given (`https` for TLS; the TLS flags go in
/// `extra`).
pub fn spawn_with_urls(
    data_dir: &Path,
    port: u16,
    client_urls: &str,
    peer_scheme: &str,
    extra: &[&str],
) -> Server {
    let url = client_urls.to_string();
    // The peer URL is part of the member's identity: keep it across restarts.
    let peer = format!("{peer_scheme}://127.0.0.1:{}", port + 1);
    std::fs::create_dir_all(data_dir).expect("data dir");
    let log_path = data_dir.join(format!("raftkv-{port}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("server log");
    let child = Command::new(env!("CARGO_BIN_EXE_raftkv"))
        .args(["--data-dir", &data_dir.display().to_string()])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("raftkv starts");
    Server { child, port }
}

/// Waits until a linearizable read succeeds (a leader exists).
pub fn wait_ready(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    let runtime = runtime();
    while Instant::now() < deadline {
        let ready = runtime.block_on(async {
            let Ok(mut kv) = KvClient::connect(format!("http://127.0.0.1:{port}")).await else {
                return false;
            };
            // A member holds requests until it has published its URLs:
            // bounded, so the deadline above is checked.
            let mut request = tonic::Request::new(pb::RangeRequest {
                key: b"ready?".to_vec(),
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(2));
            match kv.range(request).await {
                Ok(_) => true,
                // With auth enabled an anonymous read is refused, once a
                // leader exists to judge it.
                Err(status) => status.message() == "etcdserver: user name is empty",
            }
        });
        if ready {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Server {
    /// Stops the server with SIGTERM (by its PID) and returns its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "raftkv did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only the process this test started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One member of a test cluster; `server` is `None` while it is down.
pub struct Member {
    pub name: String,
    pub port: u16,
    pub dir: std::path::PathBuf,
    pub server: Option<Server>,
    /// Flags beyond the cluster's.
    pub extra: Vec<String>,
}

pub fn cluster_flags(members: &[Member], name: &str) -> Vec<String> {
    let initial: Vec<String> = members
        .iter()
        .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.port + 1))
        .collect();
    vec![
        "--name".into(),
        name.into(),
        "--initial-cluster".into(),
        initial.join(","),
        // Short timeouts keep the test quick; the ratio is etcd's default.
        "--heartbeat-interval".into(),
        "50".into(),
        "--election-timeout".into(),
        "500".into(),
    ]
}

/// Starts (or restarts) member `i` with the cluster's flags.
pub fn start_member(members: &mut [Member], i: usize) {
    let mut flags = cluster_flags(members, &members[i].name);
    flags.extend(members[i].extra.iter().cloned());
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let member = &mut members[i];
    member.server = Some(spawn(&member.dir, member.port, &args));
}

/// Starts `size` members under `base` and waits until each serves.
pub fn start_cluster(base: &std::path::Path, size: usize) -> Vec<Member> {
    start_cluster_with(base, size, &[])
}

/// Like [`start_cluster`], with `extra` flags for every member.
pub fn start_cluster_with(base: &std::path::Path, size: usize, extra: &[&str]) -> Vec<Member> {
    let mut members: Vec<Member> = (0..size)
        .map(|i| Member {
            name: format!("m{i}"),
            port: free_port(),
            dir: base.join(format!("m{i}")),
            server: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    for i in 0..members.len() {
        start_member(&mut members, i);
    }
    for member in &members {
        assert!(wait_ready(member.port), "member {} serves", member.name);
    }
    members
}

/// Whether etcdctl is on PATH; when it is not, the test is skipped with a
/// note, unless RAFTKV_REQUIRE_ETCDCTL is set (the README's test command
/// sets it), where that is a failure.
pub fn etcdctl_available(test: &str) -> bool {
    let found = Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("RAFTKV_REQUIRE_ETCDCTL").is_none(),
            "etcdctl is required (RAFTKV_REQUIRE_ETCDCTL is set) but not on PATH"
        );
        eprintln!("SKIPPED {test}: etcdctl not on PATH (apt-get install etcd-client)");
    }
    found
}
