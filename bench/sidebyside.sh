#!/usr/bin/env bash
# bench/sidebyside.sh: paxosd, etcd and ZooKeeper side by side, fairly, in one command.
#
#   bash bench/sidebyside.sh        # about 20 minutes as set; needs Go 1.26 and, to install, root
#
# It
#   1. installs etcd-server, zookeeper and protobuf-compiler from Debian if they are missing (apt-get:
#      needs root; without root it stops and says which command to run);
#   2. builds paxosd, the comparison tool, the report tool, ghz (go install) and etcd's own benchmark
#      tool (go.etcd.io/etcd/v3/tools/benchmark, built in a module of its own under the output
#      directory; when it cannot be built, the report says why). The comparison tool is
#      bench/compare, a Go module of its own (so that paxosd links neither etcd's client nor
#      go-zookeeper): the driver and flags of `paxosd bench` plus --target etcd|zookeeper. By hand,
#      from the root:
#        go -C bench/compare build -o "$PWD/compare" . && ./compare --help
#   3. picks each system's best client configuration: on a 3-node cluster of it (127.0.0.1, fsync
#      on: paxosd always syncs; etcd and ZooKeeper keep their defaults, which sync), for each client
#      count, one run (BENCH_PICK_DURATION) of each of: one shared connection or one per client,
#      sent to the leader (paxosd's master) only or spread over all three endpoints;
#   4. runs BENCH_ROUNDS rounds: in each, every system on a fresh cluster in its best configuration at
#      each client count (100 B values, closed loop, one request outstanding per client), the
#      systems alternating and each round starting with the next one. Every run reports the servers'
#      CPU per append (compare --server-pids: user+system time of the cluster's processes over the
#      measured part); each node's resident memory (VmRSS) is sampled during the last round's
#      largest client count;
#   5. checks the drivers against outside tools, at each client count, one connection per client
#      straight at the leader: paxosd's against ghz (through a protoset of rpc/paxosdpb/log.proto,
#      made with protoc), etcd's against etcd's `benchmark put`;
#   6. for paxosd alone (unless BENCH_ALONE=0): 4 KiB and 64 KiB values, a 5-node cluster, the
#      batched mode (--batch 100 --inflight 4), and the time a node holding 1,000,000 entries takes
#      to start (from process start until its Status shows every entry applied);
#   7. writes every result to results.jsonl in the output directory, then docs/benchmarks-sidebyside.svg
#      and the marked section of docs/benchmarks.md (between <!-- sidebyside:begin --> and
#      <!-- sidebyside:end -->; nothing else in that file changes): each system's median round, its
#      configuration, p50/p99, CPU per append and every round, the configurations tried, the checks.
# Every cluster is stopped when the script exits, however it exits.
#
# Settings (environment):
#   BENCH_ROUNDS         rounds of the comparison                      (default 3)
#   BENCH_DURATION       measured part of each run                     (default 20s)
#   BENCH_WARMUP         warmup before each, not measured              (default 3s)
#   BENCH_PICK_DURATION  measured part of each configuration tried     (default 10s)
#   BENCH_CLIENTS        client counts compared                        (default "1 64")
#   BENCH_ALONE          0: skip paxosd's own experiments (step 6)     (default 1)
#   BENCH_LOAD           entries for the start-up test; 0 skips it     (default 1000000)
#   BENCH_OUT            directory for results and logs                (default a new /tmp/paxosd-sidebyside.XXXXXX)
#   BENCH_REPORT         0: leave docs/ alone, only write results.jsonl (default 1)
# Ports used on 127.0.0.1: paxosd 17001-17005, etcd 23791-23793 (peers 23801-23803),
# ZooKeeper 21811-21813 (quorum 28881-28883, election 38881-38883).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-20s}
WARMUP=${BENCH_WARMUP:-3s}
PICK_DURATION=${BENCH_PICK_DURATION:-10s}
CLIENTS=${BENCH_CLIENTS:-1 64}
ALONE=${BENCH_ALONE:-1}
LOAD=${BENCH_LOAD:-1000000}
REPORT=${BENCH_REPORT:-1}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/paxosd-sidebyside.XXXXXX)}
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
DATA=$OUT/data
STARTED=$(date +%s)
STARTED_AT=$(date -u '+%Y-%m-%d %H:%M UTC')
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
MAXCLIENTS=$(tr ' ' '\n' <<<"$CLIENTS" | sort -n | tail -1)

# The command that reproduces this run: the settings that differ from the defaults, then the script.
COMMAND=""
for v in BENCH_ROUNDS BENCH_DURATION BENCH_WARMUP BENCH_PICK_DURATION BENCH_CLIENTS BENCH_ALONE BENCH_LOAD; do
  if [ -n "${!v:-}" ]; then COMMAND+="$v='${!v}' "; fi
done
COMMAND+="bash bench/sidebyside.sh"

log() { echo "sidebyside: $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------------------
# 1. etcd and ZooKeeper from Debian.

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
{ [ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null; } || missing+=(zookeeper)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    die "missing: ${missing[*]}. Installing them needs root: run this script as root, or first run
  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  fi
  log "installing ${missing[*]} from Debian"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

# ---------------------------------------------------------------------------
# 2. Build.

log "building paxosd, the comparison tool and the report tool into $OUT"
go build -o "$OUT/paxosd" ./cmd/paxosd
go -C bench/compare build -o "$OUT/compare" .
go build -o "$OUT/report" ./bench/report
PAXOSD=$OUT/paxosd
COMPARE=$OUT/compare
REPORT_TOOL=$OUT/report

# ghz, the outside gRPC load generator the paxosd driver is checked against. Its proto parser
# rejects proto3 `optional`, so it reads a protoset (a compiled descriptor set) instead.
gobin="$(go env GOPATH | cut -d: -f1)/bin"
export PATH="$PATH:$gobin"
command -v ghz >/dev/null || GOFLAGS= go install github.com/bojand/ghz/cmd/ghz@latest
protoc --descriptor_set_out="$OUT/log.protoset" --include_imports -I rpc/paxosdpb rpc/paxosdpb/log.proto

# etcd's own benchmark tool. `go install go.etcd.io/etcd/v3/tools/benchmark@VERSION` refuses to build
# it (etcd's root go.mod has replace directives); required from a module of our own it builds,
# with etcd's other modules at the versions that go.mod requires.
ETCD_BENCH_VERSION=v3.6.8
ETCD_BENCH=$OUT/etcd-benchmark
ETCD_BENCH_NOTE=""
mkdir -p "$OUT/etcd-benchmark-src"
printf 'module etcdbenchmark\n\ngo 1.26.0\n' >"$OUT/etcd-benchmark-src/go.mod"
if ! (cd "$OUT/etcd-benchmark-src" && GOFLAGS= go get "go.etcd.io/etcd/v3@$ETCD_BENCH_VERSION" &&
  GOFLAGS= go build -o "$ETCD_BENCH" go.etcd.io/etcd/v3/tools/benchmark) >"$OUT/etcd-benchmark-build.log" 2>&1; then
  ETCD_BENCH_NOTE="not built: $(grep -v '^go: \(downloading\|added\|finding\)' "$OUT/etcd-benchmark-build.log" | head -2 | tr '\n|' '  ')"
  log "etcd benchmark $ETCD_BENCH_NOTE (log: $OUT/etcd-benchmark-build.log)"
fi

# ---------------------------------------------------------------------------
# Processes: every one this script starts is in PIDS; cleanup stops them.

PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  rm -rf "$DATA"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# forget PID...: the PIDs leave PIDS (they have exited).
forget() {
  local p q keep=()
  for q in "${PIDS[@]}"; do
    for p in "$@"; do [ "$q" = "$p" ] && continue 2; done
    keep+=("$q")
  done
  PIDS=("${keep[@]}")
}

# stop PID...: SIGTERM, then SIGKILL after 15 s.
stop() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  forget "$@"
}

stop_all() {
  if [ ${#PIDS[@]} -gt 0 ]; then stop "${PIDS[@]}"; fi
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports() {
  local p
  for p in "$@"; do port_free "$p" || die "port $p on 127.0.0.1 is in use; stop what holds it (see the port list at the top of $0)"; done
}

# wait_until SECONDS COMMAND...: poll COMMAND every 0.2 s until it succeeds (or fail after SECONDS).
wait_until() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------
# 3. The clusters.

# paxosd: N nodes on 17001.., data under $DATA/paxosd; sets PX_EPS, PX_PEERS, PX_PIDS.
PX_PIDS=()
px_peers() {
  local n=$1 i parts=()
  for i in $(seq "$n"); do parts+=("$i=127.0.0.1:$((17000 + i))"); done
  (IFS=,; echo "${parts[*]}")
}
px_start_node() { # ID: start node ID of the current cluster; sets PX_PIDS[ID]
  local i=$1
  "$PAXOSD" server --id "$i" --peers "$PX_PEERS" --data-dir "$DATA/paxosd/$i" >>"$OUT/paxosd-$i.log" 2>&1 &
  PX_PIDS[i]=$!
  PIDS+=($!)
}
px_master_agreed() {
  local out
  out=$("$PAXOSD" status --endpoints "$PX_EPS" -w json --timeout 2s 2>/dev/null) || return 1
  [ "$(grep -c '"role":"master"' <<<"$out")" = 1 ] || return 1
  [ "$(grep -o '"master":[0-9]*' <<<"$out" | sort -u | wc -l)" = 1 ] && ! grep -q '"master":0' <<<"$out" \
    && [ "$(wc -l <<<"$out")" = "$PX_N" ]
}
px_up() {
  PX_N=$1
  PX_PEERS=$(px_peers "$PX_N")
  PX_EPS=$(seq "$PX_N" | sed 's/^/127.0.0.1:1700/' | paste -sd,)
  check_ports $(seq 17001 $((17000 + PX_N)))
  rm -rf "$DATA/paxosd"
  PX_PIDS=()
  local i
  for i in $(seq "$PX_N"); do px_start_node "$i"; done
  wait_until 60 px_master_agreed || die "paxosd: no master within 60 s; logs in $OUT/paxosd-*.log"
  log "paxosd: $PX_N nodes up on $PX_EPS"
}
px_down() {
  stop "${PX_PIDS[@]}"
  PX_PIDS=()
  rm -rf "$DATA/paxosd"
}

# etcd: 3 members (flags as Debian's etcd 3.4 takes them).
ETCD_EPS=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
ETCD_PIDS=()
etcd_healthy() {
  local i
  for i in 1 2 3; do
    (exec 3<>"/dev/tcp/127.0.0.1/2379$i" && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && grep -q '"health":"true"' <&3) || return 1
  done
}
etcd_up() {
  check_ports 23791 23792 23793 23801 23802 23803
  rm -rf "$DATA/etcd"; mkdir -p "$DATA/etcd"
  local cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803" i
  ETCD_PIDS=()
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$DATA/etcd/e$i" \
      --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
      --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token sidebyside \
      --log-level error >>"$OUT/etcd-$i.log" 2>&1 &
    ETCD_PIDS+=($!)
    PIDS+=($!)
  done
  wait_until 60 etcd_healthy || die "etcd: not healthy within 60 s; logs in $OUT/etcd-*.log"
  log "etcd: 3 members up on $ETCD_EPS"
}
etcd_down() { stop "${ETCD_PIDS[@]}"; ETCD_PIDS=(); rm -rf "$DATA/etcd"; }

# ZooKeeper: a 3-server ensemble on Debian's classpath (/etc/zookeeper/conf/environment; its
# logging goes nowhere, the srvr command says how each server is), a 512 MiB heap.
ZK_EPS=127.0.0.1:21811,127.0.0.1:21812,127.0.0.1:21813
ZK_PIDS=()
zk_mode() { # PORT: the server's Mode line (leader or follower)
  (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && grep '^Mode:' <&3)
}
zk_serving() {
  local i modes=""
  for i in 1 2 3; do modes+=$(zk_mode "2181$i") || return 1; done
  grep -q leader <<<"$modes"
}
zk_up() {
  check_ports 21811 21812 21813 28881 28882 28883 38881 38882 38883
  rm -rf "$DATA/zk"; mkdir -p "$DATA/zk"
  local i
  ZK_PIDS=()
  for i in 1 2 3; do
    mkdir -p "$DATA/zk/z$i"
    echo "$i" >"$DATA/zk/z$i/myid"
    cat >"$DATA/zk/z$i.cfg" <<CFG
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$DATA/zk/z$i
clientPort=2181$i
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=srvr
server.1=127.0.0.1:28881:38881
server.2=127.0.0.1:28882:38882
server.3=127.0.0.1:28883:38883
CFG
    java -Xmx512m -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar -Dzookeeper.log.dir="$OUT" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$DATA/zk/z$i.cfg" >>"$OUT/zookeeper-$i.log" 2>&1 &
    ZK_PIDS+=($!)
    PIDS+=($!)
  done
  wait_until 90 zk_serving || die "zookeeper: no leader within 90 s; logs in $OUT/zookeeper-*.log"
  log "zookeeper: 3 servers up on $ZK_EPS"
}
zk_down() { stop "${ZK_PIDS[@]}"; ZK_PIDS=(); rm -rf "$DATA/zk"; }

# ---------------------------------------------------------------------------
# Measuring.

FAILED=()
RUN=0

# field NAME FILE: a number from a bench JSON result.
field() { grep -o "\"$1\":[-0-9.e+]*" "$2" | head -1 | cut -d: -f2; }

# CPU accounting, in clock ticks: the whole machine's busy time, some processes' time, and the time
# of this shell's waited-for children (the bench client, when it has just run).
HZ=$(getconf CLK_TCK)
cpu_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
pids_cpu() {
  local t=0 p
  for p in "$@"; do
    if [ -r "/proc/$p/stat" ]; then t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); fi
  done
  echo "$t"
}
# children_cpu FILE: ticks in the output of `times` (run in this shell, not a subshell: a subshell
# has children of its own).
children_cpu() {
  awk -v hz="$HZ" 'NR == 2 { split($0, f, /[ ms]+/); print int((f[1] * 60 + f[2] + f[3] * 60 + f[4]) * hz) }' "$1"
}

# bench EXPERIMENT FLAGS...: one `compare -w json` run (the default --target is paxosd), recorded in the results with the CPU
# (in cores, over the whole invocation) of the servers, of the client, and of everything else.
bench() {
  local exp=$1; shift
  RUN=$((RUN + 1))
  local out=$OUT/run-$RUN.json rc=0 servers busy0 srv0 t0 cpu
  servers=("${PX_PIDS[@]}" "${ETCD_PIDS[@]}" "${ZK_PIDS[@]}")
  log "run $RUN ($exp${ROUND:+, round $ROUND}${SETUP:+, $SETUP}): compare $*"
  times >"$OUT/times-before"
  busy0=$(cpu_busy) srv0=$(pids_cpu "${servers[@]}") t0=$(date +%s%N)
  # In the background, so that a signal to this script is handled at once (bash runs traps only
  # between foreground commands); `wait` still collects its CPU time for `times`.
  "$COMPARE" -w json --interval 5s --server-pids "$(IFS=,; echo "${servers[*]}")" "$@" >"$out" 2>>"$OUT/run-$RUN.log" &
  local bench_pid=$!
  PIDS+=("$bench_pid")
  wait "$bench_pid" || rc=$?
  forget "$bench_pid"
  times >"$OUT/times-after"
  cpu=$(awk -v hz="$HZ" -v ns=$(($(date +%s%N) - t0)) -v busy=$(($(cpu_busy) - busy0)) \
    -v srv=$(($(pids_cpu "${servers[@]}") - srv0)) \
    -v cli=$(($(children_cpu "$OUT/times-after") - $(children_cpu "$OUT/times-before"))) \
    'BEGIN { s = ns / 1e9 * hz; o = busy - srv - cli; if (o < 0) o = 0
             printf "{\"servers\":%.2f,\"client\":%.2f,\"other\":%.2f}", srv / s, cli / s, o / s }')
  if [ -s "$out" ]; then
    printf '{"kind":"bench","experiment":"%s","round":%d,"setup":"%s","cpu":%s,"result":%s}\n' \
      "$exp" "${ROUND:-0}" "${SETUP:-}" "$cpu" "$(cat "$out")" >>"$RESULTS"
    log "  $(printf '%.0f ops/s, %.0f entries/s, p50 %s ms, p99 %s ms, p99.9 %s ms, errors %s, lost %s, duplicated %s' \
      "$(field throughput "$out")" "$(field entries_per_s "$out")" "$(field p50_ms "$out")" "$(field p99_ms "$out")" \
      "$(field p999_ms "$out")" "$(field errors "$out")" "$(field lost "$out")" "$(field duplicated "$out")"); server CPU $(printf '%.0f' "$(field server_cpu_us_per_op "$out")") µs/request; CPU cores $cpu"
  fi
  if [ $rc -ne 0 ]; then
    log "  FAILED (exit $rc): $(tail -3 "$OUT/run-$RUN.log" | tr '\n' ' ')"
    FAILED+=("run $RUN ($exp): compare $*")
  fi
}

# rss_sample OUTFILE PID...: every second, write each PID's peak VmRSS (KiB) so far.
rss_sample() {
  local out=$1; shift
  local peak=() p i v
  for p in "$@"; do peak+=(0); done
  while :; do
    i=0
    for p in "$@"; do
      v=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
      if [ -n "$v" ] && [ "$v" -gt "${peak[i]}" ]; then peak[i]=$v; fi
      i=$((i + 1))
    done
    (IFS=,; echo "${peak[*]}") >"$out.tmp" && mv "$out.tmp" "$out"
    sleep 1
  done
}

# The systems, by name: up, down, their endpoints, their processes, their leader.
SYSTEMS=(paxosd etcd zookeeper)
sys_up() { case $1 in paxosd) px_up 3 ;; etcd) etcd_up ;; zookeeper) zk_up ;; esac; }
sys_down() { case $1 in paxosd) px_down ;; etcd) etcd_down ;; zookeeper) zk_down ;; esac; }
sys_eps() { case $1 in paxosd) echo "$PX_EPS" ;; etcd) echo "$ETCD_EPS" ;; zookeeper) echo "$ZK_EPS" ;; esac; }
sys_pids() { case $1 in paxosd) echo "${PX_PIDS[*]}" ;; etcd) echo "${ETCD_PIDS[*]}" ;; zookeeper) echo "${ZK_PIDS[*]}" ;; esac; }
# sys_leader SYSTEM: HOST:PORT of the leader (paxosd's master, etcd's Raft leader, ZooKeeper's leader).
sys_leader() {
  local i
  case $1 in
  paxosd)
    i=$("$PAXOSD" status --endpoints "$PX_EPS" -w json | grep '"role":"master"' | grep -o '"id":[0-9]*' | cut -d: -f2)
    echo "127.0.0.1:$((17000 + i))" ;;
  etcd)
    for i in 1 2 3; do
      if (exec 3<>"/dev/tcp/127.0.0.1/2379$i" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && grep -q '^etcd_server_is_leader 1' <&3); then
        echo "127.0.0.1:2379$i"; return
      fi
    done
    return 1 ;;
  zookeeper)
    for i in 1 2 3; do
      if zk_mode "2181$i" | grep -q leader; then echo "127.0.0.1:2181$i"; return; fi
    done
    return 1 ;;
  esac
}
# setup_flags SYSTEM SETUP CLIENTS: the comparison tool's flags for a client configuration.
setup_flags() {
  local eps conns
  case $2 in *-leader) eps=$(sys_leader "$1") || return 1 ;; *) eps=$(sys_eps "$1") ;; esac
  case $2 in shared-*) conns=1 ;; *) conns=$3 ;; esac
  echo "--target $1 --endpoints $eps --clients $3 --conns $conns"
}
# setups CLIENTS: the configurations worth trying (with one client, shared and own are the same).
setups() { if [ "$1" = 1 ]; then echo own-leader own-all; else echo own-leader own-all shared-leader shared-all; fi; }

# ---------------------------------------------------------------------------
# 3. Each system's best client configuration.

log "results and logs in $OUT; each run: $DURATION after a $WARMUP warmup ($PICK_DURATION for each configuration tried)"
declare -A BEST
for system in "${SYSTEMS[@]}"; do
  sys_up "$system"
  for c in $CLIENTS; do
    for SETUP in $(setups "$c"); do
      flags=$(setup_flags "$system" "$SETUP" "$c") || die "$system: no leader found"
      # shellcheck disable=SC2086
      bench pick $flags --size 100 --duration "$PICK_DURATION" --warmup "$WARMUP"
    done
    SETUP=""
    BEST[$system/$c]=$("$REPORT_TOOL" pick -results "$RESULTS" -system "$system" -clients "$c") || die "$system, $c clients: no configuration worked"
    log "$system, $c clients: best configuration $(printf %s "${BEST[$system/$c]}")"
  done
  sys_down "$system"
done

# ---------------------------------------------------------------------------
# 4. The rounds, alternating the systems, each on a fresh cluster in its best configuration.

for ROUND in $(seq "$ROUNDS"); do
  for k in "${!SYSTEMS[@]}"; do
    system=${SYSTEMS[$(((k + ROUND - 1) % ${#SYSTEMS[@]}))]}
    sys_up "$system"
    for c in $CLIENTS; do
      SETUP=${BEST[$system/$c]}
      sampler=""
      if [ "$ROUND" = "$ROUNDS" ] && [ "$c" = "$MAXCLIENTS" ]; then
        # shellcheck disable=SC2046
        rss_sample "$OUT/rss-$system" $(sys_pids "$system") &
        sampler=$!
        PIDS+=("$sampler")
      fi
      flags=$(setup_flags "$system" "$SETUP" "$c") || die "$system: no leader found"
      # shellcheck disable=SC2086
      bench round $flags --size 100 --duration "$DURATION" --warmup "$WARMUP"
      if [ -n "$sampler" ]; then
        stop "$sampler"
        printf '{"kind":"rss","system":"%s","clients":%s,"rss_kb":[%s]}\n' "$system" "$c" "$(cat "$OUT/rss-$system")" >>"$RESULTS"
        log "  peak RSS of each $system node, KiB: $(cat "$OUT/rss-$system")"
      fi
    done
    sys_down "$system"
  done
done
ROUND="" SETUP=""

# ---------------------------------------------------------------------------
# 5. The drivers against outside tools: one connection per client, straight at the leader.

# drive FILE FLAGS...: one comparison-tool run, its JSON result in FILE (not a round: not in the table).
drive() {
  local file=$1; shift
  log "check: compare $*"
  "$COMPARE" -w json --interval 0 "$@" >"$file" 2>>"$OUT/checks.log" || { log "  FAILED: see $OUT/checks.log"; FAILED+=("check: compare $*"); return 1; }
  log "  $(printf '%.0f ops/s, p50 %s ms, p99 %s ms' "$(field throughput "$file")" "$(field p50_ms "$file")" "$(field p99_ms "$file")")"
}
# check_record TOOL COMMAND OUTPUT DRIVER: the check record, into the results and the log.
check_record() {
  local rec
  if rec=$("$REPORT_TOOL" check -tool "$1" -command "$2" -tool-output "$3" -driver "$4"); then
    echo "$rec" >>"$RESULTS"
    log "  $1: $(grep -o '"tool":{[^}]*}' <<<"$rec")"
  else
    FAILED+=("check: $1 ($2): its output was refused (see above)")
  fi
}
secs() { awk -v d="$1" 'BEGIN { n = d + 0; if (d ~ /ms$/) n /= 1000; else if (d ~ /m$/) n *= 60; print n }'; }

px_up 3
master=$(sys_leader paxosd)
payload=$(head -c 100 /dev/zero | tr '\0' 'x' | base64 -w0)
for c in $CLIENTS; do
  drive "$OUT/check-paxosd-$c.json" --target paxosd --endpoints "$master" --clients "$c" --size 100 --duration "$DURATION" --warmup "$WARMUP" || continue
  ghz_cmd=(ghz --insecure --protoset "$OUT/log.protoset" --call paxosd.v1.LogService/Append -d "{\"entries\":[\"$payload\"]}"
    -c "$c" --connections "$c")
  "${ghz_cmd[@]}" -z "$WARMUP" -O summary "$master" >/dev/null 2>>"$OUT/checks.log" || true
  shown="ghz --insecure --protoset log.protoset --call paxosd.v1.LogService/Append -d '{\"entries\":[\"(100 B, base64)\"]}' -c $c --connections $c -z $DURATION $master"
  log "check: $shown"
  if "${ghz_cmd[@]}" -z "$DURATION" -O json "$master" >"$OUT/ghz-$c.json" 2>>"$OUT/checks.log"; then
    check_record ghz "$shown" "$OUT/ghz-$c.json" "$OUT/check-paxosd-$c.json"
  else
    FAILED+=("check: ghz, $c connections (see $OUT/checks.log)")
  fi
done
px_down

if [ -n "$ETCD_BENCH_NOTE" ]; then
  "$REPORT_TOOL" check -tool etcd-benchmark -system etcd -note "$ETCD_BENCH_NOTE" >>"$RESULTS"
else
  etcd_up
  leader=$(sys_leader etcd)
  for c in $CLIENTS; do
    drive "$OUT/check-etcd-$c.json" --target etcd --endpoints "$leader" --clients "$c" --size 100 --duration "$DURATION" --warmup "$WARMUP" || continue
    # As many puts as the driver did in as long: etcd's tool runs a --total, not a duration.
    total=$(awk -v t="$(field throughput "$OUT/check-etcd-$c.json")" -v s="$(secs "$DURATION")" 'BEGIN { printf "%d", t * s + 1 }')
    eb_cmd=("$ETCD_BENCH" --endpoints "$leader" --conns "$c" --clients "$c" --precise put --total "$total" --val-size 100
      --key-size 24 --sequential-keys --key-space-size "$total")
    log "check: ${eb_cmd[*]}"
    if "${eb_cmd[@]}" >"$OUT/etcd-benchmark-$c.txt" 2>>"$OUT/checks.log"; then
      check_record etcd-benchmark "benchmark --endpoints $leader --conns $c --clients $c put --total $total --val-size 100 --key-size 24 --sequential-keys --key-space-size $total (etcd $ETCD_BENCH_VERSION)" \
        "$OUT/etcd-benchmark-$c.txt" "$OUT/check-etcd-$c.json"
    else
      FAILED+=("check: etcd benchmark, $c clients (see $OUT/checks.log)")
    fi
  done
  etcd_down
fi

# ---------------------------------------------------------------------------
# 6. paxosd alone.

if [ "$ALONE" = 1 ]; then
  px_up 3
  bench batch --endpoints "$PX_EPS" --clients 16 --batch 100 --inflight 4 --size 100 --duration "$DURATION" --warmup "$WARMUP"
  bench size --endpoints "$PX_EPS" --clients 16 --size 4096 --duration "$DURATION" --warmup "$WARMUP"
  bench size --endpoints "$PX_EPS" --clients 16 --size 65536 --duration "$DURATION" --warmup "$WARMUP"
  px_down

  px_up 5
  bench nodes --endpoints "$PX_EPS" --clients 16 --size 100 --duration "$DURATION" --warmup "$WARMUP"
  px_down
fi

if [ "$ALONE" = 1 ] && [ "$LOAD" -gt 0 ]; then
  px_up 3
  bench load --endpoints "$PX_EPS" --clients 16 --batch 100 --inflight 4 --size 100 --total $(((LOAD + 99) / 100)) --warmup 0s --interval 5s
  # Stop a node that is not the master, start it again, and time it until it has applied the last entry.
  master=$("$PAXOSD" status --endpoints "$PX_EPS" -w json | grep '"role":"master"' | grep -o '"id":[0-9]*' | cut -d: -f2)
  last=$("$PAXOSD" status --endpoints "127.0.0.1:$((17000 + master))" -w json | grep -o '"last_index":[0-9]*' | cut -d: -f2)
  node=$((master % 3 + 1))
  stop "${PX_PIDS[$node]}"
  log "startup: node $node stopped; the log's last index is $last"
  node_caught_up() {
    "$PAXOSD" status --endpoints "127.0.0.1:$((17000 + node))" -w json --timeout 1s 2>/dev/null | grep -q "\"last_index\":$last,"
  }
  t0=$(date +%s%N)
  px_start_node "$node"
  deadline=$((SECONDS + 600))
  until node_caught_up; do
    [ $SECONDS -lt $deadline ] || die "startup: node $node did not reach index $last within 600 s; log in $OUT/paxosd-$node.log"
    sleep 0.01
  done
  secs=$(awk -v ns=$(($(date +%s%N) - t0)) 'BEGIN { printf "%.3f", ns / 1e9 }')
  printf '{"kind":"startup","entries":%s,"seconds":%s}\n' "$((last + 1))" "$secs" >>"$RESULTS"
  log "startup: node $node holding $((last + 1)) entries answered with all of them applied ${secs} s after its process started"
  px_down
fi

# ---------------------------------------------------------------------------
# 7. The report.

minutes=$(awk -v s=$(($(date +%s) - STARTED)) 'BEGIN { printf "%.1f", s / 60 }')
"$OUT/report" machine \
  -etcd "$(etcd --version | awk '/^etcd Version/ {print $3}')" \
  -zookeeper "$(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null | cut -d- -f1 || echo unknown)" \
  -java "$(java -version 2>&1 | head -1 | tr -d '"')" \
  -date "$STARTED_AT" -command "$COMMAND" -minutes "$minutes" -load "$LOADAVG" \
  -settings "$ROUNDS rounds, each run $DURATION measured after a $WARMUP warmup, each configuration tried $PICK_DURATION; clients $CLIENTS; paxosd's own experiments $([ "$ALONE" = 1 ] && echo on || echo off); start-up test with $LOAD entries" \
  >>"$RESULTS"
if [ "$REPORT" = 1 ]; then
  "$OUT/report" write -results "$RESULTS" -doc "$ROOT/docs/benchmarks.md" -svg "$ROOT/docs/benchmarks-sidebyside.svg"
fi
log "done in $minutes minutes; results in $RESULTS"
if [ ${#FAILED[@]} -gt 0 ]; then
  log "these runs failed (lost or duplicated values, no request succeeded, or a check's tool failed); see their logs in $OUT:"
  printf '  %s\n' "${FAILED[@]}" >&2
  exit 1
fi
