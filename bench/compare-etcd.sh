#!/usr/bin/env bash
# Benchmarks raftkv against etcd 3.4 on this machine, side by side, and
# writes the comparison to docs/benchmarks.md.
#
# Both servers run as 3-member clusters on 127.0.0.1 with the same flags,
# one cluster at a time, each round starting fresh ones (etcd, then
# raftkv); the same `raftkvctl bench` runs drive both. Every run saves its
# `--json` report; `raftkvctl bench report` turns them into medians and
# ratios. Finally each server is loaded with LOAD_KEYS keys of 256 B and
# its peak memory (VmHWM, summed over the members) and data directories
# are measured.
#
# Settings (environment):
#   ROUNDS=3          rounds of every workload on each server
#   DURATION=10       seconds per run
#   CLIENTS="1 16 64 256"
#   WORKLOADS="put get get-serializable txn-put"
#   LOAD_KEYS=1000000 keys loaded for the memory and disk measure (0: skip)
#   TARGET=leader     connections to the leader only, or `all` members
#   SERVERS="etcd raftkv"  which to run (one alone: a quick check of a change)
#   OUT=docs/benchmarks.md
#   TLS=1             both servers with TLS on the client and peer ports
#                     and client certificates required (the same
#                     certificates, made here with openssl); written to
#                     docs/benchmarks-tls.md unless OUT is set
#   QUICK=1           a smoke run: 1 round of 2 s, 1 and 64 clients,
#                     put and get, 20000 keys loaded, written to
#                     $TMPDIR unless OUT is set
#
# Only loopback is used; every process this script starts is stopped (by
# its PID) when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "${QUICK:-0}" = 1 ]; then
  : "${ROUNDS:=1}" "${DURATION:=2}" "${CLIENTS:=1 64}" "${WORKLOADS:=put get}"
  : "${LOAD_KEYS:=20000}" "${OUT:=${TMPDIR:-/tmp}/benchmarks-quick.md}"
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-1 16 64 256}
WORKLOADS=${WORKLOADS:-put get get-serializable txn-put}
LOAD_KEYS=${LOAD_KEYS:-1000000}
TARGET=${TARGET:-leader}
SERVERS=${SERVERS:-etcd raftkv}
TLS=${TLS:-0}
if [ "$TLS" = 1 ]; then OUT=${OUT:-docs/benchmarks-tls.md}; fi
OUT=${OUT:-docs/benchmarks.md}
# Keys the read workloads read (written before them, every round).
READ_KEYS=10000
COMMAND="TLS=$TLS ROUNDS=$ROUNDS DURATION=$DURATION CLIENTS=\"$CLIENTS\" WORKLOADS=\"$WORKLOADS\" LOAD_KEYS=$LOAD_KEYS TARGET=$TARGET bench/compare-etcd.sh"

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

# start_cluster KIND NAME: 3 members of KIND (etcd or raftkv) with fresh
# data directories; sets ENDPOINTS and DATA.
start_cluster() {
  local kind=$1 name=$2 bin ports i initial=""
  [ "$kind" = etcd ] && bin=$ETCD || bin=$RAFTKV
  read -r -a ports <<<"$(free_ports 6)"
  DATA=$WORK/data/$name
  rm -rf "$DATA"
  mkdir -p "$DATA"
  for i in 0 1 2; do
    initial+="${initial:+,}m$i=$SCHEME://127.0.0.1:${ports[$((i + 3))]}"
  done
  ENDPOINTS=""
  for i in 0 1 2; do
    local client=$SCHEME://127.0.0.1:${ports[$i]} peer=$SCHEME://127.0.0.1:${ports[$((i + 3))]}
    ENDPOINTS+="${ENDPOINTS:+,}$SCHEME://127.0.0.1:${ports[$i]}"
    "$bin" --name "m$i" --data-dir "$DATA/m$i" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$initial" --initial-cluster-state new \
      --initial-cluster-token bench \
      --heartbeat-interval 100 --election-timeout 1000 --snapshot-count 100000 \
      "${SERVER_TLS[@]}" >"$WORK/$name-m$i.log" 2>&1 &
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
    for clients in $CLIENTS; do
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

STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
for round in $(seq "$ROUNDS"); do
  for server in $SERVERS; do run_round "$server" "$round"; done
done
if [ "$LOAD_KEYS" -gt 0 ]; then
  for server in $SERVERS; do measure_resources "$server"; done
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
  echo "- load: \`raftkvctl bench\` on the same machine, $DURATION s per run, connections to the ${TARGET} (\`--target $TARGET\`), one connection per 4 clients, 8 B keys over a space of $READ_KEYS (written before the reads), 256 B values; rounds alternate etcd, raftkv"
  echo
  echo "## Throughput and latency"
  echo
  "$CTL" bench report "$RESULTS" --baseline etcd --candidate raftkv
  echo
  echo "Memory and disk: a fresh cluster of each loaded with \`bench put --sequential-keys\` (256 clients), then the members' VmHWM from /proc and \`du -sb\` of their data directories."
  if [ -s "$WORK/load-notes.md" ]; then
    echo
    echo "Errors during the load (the sizes above are for the keys that were written):"
    echo
    cat "$WORK/load-notes.md"
  fi
} >"$OUT"
echo "== written to $OUT (raw results in $RESULTS)"
