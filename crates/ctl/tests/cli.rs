//! raftkvctl behaviour with no etcdctl 3.4 counterpart to compare with:
//! `--count-only` (added to etcdctl after 3.4), interactive txn prompts and
//! the version line.

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
