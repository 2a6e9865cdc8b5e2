//! Raft messages between members, over gRPC on the peer URLs.
//!
//! Each member keeps one long-lived client stream to every other member
//! ([`transport`]) and serves the others' streams ([`service`]). [`codec`]
//! converts Raft messages to the wire format of `raftkvpeer`.

pub mod codec;
pub mod service;
pub mod transport;
