#!/usr/bin/env bash
# bench/cpuprofile.sh: where paxosd's CPU per append goes, part by part, on every node.
#
#   bash bench/cpuprofile.sh        # about a minute; needs Go and curl
#
# It starts a 3-node cluster on 127.0.0.1 (fsync on, profiles served with --pprof), runs
# `paxosd bench` at the master (CLIENTS clients sharing CONNS connections, 100 B values: the
# side-by-side's best configuration for paxosd at 64 clients) with --server-pids, takes a CPU
# profile of every node for PROFILE in the middle of the measured part, and prints:
#   - the run's summary (appends/s, latency, the servers' CPU per append from /proc, appends per
#     instance: how many appends share a turn of the protocol, and so its fsyncs);
#   - `go run ./bench/report cpu`'s table: each node's CPU per append in each part (fsync, socket
#     and file system calls, gRPC, storage, the protocol, the apply, scheduling, garbage
#     collection...), each sample charged to the part of the first function from its leaf that
#     names one (bench/cpuwhere.go lists them);
#   - the top functions of the master's profile.
# The profiles (.pb) and their traces stay in the output directory for go tool pprof.
#
# Settings (environment): CLIENTS (64), CONNS (1), SIZE (100), DURATION (20s, the measured part),
# PROFILE (10s, within it), PORT (28201: the nodes use PORT..PORT+2, profiles PORT+100..PORT+102),
# OUT (a new /tmp/paxosd-cpuprofile.XXXXXX).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-64} CONNS=${CONNS:-1} SIZE=${SIZE:-100} DURATION=${DURATION:-20s} PROFILE=${PROFILE:-10s} PORT=${PORT:-28201}
OUT=${OUT:-$(mktemp -d /tmp/paxosd-cpuprofile.XXXXXX)}
mkdir -p "$OUT"
secs() { local d=${1%s}; echo "${d%.*}"; }
[ "$(secs "$PROFILE")" -lt "$(secs "$DURATION")" ] || { echo "cpuprofile: PROFILE ($PROFILE) must be shorter than DURATION ($DURATION)" >&2; exit 2; }
pids=()
cleanup() { [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$OUT/data"; }
trap cleanup EXIT
go build -o "$OUT/paxosd" ./cmd/paxosd
eps="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
peers="1=127.0.0.1:$PORT,2=127.0.0.1:$((PORT + 1)),3=127.0.0.1:$((PORT + 2))"
for i in 1 2 3; do
  "$OUT/paxosd" server --id "$i" --peers "$peers" --data-dir "$OUT/data/$i" --gossip-listen off \
    --pprof "127.0.0.1:$((PORT + 99 + i))" >"$OUT/node$i.log" 2>&1 &
  pids+=($!)
done
until "$OUT/paxosd" append --endpoints "$eps" --timeout 2s warm >/dev/null 2>&1; do sleep 0.2; done
master=$("$OUT/paxosd" status --endpoints "$eps" -w json | grep -o '"master":[0-9]*' | head -1 | cut -d: -f2)
echo "cpuprofile: 3 nodes up, master $master; $CLIENTS clients on $CONNS connection(s) at it, $SIZE B values, $DURATION measured, $PROFILE profiled (output: $OUT)" >&2
warmup=2
"$OUT/paxosd" bench --endpoints "127.0.0.1:$((PORT + master - 1))" --clients "$CLIENTS" --conns "$CONNS" --size "$SIZE" \
  --warmup "${warmup}s" --duration "$DURATION" --interval 0 --server-pids "$(IFS=,; echo "${pids[*]}")" -w json >"$OUT/run.json" &
bench_pid=$!
# The profiles sit in the middle of the measured part.
sleep $((warmup + ($(secs "$DURATION") - $(secs "$PROFILE")) / 2))
curls=()
for i in 1 2 3; do
  curl -sf -o "$OUT/node$i.pb" "http://127.0.0.1:$((PORT + 99 + i))/debug/pprof/profile?seconds=$(secs "$PROFILE")" &
  curls+=($!)
done
for c in "${curls[@]}"; do wait "$c" || { echo "cpuprofile: a profile failed (node logs in $OUT)" >&2; exit 1; }; done
wait "$bench_pid" || { echo "cpuprofile: paxosd bench failed ($OUT/run.json)" >&2; exit 1; }
field() { grep -o "\"$1\":[0-9.]*" "$OUT/run.json" | head -1 | cut -d: -f2; }
tput=$(field throughput)
status=$("$OUT/paxosd" status --endpoints "127.0.0.1:$((PORT + master - 1))" -w json)
sfield() { echo "$status" | grep -o "\"$1\":[0-9-]*" | head -1 | cut -d: -f2; }
printf 'run: %.0f appends/s, p50 %s ms, p99 %s ms; servers'"'"' CPU %.1f µs per append (/proc); lost %s, duplicated %s;\n' \
  "$tput" "$(field p50_ms)" "$(field p99_ms)" "$(field server_cpu_us_per_op)" "$(field lost)" "$(field duplicated)"
printf '%s entries in %s instances (%.1f appends per instance, warmup included)\n\n' "$(($(sfield last_index) + 1))" \
  "$(sfield chosen_instance)" "$(awk -v e="$(($(sfield last_index) + 1))" -v i="$(sfield chosen_instance)" 'BEGIN { print e / i }')"
nodes=()
for i in 1 2 3; do
  go tool pprof -traces "$OUT/paxosd" "$OUT/node$i.pb" >"$OUT/node$i.traces" 2>/dev/null
  name="node $i"; [ "$i" = "$master" ] && name="node $i (master)"
  nodes+=("$name=$OUT/node$i.traces")
done
go run ./bench/report cpu -appends "$(awk -v t="$tput" -v s="$(secs "$PROFILE")" 'BEGIN { printf "%d", t * s }')" \
  -proc-us "$(field server_cpu_us_per_op)" "${nodes[@]}"
echo
echo "The master's top functions (go tool pprof -top $OUT/paxosd $OUT/node$master.pb):"
go tool pprof -top -nodecount=15 "$OUT/paxosd" "$OUT/node$master.pb" 2>/dev/null | sed -n '/flat%/,$p'
