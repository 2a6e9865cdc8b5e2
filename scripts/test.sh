#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs them.
# etcdctl (Debian package etcd-client) is the real client the compatibility
# tests drive; etcd (Debian package etcd-server) is the server the chaos
# harness calibrates itself against; protoc (Debian package protobuf-compiler) is needed only by the
# etcd-client crate's build script, for the compatibility crate outside the
# workspace (compat/etcd-client), never by raftkv's own build.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcdctl >/dev/null 2>&1; then
  echo "== installing etcd-client (etcdctl) for the compatibility tests"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-client >/dev/null
fi

if ! command -v etcd >/dev/null 2>&1; then
  echo "== installing etcd-server (etcd 3.4) for the chaos harness's calibration"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
fi

if ! command -v protoc >/dev/null 2>&1; then
  echo "== installing protobuf-compiler (protoc) for the etcd-client crate's build"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq protobuf-compiler >/dev/null
fi

# The etcdctl tests and the calibration against etcd must run here, not skip.
export RAFTKV_REQUIRE_ETCDCTL=1
export RAFTKV_REQUIRE_ETCD=1
export RAFTKV_ETCD_BIN="$(command -v etcd)"
cargo test --workspace --release "$@"

# The etcd-client crate against the raftkv binary the workspace tests built
# (target/release/raftkv).
echo "== etcd-client crate compatibility (compat/etcd-client)"
cargo test --release --manifest-path compat/etcd-client/Cargo.toml
