#!/usr/bin/env bash
# perf/single-node.sh DIR "RATE..." [pg|embedded]
#
# The single-node targets of perf/README.md: one RealChat process (`node dist/standalone/main.js`,
# the in-process relay and delivery) on PostgreSQL, durable (`fsync` and `synchronous_commit` on;
# the stack's PostgreSQL on STACK_PG_PORT, started here if it is not running, and a database of its
# own, `realchat_single`, created afresh for every rate), or with `embedded` on PGlite (a fresh data
# directory for every rate). For each RATE, after a 20 s warm-up at min(RATE, 1,000) msg/s on the same process:
# `pairs --connections CONNS (default 4,000 on PostgreSQL, 2,000 embedded) --duration 30 --ramp-rate 500 --engine go` into
# DIR/<pg|embedded>-r<RATE>.{json,md,svg}. Nothing else should run meanwhile (no tests, no builds).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1 rates=$2 mode=${3:-pg}
# The earlier runs' counts (pairs-pg-single-*: 4,000; pairs-embedded-*: 2,000), so they compare.
conns=${CONNS:-$([[ $mode == pg ]] && echo 4000 || echo 2000)}
mkdir -p "$dir"
port=9090
secret=bench-secret-bench-secret-bench-secret-0123
pg_port=${STACK_PG_PORT:-55432}
admin=postgres://postgres@127.0.0.1:$pg_port/postgres
tmp=$(mktemp -d /tmp/realchat-single-XXXXXX)
server=

stop_server() {
  [[ -n $server ]] || return 0
  kill "$server" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$server" 2>/dev/null || true
  server=
}
trap 'stop_server; rm -rf "$tmp"' EXIT

if [[ $mode == pg ]] && ! psql -q "$admin" -c 'SELECT 1' >/dev/null 2>&1; then
  bash infra/postgres.sh start .cache/stack/postgres "$pg_port"
fi

# pairs DURATION RATE OUT: one run against the server on $port.
pairs() {
  npm run perf -- pairs --target realchat --url "http://127.0.0.1:$port" --no-start-server --jwt-secret "$secret" \
    --connections "$conns" --duration "$1" --rate "$2" --ramp-rate 500 --engine go --out "$3" >"$3.log" 2>&1 ||
    echo "run $3 failed: $3.log"
}

for rate in $rates; do
  # The generator's connections come from two loopback addresses; the default cap of 1,000 per
  # address (hostile-input hardening) would refuse half of them, as perf/lib/targets.ts also lifts it.
  env_words=(PORT=$port REALCHAT_JWT_SECRET=$secret LOG_LEVEL=warn REALCHAT_MAX_CONNECTIONS_PER_ADDRESS=10000000)
  if [[ $mode == pg ]]; then
    psql -q "$admin" -c 'DROP DATABASE IF EXISTS realchat_single WITH (FORCE)' -c 'CREATE DATABASE realchat_single'
    env_words+=(DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/realchat_single)
  else
    rm -rf "$tmp/data"
    env_words+=(REALCHAT_DATA_DIR=$tmp/data)
  fi
  env "${env_words[@]}" node dist/standalone/main.js >"$tmp/server-r$rate.log" 2>&1 &
  server=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
  pairs 20 $((rate < 1000 ? rate : 1000)) "$tmp/warm-r$rate"
  pairs 30 "$rate" "$dir/$mode-r$rate"
  echo "== $mode r$rate"
  grep -E "sent / acked|latency ms|delivered \(unique\)|server CPU|server RSS" "$dir/$mode-r$rate.md" || true
  rm -f "$dir/$mode-r$rate.log"
  stop_server
done
