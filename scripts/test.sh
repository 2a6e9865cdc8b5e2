#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs them.
# etcdctl (Debian package etcd-client) is the real client the compatibility
# tests drive; etcd (Debian package etcd-server) is the server the chaos
# harness calibrates itself against; libfaketime (Debian package faketime)
# steps the chaos members' wall clocks; protoc (Debian package
# protobuf-compiler) is needed only by the etcd-client crate's build script,
# for the compatibility crate outside the workspace (compat/etcd-client),
# never by raftkv's own build.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs Debian package $2 (for $3) unless the check $1 already passes.
install_unless() {
  if eval "$1" >/dev/null 2>&1; then return; fi
  echo "== installing $2 $3"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
}

install_unless "command -v etcdctl" etcd-client "(etcdctl) for the compatibility tests"
install_unless "command -v etcd" etcd-server "(etcd 3.4) for the chaos harness's calibration"
install_unless "command -v protoc" protobuf-compiler "(protoc) for the etcd-client crate's build"
install_unless "ls /usr/lib/*/faketime/libfaketimeMT.so.1" faketime \
  "(libfaketime) for the chaos harness's clock jumps"

# The etcdctl tests, the calibration against etcd and the clock jumps must
# run here, not skip.
export RAFTKV_REQUIRE_ETCDCTL=1
export RAFTKV_REQUIRE_ETCD=1
export RAFTKV_REQUIRE_FAKETIME=1
export RAFTKV_ETCD_BIN="$(command -v etcd)"
cargo test --workspace --release "$@"

# The etcd-client crate against the raftkv binary the workspace tests built
# (target/release/raftkv).
echo "== etcd-client crate compatibility (compat/etcd-client)"
cargo test --release --manifest-path compat/etcd-client/Cargo.toml
