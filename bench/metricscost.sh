#!/usr/bin/env bash
# bench/metricscost.sh: what --metrics-addr costs on the append path.
#
#   bash bench/metricscost.sh       # about 3 minutes; needs Go and curl
#
# Three rounds, alternating: a 3-node paxosd cluster on 127.0.0.1 without
# metrics, then one with --metrics-addr on every node and a scraper that
# GETs every node's /metrics once a second; against each, `paxosd bench`
# with 1 and then 64 clients (100 B values, 10 s after a 2 s warmup). It
# prints one line per run (round, metrics off/on, clients, appends/s, p50
# and p99 in ms); docs/benchmarks.md ("Cost of metrics") gives the medians.
# Settings (environment): ROUNDS (3), DURATION (10s), PORT (28101: the
# nodes use PORT..PORT+2, their metrics PORT+100..PORT+102).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10s} PORT=${PORT:-28101}
work=$(mktemp -d /tmp/paxosd-metricscost.XXXXXX)
pids=()
cleanup() { [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
go build -o "$work/paxosd" ./cmd/paxosd
eps="127.0.0.1:$PORT,127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
peers="1=127.0.0.1:$PORT,2=127.0.0.1:$((PORT + 1)),3=127.0.0.1:$((PORT + 2))"
field() { grep -o "\"$1\":[0-9.]*" | head -1 | cut -d: -f2; }
echo "round metrics clients appends/s p50_ms p99_ms"
for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    d="$work/$round-$mode"
    pids=()
    for i in 1 2 3; do
      extra=()
      [ "$mode" = on ] && extra=(--metrics-addr "127.0.0.1:$((PORT + 99 + i))")
      "$work/paxosd" server --id "$i" --peers "$peers" --data-dir "$d/$i" --min-free-bytes 0 "${extra[@]}" >"$d.log$i" 2>&1 &
      pids+=($!)
    done
    until "$work/paxosd" append --endpoints "$eps" warm >/dev/null 2>&1; do sleep 0.2; done
    if [ "$mode" = on ]; then
      (while true; do for i in 1 2 3; do curl -s -o /dev/null "127.0.0.1:$((PORT + 99 + i))/metrics"; done; sleep 1; done) &
      pids+=($!)
    fi
    for c in 1 64; do
      r=$("$work/paxosd" bench --endpoints "$eps" --clients "$c" --duration "$DURATION" --warmup 2s --interval 0 -w json 2>/dev/null)
      echo "$round $mode $c $(field throughput <<<"$r") $(field p50_ms <<<"$r") $(field p99_ms <<<"$r")"
    done
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
  done
done
