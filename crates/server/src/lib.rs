//! The raftkv server: etcd's v3 API on a Raft cluster.
//!
//! - [`config`]: etcd's flags, defaults and validation.
//! - [`compactor`]: automatic compaction on the leader.
//! - [`alarm`]: the replicated alarm list and the backend quota (NOSPACE).
//! - [`auth`]: etcd's authentication and role-based access control.
//! - [`snapshot_file`]: verifying a saved Maintenance snapshot and restoring
//!   it into a new data directory.
//! - [`node`]: the driver thread that runs the Raft Ready loop over the
//!   write-ahead log and the state machine.
//! - [`kv_state`]: the replicated state machine over the MVCC store;
//!   [`replicated`] is what goes into the log.
//! - [`outcomes`]: the exactly-once table of recent outcomes per client,
//!   aged by the replicated cluster clock.
//! - [`grpc`]: etcd's v3 services; [`convert`] and [`status`] translate
//!   messages and errors.
//! - [`peer`]: Raft messages between members over gRPC.
//! - [`watch`]: the hub that fans applied changes out to watch streams.
//! - [`lessor`]: lease clocks, kept by the leader only;
//!   [`lease_checkpoint`]: their time left, replicated.
//! - [`members`]: the member records, replicated, and their in-memory copy.
//! - [`http`]: HTTP on the client port: etcd's JSON gateway, `/health`,
//!   `/version` and `/metrics`.
//! - [`metrics`]: the Prometheus metrics, under etcd's names.
//! - [`server`]: one member put together.
//! - [`tls`]: TLS on the client and peer ports.
//! - [`error`]: configuration and request errors.
#![deny(missing_docs, unsafe_code)]

pub mod alarm;
pub mod auth;
pub mod cli;
pub mod compactor;
pub mod config;
pub mod convert;
pub mod error;
pub mod grpc;
pub mod http;
pub mod kv_state;
pub mod lease_checkpoint;
pub mod lessor;
pub mod members;
pub mod metrics;
pub mod node;
pub mod outcomes;
pub mod peer;
pub mod replicated;
pub mod server;
pub mod snapshot_file;
pub mod status;
pub mod tls;
pub mod watch;
