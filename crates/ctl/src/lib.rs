//! `raftkvctl`: a command-line client for etcd's v3 API that works against
//! raftkv and etcd alike, with etcdctl's commands, flags, output formats,
//! error messages and exit codes, so scripts written for `etcdctl` (v3.4)
//! run unchanged.
//!
//! - [`client`]: endpoints, timeouts, retries and request ids;
//!   [`api`]: the typed RPC calls on top of it.
//! - [`commands`]: one module per command group.
//! - [`output`]: the `simple`, `json`, `table` and `fields` formats.
//! - [`error`]: etcdctl's error texts and exit codes.
//! - [`bench`]: `raftkvctl bench`, a load generator for etcd and raftkv
//!   alike, and the report comparing them.
//! - [`tls`]: client TLS from etcdctl's `--cacert`, `--cert`, `--key`
//!   and `--insecure-*` flags.
//! - [`duration`]: Go duration strings (`5s`, `500ms`) for the timeout flags.
//!
//! # Exactly-once retries
//!
//! This is the reason the tool exists beside etcdctl. Every write (`put`,
//! `del`, a `txn` that writes, `lease grant`, `lease revoke`,
//! `compaction`) carries two gRPC metadata entries:
//!
//! | key | value |
//! |---|---|
//! | `raftkv-client-id` | a random non-zero 64-bit number, decimal, one per process |
//! | `raftkv-sequence` | a decimal number, increasing with each write |
//!
//! When an attempt fails in a way that leaves its outcome unknown or says
//! the cluster could not take it (gRPC `Unavailable`, `DeadlineExceeded`,
//! the connection dropping, or etcd's `etcdserver: leader changed`,
//! `request timed out`, `no leader`, `not leader`), the **same request
//! with the same id** is sent again, to the next endpoint, after a pause
//! that doubles from 25 ms up to 500 ms, until `--command-timeout` runs
//! out. A single attempt is abandoned after `--attempt-timeout` (2 s).
//!
//! A raftkv server remembers the outcome of each client's recent request
//! ids in its replicated state machine. A retry of a write that was in fact
//! applied (its answer was lost with a leader, a connection or a timeout)
//! is answered with that first outcome, the same revision and the same
//! previous value, and is not applied a second time. Every other error is
//! final and printed at once.
//!
//! etcd ignores the metadata; against etcd a retried write may be applied
//! twice, as with any etcd client that retries.
//!
//! Reads are retried the same way without an id. Membership changes,
//! `move-leader` and `defrag` are never repeated once sent. Streams
//! (`watch`, `lease keep-alive`) reopen on the next endpoint when they
//! break; a watch resumes after the last revision it printed.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod bench;
pub mod client;
pub mod commands;
pub mod duration;
pub mod error;
pub mod output;
pub mod tls;
