#!/usr/bin/env bash
# bench/sidebyside.sh: paxosd, etcd and ZooKeeper side by side, in one command.
#
#   bash bench/sidebyside.sh        # about 7 minutes as set; needs Go 1.26 and, to install, root
#
# It
#   1. installs etcd-server and zookeeper from Debian if they are missing (apt-get: needs root;
#      without root it stops and says which command to run);
#   2. builds paxosd, the comparison tool and the report tool. The comparison tool is bench/compare,
#      a Go module of its own (so that paxosd links neither etcd's client nor go-zookeeper): the
#      driver and flags of `paxosd bench` plus --target etcd|zookeeper. By hand, from the root:
#        go -C bench/compare build -o "$PWD/compare" . && ./compare --help
#   3. starts one system at a time on 127.0.0.1, each as a 3-node cluster with fsync on (paxosd
#      always syncs; etcd and ZooKeeper keep their defaults, which sync), and runs the same
#      closed-loop workload against each with the comparison tool (`compare --target SYSTEM`): 100 B
#      values, 1, 16 and 64 clients, each client its own connection, one request at a time;
#   4. for paxosd alone: the largest client count over one shared connection, 4 KiB and 64 KiB
#      values, a 5-node cluster, the batched mode (--batch 100 --inflight 4), and the time a node
#      holding 1,000,000 entries takes to start (from process start until its Status shows every
#      entry applied);
#   5. samples each node's resident memory (VmRSS) during the largest client count, for all three;
#   6. writes every result to results.jsonl in the output directory, then docs/benchmarks-sidebyside.svg
#      and the marked section of docs/benchmarks.md (between <!-- sidebyside:begin --> and
#      <!-- sidebyside:end -->; nothing else in that file changes).
# Every cluster is stopped when the script exits, however it exits.
#
# Settings (environment):
#   BENCH_DURATION  measured part of each run           (default 20s)
#   BENCH_WARMUP    warmup before each, not measured    (default 3s)
#   BENCH_CLIENTS   client counts compared              (default "1 16 64")
#   BENCH_LOAD      entries for the start-up test; 0 skips it (default 1000000)
#   BENCH_OUT       directory for results and logs      (default a new /tmp/paxosd-sidebyside.XXXXXX)
#   BENCH_REPORT    0: leave docs/ alone, only write results.jsonl (default 1)
# Ports used on 127.0.0.1: paxosd 17001-17005, etcd 23791-23793 (peers 23801-23803),
# ZooKeeper 21811-21813 (quorum 28881-28883, election 38881-38883).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-20s}
WARMUP=${BENCH_WARMUP:-3s}
CLIENTS=${BENCH_CLIENTS:-1 16 64}
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
for v in BENCH_DURATION BENCH_WARMUP BENCH_CLIENTS BENCH_LOAD; do
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
  log "run $RUN ($exp): compare $*"
  times >"$OUT/times-before"
  busy0=$(cpu_busy) srv0=$(pids_cpu "${servers[@]}") t0=$(date +%s%N)
  # In the background, so that a signal to this script is handled at once (bash runs traps only
  # between foreground commands); `wait` still collects its CPU time for `times`.
  "$COMPARE" -w json --interval 5s "$@" >"$out" 2>>"$OUT/run-$RUN.log" &
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
    printf '{"kind":"bench","experiment":"%s","cpu":%s,"result":%s}\n' "$exp" "$cpu" "$(cat "$out")" >>"$RESULTS"
    log "  $(printf '%.0f ops/s, %.0f entries/s, p50 %s ms, p99 %s ms, p99.9 %s ms, errors %s, lost %s, duplicated %s' \
      "$(field throughput "$out")" "$(field entries_per_s "$out")" "$(field p50_ms "$out")" "$(field p99_ms "$out")" \
      "$(field p999_ms "$out")" "$(field errors "$out")" "$(field lost "$out")" "$(field duplicated "$out")"); CPU cores $cpu"
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

# compare SYSTEM ENDPOINTS PID...: the client counts against one system, RSS during the largest.
compare() {
  local system=$1 eps=$2; shift 2
  local c sampler
  for c in $CLIENTS; do
    if [ "$c" = "$MAXCLIENTS" ]; then
      rss_sample "$OUT/rss-$system" "$@" &
      sampler=$!
      PIDS+=("$sampler")
    fi
    bench clients --target "$system" --endpoints "$eps" --clients "$c" --size 100 --duration "$DURATION" --warmup "$WARMUP"
    if [ "$c" = "$MAXCLIENTS" ]; then
      stop "$sampler"
      printf '{"kind":"rss","system":"%s","clients":%s,"rss_kb":[%s]}\n' "$system" "$c" "$(cat "$OUT/rss-$system")" >>"$RESULTS"
      log "  peak RSS of each $system node, KiB: $(cat "$OUT/rss-$system")"
    fi
  done
}

# ---------------------------------------------------------------------------
# 3-5. The runs, one system at a time.

log "results and logs in $OUT; each run: $DURATION after a $WARMUP warmup"

px_up 3
compare paxosd "$PX_EPS" "${PX_PIDS[@]}"
bench conns --endpoints "$PX_EPS" --clients "$MAXCLIENTS" --conns 1 --size 100 --duration "$DURATION" --warmup "$WARMUP"
bench batch --endpoints "$PX_EPS" --clients 16 --batch 100 --inflight 4 --size 100 --duration "$DURATION" --warmup "$WARMUP"
bench size --endpoints "$PX_EPS" --clients 16 --size 4096 --duration "$DURATION" --warmup "$WARMUP"
bench size --endpoints "$PX_EPS" --clients 16 --size 65536 --duration "$DURATION" --warmup "$WARMUP"
px_down

px_up 5
bench nodes --endpoints "$PX_EPS" --clients 16 --size 100 --duration "$DURATION" --warmup "$WARMUP"
px_down

if [ "$LOAD" -gt 0 ]; then
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

etcd_up
compare etcd "$ETCD_EPS" "${ETCD_PIDS[@]}"
etcd_down

zk_up
compare zookeeper "$ZK_EPS" "${ZK_PIDS[@]}"
zk_down

# ---------------------------------------------------------------------------
# 6. The report.

minutes=$(awk -v s=$(($(date +%s) - STARTED)) 'BEGIN { printf "%.1f", s / 60 }')
"$OUT/report" machine \
  -etcd "$(etcd --version | awk '/^etcd Version/ {print $3}')" \
  -zookeeper "$(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null | cut -d- -f1 || echo unknown)" \
  -java "$(java -version 2>&1 | head -1 | tr -d '"')" \
  -date "$STARTED_AT" -command "$COMMAND" -minutes "$minutes" -load "$LOADAVG" \
  -settings "each run $DURATION measured after a $WARMUP warmup; clients $CLIENTS; start-up test with $LOAD entries" \
  >>"$RESULTS"
if [ "$REPORT" = 1 ]; then
  "$OUT/report" write -results "$RESULTS" -doc "$ROOT/docs/benchmarks.md" -svg "$ROOT/docs/benchmarks-sidebyside.svg"
fi
log "done in $minutes minutes; results in $RESULTS"
if [ ${#FAILED[@]} -gt 0 ]; then
  log "these runs failed (lost or duplicated values, or no request succeeded); see their logs in $OUT:"
  printf '  %s\n' "${FAILED[@]}" >&2
  exit 1
fi
