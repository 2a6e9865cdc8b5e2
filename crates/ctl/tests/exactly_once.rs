//! Retried writes are applied once, against a real raftkv member.
//!
//! The central case loses the answer to a write on purpose: the first
//! endpoint is a proxy that passes requests to the member but swallows its
//! answers. The write is applied, the attempt times out, the client sends
//! the same write with the same request id to the next endpoint (the
//! member itself), and gets the first outcome back instead of a second
//! application. The other tests cross the timeouts that bound the retries.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, run, TestServer, Tool};
use raftkv_ctl::client::{Client, ClientConfig, RetryPolicy};
use raftkv_proto::etcdserverpb as pb;

fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn get(key: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A loopback proxy to `upstream` that forwards what clients send and
/// throws away every byte the upstream answers. Returns its port.
async fn answer_swallowing_proxy(upstream: u16) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("proxy listens");
    let port = listener.local_addr().expect("proxy addr").port();
    tokio::spawn(async move {
        // Bounded: a test makes a handful of connections at most.
        for _ in 0..16 {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                return;
            };
            let (mut client_read, _client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut tokio::io::sink()).await;
                drop(_client_write);
            });
        }
    });
    port
}

#[test]
fn a_write_whose_answer_was_lost_is_retried_with_its_id_and_applied_once() {
    let server = TestServer::start();
    let runtime = multi_thread_runtime();
    runtime.block_on(async {
        let proxy = answer_swallowing_proxy(server.port).await;
        let client = Arc::new(
            Client::new(ClientConfig {
                endpoints: vec![format!("127.0.0.1:{proxy}"), server.endpoint()],
                command_timeout: Duration::from_secs(10),
                retry: RetryPolicy {
                    attempt_timeout: Duration::from_secs(1),
                    ..RetryPolicy::default()
                },
                ..ClientConfig::default()
            })
            .expect("client"),
        );
        let direct = server.client();
        let id = client.next_request_id();
        let writer = {
            let client = client.clone();
            tokio::spawn(async move { client.put(put("lost", "once"), id).await })
        };

        // The first attempt goes through the proxy: the member applies it
        // while the client still waits for the answer it will never get.
        let mut applied_while_waiting = false;
        for _ in 0..200 {
            let seen = direct.range(get("lost")).await.expect("direct read");
            if !seen.kvs.is_empty() {
                applied_while_waiting = !writer.is_finished();
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            applied_while_waiting,
            "the first attempt should be applied before its (lost) answer"
        );

        let answer = writer.await.expect("writer task").expect("retried put");
        let revision = answer.header.expect("header").revision;
        let stored = direct.range(get("lost")).await.expect("read back");
        assert_eq!(stored.kvs.len(), 1);
        assert_eq!(stored.kvs[0].version, 1, "applied exactly once");
        assert_eq!(stored.kvs[0].mod_revision, revision);
        assert_eq!(
            stored.header.expect("header").revision,
            revision,
            "nothing was written after the first application"
        );
    });
}

#[test]
fn the_same_request_id_returns_the_first_outcome_and_a_new_id_writes_again() {
    let server = TestServer::start();
    let runtime = multi_thread_runtime();
    runtime.block_on(async {
        let client = server.client();
        client
            .put(put("k", "v0"), client.next_request_id())
            .await
            .expect("seed");
        let before = client.range(get("k")).await.expect("read").kvs[0].clone();

        let id = client.next_request_id();
        let mut request = put("k", "v1");
        request.prev_kv = true;
        let first = client.put(request.clone(), id).await.expect("first");
        let again = client.put(request.clone(), id).await.expect("again");
        assert_eq!(
            first.header.map(|h| h.revision),
            again.header.map(|h| h.revision)
        );
        assert_eq!(
            first.prev_kv, again.prev_kv,
            "the first outcome, prev_kv included"
        );
        let after = client.range(get("k")).await.expect("read").kvs[0].clone();
        assert_eq!(
            after.version,
            before.version + 1,
            "one application for one id"
        );

        let fresh = client
            .put(request, client.next_request_id())
            .await
            .expect("fresh id");
        assert!(fresh.header.expect("h").revision > first.header.expect("h").revision);
        let last = client.range(get("k")).await.expect("read").kvs[0].clone();
        assert_eq!(last.version, before.version + 2, "a new id is a new write");
    });
}

#[test]
fn a_dead_endpoint_is_skipped_and_the_command_still_succeeds() {
    let server = TestServer::start();
    let dead = free_port();
    let endpoints = format!("127.0.0.1:{dead},{}", server.endpoint());
    let out = run(
        Tool::Raftkvctl,
        &endpoints,
        &["put", "via", "second"],
        None,
        None,
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "OK\n"),
        "{}",
        out.stderr
    );
    let out = run(
        Tool::Raftkvctl,
        &endpoints,
        &["get", "via", "--print-value-only"],
        None,
        None,
    );
    assert_eq!(out.stdout, "second\n");
}

#[test]
fn the_command_timeout_ends_the_retries() {
    let dead = free_port();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftkvctl"))
        .args([
            &format!("--endpoints=127.0.0.1:{dead}"),
            "--command-timeout=1s",
            "put",
            "k",
            "v",
        ])
        .output()
        .expect("raftkvctl runs");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: context deadline exceeded\n"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "took {took:?}"
    );
}

#[test]
fn the_dial_timeout_gives_up_on_an_endpoint_that_does_not_accept() {
    let server = TestServer::start();
    let runtime = multi_thread_runtime();
    runtime.block_on(async {
        // A listener that never accepts, its backlog filled: further
        // connection attempts get no answer at all.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let silent = socket.listen(1).expect("listen");
        let silent_port = silent.local_addr().expect("addr").port();
        let mut fillers = Vec::new();
        for _ in 0..4 {
            let connect = tokio::net::TcpStream::connect(("127.0.0.1", silent_port));
            if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(200), connect).await
            {
                fillers.push(stream);
            }
        }
        let client = Client::new(ClientConfig {
            endpoints: vec![format!("127.0.0.1:{silent_port}"), server.endpoint()],
            dial_timeout: Duration::from_millis(200),
            command_timeout: Duration::from_secs(10),
            retry: RetryPolicy {
                attempt_timeout: Duration::from_secs(5),
                ..RetryPolicy::default()
            },
        })
        .expect("client");
        let started = Instant::now();
        client
            .put(put("dial", "v"), client.next_request_id())
            .await
            .expect("put through the second endpoint");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the first endpoint should be given up after the dial timeout, took {:?}",
            started.elapsed()
        );
        drop(fillers);
        drop(silent);
    });
}
