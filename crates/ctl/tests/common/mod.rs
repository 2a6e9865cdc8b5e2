//! Helpers for raftkvctl's tests: a real raftkv member run in-process (the
//! server crate's `run`, on free loopback ports, in a temporary data
//! directory), and runners for the raftkvctl and etcdctl binaries.
#![allow(dead_code)]

pub mod etcd;

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;
use raftkv_ctl::client::{Client, ClientConfig};
use raftkv_proto::etcdserverpb as pb;

/// A free loopback port (the listener is closed before the port is used).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A single-member raftkv running on a thread of this process.
pub struct TestServer {
    pub port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A member with its own peer URL.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A member with its own peer URL and the server flags `extra`.
    pub fn start_with(extra: &[&str]) -> Self {
        let peer = free_port();
        Self::start_configured(peer, None, extra)
    }

    /// A member that advertises `identity_peer_port` (and
    /// `identity_client_port`, if given) instead of where it listens: two
    /// members started with the same identity have the same member and
    /// cluster ids and list the same client URL, so their answers to the
    /// same commands are byte for byte the same.
    pub fn start_as(identity_peer_port: u16, identity_client_port: Option<u16>) -> Self {
        Self::start_configured(identity_peer_port, identity_client_port, &[])
    }

    fn start_configured(
        identity_peer_port: u16,
        identity_client_port: Option<u16>,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let listen_peer = free_port();
        let peer_url = format!("http://127.0.0.1:{identity_peer_port}");
        let client_url = format!("http://127.0.0.1:{port}");
        let advertised_client = identity_client_port
            .map(|p| format!("http://127.0.0.1:{p}"))
            .unwrap_or_else(|| client_url.clone());
        let data_dir = dir.path().display().to_string();
        let listen_peer_url = format!("http://127.0.0.1:{listen_peer}");
        let initial_cluster = format!("default={peer_url}");
        let mut flags = vec![
            "--data-dir",
            &data_dir,
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &advertised_client,
            "--listen-peer-urls",
            &listen_peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &initial_cluster,
        ];
        flags.extend_from_slice(extra);
        Self::start_with_flags(dir, port, &flags)
    }

    /// A member run with `flags`, which must serve clients on `port`; `dir`
    /// is removed when the server is dropped.
    pub fn start_with_flags(dir: tempfile::TempDir, port: u16, flags: &[&str]) -> Self {
        let flags = raftkv_server::config::Flags::parse_from(
            std::iter::once("raftkv").chain(flags.iter().copied()),
        );
        let config = raftkv_server::config::ServerConfig::from_flags(&flags).expect("config");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            let stopped = async {
                let _ = rx.await;
            };
            if let Err(err) = runtime.block_on(raftkv_server::server::run(config, stopped)) {
                eprintln!("test server failed: {err}");
            }
        });
        let server = Self {
            port,
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: dir,
        };
        server.wait_ready();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A library client for this server.
    pub fn client(&self) -> Client {
        Client::new(ClientConfig {
            endpoints: vec![self.endpoint()],
            ..ClientConfig::default()
        })
        .expect("client")
    }

    fn wait_ready(&self) {
        let runtime = runtime();
        let client = Client::new(ClientConfig {
            endpoints: vec![self.endpoint()],
            command_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        })
        .expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let read = runtime.block_on(client.range(pb::RangeRequest {
                key: b"ready?".to_vec(),
                ..Default::default()
            }));
            // Ready once it serves reads and has applied the entry that
            // publishes its name and client URLs: a fresh one-member
            // cluster's third (bootstrap, the leader's empty entry, the
            // publish). MemberList shows the URLs from the flags before
            // that, so only the applied index tells twins apart reliably.
            let published = read.is_ok()
                && runtime
                    .block_on(client.status(raftkv_ctl::client::Target::Any))
                    .is_ok_and(|status| status.raft_applied_index >= 3);
            if published {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("raftkv on port {} not ready within 30 s", self.port);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Which client binary to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Raftkvctl,
    Etcdctl,
}

/// What a client run printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    /// stderr without etcdctl's JSON log lines.
    pub stderr: String,
}

/// Whether etcdctl can be run; fails when `RAFTKV_REQUIRE_ETCDCTL` is set
/// and it cannot, prints a note and returns false otherwise.
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

fn command(tool: Tool, endpoints: &str, args: &[&str]) -> Command {
    let mut cmd = match tool {
        Tool::Raftkvctl => Command::new(env!("CARGO_BIN_EXE_raftkvctl")),
        Tool::Etcdctl => {
            let mut cmd = Command::new("etcdctl");
            cmd.env("ETCDCTL_API", "3");
            cmd
        }
    };
    cmd.arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args);
    cmd
}

/// Runs a client to completion, feeding `stdin`, in `dir` if given.
pub fn run(
    tool: Tool,
    endpoints: &str,
    args: &[&str],
    stdin: Option<&str>,
    dir: Option<&std::path::Path>,
) -> Run {
    let mut cmd = command(tool, endpoints, args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().expect("client starts");
    {
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
    }
    let output = child.wait_with_output().expect("client finishes");
    finished(output)
}

fn finished(output: std::process::Output) -> Run {
    let stderr = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| !line.starts_with("{\"level\""))
        .map(|line| format!("{line}\n"))
        .collect();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    }
}

/// Runs a long-lived client (watch, keep-alive) for `duration`, then stops
/// it (by its PID, SIGKILL) if it has not exited, and returns what it
/// printed (exit code 0 when it was stopped).
pub fn run_for(tool: Tool, endpoints: &str, args: &[&str], duration: Duration) -> Run {
    let mut child = command(tool, endpoints, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client starts");
    let deadline = Instant::now() + duration;
    let mut exited = false;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !exited {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("client output");
    let mut run = finished(output);
    if !exited {
        // Stopped by the test: only the output matters.
        run.code = 0;
    }
    run
}
