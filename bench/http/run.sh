#!/usr/bin/env bash
# HTTP benchmarks, each beside its reference measured in the same run:
#   (a) wrk, GET /health with keep-alive on pylon vs nginx serving a small static file:
#       requests/s, p50 and p99 latency, median of ROUNDS alternating runs;
#   (b) memory per idle WebSocket: N idle clients on our WebSocket layer vs Node's `ws`.
# Loopback only; every load is bounded (DURATION seconds per wrk run, N connections).
# Usage: bench/http/run.sh [--quick]    env: N (10000), DURATION (5), ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
N=${N:-10000}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
if [ "${1:-}" = "--quick" ]; then N=2000; DURATION=2; ROUNDS=1; fi
command -v wrk >/dev/null && command -v nginx >/dev/null || {
  echo "bench/http: needs wrk and nginx: apt-get install -y wrk nginx-light"; exit 1; }
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target pylon bench_ws_idle >/dev/null
(cd bench/http && [ -d node_modules/ws ] || npm ci --silent --no-audit --no-fund)
ulimit -n 20000 2>/dev/null || true

TMP=$(mktemp -d)
chmod 755 "$TMP" # nginx workers run as another user
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
# below the kernel's ephemeral range (32768-60999): a port the load generator's own
# connections hold locally cannot be listened on
port() { echo $((12000 + RANDOM % 20000)); }
wait_http() { for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.05; done; return 1; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "machine: $(nproc) cores; $(uname -r)"
echo
echo "== (a) GET /health, keep-alive: wrk -t2 -c64 -d${DURATION}s, $ROUNDS round(s)"
P=$(port)
(cd "$TMP" && PYLON_LOG_LEVEL=warn exec "$ROOT/build/tools/pylon" dev --port "$P" >"$TMP/pylon.log" 2>&1) &
PIDS+=($!)
wait_http "http://127.0.0.1:$P/health"
NP=$(port)
mkdir -p "$TMP/www"
printf '{"status":"ok","uptime_seconds":1,"uptime_secs":1,"version":"0.1.0"}' >"$TMP/www/health"
cat >"$TMP/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
error_log $TMP/nginx.err;
pid $TMP/nginx.pid;
events { worker_connections 4096; }
http { access_log off; default_type application/json;
  server { listen 127.0.0.1:$NP; root $TMP/www; location / { } } }
NGINX
nginx -c "$TMP/nginx.conf" &
PIDS+=($!)
wait_http "http://127.0.0.1:$NP/health"

run_wrk() { # URL -> "rps p50_ms p99_ms"
  wrk -t2 -c64 -d"${DURATION}s" --latency "$1" | awk '
    /Requests\/sec/ {rps=$2}
    $1=="50%" {p50=$2} $1=="99%" {p99=$2}
    function ms(x) { if (x ~ /us$/) return x/1000; if (x ~ /ms$/) return x+0; if (x ~ /s$/) return x*1000; return x }
    END {printf "%.0f %.3f %.3f\n", rps, ms(p50), ms(p99)}'
}
: >"$TMP/ours"; : >"$TMP/ref"
for r in $(seq "$ROUNDS"); do
  run_wrk "http://127.0.0.1:$P/health" | tee -a "$TMP/ours" | sed "s/^/  round $r pylon: /"
  run_wrk "http://127.0.0.1:$NP/health" | tee -a "$TMP/ref" | sed "s/^/  round $r nginx: /"
done
O_RPS=$(cut -d' ' -f1 "$TMP/ours" | median); R_RPS=$(cut -d' ' -f1 "$TMP/ref" | median)
O_P50=$(cut -d' ' -f2 "$TMP/ours" | median); R_P50=$(cut -d' ' -f2 "$TMP/ref" | median)
O_P99=$(cut -d' ' -f3 "$TMP/ours" | median); R_P99=$(cut -d' ' -f3 "$TMP/ref" | median)
printf '  %-8s %12s %10s %10s\n' "" "req/s" "p50 ms" "p99 ms"
printf '  %-8s %12s %10s %10s\n' pylon "$O_RPS" "$O_P50" "$O_P99"
printf '  %-8s %12s %10s %10s\n' nginx "$R_RPS" "$R_P50" "$R_P99"
awk -v o="$O_RPS" -v r="$R_RPS" 'BEGIN {printf "  ratio pylon/nginx: %.2fx (target >= 0.80x)\n", o/r}'
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

echo
echo "== (b) memory per idle WebSocket, $N clients"
measure() { # name, server command... -> prints bytes per connection
  local name=$1; shift
  local sp; sp=$(port)
  "$@" "$sp" >"$TMP/srv.out" 2>&1 &
  local spid=$!
  PIDS+=($spid)
  for _ in $(seq 100); do grep -q ready "$TMP/srv.out" && break; sleep 0.05; done
  sleep 0.3
  local before; before=$(rss_kb $spid)
  "$ROOT/build/bench/http/bench_ws_idle" clients "$sp" "$N" >"$TMP/cli.out" 2>&1 &
  local cpid=$!
  PIDS+=($cpid)
  for _ in $(seq 600); do grep -q "^ready" "$TMP/cli.out" && break; sleep 0.1; done
  sleep 1
  local after; after=$(rss_kb $spid)
  local held; held=$(awk '/^ready/ {print $2}' "$TMP/cli.out")
  kill $cpid 2>/dev/null || true; kill $spid 2>/dev/null || true
  wait $cpid 2>/dev/null || true; wait $spid 2>/dev/null || true
  awk -v b="$before" -v a="$after" -v n="$held" -v name="$name" 'BEGIN {
    printf "  %-10s connections %6d   RSS %7.1f MiB -> %7.1f MiB   %7.0f bytes/connection\n",
      name, n, b/1024, a/1024, (a-b)*1024/n }'
}
measure "pylon" "$ROOT/build/bench/http/bench_ws_idle" server
measure "node ws" node "$ROOT/bench/http/ws_idle_server.mjs"
echo "  (target: pylon <= 2048 bytes/connection)"
