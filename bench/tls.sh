#!/usr/bin/env bash
# bench/tls.sh: what TLS costs paxosd, plaintext against TLS, in one command.
#
#   bash bench/tls.sh        # about 3.5 minutes as set; needs Go and openssl
#
# It builds paxosd, makes a CA and certificates with openssl (client TLS: one certificate for
# 127.0.0.1; peer mutual TLS: a peer CA and one certificate per node naming it with the URI SAN
# paxosd://member/ID), then, BENCH_ROUNDS times, alternating the two configurations (the machine
# may be shared: alternating spreads its load over both), starts a 3-node cluster on 127.0.0.1
# (like paxosd dev, but separate processes; fsync on), runs `paxosd bench` (closed loop, 100 B
# values, each client its own connection) with each client count, and stops the cluster.
#   plain: no TLS flags
#   tls:   --cert-file/--key-file on every node, --peer-cert-file/--peer-key-file/
#          --peer-trusted-ca-file between nodes; bench connects with --cacert
# It prints one line per run (config, clients, round, appends/s, p50, p99) and the medians.
#
# Settings (environment):
#   BENCH_DURATION  measured part of each run        (default 10s)
#   BENCH_WARMUP    warmup before each, not measured (default 2s)
#   BENCH_CLIENTS   client counts                    (default "1 64")
#   BENCH_ROUNDS    rounds of both configurations    (default 3)
#   BENCH_OUT       directory for certificates, data, logs (default a new /tmp/paxosd-tls.XXXXXX)
# Ports used on 127.0.0.1: 17101-17103.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
CLIENTS=${BENCH_CLIENTS:-1 64}
ROUNDS=${BENCH_ROUNDS:-3}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/paxosd-tls.XXXXXX)}
mkdir -p "$OUT/certs"
BIN=$OUT/paxosd
go build -o "$BIN" ./cmd/paxosd
PEERS=1=127.0.0.1:17101,2=127.0.0.1:17102,3=127.0.0.1:17103
EPS=127.0.0.1:17101,127.0.0.1:17102,127.0.0.1:17103

C=$OUT/certs
key() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "$@" 2>/dev/null; }
key -x509 -days 2 -subj /CN=bench-ca -keyout "$C/ca-key.pem" -out "$C/ca.pem"
key -x509 -days 2 -subj /CN=bench-peer-ca -keyout "$C/peer-ca-key.pem" -out "$C/peer-ca.pem"
sign() { # sign NAME CA SAN
  key -subj "/CN=$1" -keyout "$C/$1-key.pem" -out "$C/$1.csr"
  openssl x509 -req -in "$C/$1.csr" -CA "$C/$2.pem" -CAkey "$C/$2-key.pem" -CAcreateserial -days 2 -out "$C/$1.pem" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth' "$3") 2>/dev/null
}
sign node ca IP:127.0.0.1
for i in 1 2 3; do sign "peer$i" peer-ca "URI:paxosd://member/$i"; done

PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap stop EXIT

start() { # start plain|tls
  rm -rf "$OUT/data"
  for i in 1 2 3; do
    local extra=()
    if [ "$1" = tls ]; then
      extra=(--cert-file "$C/node.pem" --key-file "$C/node-key.pem"
        --peer-cert-file "$C/peer$i.pem" --peer-key-file "$C/peer$i-key.pem" --peer-trusted-ca-file "$C/peer-ca.pem")
    fi
    "$BIN" server --id "$i" --peers "$PEERS" --data-dir "$OUT/data/$i" "${extra[@]}" >>"$OUT/node$i.log" 2>&1 &
    PIDS+=($!)
  done
}

echo "config clients round appends_per_s p50_ms p99_ms errors"
for r in $(seq "$ROUNDS"); do
  for cfg in plain tls; do
    start "$cfg"
    tlsflags=()
    if [ "$cfg" = tls ]; then tlsflags=(--cacert "$C/ca.pem"); fi
    "$BIN" status --endpoints "$EPS" "${tlsflags[@]}" --timeout 30s >/dev/null 2>&1 || true
    for n in $CLIENTS; do
      "$BIN" bench --endpoints "$EPS" "${tlsflags[@]}" --clients "$n" --duration "$DURATION" --warmup "$WARMUP" \
        --interval 0 -w json 2>>"$OUT/bench.log" >"$OUT/$cfg-$n-$r.json"
      python3 - "$cfg" "$n" "$r" "$OUT/$cfg-$n-$r.json" <<'PY'
import json, sys
cfg, n, r, f = sys.argv[1:]
d = json.load(open(f))
print(cfg, n, r, round(d["throughput"]), round(d["p50_ms"], 2), round(d["p99_ms"], 2), "errors=%d" % d["errors"])
PY
    done
    stop
  done
done | tee "$OUT/runs.txt"
echo "medians (appends/s):"
for cfg in plain tls; do for n in $CLIENTS; do
  echo "$cfg $n $(awk -v c="$cfg" -v n="$n" '$1==c && $2==n {print $4}' "$OUT/runs.txt" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done; done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"
