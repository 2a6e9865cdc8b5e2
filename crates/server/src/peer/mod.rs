//! Raft messages between members, over gRPC on the peer URLs.
//!
//! Each member keeps one long-lived client stream to every other member
//! ([`transport`]) and serves the others' streams ([`service`]). [`codec`]
//! converts Raft messages to the wire format of `raftkvpeer`; [`dial`]
//! opens every outgoing peer connection; [`snapshot`] streams snapshots
//! in bounded chunks on connections of their own.

pub mod codec;
pub mod dial;
pub mod service;
pub mod snapshot;
pub mod transport;
