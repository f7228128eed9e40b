#!/usr/bin/env bash
# Realtime shards benchmark: S arena shards x P players at 20 Hz, every player sending inputs at
# 20 Hz, on pylon and, in the same run, the same game on Colyseus 0.16 (README.md):
#   pylon     tools/pylon dev; bench_shards (shards.c) mints a session per player, creates the
#             shards (POST /api/shards, kind arena) and plays every player over the shard
#             WebSocket (port+3)
#   pylon-aoi the same with the arena's default area of interest (each player sees the players
#             within 2 cells of 100 units, about a quarter of its shard): opt-in (SERVERS)
#   colyseus  colyseus_server.mjs (@colyseus/core 0.16 + ws-transport, schema 3), driven by
#             colyseus_driver.mjs (colyseus.js 0.16, one Client/Room per player)
# Scenarios: (a) each count of FIXED (200 = 10 x 20 and 1 000 = 50 x 20) on both servers, their
# order alternating from round to round; (b) pylon alone at each count of GROW (20 players per
# shard); the largest count whose median tick lateness p99 stays under 2 ms with >= 95 % of the
# frames delivered is reported. Loopback only; every run is bounded (warmup + duration of load,
# a 30 s connect phase, a hard deadline in both generators, `timeout 200`).
# Full run: about 12 minutes; --quick: about 1 minute (1 000 players on both, pylon at 2 000).
# Usage: bench/shards/run.sh [--quick]
#   env: DURATION (10 s measured), WARMUP (2 s), ROUNDS (3), FIXED ("200 1000"), GROW ("2000 5000
#        10000"), PER_SHARD (20), SERVERS ("pylon colyseus"; add pylon-aoi), THREADS
#        (generator threads, 2), KEEP (a file to append every raw result line to), ARENA_CONFIG (pylon's
#        arena config; default: an area of interest covering the whole 1000 x 1000 world, as a
#        Colyseus room shows every player), BUILD (build). PYLON_* variables reach pylon.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
FIXED=${FIXED:-"200 1000"}
GROW=${GROW:-"2000 5000 10000"}
PER_SHARD=${PER_SHARD:-20}
SERVERS=${SERVERS:-"pylon colyseus"}
THREADS=${THREADS:-2}
ARENA_CONFIG=${ARENA_CONFIG:-'{"aoi_radius":10}'}
if [ "${1:-}" = "--quick" ]; then
  DURATION=3; WARMUP=1; ROUNDS=1; FIXED=${FIXED_QUICK:-1000}; GROW=${GROW_QUICK:-"2000"}
fi
ADMIN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target pylon bench_shards >/dev/null
(cd bench/shards && [ -d node_modules/@colyseus/core ] || npm ci --silent --no-audit --no-fund)
ulimit -n 20000 2>/dev/null || true
[ "$(ulimit -n)" -ge 12000 ] || { echo "bench/shards: needs ulimit -n >= 12000"; exit 1; }
GEN="$ROOT/$BUILD/bench/shards/bench_shards"
PYLON="$ROOT/$BUILD/tools/pylon"

TMP=$(mktemp -d)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
# below the kernel's ephemeral range (32768-60999): a port the load generator's own
# connections hold locally cannot be listened on
port() { echo $((12000 + RANDOM % 20000)); }
# median of the numeric, non-negative values (-1 or "-": not measured in that run)
median() { awk '$1 ~ /^[0-9.]+$/' | sort -g | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); else print "-"}'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; } # key=value from a result line

start_server() { # name port -> SPID, waits until it answers
  local name=$1 p=$2 d="$TMP/srv-$1"
  rm -rf "$d"; mkdir -p "$d"
  case $name in
    pylon | pylon-aoi)
      (cd "$d" && PYLON_DB_PATH="$d/data.db" PYLON_ADMIN_TOKEN="$ADMIN" PYLON_LOG_LEVEL=warn \
        PYLON_MAX_STREAMS_PER_IP=100000 PYLON_RATE_LIMIT_MAX=100000000 \
        exec "$PYLON" dev --port "$p" >"$d/log" 2>&1) &
      SPID=$!
      for _ in $(seq 200); do curl -sf "http://127.0.0.1:$p/health" >/dev/null && return 0; sleep 0.05; done ;;
    colyseus)
      node "$ROOT/bench/shards/colyseus_server.mjs" "$p" >"$d/log" 2>&1 &
      SPID=$!
      for _ in $(seq 200); do grep -qs ready "$d/log" && return 0; sleep 0.05; done ;;
  esac
  kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; SPID=
  cp "$d/log" "$TMP/last-start.log"; return 1
}

stop_server() {
  kill "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=
}

# One measurement: key server players -> appends the generator's line to $TMP/results
measure() {
  local key=$1 name=$2 players=$3 p line shards
  shards=$((players / PER_SHARD))
  # a random port may be taken (other benches share the machine): three tries
  for _ in 1 2 3; do p=$(port); start_server "$name" "$p" && break; done
  [ -n "$SPID" ] || { echo "bench/shards: $name did not start:"; cat "$TMP/last-start.log"; exit 1; }
  if [ "$name" != colyseus ]; then
    local cfg=$ARENA_CONFIG kind=arena
    [ "$name" = pylon-aoi ] && cfg='{}'
    line=$(timeout 200 "$GEN" --port "$p" --admin "$ADMIN" --server-pid "$SPID" --shards "$shards" \
      --players "$PER_SHARD" --threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP" \
      --kind "$kind" --arena-config "$cfg" --label "$key/$name" 2>"$TMP/gen.err") || true
  else
    line=$(timeout 200 node "$ROOT/bench/shards/colyseus_driver.mjs" --port "$p" --server-pid "$SPID" \
      --rooms "$shards" --players "$PER_SHARD" --duration "$DURATION" --warmup "$WARMUP" \
      --label "$key/$name" 2>"$TMP/gen.err") || true
  fi
  stop_server
  if [ -z "$line" ]; then echo "    $key $name: generator failed:"; cat "$TMP/gen.err"; return 0; fi
  [ -s "$TMP/gen.err" ] && sed 's/^/      /' "$TMP/gen.err" | head -3
  echo "$line" >>"$TMP/results"
  [ -n "${KEEP:-}" ] && echo "$line" >>"$KEEP"
  echo "$line" | awk -v k="$key" -v n="$name" '{
      for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      printf "    %-6s %-8s %5s players: late p50 %6s p99 %6s ms (<=2ms %s) fps %6s/%6s in->snap p50 %6s p99 %6s ms jit p99 %6s cpu %s (%s ms/player-s) %s KiB/player client %s\n",
        k, n, f["connected"], f["late_p50_ms"], f["late_p99_ms"], f["late_le2ms"], f["fps"], f["fps_expected"],
        f["lat_p50_ms"], f["lat_p99_ms"], f["jit_p99_ms"], f["server_cpu"], f["cpu_ms_per_player_s"],
        f["kb_per_player"], f["client_cpu"] }'
}

echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "node $(node --version); ${DURATION}s measured after ${WARMUP}s warmup, $ROUNDS round(s); pylon arena config $ARENA_CONFIG"
: >"$TMP/results"
for round in $(seq "$ROUNDS"); do
  echo "  round $round (load $(cut -d' ' -f1-3 /proc/loadavg))"
  order=$SERVERS
  [ $((round % 2)) = 0 ] && order=$(echo "$SERVERS" | tr ' ' '\n' | tac | tr '\n' ' ')
  for n in $FIXED; do for s in $order; do measure "f$n" "$s" "$n"; done; done
  case " $SERVERS " in *" pylon "*)
    for n in $GROW; do measure "g$n" pylon "$n"; done ;;
  esac
done

med() { # key server field -> median over rounds
  { grep "^label=$1/$2 " "$TMP/results" || true; } | field "$3" | median
}
FIELDS="connected late_p50_ms late_p99_ms late_le2ms ticks_per_s fps fps_expected lat_p50_ms lat_p99_ms jit_p99_ms server_cpu cpu_ms_per_player_s rss_mb kb_per_player client_cpu frames_skipped inputs_dropped"
echo
echo "medians over $ROUNDS round(s):"
printf '%-9s %-8s' key server; for f in $FIELDS; do printf ' %s' "$f"; done; echo
row() {
  printf '%-9s %-8s' "$1" "$2"
  for f in $FIELDS; do printf ' %s' "$(med "$1" "$2" "$f")"; done
  echo
}
for n in $FIXED; do for s in $SERVERS; do row "f$n" "$s"; done; done
for n in $GROW; do row "g$n" pylon; done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 <= 0 || a + 0 < 0) print "-"; else printf "%.2fx", a / b }'; }
has() { case " $SERVERS " in *" $1 "*) return 0 ;; esac; return 1; }
if has pylon && has colyseus; then
  for n in $FIXED; do
    k=f$n
    echo
    echo "($n players) server CPU per player-second, colyseus / pylon: $(ratio "$(med $k colyseus cpu_ms_per_player_s)" "$(med $k pylon cpu_ms_per_player_s)") (target >= 10x)"
    pf() { awk -v c="$(med $k "$1" server_cpu)" -v f="$(med $k "$1" fps)" 'BEGIN { if (c == "-" || f == "-" || f + 0 <= 0) print "-"; else print c * 1e6 / f }'; }
    echo "($n players) server CPU per frame delivered (us, medians), colyseus / pylon: $(ratio "$(pf colyseus)" "$(pf pylon)") ($(pf colyseus) / $(pf pylon))"
    echo "($n players) memory per player, colyseus / pylon: $(ratio "$(med $k colyseus kb_per_player)" "$(med $k pylon kb_per_player)")"
    echo "($n players) tick lateness p99, colyseus / pylon: $(ratio "$(med $k colyseus late_p99_ms)" "$(med $k pylon late_p99_ms)")"
    echo "($n players) input->state latency p50, colyseus / pylon: $(ratio "$(med $k colyseus lat_p50_ms)" "$(med $k pylon lat_p50_ms)")"
  done
fi
case " $SERVERS " in *" pylon "*)
  best=-
  for n in $(echo $FIXED $GROW | tr ' ' '\n' | sort -n); do
    key=g$n; grep -q "^label=$key/pylon " "$TMP/results" || key=f$n
    awk -v p="$(med "$key" pylon late_p99_ms)" -v f="$(med "$key" pylon fps)" -v e="$(med "$key" pylon fps_expected)" \
      -v c="$(med "$key" pylon connected)" -v n="$n" \
      'BEGIN { exit !(p != "-" && p + 0 >= 0 && p + 0 < 2 && c + 0 >= n && e + 0 > 0 && f + 0 >= 0.95 * e) }' && best=$n
  done
  echo "pylon: largest player count (of $FIXED $GROW) with tick lateness p99 < 2 ms and >= 95 % of frames: $best" ;;
esac
