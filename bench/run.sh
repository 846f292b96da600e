#!/usr/bin/env bash
# The router side by side with direct access, nginx as a reverse proxy and the LiteLLM proxy, on this machine,
# in one run.
#
# Installs what it needs (Debian: nginx; crates.io: oha; PyPI: litellm[proxy] pinned, in bench/.venv-litellm),
# builds the router and the bench examples in release mode, starts nginx, a second nginx as the reference proxy
# (as many workers as the router has threads), the paced mock, the router twice (bench/router.yaml: the bare
# proxy; bench/router-features.yaml: metrics, affinity and key limits on) and LiteLLM on 127.0.0.1 only, runs
# every measurement, stops everything it started, writes BENCHMARKS.md and prints the targets of issue 18
# (met / missed).
#
# Environment:
#   BENCH_DURATION   seconds per load run (default 10; a trial on a busy machine: 3)
#   BENCH_TRIAL      1: label the report as a trial run on a busy machine
#   BENCH_ROUNDS     paired saturation rounds of nginx-as-proxy, the router and the router with features
#                    (default 5; 0: none); each run lasts half of BENCH_DURATION
#   BENCH_SKIP_INSTALL=1  use what is installed; fail if something is missing
#   BENCH_ROUTER_THREADS  the router's worker threads (TOKIO_WORKER_THREADS; default: nproc); the reference
#                    nginx proxy gets as many worker processes
#   CARGO_TARGET_DIR the usual; binaries are taken from $CARGO_TARGET_DIR/release
# Only 127.0.0.1 is ever a target. CI does not run this.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DUR=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-5}
TRIAL=${BENCH_TRIAL:-0}
LITELLM_VERSION=1.80.5 # known-good; never 1.82.7 or 1.82.8 (compromised releases)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
TMP=$ROOT/bench/tmp/run-$STAMP
RAW=$TMP/raw
mkdir -p "$RAW" "$ROOT/bench/results"
START_EPOCH=$(date +%s)
THREADS=${BENCH_ROUTER_THREADS:-$(nproc)}
export TOKIO_WORKER_THREADS=$THREADS

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
tool() { python3 "$ROOT/bench/tool.py" "$@"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------------------------------------------------------
# Everything started here is stopped on exit, whatever happens.
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID: SIGTERM, wait up to 20 s for it to exit (the router drains its usage writer), then SIGKILL.
stop() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------------------------
# 1. Install.
if [ "${BENCH_SKIP_INSTALL:-0}" != 1 ]; then
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    say "installing nginx (apt)"
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  fi
  if [ ! -x "$ROOT/bench/tools/bin/oha" ]; then
    say "installing oha (cargo install --locked; a few minutes)"
    CARGO_TARGET_DIR="$ROOT/bench/tmp/oha-build" cargo install oha --locked --root "$ROOT/bench/tools" --quiet
  fi
  if ! "$ROOT/bench/.venv-litellm/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
    say "installing litellm[proxy]==$LITELLM_VERSION into bench/.venv-litellm"
    if ! python3 -m venv "$ROOT/bench/.venv-litellm"; then
      as_root apt-get update -qq >/dev/null
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$ROOT/bench/.venv-litellm"
    fi
    "$ROOT/bench/.venv-litellm/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
  fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
OHA=$ROOT/bench/tools/bin/oha
LITELLM=$ROOT/bench/.venv-litellm/bin/litellm
[ -x "$NGINX" ] || die "nginx is missing"
[ -x "$OHA" ] || die "oha is missing (bench/tools/bin/oha)"
[ -x "$LITELLM" ] || die "litellm is missing (bench/.venv-litellm)"
LITELLM_INSTALLED=$("$ROOT/bench/.venv-litellm/bin/python" -c "import importlib.metadata as m; print(m.version('litellm'))")
case "$LITELLM_INSTALLED" in 1.82.7 | 1.82.8) die "litellm $LITELLM_INSTALLED is a compromised release; remove bench/.venv-litellm" ;; esac

# ---------------------------------------------------------------------------------------------------------------
# 2. Build.
INTERNALS=()
for ex in bench_writer bench_routing; do [ -f "$ROOT/examples/$ex.rs" ] && INTERNALS+=("$ex"); done
say "building the router and the bench examples (release)"
build_args=(--release --locked --bin router --example bench_upstream --example bench_stream_client)
for ex in "${INTERNALS[@]}"; do build_args+=(--example "$ex"); done
cargo build --quiet "${build_args[@]}"
ROUTER=$TARGET/release/router
UPSTREAM=$TARGET/release/examples/bench_upstream
SCLIENT=$TARGET/release/examples/bench_stream_client

# ---------------------------------------------------------------------------------------------------------------
# 3. Machine facts (the report prints them).
{
  echo "nproc=$(nproc)"
  echo "cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
  echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nginx=$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
  echo "oha=$("$OHA" --version | awk '{print $2}')"
  echo "litellm=$LITELLM_INSTALLED"
  echo "rustc=$(rustc --version | awk '{print $2}')"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo -dirty)"
  echo "duration=$DUR"
  echo "rounds=$ROUNDS"
  echo "router_threads=$THREADS"
  echo "ngproxy_workers=$THREADS"
  echo "trial=$TRIAL"
  echo "stamp=$STAMP"
} >"$RAW/machine.env"

# ---------------------------------------------------------------------------------------------------------------
# 4. Servers, all on 127.0.0.1.
NGINX_PORT=$(tool freeport)
MOCK_PORT=$(tool freeport)
ROUTER_PORT=$(tool freeport)
LITELLM_PORT=$(tool freeport)
BIG_PORT=$(tool freeport)
NGPROXY_PORT=$(tool freeport)
FEATURES_PORT=$(tool freeport)
export BENCH_NGINX_PORT=$NGINX_PORT BENCH_MOCK_PORT=$MOCK_PORT BENCH_ROUTER_PORT=$ROUTER_PORT
export BENCH_ROUTER_FEATURES_PORT=$FEATURES_PORT
export BENCH_NGINX_BASE=http://127.0.0.1:$NGINX_PORT/v1
export BENCH_NGINX_SSE_BASE=http://127.0.0.1:$NGINX_PORT/sse/v1
export BENCH_MOCK_BASE=http://127.0.0.1:$MOCK_PORT/v1

# 4a. Idle RSS with 1,000 channels / 50,000 models: its own router instance, started and stopped first.
say "router with 1,000 channels / 50,000 models: start-up time and idle RSS"
tool big-config "$TMP/big.yaml" 1000 50 "$NGINX_PORT"
t0=$(date +%s.%N)
ROUTER_LOG=warn "$ROUTER" serve --config "$TMP/big.yaml" --store "$TMP/big.redb" --listen "127.0.0.1:$BIG_PORT" \
  >"$TMP/router-big.out" 2>"$TMP/router-big.log" &
BIG_PID=$!
PIDS+=("$BIG_PID")
tool wait-port "$BIG_PORT" 120 || die "the big-config router did not start (see $TMP/router-big.log)"
t1=$(date +%s.%N)
sleep 2
big_rss=0
for _ in 1 2 3 4 5; do r=$(tool rss "$BIG_PID"); [ "$r" -gt "$big_rss" ] && big_rss=$r; sleep 0.2; done
echo "{\"startup_s\": $(python3 -c "print(round($t1 - $t0, 3))"), \"rss_idle_kb\": $big_rss, \"channels\": 1000, \"models\": 50000}" >"$RAW/rss-big.json"
stop "$BIG_PID"

# 4b. The upstreams.
say "starting nginx on 127.0.0.1:$NGINX_PORT and the paced mock on 127.0.0.1:$MOCK_PORT"
mkdir -p "$TMP/nginx"
sed -e "s#@PREFIX@#$TMP/nginx#g" -e "s#@PORT@#$NGINX_PORT#g" "$ROOT/bench/nginx.conf.in" >"$TMP/nginx/nginx.conf"
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' 2>"$TMP/nginx/stderr.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
"$UPSTREAM" --port "$MOCK_PORT" --chunks 50 --interval-ms 20 >"$TMP/mock.out" 2>&1 &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
mkdir -p "$TMP/nginx-proxy"
sed -e "s#@PREFIX@#$TMP/nginx-proxy#g" -e "s#@PORT@#$NGPROXY_PORT#g" -e "s#@UPSTREAM@#$NGINX_PORT#g" \
  -e "s#@MOCK@#$MOCK_PORT#g" -e "s#@WORKERS@#$THREADS#g" "$ROOT/bench/nginx-proxy.conf.in" >"$TMP/nginx-proxy/nginx.conf"
"$NGINX" -p "$TMP/nginx-proxy" -c "$TMP/nginx-proxy/nginx.conf" -g 'daemon off;' 2>"$TMP/nginx-proxy/stderr.log" &
NGPROXY_PID=$!
PIDS+=("$NGPROXY_PID")
tool wait-port "$NGINX_PORT" 30 || die "nginx did not start (see $TMP/nginx)"
tool wait-port "$NGPROXY_PORT" 30 || die "the reference nginx proxy did not start (see $TMP/nginx-proxy)"
tool wait-port "$MOCK_PORT" 30 || die "the paced mock did not start"

# 4c. The router.
say "starting the router on 127.0.0.1:$ROUTER_PORT"
STORE=$TMP/router.redb
"$ROUTER" serve --config "$ROOT/bench/router.yaml" --store "$STORE" --listen "127.0.0.1:$ROUTER_PORT" \
  >"$TMP/router.out" 2>"$TMP/router.log" &
ROUTER_PID=$!
PIDS+=("$ROUTER_PID")
tool wait-port "$ROUTER_PORT" 60 || die "the router did not start (see $TMP/router.log)"
say "starting the router with metrics, affinity and key limits on 127.0.0.1:$FEATURES_PORT"
FEATURES_STORE=$TMP/router-features.redb
"$ROUTER" serve --config "$ROOT/bench/router-features.yaml" --store "$FEATURES_STORE" \
  --listen "127.0.0.1:$FEATURES_PORT" >"$TMP/router-features.out" 2>"$TMP/router-features.log" &
FEATURES_PID=$!
PIDS+=("$FEATURES_PID")
tool wait-port "$FEATURES_PORT" 60 || die "the router with features did not start (see $TMP/router-features.log)"

# 4d. LiteLLM, 2 workers, no database, no network look-ups (local model cost map), fake keys. Its gunicorn mode
# (LiteLLM's production mode: app preloaded once, then forked): with plain uvicorn workers, a worker that takes
# over 5 s to import LiteLLM (a busy 2-core machine) fails uvicorn's health check and is restarted forever.
say "starting LiteLLM $LITELLM_INSTALLED (2 workers) on 127.0.0.1:$LITELLM_PORT"
(
  cd "$TMP"
  exec env LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False LITELLM_LOG=ERROR \
    DISABLE_SCHEMA_UPDATE=True OPENAI_API_KEY=sk-bench-fake \
    "$LITELLM" --config "$ROOT/bench/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 2 --run_gunicorn
) >"$TMP/litellm.log" 2>&1 &
LITELLM_PID=$!
PIDS+=("$LITELLM_PID")
tool wait-port "$LITELLM_PORT" 180 || die "LiteLLM did not start (see $TMP/litellm.log)"

BODY='{"model":"MODEL","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
SSE_BODY='{"model":"bench-sse","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello."}]}'
url_of() {
  case $1 in
    direct) echo "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" ;;
    direct-sse) echo "http://127.0.0.1:$NGINX_PORT/sse/v1/chat/completions" ;;
    ngproxy) echo "http://127.0.0.1:$NGPROXY_PORT/v1/chat/completions" ;;
    ngproxy-sse) echo "http://127.0.0.1:$NGPROXY_PORT/sse/v1/chat/completions" ;;
    router | router-sse) echo "http://127.0.0.1:$ROUTER_PORT/v1/chat/completions" ;;
    features | features-sse) echo "http://127.0.0.1:$FEATURES_PORT/v1/chat/completions" ;;
    litellm | litellm-sse) echo "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" ;;
  esac
}

# Smoke: every path answers 200 before anything is measured (LiteLLM's workers may need a moment).
smoke() {
  local path=$1 code
  for _ in $(seq 1 60); do
    code=$(curl -s -o "$RAW/smoke-$path.body" -w '%{http_code}' -H 'content-type: application/json' \
      -H 'authorization: Bearer sk-bench-fake' -d "${BODY/MODEL/bench-model}" "$(url_of "$path")" || true)
    [ "$path" = router ] && echo '{"sent": 1}' >>"$RAW/router-smoke.jsonl"
    [ "$path" = features ] && echo '{"sent": 1}' >>"$RAW/features-smoke.jsonl"
    [ "$code" = 200 ] && return 0
    sleep 1
  done
  die "$path answered $code: $(head -c 300 "$RAW/smoke-$path.body")"
}
for p in direct ngproxy router features litellm; do smoke "$p"; done
ROUTER_RSS_IDLE=$(tool rss "$ROUTER_PID")

# ---------------------------------------------------------------------------------------------------------------
# 5. Load. Each run: oha's JSON, the CPU seconds each server used during it, and the command line.
server_cpu() {
  echo "{\"nginx\": $(tool cpu "$NGINX_PID"), \"router\": $(tool cpu "$ROUTER_PID"), \"features\": $(tool cpu "$FEATURES_PID"), \"litellm\": $(tool cpu "$LITELLM_PID"), \"mock\": $(tool cpu "$MOCK_PID"), \"ngproxy\": $(tool cpu "$NGPROXY_PID")}"
}
# run NAME PATH [oha args...]
run() {
  local name=$1 path=$2
  shift 2
  local body=${BODY/MODEL/bench-model}
  case $path in *-sse) body=$SSE_BODY ;; esac
  local cmd=("$OHA" --no-tui --output-format json -t 30s -m POST -H 'content-type: application/json'
    -H 'authorization: Bearer sk-bench-fake' -d "$body" "$@" "$(url_of "$path")")
  printf '%s\t%s\n' "$name" "oha $* $(url_of "$path")" >>"$RAW/commands.tsv"
  local before after
  before=$(server_cpu)
  "${cmd[@]}" >"$RAW/$name.json" 2>"$RAW/$name.err" || say "warning: oha failed for $name (see $RAW/$name.err)"
  after=$(server_cpu)
  echo "{\"before\": $before, \"after\": $after}" >"$RAW/$name.cpu.json"
}
warm() { run "$2-warm-$1" "$2" -z 1s -c 8 -w; }

say "sequential requests (${DUR}s per path)"
for p in direct ngproxy router features litellm; do
  warm seq "$p"
  run "$p-seq" "$p" -z "${DUR}s" -c 1 -w
done

for rate in 500 1000 2000; do
  say "fixed rate $rate rps (${DUR}s per path)"
  for p in direct ngproxy router features litellm; do
    run "$p-rate$rate" "$p" -z "${DUR}s" -c 50 -q "$rate" --latency-correction -w
  done
done

say "saturation, 64 connections (${DUR}s per path)"
for p in direct ngproxy router features litellm; do
  run "$p-sat" "$p" -z "${DUR}s" -c 64 -w
done
# Paired rounds for the ratios against nginx-as-proxy and between the two routers: on a shared host the speed
# drifts by more than those ratios between runs a minute apart, so each round measures the three back to back
# (the order rotated from round to round) and the report takes the median of the rounds' ratios.
RDUR=$(((DUR + 1) / 2))
if [ "$ROUNDS" -gt 0 ]; then
  say "paired saturation rounds: nginx-as-proxy, router, router with features (${ROUNDS} rounds, ${RDUR}s per path)"
  ORDER=(ngproxy router features)
  for i in $(seq 1 "$ROUNDS"); do
    for j in 0 1 2; do
      p=${ORDER[$(((i - 1 + j) % 3))]}
      run "$p-round$i-sat" "$p" -z "${RDUR}s" -c 64 -w
    done
  done
fi
say "saturation of a short SSE stream, 64 connections (${DUR}s per path)"
for p in direct-sse ngproxy-sse router-sse features-sse litellm-sse; do
  run "$p-sat" "$p" -z "${DUR}s" -c 64 -w
done

# ---------------------------------------------------------------------------------------------------------------
# 6. Streaming through the paced mock: 50 chunks, 20 ms apart; TTFB, inter-chunk gaps, merged chunks.
STREAMS=$((DUR * 2))
say "streaming: $STREAMS sequential streams of 50 chunks x 20 ms per path"
"$SCLIENT" --url "$BENCH_MOCK_BASE/chat/completions" --model bench-slow --requests "$STREAMS" --chunks 50 \
  >"$RAW/stream-direct.json"
# The reference: nginx-as-proxy in front of the same mock (what a mature proxy adds to the first byte here).
"$SCLIENT" --url "http://127.0.0.1:$NGPROXY_PORT/paced/v1/chat/completions" --model bench-slow --requests "$STREAMS" \
  --chunks 50 >"$RAW/ngproxy-stream.json"
"$SCLIENT" --url "$(url_of router)" --model bench-slow --requests "$STREAMS" --chunks 50 >"$RAW/router-stream.json"
"$SCLIENT" --url "$(url_of features)" --model bench-slow --requests "$STREAMS" --chunks 50 >"$RAW/features-stream.json"
"$SCLIENT" --url "$(url_of litellm)" --model bench-slow --requests "$STREAMS" --chunks 50 >"$RAW/litellm-stream.json"

say "1,000 concurrent slow streams through the router (150 chunks x 20 ms each), sampling its RSS"
ROUTER_RSS_BEFORE_STREAMS=$(tool rss "$ROUTER_PID")
"$SCLIENT" --url "$(url_of router)" --model bench-slow --requests 1000 --concurrency 1000 --chunks 150 \
  --threads 2 --rss-pid "$ROUTER_PID" >"$RAW/router-streams1000.json"
echo "{\"idle_start_kb\": $ROUTER_RSS_IDLE, \"before_streams_kb\": $ROUTER_RSS_BEFORE_STREAMS, \"after_streams_kb\": $(tool rss "$ROUTER_PID")}" >"$RAW/rss-router.json"

# ---------------------------------------------------------------------------------------------------------------
# 7. Usage records: stop the router (it drains its writer), then count what it recorded.
say "stopping the routers; counting usage records"
stop "$ROUTER_PID"
stop "$FEATURES_PID"
# count_usage STORE PREFIX: PREFIX.json (the totals) and PREFIX-status.json
count_usage() {
  local store=$1 prefix=$2
  if "$ROUTER" usage --help >/dev/null 2>&1; then
    if "$ROUTER" usage --json --store "$store" >"$RAW/$prefix.json" 2>"$RAW/$prefix.err"; then
      echo '{"available": true}' >"$RAW/$prefix-status.json"
    else
      echo "{\"available\": true, \"error\": $(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()[-500:]))' "$RAW/$prefix.err")}" >"$RAW/$prefix-status.json"
    fi
  else
    echo '{"available": false}' >"$RAW/$prefix-status.json"
  fi
}
count_usage "$STORE" usage
count_usage "$FEATURES_STORE" features-usage
# Without a store the router logs one JSON line per record: count those too.
grep -c '"outcome":' "$TMP/router.log" >"$RAW/usage-log-lines.txt" || true

# ---------------------------------------------------------------------------------------------------------------
# 8. Internals, when their bench examples exist.
for ex in "${INTERNALS[@]}"; do
  say "internals: $ex"
  out=$ROOT/bench/results/$ex.txt
  before=$(stat -c %Y "$out" 2>/dev/null || echo 0)
  (cd "$ROOT" && "$TARGET/release/examples/$ex") >"$RAW/$ex.stdout" 2>"$RAW/$ex.stderr" || say "warning: $ex failed"
  after=$(stat -c %Y "$out" 2>/dev/null || echo 0)
  [ "$after" -gt "$before" ] || cp "$RAW/$ex.stdout" "$out"
done

echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/machine.env"
echo "wall_s=$(($(date +%s) - START_EPOCH))" >>"$RAW/machine.env"

# ---------------------------------------------------------------------------------------------------------------
# 9. Report.
say "writing BENCHMARKS.md"
python3 "$ROOT/bench/report.py" "$RAW" "$ROOT/BENCHMARKS.md" "$ROOT/bench/results/summary.json"
# The targets of issue 18, as the report wrote them.
sed -n '/^## Targets (issue 18)/,/^## Targets (issue 9)/p' "$ROOT/BENCHMARKS.md" | sed '$d' >&2
say "done in $(($(date +%s) - START_EPOCH)) s: BENCHMARKS.md (raw results in ${RAW#"$ROOT"/})"
