//! raftkvctl behaviour with no etcdctl 3.4 counterpart to compare with:
//! `--count-only` (added to etcdctl after 3.4), interactive txn prompts,
//! the version line and `check` of a recorded history.

mod common;

use common::{run, TestServer, Tool};

#[test]
fn count_only_prints_the_count_with_fields_and_is_refused_elsewhere() {
    let server = TestServer::start();
    let ep = server.endpoint();
    for key in ["c1", "c2", "c3"] {
        assert_eq!(
            run(Tool::Raftkvctl, &ep, &["put", key, "v"], None, None).code,
            0
        );
    }
    let out = run(
        Tool::Raftkvctl,
        &ep,
        &["get", "c", "--prefix", "--count-only", "-w", "fields"],
        None,
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.ends_with("\"More\" : false\n\"Count\" : 3\n"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("\"Key\""), "{}", out.stdout);

    let out = run(
        Tool::Raftkvctl,
        &ep,
        &["get", "c", "--prefix", "--count-only"],
        None,
        None,
    );
    assert_eq!(out.code, 128);
    assert_eq!(
        out.stderr,
        "Error: --count-only is only for `--write-out=fields`\n"
    );
    let out = run(
        Tool::Raftkvctl,
        &ep,
        &[
            "get",
            "c",
            "--prefix",
            "--count-only",
            "--keys-only",
            "-w",
            "fields",
        ],
        None,
        None,
    );
    assert_eq!(out.code, 128);
}

#[test]
fn interactive_txn_prompts_for_each_section() {
    let server = TestServer::start();
    let out = run(
        Tool::Raftkvctl,
        &server.endpoint(),
        &["txn", "-i"],
        Some("\nput t yes\n\n\n"),
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n"
    );
}

#[test]
fn version_needs_no_server() {
    let out = run(Tool::Raftkvctl, "127.0.0.1:1", &["version"], None, None);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout,
        format!(
            "raftkvctl version: {}\nAPI version: 3.4\n",
            env!("CARGO_PKG_VERSION")
        )
    );
}

/// A write of "5" on x by process 1, then a read by process 2 that starts
/// after it completed, returning `read`.
fn history_file(dir: &std::path::Path, read: &str) -> String {
    let text = format!(
        concat!(
            r#"{{"process":1,"key":"x","input":{{"type":"write","value":"5"}},"invoke_ns":100,"complete_ns":250,"outcome":{{"status":"ok","output":{{"type":"write"}}}}}}"#,
            "\n",
            r#"{{"process":2,"key":"x","input":{{"type":"read"}},"invoke_ns":300,"complete_ns":400,"outcome":{{"status":"ok","output":{{"type":"read","value":{}}}}}}}"#,
            "\n",
        ),
        read
    );
    let path = dir.join(format!("history-{}.jsonl", read.replace('"', "")));
    std::fs::write(&path, text).expect("write the history");
    path.display().to_string()
}

#[test]
fn check_exits_with_the_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = history_file(dir.path(), r#""5""#);
    let out = run(
        Tool::Raftkvctl,
        "127.0.0.1:1",
        &["check", &good],
        None,
        None,
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.starts_with("linearizable: 1 keys, 2 operations"),
        "{}",
        out.stdout
    );

    let stale = history_file(dir.path(), "null");
    let out = run(
        Tool::Raftkvctl,
        "127.0.0.1:1",
        &["check", &stale],
        None,
        None,
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("read returned absent but the value was \"5\""),
        "{}",
        out.stdout
    );

    let out = run(
        Tool::Raftkvctl,
        "127.0.0.1:1",
        &[
            "check",
            &stale,
            "-w",
            "json",
            "--threads",
            "1",
            "--time-budget",
            "5s",
        ],
        None,
        None,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("json report");
    assert_eq!(json["verdict"], "not_linearizable");
    assert_eq!(json["partitions"][0]["violation"]["stuck"][0]["number"], 2);
}

#[test]
fn check_refuses_a_bad_file_naming_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = history_file(dir.path(), r#""5""#);
    let mut text = std::fs::read_to_string(&good).expect("read");
    text.push_str("{\"process\": 3}\n");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, text).expect("write");
    let bad = bad.display().to_string();
    let out = run(Tool::Raftkvctl, "127.0.0.1:1", &["check", &bad], None, None);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with(&format!("Error: {bad}: line 3: not a valid operation")),
        "{}",
        out.stderr
    );
    let missing = dir.path().join("missing.jsonl").display().to_string();
    let out = run(
        Tool::Raftkvctl,
        "127.0.0.1:1",
        &["check", &missing],
        None,
        None,
    );
    assert_eq!(out.code, 2);
}
