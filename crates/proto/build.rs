//! Compiles etcd's API protos with protox (no system `protoc`), writes the encoded
//! `FileDescriptorSet` to `OUT_DIR` for gRPC reflection, and generates prost messages plus
//! tonic servers and clients from the same descriptors.

use prost::Message as _;
use std::{env, fs, path::PathBuf};

/// The API files, relative to `proto/`. Their paths are also the file names recorded in
/// the descriptor set (what gRPC reflection reports).
const PROTOS: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let encoded = fds.encode_to_vec();
    fs::write(out_dir.join("etcd_descriptor.bin"), &encoded)?;
    // Serde impls in protobuf's canonical JSON mapping, as etcd's gateway
    // (grpc-gateway with `OrigName`) writes it: the .proto field names,
    // 64-bit integers as strings, bytes as base64, enums by name, defaults
    // left out. Unknown fields are ignored on input, as the gateway does.
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".etcdserverpb",
            ".mvccpb",
            ".authpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    // raftkv's own peer protocol is compiled apart, so etcd's descriptor set
    // (what reflection reports to etcd clients) holds etcd's API only.
    let peer = protox::compile(["raftkvpeer/peer.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(peer)?;
    Ok(())
}
