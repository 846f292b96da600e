#!/usr/bin/env bash
# CPU the router spends per request with Prometheus metrics on and off (server.metrics), on this machine.
#
# Builds the router and the bench examples in release mode (unless BENCH_NO_BUILD=1), starts the bench upstream
# and one router per mode on 127.0.0.1 only, drives streamed chat completions through it with bench_stream_client,
# and reads the router's own CPU time (utime + stime from /proc/PID/stat) around each run. Modes alternate
# ROUNDS times so that drift on a shared machine hits both alike. Prints one line per run and the summary.
#
# Environment: REQUESTS per run (default 4000), CONCURRENCY (16), CHUNKS per stream (5), ROUNDS (3).
# Only 127.0.0.1 is ever a target. CI does not run this.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
REQUESTS=${REQUESTS:-4000}
CONCURRENCY=${CONCURRENCY:-16}
CHUNKS=${CHUNKS:-5}
ROUNDS=${ROUNDS:-3}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  cargo build --release --bin router --example bench_upstream --example bench_stream_client >&2
fi
REL=$TARGET/release
TICK=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

"$REL/examples/bench_upstream" --port 0 --chunks "$CHUNKS" --interval-ms 0 >"$TMP/up.out" 2>&1 &
PIDS+=($!)
UP=$(addr_of "$TMP/up.out")

start_router() { # MODE (true|false): starts a router, sets RPID and RADDR
  local dir=$TMP/router-$1
  mkdir -p "$dir"
  cat >"$dir/router.yaml" <<YAML
server:
  metrics: $1
  debug_headers: false
channels:
  - name: bench
    base_url: http://$UP/v1
    keys: [sk-bench-metrics]
    models: [bench-model]
    pricing:
      bench-model: {input: 1, output: 2}
YAML
  ROUTER_NO_LOCAL_PROBE=1 "$REL/router" serve --config "$dir/router.yaml" --store "$dir/router.redb" \
    --listen 127.0.0.1:0 >"$dir/out" 2>"$dir/err" &
  RPID=$!
  PIDS+=("$RPID")
  RADDR=$(addr_of "$dir/out")
}

declare -A ROUTER_PID ROUTER_ADDR
for mode in true false; do
  start_router "$mode"
  ROUTER_PID[$mode]=$RPID
  ROUTER_ADDR[$mode]=$RADDR
  # Warm up: connections, allocator, caches.
  "$REL/examples/bench_stream_client" --url "http://$RADDR/v1/chat/completions" --requests 500 \
    --concurrency "$CONCURRENCY" --chunks "$CHUNKS" --threads 1 >/dev/null
done

declare -A TOTAL_US TOTAL_N
TOTAL_US[true]=0; TOTAL_US[false]=0; TOTAL_N[true]=0; TOTAL_N[false]=0
for round in $(seq 1 "$ROUNDS"); do
  for mode in true false; do
    pid=${ROUTER_PID[$mode]}
    before=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    out=$("$REL/examples/bench_stream_client" --url "http://${ROUTER_ADDR[$mode]}/v1/chat/completions" \
      --requests "$REQUESTS" --concurrency "$CONCURRENCY" --chunks "$CHUNKS" --threads 1)
    t1=$(date +%s.%N)
    after=$(cpu_ticks "$pid")
    ok=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get("ok", d.get("completed", "?")))' "$out" 2>/dev/null || echo "?")
    us=$(( (after - before) * 1000000 / TICK ))
    TOTAL_US[$mode]=$(( ${TOTAL_US[$mode]} + us ))
    TOTAL_N[$mode]=$(( ${TOTAL_N[$mode]} + REQUESTS ))
    printf 'round %d metrics=%-5s requests=%d ok=%s wall=%.1fs router_cpu=%.2fs cpu_per_request=%.1fus\n' \
      "$round" "$mode" "$REQUESTS" "$ok" "$(echo "$t1 - $t0" | bc)" "$(echo "$us / 1000000" | bc -l)" \
      "$(echo "$us / $REQUESTS" | bc -l)"
  done
done
on=$(echo "${TOTAL_US[true]} / ${TOTAL_N[true]}" | bc -l)
off=$(echo "${TOTAL_US[false]} / ${TOTAL_N[false]}" | bc -l)
printf 'summary: cpu_per_request metrics_on=%.1fus metrics_off=%.1fus difference=%+.1f%%\n' "$on" "$off" \
  "$(echo "($on - $off) * 100 / $off" | bc -l)"
# The counters agree with what was sent.
curl -s "http://${ROUTER_ADDR[true]}/metrics" | grep -E '^router_requests_total|^router_tokens_total' || true
