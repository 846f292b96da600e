#!/usr/bin/env bash
# Runs every test: unit, integration (real binary + mock upstreams), the official OpenAI / Anthropic / Google GenAI
# Python SDKs end to end, the One-API import from MySQL / PostgreSQL, and the dashboard in headless Chromium.
# Installs or starts what it needs where missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_ready=
apt_install() {
  if [ -z "$apt_ready" ]; then as_root apt-get update -qq >/dev/null; apt_ready=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# 1. Python with the official SDKs, for tests/integration/sdk.rs.
if ! .venv/bin/python -c 'import openai, anthropic, google.genai' 2>/dev/null; then
  say "installing the openai, anthropic and google-genai Python SDKs into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'openai==3.54.0' 'anthropic==2.12.0' 'google-genai==3.3.0'
fi
export ROUTER_TEST_PYTHON="$PWD/.venv/bin/python"

# 2. Real Claude Code, Codex CLI and Gemini CLI (pinned), for tests/integration/real_clients.rs.
if [ ! -x .clients/node_modules/.bin/claude ] || [ ! -x .clients/node_modules/.bin/codex ] || [ ! -x .clients/node_modules/.bin/gemini ]; then
  say "installing Claude Code, Codex CLI and Gemini CLI into .clients (npm)"
  command -v npm >/dev/null || apt_install nodejs npm
  npm install --silent --no-fund --no-audit --prefix .clients '@anthropic-ai/claude-code@2.1.197' '@openai/codex@0.169.0' '@google/gemini-cli@0.61.0' >/dev/null
fi

# 3. PostgreSQL and MariaDB on loopback, for the One-API import tests.
wait_for() { for _ in $(seq 1 60); do if "$@" >/dev/null 2>&1; then return 0; fi; sleep 0.5; done; return 1; }

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
if ! pg_up 2>/dev/null; then
  say "starting PostgreSQL"
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_for pg_up || say "warning: PostgreSQL is not reachable on 127.0.0.1:5432"
fi

# The PostgreSQL store's tests (src/store/pg.rs, tests/integration/postgres.rs) fail instead of skipping.
export ROUTER_REQUIRE_POSTGRES=1

my_up() { mariadb-admin -h 127.0.0.1 -u root ping || mysqladmin -h 127.0.0.1 -u root ping; }
if ! my_up >/dev/null 2>&1; then
  say "starting MariaDB"
  command -v mariadbd >/dev/null || apt_install mariadb-server
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql || true
  wait_for my_up || say "warning: MariaDB is not reachable on 127.0.0.1:3306"
fi

# redis-server, for tests/integration/scaleout.rs (each test starts its own on a free loopback port).
command -v redis-server >/dev/null || { say "installing redis-server"; apt_install redis-server; }

# 4. Headless Chromium and its WebDriver, for the dashboard's browser tests (tests/integration/dashboard.rs).
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  say "installing chromium and chromium-driver"
  apt_install chromium chromium-driver
fi
export ROUTER_REQUIRE_BROWSER=1
# 4. Prometheus (Debian's package) for the integration module `metrics`, which starts its own on loopback:
#    installed here so the test never skips (ROUTER_REQUIRE_PROMETHEUS makes a missing binary a failure).
if ! command -v prometheus >/dev/null; then
  say "installing Prometheus"
  apt_install prometheus
fi
export ROUTER_REQUIRE_PROMETHEUS=1

# 5. Everything.
say "cargo test"
cargo test --locked "$@"
