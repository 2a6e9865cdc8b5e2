#!/usr/bin/env bash
# Benchmarks raftkv against etcd 3.4 on this machine, side by side, and
# writes the comparison to docs/benchmarks.md.
#
# Both servers run as 3-member clusters on 127.0.0.1 with the same flags,
# one cluster at a time, each round starting fresh ones (etcd, then
# raftkv); the same `raftkvctl bench` runs drive both. Every run saves its
# `--json` report; `raftkvctl bench report` turns them into medians and
# ratios. Then each server is loaded with LOAD_KEYS keys of 256 B and
# its peak memory (VmHWM, summed over the members) and data directories
# are measured. Last, the store size: a fresh single-member cluster of each
# is written with STORE_KEYS new keys of log-uniform value sizes (the same
# sizes for both, by seed), and its live bytes, dbSize, dbSizeInUse and
# data directory are measured; then another, with --quota-backend-bytes
# QUOTA_BYTES, is written with such keys until the first NOSPACE.
#
# Settings (environment):
#   ROUNDS=3          rounds of every workload on each server
#   DURATION=10       seconds per run
#   CLIENTS="1 16 64 256"
#   WORKLOADS="put get get-serializable txn-put lease-keepalive"
#   KEEPALIVE_CLIENTS=20    lease-keepalive's clients (one stream each),
#   KEEPALIVE_LEASES=1000   renewing this many leases in turn
#   LOAD_KEYS=1000000 keys loaded for the memory and disk measure (0: skip)
#   STORE_KEYS=40000  new keys written for the store-size measure (0: skip)
#   VAL_SIZE_MIN=10 VAL_SIZE_MAX=65536  their values, log-uniform in size
#   STORE_SEED=16     seed of the value sizes
#   QUOTA_BYTES=268435456  --quota-backend-bytes of the NOSPACE measure (0: skip)
#   QUOTA_MAX_KEYS=1000000 QUOTA_SECONDS=1200  its bounds, if NOSPACE never comes
#   TARGET=all        connections spread over `all` members, or `leader` only
#   SERVERS="etcd raftkv"  which to run (one alone: a quick check of a change)
#   OUT=docs/benchmarks.md
#   TLS=1             both servers with TLS on the client and peer ports
#                     and client certificates required (the same
#                     certificates, made here with openssl); written to
#                     docs/benchmarks-tls.md unless OUT is set
#   QUICK=1           a smoke run: 1 round of 2 s, 1 and 64 clients,
#                     put, get and lease-keepalive, 20000 keys loaded,
#                     2000 keys for the store size, a 32 MiB quota,
#                     written to $TMPDIR unless OUT is set
#
# Only loopback is used; every process this script starts is stopped (by
# its PID) when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "${QUICK:-0}" = 1 ]; then
  : "${ROUNDS:=1}" "${DURATION:=2}" "${CLIENTS:=1 64}" "${WORKLOADS:=put get lease-keepalive}"
  : "${LOAD_KEYS:=20000}" "${OUT:=${TMPDIR:-/tmp}/benchmarks-quick.md}"
  : "${STORE_KEYS:=2000}" "${QUOTA_BYTES:=33554432}"
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-1 16 64 256}
WORKLOADS=${WORKLOADS:-put get get-serializable txn-put lease-keepalive}
KEEPALIVE_CLIENTS=${KEEPALIVE_CLIENTS:-20}
KEEPALIVE_LEASES=${KEEPALIVE_LEASES:-1000}
LOAD_KEYS=${LOAD_KEYS:-1000000}
STORE_KEYS=${STORE_KEYS:-40000}
VAL_SIZE_MIN=${VAL_SIZE_MIN:-10}
VAL_SIZE_MAX=${VAL_SIZE_MAX:-65536}
STORE_SEED=${STORE_SEED:-16}
QUOTA_BYTES=${QUOTA_BYTES:-268435456}
QUOTA_MAX_KEYS=${QUOTA_MAX_KEYS:-1000000}
QUOTA_SECONDS=${QUOTA_SECONDS:-1200}
TARGET=${TARGET:-all}
SERVERS=${SERVERS:-etcd raftkv}
TLS=${TLS:-0}
if [ "$TLS" = 1 ]; then OUT=${OUT:-docs/benchmarks-tls.md}; fi
OUT=${OUT:-docs/benchmarks.md}
# Keys the read workloads read (written before them, every round).
READ_KEYS=10000
# Clients writing the store-size and quota measures' keys.
STORE_CLIENTS=16
COMMAND="TLS=$TLS ROUNDS=$ROUNDS DURATION=$DURATION CLIENTS=\"$CLIENTS\" WORKLOADS=\"$WORKLOADS\" KEEPALIVE_CLIENTS=$KEEPALIVE_CLIENTS KEEPALIVE_LEASES=$KEEPALIVE_LEASES LOAD_KEYS=$LOAD_KEYS STORE_KEYS=$STORE_KEYS VAL_SIZE_MIN=$VAL_SIZE_MIN VAL_SIZE_MAX=$VAL_SIZE_MAX STORE_SEED=$STORE_SEED QUOTA_BYTES=$QUOTA_BYTES TARGET=$TARGET bench/compare-etcd.sh"

# ---- prerequisites -----------------------------------------------------
if ! command -v etcd >/dev/null 2>&1; then
  echo "== installing etcd-server (etcd 3.4)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
fi
echo "== building raftkv and raftkvctl (release)"
cargo build --release -q -p raftkv-server --bin raftkv -p raftkv-ctl --bin raftkvctl
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
ETCD=$(command -v etcd)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-bench.XXXXXX")
RESULTS=$WORK/results
mkdir -p "$RESULTS" "$WORK/load" "$WORK/bin"
# Copies, so a rebuild during the run does not change what is measured.
cp "$BIN/raftkv" "$BIN/raftkvctl" "$WORK/bin/"
RAFTKV=$WORK/bin/raftkv
CTL=$WORK/bin/raftkvctl
PIDS=()

# TLS: one CA, one certificate for 127.0.0.1 that every member presents as
# server and as peer client, and one the load generator presents.
SCHEME=http
SERVER_TLS=()
CTL_TLS=()
if [ "$TLS" = 1 ]; then
  SCHEME=https
  C=$WORK/certs
  mkdir -p "$C"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=bench-ca -keyout "$C/ca-key.pem" -out "$C/ca.pem" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$C/ext.cnf"
  for who in member client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$who" \
      -keyout "$C/$who-key.pem" -out "$C/$who.csr" 2>/dev/null
    openssl x509 -req -in "$C/$who.csr" -CA "$C/ca.pem" -CAkey "$C/ca-key.pem" -CAcreateserial \
      -days 30 -extfile "$C/ext.cnf" -out "$C/$who.pem" 2>/dev/null
  done
  SERVER_TLS=(--cert-file "$C/member.pem" --key-file "$C/member-key.pem"
    --trusted-ca-file "$C/ca.pem" --client-cert-auth
    --peer-cert-file "$C/member.pem" --peer-key-file "$C/member-key.pem"
    --peer-trusted-ca-file "$C/ca.pem" --peer-client-cert-auth)
  CTL_TLS=(--cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client-key.pem")
fi
# raftkvctl with the TLS flags, when TLS is on.
ctl() {
  "$CTL" "${CTL_TLS[@]}" "$@"
}

stop_cluster() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # Bounded: a member that ignores SIGTERM for 20 s gets SIGKILL.
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
cleanup() {
  stop_cluster
  rm -rf "$WORK/data"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# start_cluster KIND NAME [MEMBERS [SERVER FLAGS...]]: MEMBERS (3) members
# of KIND (etcd or raftkv) with fresh data directories; sets ENDPOINTS and
# DATA.
start_cluster() {
  local kind=$1 name=$2 members=${3:-3} bin ports i initial=""
  shift $(($# < 3 ? $# : 3))
  [ "$kind" = etcd ] && bin=$ETCD || bin=$RAFTKV
  read -r -a ports <<<"$(free_ports $((2 * members)))"
  DATA=$WORK/data/$name
  rm -rf "$DATA"
  mkdir -p "$DATA"
  for ((i = 0; i < members; i++)); do
    initial+="${initial:+,}m$i=$SCHEME://127.0.0.1:${ports[$((i + members))]}"
  done
  ENDPOINTS=""
  for ((i = 0; i < members; i++)); do
    local client=$SCHEME://127.0.0.1:${ports[$i]} peer=$SCHEME://127.0.0.1:${ports[$((i + members))]}
    ENDPOINTS+="${ENDPOINTS:+,}$SCHEME://127.0.0.1:${ports[$i]}"
    "$bin" --name "m$i" --data-dir "$DATA/m$i" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token bench \
      --heartbeat-interval 100 --election-timeout 1000 --snapshot-count 100000 \
      "${SERVER_TLS[@]}" "$@" >"$WORK/$name-m$i.log" 2>&1 &
    PIDS+=($!)
  done
  for _ in $(seq 300); do
    if ctl --endpoints="$ENDPOINTS" --command-timeout=1s get ready-check >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "$kind cluster did not become ready; logs in $WORK" >&2
  exit 1
}

# bench LABEL WORKLOAD CLIENTS OUTFILE [extra args]
bench() {
  local label=$1 workload=$2 clients=$3 out=$4
  shift 4
  local conns=$(((clients + 3) / 4))
  local args=()
  case $workload in
    get-serializable) workload=get args=(--serializable) ;;
    lease-keepalive) args=(--leases "$KEEPALIVE_LEASES") ;;
  esac
  # Bounded: a run that hangs ends the script. The load of LOAD_KEYS keys
  # sets BENCH_TIMEOUT, as it is bounded by --total, not --duration.
  timeout "${BENCH_TIMEOUT:-$((DURATION + 120))}" "$CTL" "${CTL_TLS[@]}" --endpoints="$ENDPOINTS" bench "$workload" \
    --clients "$clients" --conns "$conns" --target "$TARGET" --label "$label" \
    --json "${args[@]}" "$@" >"$out"
}

rss_kib() {
  local pid sum=0 v
  for pid in "${PIDS[@]}"; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
    sum=$((sum + v))
  done
  echo "$sum"
}

run_round() {
  local kind=$1 round=$2 workload clients
  echo "== round $round: $kind"
  start_cluster "$kind" "$kind-r$round"
  bench "$kind" put 64 "$WORK/load/$kind-r$round-preload.json" \
    --sequential-keys --key-space "$READ_KEYS" --total "$READ_KEYS"
  for workload in $WORKLOADS; do
    local counts=$CLIENTS
    [ "$workload" = lease-keepalive ] && counts=$KEEPALIVE_CLIENTS
    for clients in $counts; do
      local out=$RESULTS/$kind-$workload-c$clients-r$round.json
      bench "$kind" "$workload" "$clients" "$out" --duration "${DURATION}s" --key-space "$READ_KEYS"
      python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("   %-18s %4d clients %10.0f ops/s  p50 %8.3f ms  p99 %8.3f ms  errors %d" % (sys.argv[2], r["clients"], r["throughput"], r["latency_ms"].get("p50",0), r["latency_ms"].get("p99",0), r["errors"]))' "$out" "$workload"
    done
  done
  stop_cluster
  rm -rf "$WORK/data/$kind-r$round"
}

measure_resources() {
  local kind=$1
  echo "== loading $LOAD_KEYS keys of 256 B into $kind"
  start_cluster "$kind" "$kind-load"
  BENCH_TIMEOUT=3600 bench "$kind" put 256 "$WORK/load/$kind-load.json" \
    --sequential-keys --key-space "$LOAD_KEYS" --total "$LOAD_KEYS" --val-size 256 \
    --request-timeout 30s
  local errors
  errors=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["errors"])' "$WORK/load/$kind-load.json")
  if [ "$errors" != 0 ]; then
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("- %s: %d of the %d puts of the load failed: %s" % (sys.argv[2], r["errors"], r["ops"], "; ".join("%d x %s %s" % (e["count"], e["code"], e["message"]) for e in r["error_kinds"])))' \
      "$WORK/load/$kind-load.json" "$kind" >>"$WORK/load-notes.md"
  fi
  local rss
  rss=$(rss_kib)
  local bytes
  bytes=$(du -sb "$DATA" | cut -f1)
  printf '{"kind":"resources","label":"%s","peak_rss_kib":%s,"data_dir_bytes":%s,"keys":%s,"val_size":256}\n' \
    "$kind" "$rss" "$bytes" "$LOAD_KEYS" >"$RESULTS/resources-$kind.json"
  echo "   peak RSS $((rss / 1024)) MiB, data $((bytes / 1048576)) MiB"
  stop_cluster
}

# field FILE EXPR: a figure of a JSON file (r is the object, e.g. r["ok"]).
field() {
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); v=eval(sys.argv[2]); print(json.dumps(v))' "$1" "$2"
}

# store_status: dbSize and dbSizeInUse of the one member at ENDPOINTS, as
# it reports them (Maintenance Status).
store_status() {
  ctl --endpoints="$ENDPOINTS" --command-timeout=10s -w json endpoint status >"$WORK/status.json"
  read -r DB_SIZE DB_IN_USE < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))[0]["Status"]; print(s["dbSize"], s.get("dbSizeInUse", 0))' "$WORK/status.json")
}

# put_sized KIND OUT KEYS SECONDS [args]: KEYS new keys (0, 1, 2...) with
# log-uniform value sizes from STORE_SEED, bounded by KEYS and SECONDS.
put_sized() {
  local kind=$1 out=$2 keys=$3 seconds=$4
  shift 4
  BENCH_TIMEOUT=$((seconds + 120)) bench "$kind" put "$STORE_CLIENTS" "$out" \
    --sequential-keys --key-space "$keys" --total "$keys" --duration "${seconds}s" \
    --val-size-min "$VAL_SIZE_MIN" --val-size-max "$VAL_SIZE_MAX" --seed "$STORE_SEED" \
    --request-timeout 30s "$@"
}

measure_store() {
  local kind=$1
  local load=$WORK/load/$kind-store.json
  echo "== writing $STORE_KEYS keys of $VAL_SIZE_MIN B to $VAL_SIZE_MAX B (log-uniform) into a single-member $kind"
  start_cluster "$kind" "$kind-store" 1
  put_sized "$kind" "$load" "$STORE_KEYS" 1800
  # The stores commit in the background (etcd every 100 ms): let them.
  sleep 2
  store_status
  local live bytes errors
  live=$(field "$load" 'r["written_bytes"]')
  errors=$(field "$load" 'r["errors"]')
  bytes=$(du -sb "$DATA" | cut -f1)
  printf '{"kind":"store-size","label":"%s","members":1,"keys":%s,"val_size_min":%s,"val_size_max":%s,"seed":%s,"live_bytes":%s,"db_size":%s,"db_size_in_use":%s,"data_dir_bytes":%s,"errors":%s}\n' \
    "$kind" "$(field "$load" 'r["ok"]')" "$VAL_SIZE_MIN" "$VAL_SIZE_MAX" "$STORE_SEED" "$live" "$DB_SIZE" "$DB_IN_USE" "$bytes" "$errors" \
    >"$RESULTS/store-size-$kind.json"
  if [ "$errors" != 0 ]; then
    echo "- $kind: $errors of the $STORE_KEYS puts of the store-size measure failed" >>"$WORK/load-notes.md"
  fi
  echo "   live $((live / 1048576)) MiB, dbSize $((DB_SIZE / 1048576)) MiB, in use $((DB_IN_USE / 1048576)) MiB, data dir $((bytes / 1048576)) MiB"
  stop_cluster
  rm -rf "$DATA"
}

measure_quota() {
  local kind=$1
  local load=$WORK/load/$kind-quota.json
  echo "== writing such keys into a single-member $kind with --quota-backend-bytes $QUOTA_BYTES until NOSPACE"
  start_cluster "$kind" "$kind-quota" 1 --quota-backend-bytes "$QUOTA_BYTES"
  put_sized "$kind" "$load" "$QUOTA_MAX_KEYS" "$QUOTA_SECONDS" --stop-on-nospace
  sleep 2
  store_status
  local nospace live
  nospace=$(field "$load" 'r["nospace"]')
  # Live data when NOSPACE came; everything written if it never did.
  live=$(field "$load" 'r["nospace_at_bytes"] if r["nospace"] else r["written_bytes"]')
  printf '{"kind":"quota","label":"%s","members":1,"quota_bytes":%s,"nospace":%s,"keys":%s,"live_bytes":%s,"written_bytes":%s,"db_size":%s,"db_size_in_use":%s,"other_errors":%s}\n' \
    "$kind" "$QUOTA_BYTES" "$nospace" "$(field "$load" 'r["ok"]')" "$live" "$(field "$load" 'r["written_bytes"]')" "$DB_SIZE" "$DB_IN_USE" \
    "$(field "$load" 'sum(e["count"] for e in r["error_kinds"] if "database space exceeded" not in e["message"])')" \
    >"$RESULTS/quota-$kind.json"
  local others
  others=$(field "$RESULTS/quota-$kind.json" 'r["other_errors"]')
  if [ "$others" != 0 ]; then
    echo "- $kind: $others puts of the quota measure failed with another error than NOSPACE" >>"$WORK/load-notes.md"
  fi
  echo "   NOSPACE: $nospace, live $((live / 1048576)) MiB of a $((QUOTA_BYTES / 1048576)) MiB quota, dbSize $((DB_SIZE / 1048576)) MiB"
  stop_cluster
  rm -rf "$DATA"
}

STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
for round in $(seq "$ROUNDS"); do
  for server in $SERVERS; do run_round "$server" "$round"; done
done
if [ "$LOAD_KEYS" -gt 0 ]; then
  for server in $SERVERS; do measure_resources "$server"; done
fi
if [ "$STORE_KEYS" -gt 0 ]; then
  for server in $SERVERS; do measure_store "$server"; done
fi
if [ "$QUOTA_BYTES" -gt 0 ]; then
  for server in $SERVERS; do measure_quota "$server"; done
fi

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
mkdir -p "$(dirname "$OUT")"
{
  echo "# raftkv and etcd, side by side"
  echo
  echo "Measured by \`bench/compare-etcd.sh\` on $STARTED:"
  echo
  echo '```'
  echo "$COMMAND"
  echo '```'
  echo
  echo "- machine: $(nproc) CPUs ($CPU), $MEM memory, Linux $(uname -r)"
  if [ "$TLS" = 1 ]; then
    echo "- TLS on the client and peer ports of both servers (ECDSA P-256 certificates, client certificates required, \`--client-cert-auth\` and \`--peer-client-cert-auth\`)"
  fi
  echo "- etcd: $("$ETCD" --version | head -1 | sed 's/etcd Version: //'), raftkv: $(git rev-parse --short HEAD)$([ -z "$(git status --porcelain --untracked-files=no)" ] || echo ' (with local changes)')"
  echo "- each: 3 members on 127.0.0.1, \`--heartbeat-interval 100 --election-timeout 1000 --snapshot-count 100000\`, fresh data directories on the same disk, one cluster running at a time"
  if [ "$TARGET" = all ]; then SPREAD="connections spread over the 3 members"; else SPREAD="connections to the leader"; fi
  echo "- load: \`raftkvctl bench\` on the same machine, $DURATION s per run, $SPREAD (\`--target $TARGET\`), one connection per 4 clients, 8 B keys over a space of $READ_KEYS (written before the reads), 256 B values; rounds alternate etcd, raftkv"
  if [[ " $WORKLOADS " == *" lease-keepalive "* ]]; then
    echo "- lease-keepalive: $KEEPALIVE_CLIENTS clients, each with a keep-alive stream, renewing $KEEPALIVE_LEASES leases (granted before the run, TTL 60 s) in turn, one request in flight per stream"
  fi
  echo
  report() { "$CTL" bench report "$RESULTS" --baseline etcd --candidate raftkv --part "$1"; }
  echo "## Throughput and latency"
  echo
  report runs
  if [ "$LOAD_KEYS" -gt 0 ]; then
    echo
    echo "## Memory and disk"
    report resources
    echo
    echo "A fresh cluster of each loaded with \`bench put --sequential-keys\` (256 clients), then the members' VmHWM from /proc and \`du -sb\` of their data directories."
  fi
  if [ "$STORE_KEYS" -gt 0 ]; then
    echo
    echo "## Store size"
    report store-size
    echo
    echo "A fresh single-member cluster of each written with $STORE_KEYS new keys (8 B, no overwrites, no deletes) by \`bench put --sequential-keys --val-size-min $VAL_SIZE_MIN --val-size-max $VAL_SIZE_MAX --seed $STORE_SEED\` ($STORE_CLIENTS clients): values log-uniform in size, the same size for each key on both servers. Live is the sum of the keys' and values' sizes; dbSize and dbSizeInUse are what the member reports (Maintenance Status, \`raftkvctl endpoint status -w json\`) 2 s after the last put; the data dir is \`du -sb\` of the member's data directory (store, WAL and snapshots)."
  fi
  if [ "$QUOTA_BYTES" -gt 0 ]; then
    echo
    echo "## Backend quota: live data at NOSPACE"
    report quota
    echo
    echo "A fresh single-member cluster of each with \`--quota-backend-bytes $QUOTA_BYTES\`, written with such keys (the same sizes, from key 0 on) by \`bench put --stop-on-nospace\` until the first put failed with NOSPACE (\`mvcc: database space exceeded\`), bounded by $QUOTA_MAX_KEYS keys and $QUOTA_SECONDS s. Live at NOSPACE is the keys and values acknowledged when the first NOSPACE arrived; dbSize and dbSizeInUse are read 2 s after it."
  fi
  if [ -s "$WORK/load-notes.md" ]; then
    echo
    echo "Errors while writing the keys (the sizes above are for the keys that were written):"
    echo
    cat "$WORK/load-notes.md"
  fi
} >"$OUT"
echo "== written to $OUT (raw results in $RESULTS)"
