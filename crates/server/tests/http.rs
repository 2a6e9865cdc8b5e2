//! HTTP on the client port of a real `raftkv` process: etcd's JSON gateway,
//! `/health`, `/version` and `/metrics`, spoken with a small HTTP/1.1 client
//! over a plain TCP stream and checked against the gRPC view.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{free_port, runtime, spawn, start};
use raftkv_proto::etcdserverpb as pb;
use raftkv_proto::etcdserverpb::kv_client::KvClient;
use serde_json::{json, Value};

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn unb64(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("a base64 string"))
        .expect("valid base64")
}

/// An int64 as the gateway writes it: a JSON string.
fn int(value: &Value) -> i64 {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"))
        .parse()
        .expect("a decimal")
}

/// A uint64 as the gateway writes it: a JSON string.
fn uint(value: &Value) -> u64 {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"))
        .parse()
        .expect("a decimal")
}

/// An HTTP/1.1 connection to 127.0.0.1.
struct Conn {
    reader: BufReader<TcpStream>,
    port: u16,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        Self {
            reader: BufReader::new(stream),
            port,
        }
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).expect("send head");
        stream.write_all(body).expect("send body");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a line");
        line.trim_end_matches(['\r', '\n']).to_string()
    }

    /// Reads a status line and headers.
    fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let status_line = self.line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                return (status, headers);
            }
            let (name, value) = line.split_once(':').expect("a header");
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }

    /// One chunk of a chunked body; `None` at the last one.
    fn chunk(&mut self) -> Option<Vec<u8>> {
        let size = usize::from_str_radix(self.line().trim(), 16).expect("chunk size");
        if size == 0 {
            while !self.line().is_empty() {}
            return None;
        }
        let mut data = vec![0; size];
        self.reader.read_exact(&mut data).expect("chunk data");
        self.line();
        Some(data)
    }

    fn reply(&mut self) -> Reply {
        let (status, headers) = self.head();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(length) = get("content-length") {
            body.resize(length.parse().expect("length"), 0);
            self.reader.read_exact(&mut body).expect("body");
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            while let Some(data) = self.chunk() {
                body.extend(data);
            }
        } else {
            self.reader.read_to_end(&mut body).expect("body");
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    fn call(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.send(method, path, headers, body);
        self.reply()
    }
}

fn post(port: u16, path: &str, body: Value) -> Reply {
    Conn::open(port).call("POST", path, &[], body.to_string().as_bytes())
}

fn get(port: u16, path: &str) -> Reply {
    Conn::open(port).call("GET", path, &[], b"")
}

/// A successful gateway call's JSON.
fn ok(port: u16, path: &str, body: Value) -> Value {
    let reply = post(port, path, body);
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

fn grpc_range(port: u16, key: &str) -> pb::RangeResponse {
    runtime().block_on(async {
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        kv.range(pb::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner()
    })
}

fn grpc_put(port: u16, key: &str, value: &str) -> i64 {
    runtime().block_on(async {
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        kv.put(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner()
        .header
        .map_or(0, |h| h.revision)
    })
}

#[test]
fn gateway_kv_calls_agree_with_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);

    let put = ok(
        port,
        "/v3/kv/put",
        json!({"key": b64("foo"), "value": b64("bar")}),
    );
    let put_rev = int(&put["header"]["revision"]);
    let grpc = grpc_range(port, "foo");
    let header = grpc.header.expect("header");
    assert_eq!(put_rev, header.revision);
    assert_eq!(uint(&put["header"]["cluster_id"]), header.cluster_id);
    assert_eq!(uint(&put["header"]["member_id"]), header.member_id);
    assert_eq!(uint(&put["header"]["raft_term"]), header.raft_term);

    // int64 fields are accepted as numbers and as strings.
    let range = ok(
        port,
        "/v3/kv/range",
        json!({"key": b64("foo"), "limit": 1, "revision": put_rev.to_string()}),
    );
    let kv = &range["kvs"][0];
    let grpc_kv = &grpc.kvs[0];
    assert_eq!(unb64(&kv["key"]), grpc_kv.key);
    assert_eq!(unb64(&kv["value"]), grpc_kv.value);
    assert_eq!(int(&kv["create_revision"]), grpc_kv.create_revision);
    assert_eq!(int(&kv["mod_revision"]), grpc_kv.mod_revision);
    assert_eq!(int(&kv["version"]), grpc_kv.version);
    assert_eq!(range["count"], json!("1"));
    assert!(kv.get("lease").is_none(), "defaults are left out: {kv}");

    // The /v3beta/ prefix is an alias.
    let beta = ok(port, "/v3beta/kv/range", json!({"key": b64("foo")}));
    assert_eq!(beta["kvs"], range["kvs"]);

    // A txn: create-if-absent fails, so the failure branch reads.
    let txn = ok(
        port,
        "/v3/kv/txn",
        json!({
            "compare": [{"key": b64("foo"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": b64("foo"), "value": b64("other")}}],
            "failure": [{"request_range": {"key": b64("foo")}}],
        }),
    );
    assert!(txn.get("succeeded").is_none(), "false is left out: {txn}");
    let read = &txn["responses"][0]["response_range"]["kvs"][0];
    assert_eq!(unb64(&read["value"]), b"bar");
    // ... and a txn that writes.
    let txn = ok(
        port,
        "/v3/kv/txn",
        json!({
            "compare": [{"key": b64("foo"), "target": "VALUE", "result": "EQUAL", "value": b64("bar")}],
            "success": [{"request_put": {"key": b64("foo"), "value": b64("baz")}}],
        }),
    );
    assert_eq!(txn["succeeded"], json!(true));
    let txn_rev = int(&txn["header"]["revision"]);
    assert_eq!(txn_rev, put_rev + 1);
    assert_eq!(grpc_range(port, "foo").kvs[0].value, b"baz");

    let deleted = ok(
        port,
        "/v3/kv/deleterange",
        json!({"key": b64("foo"), "prev_kv": true}),
    );
    assert_eq!(deleted["deleted"], json!("1"));
    assert_eq!(unb64(&deleted["prev_kvs"][0]["value"]), b"baz");
    assert!(grpc_range(port, "foo").kvs.is_empty());

    // Exactly-once ids travel as Grpc-Metadata headers: a retry gets the
    // first outcome.
    let ids = [
        ("Grpc-Metadata-raftkv-client-id", "4242"),
        ("Grpc-Metadata-raftkv-sequence", "1"),
    ];
    let body = json!({"key": b64("once"), "value": b64("1")}).to_string();
    let first = Conn::open(port).call("POST", "/v3/kv/put", &ids, body.as_bytes());
    let retry = Conn::open(port).call("POST", "/v3/kv/put", &ids, body.as_bytes());
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        first.json()["header"]["revision"],
        retry.json()["header"]["revision"]
    );
    assert_eq!(grpc_range(port, "once").kvs[0].version, 1);

    // Compaction, then a read below it: etcd's error, mapped as
    // grpc-gateway maps OutOfRange.
    let head = grpc_put(port, "foo", "again");
    ok(
        port,
        "/v3/kv/compaction",
        json!({"revision": head.to_string()}),
    );
    let compacted = post(
        port,
        "/v3/kv/range",
        json!({"key": b64("foo"), "revision": 2}),
    );
    assert_eq!(compacted.status, 400);
    assert_eq!(compacted.header("content-type"), Some("application/json"));
    let message = "etcdserver: mvcc: required revision has been compacted";
    assert_eq!(
        compacted.json(),
        json!({"error": message, "code": 11, "message": message})
    );
    let future = post(
        port,
        "/v3/kv/range",
        json!({"key": b64("foo"), "revision": head + 100}),
    );
    assert_eq!(future.status, 400);
    assert_eq!(future.json()["code"], json!(11));
    let empty = post(port, "/v3/kv/put", json!({"value": b64("no key")}));
    assert_eq!(empty.status, 400);
    assert_eq!(
        empty.json()["message"],
        json!("etcdserver: key is not provided")
    );
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn gateway_leases_grant_live_and_revoke() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);

    let grant = ok(port, "/v3/lease/grant", json!({"TTL": 60}));
    let id = grant["ID"].as_str().expect("ID as a string").to_string();
    assert_eq!(grant["TTL"], json!("60"));
    ok(
        port,
        "/v3/kv/put",
        json!({"key": b64("leased"), "value": b64("v"), "lease": id}),
    );
    let ttl = ok(
        port,
        "/v3/lease/timetolive",
        json!({"ID": id, "keys": true}),
    );
    assert_eq!(ttl["grantedTTL"], json!("60"));
    let remaining = int(&ttl["TTL"]);
    assert!((1..=60).contains(&remaining), "{ttl}");
    assert_eq!(unb64(&ttl["keys"][0]), b"leased");
    let leases = ok(port, "/v3/lease/leases", json!({}));
    assert_eq!(leases["leases"][0]["ID"], json!(id));

    // Keep-alive streams one answer per request, then ends with the body.
    let mut conn = Conn::open(port);
    let body = format!("{{\"ID\":\"{id}\"}}\n{{\"ID\":{id}}}");
    let reply = conn.call("POST", "/v3/lease/keepalive", &[], body.as_bytes());
    assert_eq!(reply.status, 200);
    let lines: Vec<Value> = reply
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", reply.text());
    for line in &lines {
        assert_eq!(line["result"]["ID"], json!(id));
        assert_eq!(line["result"]["TTL"], json!("60"));
    }

    // etcd's alias path revokes too; the key goes with the lease.
    ok(port, "/v3/kv/lease/revoke", json!({"ID": id}));
    let ttl = ok(port, "/v3/kv/lease/timetolive", json!({"ID": id}));
    assert_eq!(ttl["TTL"], json!("-1"));
    assert!(grpc_range(port, "leased").kvs.is_empty());
    let again = post(port, "/v3/lease/revoke", json!({"ID": id}));
    assert_eq!(again.status, 404);
    assert_eq!(
        again.json(),
        json!({"error": "etcdserver: requested lease not found", "code": 5, "message": "etcdserver: requested lease not found"})
    );
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn gateway_watch_streams_events_as_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);

    let mut conn = Conn::open(port);
    let create =
        json!({"create_request": {"key": b64("w/"), "range_end": b64("w0"), "prev_kv": true}});
    conn.send("POST", "/v3/watch", &[], create.to_string().as_bytes());
    let (status, headers) = conn.head();
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v == "chunked"));
    let mut pending = String::new();
    let mut next_line = |conn: &mut Conn| -> Value {
        loop {
            if let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                return serde_json::from_str(&line).expect("a JSON line");
            }
            let chunk = conn.chunk().expect("the watch stream stays open");
            pending.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    };
    let created = next_line(&mut conn);
    assert_eq!(created["result"]["created"], json!(true), "{created}");

    // The request body has ended; the watch goes on.
    let first = grpc_put(port, "w/a", "1");
    grpc_put(port, "w/a", "2");
    let event = next_line(&mut conn);
    let events = &event["result"]["events"];
    assert_eq!(int(&event["result"]["header"]["revision"]), first);
    assert!(
        events[0].get("type").is_none(),
        "PUT is the default: {event}"
    );
    assert_eq!(unb64(&events[0]["kv"]["key"]), b"w/a");
    assert_eq!(unb64(&events[0]["kv"]["value"]), b"1");
    let event = next_line(&mut conn);
    let events = &event["result"]["events"];
    assert_eq!(unb64(&events[0]["kv"]["value"]), b"2");
    assert_eq!(unb64(&events[0]["prev_kv"]["value"]), b"1");

    ok(port, "/v3/kv/deleterange", json!({"key": b64("w/a")}));
    let event = next_line(&mut conn);
    assert_eq!(event["result"]["events"][0]["type"], json!("DELETE"));
    drop(conn);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn status_member_list_health_and_version_answer_as_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = start(dir.path(), port, &[]);

    let status = ok(port, "/v3/maintenance/status", json!({}));
    assert_eq!(status["version"], json!("3.5.13"));
    assert_eq!(status["leader"], status["header"]["member_id"]);
    assert!(int(&status["raftIndex"]) > 0 && int(&status["dbSize"]) > 0);
    // A member publishes its client URLs through Raft once it runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let members = loop {
        let members = ok(port, "/v3/cluster/member/list", json!({}));
        if members["members"][0].get("clientURLs").is_some() || Instant::now() > deadline {
            break members;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let me = &members["members"][0];
    assert_eq!(me["ID"], status["header"]["member_id"]);
    assert_eq!(
        me["clientURLs"],
        json!([format!("http://127.0.0.1:{port}")])
    );
    assert_eq!(
        me["peerURLs"],
        json!([format!("http://127.0.0.1:{}", port + 1)])
    );

    let health = get(port, "/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), r#"{"health":"true","reason":""}"#);
    let version = get(port, "/version");
    assert_eq!(version.status, 200);
    assert_eq!(version.header("content-type"), Some("application/json"));
    assert_eq!(
        version.text(),
        r#"{"etcdserver":"3.5.13","etcdcluster":"3.5.0"}"#
    );
    assert_eq!(get(port, "/no/such/page").status, 404);

    // A raised alarm makes the member unhealthy, unless excluded; enums are
    // taken by name through the gateway.
    let member_id = status["header"]["member_id"].clone();
    let alarm = |action: &str| {
        ok(
            port,
            "/v3/maintenance/alarm",
            json!({"action": action, "memberID": member_id, "alarm": "NOSPACE"}),
        )
    };
    let raised = alarm("ACTIVATE");
    assert_eq!(raised["alarms"][0]["alarm"], json!("NOSPACE"), "{raised}");
    let health = get(port, "/health");
    assert_eq!(health.status, 503);
    assert_eq!(
        health.text(),
        "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n"
    );
    assert_eq!(get(port, "/health?exclude=NOSPACE").status, 200);
    alarm("DEACTIVATE");
    assert_eq!(get(port, "/health").status, 200);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn health_is_false_with_503_on_a_member_without_a_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // A member of three whose peers never start: it can elect nobody.
    let others = [free_port(), free_port()];
    let cluster = format!(
        "a=http://127.0.0.1:{},b=http://127.0.0.1:{},c=http://127.0.0.1:{}",
        port + 1,
        others[0] + 1,
        others[1] + 1
    );
    let _server = spawn(
        dir.path(),
        port,
        &["--name", "a", "--initial-cluster", &cluster],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            drop(stream);
            break get(port, "/health");
        }
        assert!(Instant::now() < deadline, "raftkv did not listen");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(health.status, 503);
    assert_eq!(
        health.text(),
        "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n"
    );
    // A serializable check asks only whether this member serves reads.
    let local = get(port, "/health?serializable=true");
    assert_eq!(local.status, 200, "{}", local.text());
    let metrics = get(port, "/metrics").text();
    assert_eq!(sample(&metrics, "etcd_server_has_leader"), Some(0.0));
    // Its name and client URL are not published (there is no leader to
    // publish them through), so, as etcd's, it holds even a serializable
    // read rather than answer it.
    let held = runtime().block_on(async {
        let mut kv = KvClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect");
        let mut request = tonic::Request::new(pb::RangeRequest {
            key: b"k".to_vec(),
            serializable: true,
            ..Default::default()
        });
        request.set_timeout(Duration::from_millis(500));
        kv.range(request).await
    });
    let status = held.expect_err("a member that has not published holds requests");
    assert!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
}

/// The value of one series in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

fn range_ok_series() -> &'static str {
    r#"grpc_server_handled_total{grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="Range",grpc_code="OK"}"#
}

#[test]
fn metrics_report_leadership_proposals_disk_and_grpc_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let metrics_port = free_port();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    let server = start(dir.path(), port, &["--listen-metrics-urls", &metrics_url]);

    let before = get(port, "/metrics");
    assert_eq!(before.status, 200);
    assert!(before
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/openmetrics-text")));
    let before = before.text();
    assert_eq!(sample(&before, "etcd_server_has_leader"), Some(1.0));
    assert_eq!(sample(&before, "etcd_server_is_leader"), Some(1.0));
    assert_eq!(
        sample(&before, "etcd_server_leader_changes_seen_total"),
        Some(1.0)
    );
    let committed = sample(&before, "etcd_server_proposals_committed_total").expect("committed");
    let ranges = sample(&before, range_ok_series()).expect("Range OK is counted from the start");
    let commits = sample(&before, "etcd_disk_backend_commit_duration_seconds_count")
        .expect("backend commits");

    for i in 0..5 {
        grpc_put(port, &format!("m{i}"), "v");
    }
    grpc_range(port, "m0");
    let after = get(port, "/metrics").text();
    assert!(
        sample(&after, "etcd_server_proposals_committed_total").expect("committed")
            >= committed + 5.0
    );
    assert_eq!(
        sample(&after, "etcd_server_proposals_applied_total"),
        sample(&after, "etcd_server_proposals_committed_total")
    );
    assert_eq!(sample(&after, "etcd_server_proposals_pending"), Some(0.0));
    assert!(sample(&after, "etcd_disk_wal_fsync_duration_seconds_count").expect("fsyncs") >= 5.0);
    // The puts' batches are committed together, by the read after them at the latest.
    assert!(
        sample(&after, "etcd_disk_backend_commit_duration_seconds_count").expect("commits")
            > commits
    );
    assert!(sample(&after, "etcd_disk_wal_fsync_duration_seconds_sum").expect("sum") > 0.0);
    assert_eq!(
        sample(
            &after,
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        sample(&after, "etcd_disk_wal_fsync_duration_seconds_count")
    );
    assert!(sample(&after, "etcd_mvcc_db_total_size_in_bytes").expect("db size") > 0.0);
    assert!(sample(&after, "etcd_debugging_mvcc_current_revision").expect("revision") >= 6.0);
    // One more Range over gRPC (the readiness probe made others before).
    assert_eq!(sample(&after, range_ok_series()), Some(ranges + 1.0));
    assert_eq!(
        sample(
            &after,
            r#"grpc_server_handled_total{grpc_type="unary",grpc_service="etcdserverpb.KV",grpc_method="Put",grpc_code="OK"}"#
        ),
        Some(5.0)
    );

    // The metrics URL serves /metrics and /health, nothing else.
    let scraped = get(metrics_port, "/metrics").text();
    assert_eq!(sample(&scraped, "etcd_server_has_leader"), Some(1.0));
    assert_eq!(get(metrics_port, "/health").status, 200);
    assert_eq!(get(metrics_port, "/version").status, 404);
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn bad_requests_are_refused_and_the_connection_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // A small request limit, so the gateway's body limit (2 x 1 KiB + 1 MiB)
    // is quick to cross.
    let server = start(dir.path(), port, &["--max-request-bytes", "1024"]);
    let mut conn = Conn::open(port);

    let malformed = conn.call("POST", "/v3/kv/range", &[], b"{\"key\": ");
    assert_eq!(malformed.status, 400);
    let error = malformed.json();
    assert_eq!(error["code"], json!(3));
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("malformed JSON request")),
        "{error}"
    );
    let wrong_shape = conn.call("POST", "/v3/kv/range", &[], b"{\"key\": 5}");
    assert_eq!(wrong_shape.status, 400);

    // The same connection goes on serving.
    let put = json!({"key": b64("k"), "value": b64("v")}).to_string();
    assert_eq!(
        conn.call("POST", "/v3/kv/put", &[], put.as_bytes()).status,
        200
    );
    let range = conn.call("POST", "/v3/kv/range", &[], br#"{"key":"aw=="}"#);
    assert_eq!(range.status, 200);
    assert_eq!(unb64(&range.json()["kvs"][0]["value"]), b"v");

    // A value over --max-request-bytes: etcd's own error.
    let big = json!({"key": b64("k"), "value": b64(&"x".repeat(2000))}).to_string();
    let too_large = conn.call("POST", "/v3/kv/put", &[], big.as_bytes());
    assert_eq!(too_large.status, 400);
    assert_eq!(
        too_large.json()["message"],
        json!("etcdserver: request is too large")
    );
    // A body over the gateway's limit is refused before it is parsed.
    let huge = format!(
        "{{\"key\":\"{}\",\"value\":\"{}\"}}",
        b64("k"),
        "A".repeat((1 << 20) + 4096)
    );
    let mut fresh = Conn::open(port);
    let refused = fresh.call("POST", "/v3/kv/put", &[], huge.as_bytes());
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["code"], json!(8));

    // Wrong method on a gateway path; the server is still well.
    assert_eq!(
        Conn::open(port)
            .call("GET", "/v3/kv/range", &[], b"")
            .status,
        405
    );
    assert_eq!(get(port, "/health").status, 200);
    assert_eq!(server.stop().code(), Some(0));
}
