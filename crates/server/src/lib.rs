//! The raftkv server: etcd's v3 API on a Raft cluster.
//!
//! - [`config`]: etcd's flags, defaults and validation.
//! - [`node`]: the driver thread that runs the Raft Ready loop over the
//!   write-ahead log and the state machine.
//! - [`error`]: configuration and request errors.
#![deny(missing_docs, unsafe_code)]

pub mod config;
pub mod error;
pub mod node;
