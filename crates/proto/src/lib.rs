//! etcd's v3 gRPC API for raftkv: the protobuf messages, and the tonic servers and clients,
//! generated at build time from the `.proto` files in this crate's `proto/` folder.
//!
//! The modules mirror etcd's protobuf packages, so a path here reads like its Go
//! counterpart (`etcdserverpb.RangeRequest` is [`etcdserverpb::RangeRequest`]):
//!
//! | module | etcd package | services (server / client modules) |
//! |---|---|---|
//! | [`etcdserverpb`] | `etcdserverpb` | KV, Watch, Lease, Cluster, Maintenance, Auth (`kv_server`/`kv_client`, `watch_server`, ...) |
//! | [`mvccpb`] | `mvccpb` | none: `KeyValue`, `Event` |
//! | [`authpb`] | `authpb` | none: `User`, `Permission`, `Role`, `UserAddOptions` |
//! | [`v3lockpb`] | `v3lockpb` | Lock (`lock_server`/`lock_client`) |
//! | [`v3electionpb`] | `v3electionpb` | Election (`election_server`/`election_client`) |
//!
//! *API Boundary:* package, service and method names, field numbers and enum values are
//! etcd's (main branch, a superset of 3.4) and are what etcd clients match on; they must
//! never be renumbered or renamed. Comments in the `.proto` files are raftkv's own.
//!
//! Every etcd message also implements `serde::Serialize` and `Deserialize` in protobuf's
//! canonical JSON mapping as etcd's JSON gateway uses it: the `.proto` field names
//! (`create_revision`, `ID`), 64-bit integers as strings, bytes as base64, enums by name,
//! default values left out; input also takes 64-bit integers as numbers and ignores
//! unknown fields.
//!
//! ```
//! use raftkv_proto::etcdserverpb::RangeRequest;
//! let range: RangeRequest = serde_json::from_str(r#"{"key":"Zm9v","limit":"2"}"#).unwrap();
//! assert_eq!((range.key.as_slice(), range.limit), (&b"foo"[..], 2));
//! assert_eq!(serde_json::to_string(&range).unwrap(), r#"{"key":"Zm9v","limit":"2"}"#);
//! ```
//!
//! The standard health service `grpc.health.v1.Health` is not generated here: the
//! `tonic-health` crate provides it. [`FILE_DESCRIPTOR_SET`] holds the encoded descriptors
//! for a gRPC reflection service.
//!
//! ```
//! use prost::Message;
//! use raftkv_proto::etcdserverpb::PutRequest;
//! let put = PutRequest { key: b"a".to_vec(), value: b"b".to_vec(), ..Default::default() };
//! assert_eq!(put.encode_to_vec(), b"\x0a\x01a\x12\x01b");
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

/// etcd's storage types (`mvccpb`): `KeyValue` and `Event`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's auth data types (`authpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's main v3 API (`etcdserverpb`): requests, responses, and the KV, Watch, Lease,
/// Cluster, Maintenance and Auth services.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's lock service (`v3lockpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's election service (`v3electionpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// raftkv's peer protocol (`raftkvpeer`): Raft messages between members.
/// Not part of etcd's API.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod raftkvpeer {
    include!(concat!(env!("OUT_DIR"), "/raftkvpeer.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of every file in this crate, for a gRPC
/// reflection service (e.g. `tonic-reflection`'s `register_encoded_file_descriptor_set`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/etcd_descriptor.bin"));
