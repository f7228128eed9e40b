#!/usr/bin/env bash
# Sync fan-out benchmark: N WebSocket subscribers, M writes/s over HTTP, every write delivered
# to every subscriber. The servers below are driven by the same load generator
# (bench_fanout load) in the same run, their order alternating from round to round:
#   pylon     tools/pylon: POST /api/entities/Event -> SQLite commit -> sync hub -> sessions
#   ref-A     bench_fanout server: our http/ WebSocket layer, no database, no hub, no policy;
#             the POST handler frames the event once and sends it to every stream (our floor)
#   ref-A-c5  the same with 5 ms write coalescing (one write per subscriber for all the events
#             of the period): what batching the writes would buy (README.md)
#   node      Node's `ws` 8.18.3 (node_ref.mjs): the POST handler sends one Buffer to every client
# Scenarios: (a) 5 000 subs x 100 writes/s; (b) 1 000 subs x 500 writes/s; (c) 10 000 subs at
# each rate of C_RATES (the highest rate whose median p99 stays under 100 ms is reported).
# Loopback only; every run is bounded (about 1.2 x DURATION s of writes, DRAIN s at most to
# drain, a hard deadline in the generator). Full run: about 20 minutes; --quick: about 30 s
# ((a) and (b), 2 s each, one round, without ref-A-c5).
# Usage: bench/fanout/run.sh [--quick]
#   env: DURATION (10), ROUNDS (3), C_RATES ("1 2 5 10"), SERVERS ("pylon ref-A ref-A-c5 node"),
#        WRITERS (8 writer connections), BUILD (build), PERF=1 (perf record -g, software clock,
#        of the pylon process during (a) in round 1: report in PERF_OUT, default
#        /tmp/fanout-perf.txt, data beside it). PYLON_* variables reach the pylon server.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
C_RATES=${C_RATES:-"1 2 5 10"}
SERVERS_SET=${SERVERS:-}
SERVERS=${SERVERS:-"pylon ref-A ref-A-c5 node"}
WRITERS=${WRITERS:-8}
PERF=${PERF:-0}
PERF_OUT=${PERF_OUT:-/tmp/fanout-perf.txt}
DRAIN=10
SETTLE=1
SCEN_A="5000 100"; SCEN_B="1000 500"; SCEN_C_SUBS=10000
QUICK=0
if [ "${1:-}" = "--quick" ]; then
  QUICK=1; DURATION=2; ROUNDS=1; DRAIN=3; SETTLE=0.5
  [ -n "$SERVERS_SET" ] || SERVERS="pylon ref-A node"
fi

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target pylon bench_fanout >/dev/null
(cd bench/fanout && [ -d node_modules/ws ] || npm ci --silent --no-audit --no-fund)
ulimit -n 20000 2>/dev/null || true
[ "$(ulimit -n)" -ge 12000 ] || { echo "bench/fanout: needs ulimit -n >= 12000"; exit 1; }
GEN="$ROOT/$BUILD/bench/fanout/bench_fanout"
PYLON="$ROOT/$BUILD/tools/pylon"

TMP=$(mktemp -d)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
# below the kernel's ephemeral range (32768-60999): a port the load generator's own
# connections hold locally cannot be listened on
port() { echo $((12000 + RANDOM % 20000)); }
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); else print "-"}'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; } # key=value from a result line

start_server() { # name port -> SPID, waits until it answers
  local name=$1 p=$2 d="$TMP/srv-$1"
  rm -rf "$d"; mkdir -p "$d"
  case $name in
    pylon)
      (cd "$d" && PYLON_MANIFEST="$ROOT/bench/fanout/fanout.manifest.json" PYLON_DB_PATH="$d/data.db" \
        PYLON_LOG_LEVEL=warn PYLON_MAX_STREAMS_PER_IP=100000 PYLON_RATE_LIMIT_MAX=100000000 \
        exec "$PYLON" dev --port "$p" >"$d/log" 2>&1) &
      SPID=$!
      for _ in $(seq 200); do curl -sf "http://127.0.0.1:$p/health" >/dev/null && return 0; sleep 0.05; done ;;
    ref-A)
      "$GEN" server "$p" >"$d/log" 2>&1 &
      SPID=$!
      for _ in $(seq 200); do grep -qs ready "$d/log" && return 0; sleep 0.05; done ;;
    ref-A-c5) # opt-in (SERVERS): reference A with 5 ms write coalescing
      "$GEN" server "$p" --coalesce-ms 5 >"$d/log" 2>&1 &
      SPID=$!
      for _ in $(seq 200); do grep -qs ready "$d/log" && return 0; sleep 0.05; done ;;
    node)
      node "$ROOT/bench/fanout/node_ref.mjs" "$p" >"$d/log" 2>&1 &
      SPID=$!
      for _ in $(seq 200); do grep -qs ready "$d/log" && return 0; sleep 0.05; done ;;
  esac
  echo "bench/fanout: $name did not start:"; cat "$d/log"; exit 1
}

stop_server() {
  kill "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=
}

# One measurement: scenario-key server subs rate -> appends the generator's line to $TMP/results
measure() {
  local key=$1 name=$2 subs=$3 rate=$4 p perfpid=
  p=$(port)
  start_server "$name" "$p"
  if [ "$PERF" = 1 ] && [ "$name" = pylon ] && [ "$key" = a ] && [ ! -s "$TMP/perf.data" ]; then
    # software clock only (the VM has no PMU): sample the whole pylon process once the
    # subscribers are connected (about 3 s), for DURATION s
    (sleep 3 && exec perf record -e cpu-clock -F 999 -g -p "$SPID" -o "$TMP/perf.data" -- sleep "$DURATION") \
      >"$TMP/perf.log" 2>&1 &
    perfpid=$!
  fi
  local line
  line=$("$GEN" load --http-port "$p" --ws-port $((p + 1)) --subs "$subs" --rate "$rate" \
    --duration "$DURATION" --drain "$DRAIN" --settle "$SETTLE" --writers "$WRITERS" --guest --server-pid "$SPID" \
    --label "$key/$name" 2>"$TMP/gen.err") || { echo "  generator failed:"; cat "$TMP/gen.err"; }
  [ -n "$perfpid" ] && wait "$perfpid" 2>/dev/null || true
  stop_server
  [ -n "$line" ] || return 0
  echo "$line" >>"$TMP/results"
  echo "$line" | awk -v k="$key" -v n="$name" '{
      for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      printf "    %-3s %-8s subs %5s x %4s/s: wps %6s dps %8s p50 %7s p99 %7s ms (POST p99 %s) lost %s closed %s srv_cpu %s us/deliv %s\n",
        k, n, f["subs"], f["rate"], f["wps"], f["dps"], f["p50_ms"], f["p99_ms"], f["rtt_p99_ms"], f["lost"],
        f["closed"], f["server_cpu"], f["server_us_per_delivery"] }'
}

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "node $(node --version); ${DURATION}s of writes per run, $WRITERS writer connections, $ROUNDS round(s)"
: >"$TMP/results"
SCENARIOS=("a $SCEN_A" "b $SCEN_B")
if [ "$QUICK" = 0 ]; then for r in $C_RATES; do SCENARIOS+=("c$r $SCEN_C_SUBS $r"); done; fi
for round in $(seq "$ROUNDS"); do
  echo "  round $round"
  # alternate the servers' order from round to round: neighbours' noise spreads evenly
  order=$SERVERS
  [ $((round % 2)) = 0 ] && order=$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')
  for sc in "${SCENARIOS[@]}"; do
    read -r key subs rate <<<"$sc"
    for s in $order; do measure "$key" "$s" "$subs" "$rate"; done
  done
done

med() { # key server field -> median over rounds
  { grep "^label=$1/$2 " "$TMP/results" || true; } | field "$3" | median
}
echo
printf '%-18s %-8s %6s %8s %8s %8s %8s %8s %8s %5s %6s %7s %8s\n' scenario server wps "deliv/s" "p50 ms" "p95 ms" \
  "p99 ms" "max ms" "POST p99" lost closed srv_cpu "us/deliv"
row() { # key title server
  printf '%-18s %-8s %6s %8s %8s %8s %8s %8s %8s %5s %6s %7s %8s\n' "$2" "$3" "$(med "$1" "$3" wps)" \
    "$(med "$1" "$3" dps)" "$(med "$1" "$3" p50_ms)" "$(med "$1" "$3" p95_ms)" "$(med "$1" "$3" p99_ms)" \
    "$(med "$1" "$3" max_ms)" "$(med "$1" "$3" rtt_p99_ms)" "$(med "$1" "$3" lost)" "$(med "$1" "$3" closed)" \
    "$(med "$1" "$3" server_cpu)" "$(med "$1" "$3" server_us_per_delivery)"
}
for sc in "${SCENARIOS[@]}"; do
  read -r key subs rate <<<"$sc"
  for s in $SERVERS; do row "$key" "($key) ${subs}x${rate}/s" "$s"; done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'; }
echo
A_P=$(med a pylon dps); A_N=$(med a node dps); A_R=$(med a ref-A dps)
echo "(a) deliveries/s pylon vs node ws: $(ratio "$A_P" "$A_N") (target >= 4x); pylon vs ref-A: $(ratio "$A_P" "$A_R")"
echo "(a) server CPU per delivery, node ws vs pylon: $(ratio "$(med a node server_us_per_delivery)" "$(med a pylon server_us_per_delivery)")" \
  "; ref-A vs pylon: $(ratio "$(med a ref-A server_us_per_delivery)" "$(med a pylon server_us_per_delivery)") (above 1x: pylon spends less)"
echo "(b) deliveries/s pylon vs node ws: $(ratio "$(med b pylon dps)" "$(med b node dps)"); pylon vs ref-A: $(ratio "$(med b pylon dps)" "$(med b ref-A dps)")"
awk -v p99="$(med a pylon p99_ms)" -v lost="$(med a pylon lost)" -v wps="$(med a pylon wps)" 'BEGIN {
  ok = (p99 != "-" && p99 + 0 < 50 && lost + 0 == 0 && wps + 0 >= 95)
  printf "(a) target 5000 x 100/s, p99 < 50 ms, 0 lost: pylon p99 %s ms, lost %s, %s writes/s: %s\n", p99, lost, wps, ok ? "MET" : "MISSED" }'
awk -v p99="$(med b pylon p99_ms)" -v wps="$(med b pylon wps)" 'BEGIN {
  printf "(b) 1000 x 500/s: pylon %s writes/s achieved, p99 %s ms: %s\n", wps, p99, (wps + 0 >= 475) ? "sustained" : "NOT sustained" }'
if [ "$QUICK" = 0 ]; then
  for s in $SERVERS; do
    best=-
    for r in $C_RATES; do
      p99=$(med "c$r" "$s" p99_ms); wps=$(med "c$r" "$s" wps)
      awk -v p="$p99" -v w="$wps" -v r="$r" 'BEGIN { exit !(p != "-" && p + 0 < 100 && w + 0 >= 0.95 * r) }' && best=$r
    done
    echo "(c) 10000 subscribers, highest rate with p99 < 100 ms (of $C_RATES): $s $best writes/s"
  done
fi
[ "$PERF" = 1 ] && [ ! -s "$TMP/perf.data" ] && { echo "perf record failed:"; cat "$TMP/perf.log"; }
if [ -s "$TMP/perf.data" ]; then
  perf report -i "$TMP/perf.data" --no-children --stdio --percent-limit 1 2>/dev/null >"$PERF_OUT" || true
  cp "$TMP/perf.data" "${PERF_OUT%.txt}.data"
  echo "perf report of pylon during (a): $PERF_OUT"
fi
