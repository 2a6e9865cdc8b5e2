//! raftkvctl prints what etcdctl 3.4 prints.
//!
//! Two raftkv members run in-process with the same identity (member id,
//! cluster id, advertised URLs), so the same commands in the same order
//! leave them in the same state. etcdctl drives one, raftkvctl the other,
//! and every step's stdout, stderr (without etcdctl's JSON log lines) and
//! exit code must be equal, after normalizing only what must differ: the
//! endpoint's port, the random lease ids, how long a health check took,
//! database file sizes, and the seconds a lease has left.
//!
//! Without etcdctl on PATH the tests print SKIPPED, unless
//! `RAFTKV_REQUIRE_ETCDCTL` is set, in which case they fail.

mod common;

use std::time::Duration;

use common::{etcdctl_available, free_port, run, run_for, Run, TestServer, Tool};
use regex::Regex;

/// One command of a scenario.
#[derive(Clone, Copy)]
struct Step {
    args: &'static [&'static str],
    stdin: Option<&'static str>,
    /// The output holds a lease's remaining seconds.
    ttl: bool,
    /// Run it for a while and stop it (watch).
    stream: bool,
}

const fn step(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: None,
        ttl: false,
        stream: false,
    }
}

const fn with_stdin(args: &'static [&'static str], stdin: &'static str) -> Step {
    Step {
        args,
        stdin: Some(stdin),
        ttl: false,
        stream: false,
    }
}

const fn ttl(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: None,
        ttl: true,
        stream: false,
    }
}

const fn stream(args: &'static [&'static str]) -> Step {
    Step {
        args,
        stdin: None,
        ttl: false,
        stream: true,
    }
}

/// One side of the comparison: a tool, its server and its state.
struct Side {
    tool: Tool,
    server: TestServer,
    dir: tempfile::TempDir,
    /// The last lease this side was granted (hex).
    lease: Option<String>,
}

impl Side {
    fn new(tool: Tool, server: TestServer) -> Self {
        Self {
            tool,
            server,
            dir: tempfile::tempdir().expect("tempdir"),
            lease: None,
        }
    }

    fn run(&mut self, step: &Step) -> Run {
        let lease = self.lease.clone().unwrap_or_default();
        let args: Vec<String> = step
            .args
            .iter()
            .map(|a| a.replace("$LEASE", &lease))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let endpoint = self.server.endpoint();
        let out = if step.stream {
            run_for(self.tool, &endpoint, &args, Duration::from_millis(1500))
        } else {
            run(
                self.tool,
                &endpoint,
                &args,
                step.stdin,
                Some(self.dir.path()),
            )
        };
        self.remember_lease(&out.stdout);
        self.normalize(out, step)
    }

    fn remember_lease(&mut self, stdout: &str) {
        let simple = Regex::new(r"^lease ([0-9a-f]{16}) granted with TTL\(\d+s\)$").unwrap();
        let json = Regex::new(r#""ID":(\d+),"TTL":\d+,"Error""#).unwrap();
        let line = stdout.trim_end();
        if let Some(c) = simple.captures(line) {
            self.lease = Some(c[1].to_string());
        } else if let Some(c) = json.captures(line) {
            let id: i64 = c[1].parse().unwrap();
            self.lease = Some(format!("{id:016x}"));
        }
    }

    fn normalize(&self, out: Run, step: &Step) -> Run {
        if std::env::var_os("CTL_TEST_DEBUG").is_some() {
            eprintln!("{:?} lease={:?} {:?}", self.tool, self.lease, out);
        }
        let fix = |text: &str| {
            let mut text = text.replace(&self.server.endpoint(), "ENDPOINT");
            if let Some(lease) = &self.lease {
                let decimal = i64::from_str_radix(lease, 16).unwrap().to_string();
                text = text.replace(lease.as_str(), "LEASE");
                text = text.replace(&decimal, "LEASE");
            }
            let rules = [
                (r"took = \S+", "took = D"),
                (r#""took":"[^"]*""#, r#""took":"D""#),
                (r#""Took" : \S+"#, r#""Took" : D"#),
                (r"\b\d+(\.\d+)?(ns|µs|ms|s)\b", "D"),
                (r"\b\d+(\.\d)? (B|kB|MB|GB)\b", "SIZE"),
                (r#""(dbSize|dbSizeInUse)":\d+"#, r#""$1":N"#),
                (r#""DBSize" : \d+"#, r#""DBSize" : N"#),
            ];
            for (pattern, replacement) in rules {
                text = Regex::new(pattern)
                    .unwrap()
                    .replace_all(&text, replacement)
                    .into_owned();
            }
            if step.ttl {
                for (pattern, replacement) in [
                    (r"remaining\(\d+s\)", "remaining(N)"),
                    (r#""ttl":\d+"#, r#""ttl":N"#),
                ] {
                    text = Regex::new(pattern)
                        .unwrap()
                        .replace_all(&text, replacement)
                        .into_owned();
                }
            }
            // A new member's id is random (printed as Go's `%16x`, so padded
            // with spaces when it has leading zero digits), and members are
            // listed in id order.
            text = Regex::new(r"Member [ 0-9a-f]{16} added to cluster")
                .unwrap()
                .replace_all(&text, "Member NEW added to cluster")
                .into_owned();
            text = Regex::new(r#"ETCD_INITIAL_CLUSTER="([^"]*)""#)
                .unwrap()
                .replace_all(&text, |c: &regex::Captures<'_>| {
                    let mut entries: Vec<&str> = c[1].split(',').collect();
                    entries.sort_unstable();
                    format!("ETCD_INITIAL_CLUSTER=\"{}\"", entries.join(","))
                })
                .into_owned();
            // Tables: cell widths follow the normalized-away values.
            if text.starts_with('+') {
                text = Regex::new(r"-+")
                    .unwrap()
                    .replace_all(&text, "-")
                    .into_owned();
                text = Regex::new(r" +")
                    .unwrap()
                    .replace_all(&text, " ")
                    .into_owned();
            }
            text
        };
        Run {
            code: out.code,
            stdout: fix(&out.stdout),
            stderr: fix(&out.stderr),
        }
    }
}

/// Runs `steps` with etcdctl and raftkvctl on twin servers and compares.
fn compare(test: &str, steps: &[Step]) {
    if !etcdctl_available(test) {
        return;
    }
    let identity_peer = free_port();
    let identity_client = free_port();
    let mut etcdctl = Side::new(
        Tool::Etcdctl,
        TestServer::start_as(identity_peer, Some(identity_client)),
    );
    let mut ours = Side::new(
        Tool::Raftkvctl,
        TestServer::start_as(identity_peer, Some(identity_client)),
    );
    for step in steps {
        let expected = etcdctl.run(step);
        let actual = ours.run(step);
        assert_eq!(
            actual,
            expected,
            "`{}` (left: raftkvctl, right: etcdctl)",
            step.args.join(" ")
        );
    }
}

#[test]
fn put_get_del_print_as_etcdctl() {
    compare(
        "put_get_del_print_as_etcdctl",
        &[
            step(&["put", "foo", "bar"]),
            step(&["put", "foo", "bar2", "--prev-kv"]),
            step(&["put", "foo", "baz", "--prev-kv", "-w", "json"]),
            step(&["put", "foo", "qux", "--prev-kv", "-w", "fields"]),
            step(&["put", "foo", "x", "-w", "table"]),
            step(&["put", "foo", "--ignore-value", "--prev-kv"]),
            step(&["put", "nokey", "--ignore-value"]),
            step(&["put", "foo", "v", "--lease", "zz"]),
            step(&["put", "foo", "v", "--lease", "1234"]),
            step(&["put"]),
            with_stdin(&["put", "fromstdin"], "line one\nline two\n"),
            step(&["put", "--", "-dash", "v"]),
            step(&["put", "k1", "v1"]),
            step(&["put", "k2", "v2"]),
            step(&["put", "k3", "v3"]),
            step(&["put", "k4", "<&>"]),
            step(&["put", "k5", "v5"]),
            step(&["get", "foo"]),
            step(&["get", "foo", "-w", "json"]),
            step(&["get", "foo", "-w", "fields"]),
            step(&["get", "foo", "-w", "table"]),
            step(&["get", "fromstdin"]),
            step(&["get", "--", "-dash"]),
            step(&["get", "k", "--prefix"]),
            step(&["get", "k", "--prefix", "-w", "json"]),
            step(&["get", "k", "--prefix", "--keys-only"]),
            step(&["get", "k", "--prefix", "--keys-only", "-w", "json"]),
            step(&[
                "get",
                "k",
                "--prefix",
                "--limit",
                "2",
                "--order",
                "DESCEND",
                "--sort-by",
                "MODIFY",
                "-w",
                "json",
            ]),
            step(&["get", "k", "--prefix", "--limit=2", "--order=descend"]),
            step(&[
                "get",
                "k",
                "--prefix",
                "--sort-by=value",
                "--order=DESCEND",
                "--print-value-only",
            ]),
            step(&["get", "k", "--prefix", "--sort-by=version"]),
            step(&[
                "get",
                "k",
                "--prefix",
                "--sort-by=create",
                "--order=ASCEND",
                "-w",
                "fields",
            ]),
            step(&["get", "k", "--from-key", "--keys-only"]),
            step(&["get", "", "--prefix", "--keys-only"]),
            step(&["get", "k1", "k3"]),
            step(&["get", "k1", "--consistency", "s"]),
            step(&["get", "k1", "--hex"]),
            step(&["get", "foo", "--rev", "2"]),
            step(&["get", "foo", "--rev", "1000"]),
            step(&["get", "nokey"]),
            step(&["get", "nokey", "-w", "json"]),
            step(&["get", "nokey", "-w", "fields"]),
            step(&["get", ""]),
            step(&["get"]),
            step(&["get", "k", "--prefix", "--from-key"]),
            step(&["get", "k", "x", "--prefix"]),
            step(&["get", "k", "--sort-by", "bogus"]),
            step(&["get", "k", "--order", "bogus"]),
            step(&["get", "k", "--consistency", "x"]),
            step(&["get", "k1", "--print-value-only", "-w", "json"]),
            step(&["del", "nokey"]),
            step(&["del", "nokey", "-w", "json"]),
            step(&["del", "k1", "--prev-kv"]),
            step(&["del", "k2", "--prev-kv", "-w", "json"]),
            step(&["del", "k3", "--prev-kv", "-w", "fields"]),
            step(&["del", "k", "--prefix", "--prev-kv"]),
            step(&["del", "a", "--from-key", "--prev-kv", "-w", "json"]),
            step(&["del"]),
            step(&["del", "k", "--prefix", "--from-key"]),
            step(&["get", "", "--prefix"]),
        ],
    );
}

#[test]
fn txn_compaction_and_watch_print_as_etcdctl() {
    compare(
        "txn_compaction_and_watch_print_as_etcdctl",
        &[
            step(&["put", "k1", "v1"]),
            step(&["put", "k2", "v2"]),
            step(&["put", "k1", "v1b"]),
            with_stdin(
                &["txn"],
                "mod(\"k1\") > \"0\"\n\nput t yes\nget k1\ndel k2\n\nput t no\n\n",
            ),
            with_stdin(
                &["txn", "-w", "json"],
                "mod(\"k1\") > \"0\"\n\nput t2 x --prev-kv\nget k --prefix\n\nput t no\n\n",
            ),
            with_stdin(
                &["txn"],
                "value(\"k1\") = \"zz\"\nver(\"k1\") = \"2\"\n\nput t yes\n\nget t\nget k --prefix --limit=1\nput t3 \"a b\"\n\n",
            ),
            with_stdin(&["txn", "-w", "json"], "val(\"k1\") < \"zz\"\n\n\n\n"),
            with_stdin(
                &["txn", "-w", "fields"],
                "mod(\"k1\") > \"0\"\n\nput t4 y\nget k1\n\n\n",
            ),
            with_stdin(&["txn"], "create(\"k1\") = \"0\"\n\n\nget k1 --keys-only\n\n"),
            with_stdin(&["txn"], "\n\n\n"),
            with_stdin(&["txn"], ""),
            with_stdin(&["txn"], "bogus\n\n\n"),
            with_stdin(&["txn"], "\nput t\n\n\n"),
            with_stdin(&["txn"], "\nput a b\n"),
            stream(&["watch", "k", "--prefix", "--rev", "2"]),
            stream(&["watch", "k1", "--prev-kv", "--rev", "2", "-w", "json"]),
            stream(&["watch", "t", "--prefix", "--rev", "5", "-w", "fields"]),
            step(&["watch"]),
            step(&["watch", "a", "b", "--prefix"]),
            step(&["compaction", "3"]),
            step(&["compaction", "3"]),
            step(&["compaction", "5", "--physical", "-w", "json"]),
            step(&["compaction", "1000"]),
            step(&["compaction", "x"]),
            step(&["compaction"]),
            step(&["get", "k1", "--rev", "2"]),
            stream(&["watch", "k", "--prefix", "--rev", "2"]),
            stream(&["watch", "k", "--prefix", "--rev", "2", "-w", "json"]),
        ],
    );
}

#[test]
fn lease_commands_print_as_etcdctl() {
    compare(
        "lease_commands_print_as_etcdctl",
        &[
            step(&["lease", "grant", "100", "-w", "json"]),
            step(&["lease", "revoke", "$LEASE", "-w", "json"]),
            step(&["lease", "grant", "100"]),
            step(&["put", "lk1", "v", "--lease", "$LEASE"]),
            step(&["put", "lk2", "v", "--lease=$LEASE"]),
            step(&["get", "lk1", "-w", "json"]),
            ttl(&["lease", "timetolive", "$LEASE"]),
            ttl(&["lease", "timetolive", "$LEASE", "--keys"]),
            ttl(&["lease", "timetolive", "$LEASE", "--keys", "-w", "json"]),
            step(&["lease", "keep-alive", "$LEASE", "--once"]),
            step(&["lease", "keep-alive", "$LEASE", "--once", "-w", "json"]),
            step(&["lease", "list"]),
            step(&["lease", "list", "-w", "json"]),
            step(&["lease", "list", "-w", "fields"]),
            step(&["lease", "revoke", "$LEASE"]),
            step(&["lease", "revoke", "$LEASE"]),
            step(&["get", "lk", "--prefix"]),
            step(&["lease", "timetolive", "$LEASE"]),
            step(&["lease", "timetolive", "$LEASE", "-w", "json"]),
            step(&["lease", "keep-alive", "$LEASE", "--once"]),
            step(&["lease", "list", "-w", "json"]),
            step(&["lease", "revoke", "zz"]),
            step(&["lease", "revoke"]),
            step(&["lease", "grant"]),
            step(&["lease", "grant", "abc"]),
            step(&["put", "x", "y", "--lease", "1234"]),
            // Granted, then refused for its format: last, as the new lease
            // cannot be told apart afterwards.
            step(&["lease", "grant", "100", "-w", "table"]),
        ],
    );
}

#[test]
fn cluster_and_maintenance_commands_print_as_etcdctl() {
    compare(
        "cluster_and_maintenance_commands_print_as_etcdctl",
        &[
            step(&["member", "list"]),
            step(&["member", "list", "-w", "json"]),
            step(&["member", "list", "-w", "table"]),
            step(&["member", "list", "-w", "fields"]),
            step(&["endpoint", "status"]),
            step(&["endpoint", "status", "-w", "json"]),
            step(&["endpoint", "status", "-w", "table"]),
            step(&["endpoint", "status", "-w", "fields"]),
            step(&["endpoint", "health"]),
            step(&["endpoint", "health", "-w", "json"]),
            step(&["endpoint", "health", "-w", "table"]),
            step(&["endpoint", "health", "-w", "fields"]),
            step(&["alarm", "list"]),
            step(&["alarm", "list", "-w", "json"]),
            step(&["alarm", "list", "-w", "table"]),
            step(&["alarm", "disarm"]),
            step(&["alarm", "disarm", "-w", "json"]),
            step(&["move-leader", "1234"]),
            step(&["move-leader", "zz"]),
            step(&["move-leader"]),
            // Maintenance and membership changes, with their errors.
            step(&["defrag"]),
            step(&["snapshot", "save", "snap.db"]),
            step(&["snapshot", "save"]),
            step(&["member", "add", "x"]),
            step(&["member", "add"]),
            step(&["member", "remove", "zz"]),
            step(&["member", "remove", "1234"]),
            step(&["member", "update", "1234", "--peer-urls=http://127.0.0.1:1"]),
            step(&["member", "promote", "1234"]),
            step(&[
                "member",
                "add",
                "x",
                "--peer-urls=http://127.0.0.1:1",
                "--learner",
            ]),
        ],
    );
}
