#!/usr/bin/env bash
# Throughput and added latency of the router with its records in the embedded redb store vs in PostgreSQL
# (`store.postgres`), with 1 and 3 instances, on this machine (the BENCHMARKS.md section "Scale-out: PostgreSQL").
#
# Builds the router and the bench examples (release, unless BENCH_PROFILE=debug), starts the bench upstream and
# the routers on 127.0.0.1 only, creates a database of its own on the local PostgreSQL (dropped at the end), and
# for each mode sends REQUESTS streamed chat completions (CONCURRENCY at a time per instance, split evenly over
# the instances) with bench_stream_client. Prints, per mode: wall time, requests/s, time to first byte p50/p99
# and what the router adds to the upstream's own (direct run), and checks that every request has exactly one
# record (in PostgreSQL, or in each redb store).
#
# Environment: REQUESTS per mode (default 20000), CONCURRENCY per instance (16), CHUNKS per stream (1),
# BENCH_PROFILE (release|debug), PG_ADMIN (postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL
# (redis://127.0.0.1:6379; the Redis + PostgreSQL modes are skipped when it does not answer).
# Only 127.0.0.1 is ever a target. CI does not run this.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
REQUESTS=${REQUESTS:-20000}
CONCURRENCY=${CONCURRENCY:-16}
CHUNKS=${CHUNKS:-1}
PROFILE=${BENCH_PROFILE:-release}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
DB=router_bench_$(date +%s)_$$
PG_URL=${PG_ADMIN%/*}/$DB
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

if [ "$PROFILE" = release ]; then
  cargo build --release --bin router --example bench_upstream --example bench_stream_client >&2
else
  cargo build --bin router --example bench_upstream --example bench_stream_client >&2
fi
BIN=$TARGET/$PROFILE
psql -q "$PG_ADMIN" -c "CREATE DATABASE $DB"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

"$BIN/examples/bench_upstream" --port 0 --chunks "$CHUNKS" --interval-ms 0 >"$TMP/up.out" 2>&1 &
PIDS+=($!)
UP=$(addr_of "$TMP/up.out")

start_router() { # NAME POSTGRES_URL_OR_EMPTY [REDIS_URL]: starts a router, sets RADDR
  local dir=$TMP/$1
  mkdir -p "$dir"
  {
    echo "server: {debug_headers: false}"
    echo "store:"
    [ -n "$2" ] && echo "  postgres: $2"
    echo "  path: $dir/router.redb"
    [ -n "${3:-}" ] && printf 'shared_state:\n  redis: %s\n' "$3"
    cat <<YAML
channels:
  - name: bench
    base_url: http://$UP/v1
    keys: [sk-bench-postgres]
    models: [bench-model]
    pricing:
      bench-model: {input: 1, output: 2}
YAML
  } >"$dir/router.yaml"
  ROUTER_NO_LOCAL_PROBE=1 "$BIN/router" serve --config "$dir/router.yaml" --listen 127.0.0.1:0 \
    >"$dir/out" 2>"$dir/err" &
  PIDS+=($!)
  RADDR=$(addr_of "$dir/out")
}

# Runs REQUESTS over the given addresses at once; prints "wall_s ok ttfb_p50 ttfb_p99".
drive() {
  local n i=0 t0 t1 clients=()
  t0=$(date +%s.%N)
  for a in "$@"; do
    # An equal share each, the remainder to the first ones: REQUESTS in all.
    n=$(( REQUESTS / $# + (i < REQUESTS % $# ? 1 : 0) ))
    "$BIN/examples/bench_stream_client" --url "http://$a/v1/chat/completions" --requests "$n" \
      --concurrency "$CONCURRENCY" --chunks "$CHUNKS" >"$TMP/drive-$i.json" &
    clients+=($!)
    i=$((i + 1))
  done
  wait "${clients[@]}"
  t1=$(date +%s.%N)
  python3 - "$t0" "$t1" "$TMP"/drive-*.json <<'PY'
import json, sys
t0, t1 = float(sys.argv[1]), float(sys.argv[2])
runs = [json.load(open(f)) for f in sys.argv[3:]]
ok = sum(r["ok"] for r in runs)
# Percentiles of the union are not the mean of percentiles; with equal shares the median of medians is close
# enough for a comparison, and the worst p99 is reported.
p50 = sorted(r["ttfb_ms"]["p50"] for r in runs)[len(runs) // 2]
p99 = max(r["ttfb_ms"]["p99"] for r in runs)
print(f"{t1 - t0:.2f} {ok} {p50:.3f} {p99:.3f}")
PY
  rm -f "$TMP"/drive-*.json
}

pg_records() { psql -qtA "$PG_URL" -c "SELECT count(*) || ' ' || count(DISTINCT id) FROM requests"; }

report() { # MODE WALL OK P50 P99
  local rps added50 added99
  rps=$(echo "$3 / $2" | bc -l)
  added50=$(echo "$4 - $DIRECT_P50" | bc -l)
  added99=$(echo "$5 - $DIRECT_P99" | bc -l)
  printf '| %s | %d / %d | %.1f | %.0f | %.3f | %.3f | %+.3f | %+.3f |\n' "$1" "$3" "$REQUESTS" "$2" "$rps" "$4" "$5" \
    "$added50" "$added99"
}

echo "# $REQUESTS streamed requests per mode, $CONCURRENCY at a time per instance, $CHUNKS chunk(s), $PROFILE build, $(nproc) cores"
drive "$UP" >"$TMP/r"; read -r W OK DIRECT_P50 DIRECT_P99 <"$TMP/r"
echo "| mode | ok | wall s | req/s | TTFB p50 ms | TTFB p99 ms | added p50 ms | added p99 ms |"
echo "|---|---|---|---|---|---|---|---|"
report "direct (no router)" "$W" "$OK" "$DIRECT_P50" "$DIRECT_P99"

mode() { # LABEL ADDR...
  local label=$1
  shift
  drive "$@" >"$TMP/r"
  read -r W OK P50 P99 <"$TMP/r"
  report "$label" "$W" "$OK" "$P50" "$P99"
}
start_router embedded-1 ""; mode "embedded redb, 1 instance" "$RADDR"
E=()
for i in 1 2 3; do start_router "embedded-3-$i" ""; E+=("$RADDR"); done
mode "embedded redb, 3 instances (own stores)" "${E[@]}"
start_router pg-1 "$PG_URL"; mode "PostgreSQL, 1 instance" "$RADDR"
P=()
for i in 1 2 3; do start_router "pg-3-$i" "$PG_URL"; P+=("$RADDR"); done
mode "PostgreSQL, 3 instances (one database)" "${P[@]}"
# Redis + PostgreSQL: cooldowns, affinity bindings (every new session is written to Redis before its answer) and
# latency shared; no gateway keys here, so admission never asks Redis.
SENT_PG=$(( REQUESTS * 2 ))
if redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  start_router redis-pg-1 "$PG_URL" "$REDIS_URL"; mode "Redis + PostgreSQL, 1 instance" "$RADDR"
  R=()
  for i in 1 2 3; do start_router "redis-pg-3-$i" "$PG_URL" "$REDIS_URL"; R+=("$RADDR"); done
  mode "Redis + PostgreSQL, 3 instances" "${R[@]}"
  SENT_PG=$(( REQUESTS * 4 ))
else
  echo "| Redis + PostgreSQL | not run: no Redis at $REDIS_URL | | | | | | |"
fi

# Every request recorded exactly once (the writers commit within their batch window; allow 30 s).
want=$SENT_PG
for _ in $(seq 1 300); do
  pg_records >"$TMP/n"; read -r n d <"$TMP/n"
  [ "$n" -ge "$want" ] && break
  sleep 0.1
done
echo
echo "records in PostgreSQL: $n (distinct ids: $d), requests sent to PostgreSQL modes: $want"
