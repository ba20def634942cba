#!/usr/bin/env bash
# A single loopback Redis for the presence registry, for benchmarks on the local stack
# (perf/README.md, cluster scenario). stack.sh passes REDIS_URL through to gateways and delivery
# workers, so:   bash infra/perf-redis.sh start && REDIS_URL=redis://127.0.0.1:16379 GATEWAYS=8 npm run stack:up
#
#   perf-redis.sh start | stop | status | url
# Port PERF_REDIS_PORT (16379); state in $STACK_DIR/redis (default <repo>/.cache/stack/redis);
# no persistence (save "", appendonly no), 127.0.0.1 only.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STACK_DIR="${STACK_DIR:-$REPO/.cache/stack}"
PORT="${PERF_REDIS_PORT:-16379}"
DIR="$STACK_DIR/redis"
PIDF="$DIR/redis.pid"
cli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
running() { [[ -s "$PIDF" ]] && kill -0 "$(cat "$PIDF")" 2>/dev/null; }
case "${1:-}" in
  start)
    command -v redis-server >/dev/null || { echo "perf-redis.sh: redis-server not found (apt-get install redis-server)" >&2; exit 1; }
    mkdir -p "$DIR"
    if running; then echo "perf-redis.sh: already running (pid $(cat "$PIDF"), port $PORT)" >&2; exit 0; fi
    redis-server --port "$PORT" --bind 127.0.0.1 --daemonize yes --pidfile "$PIDF" --dir "$DIR" \
      --logfile "$DIR/redis.log" --save "" --appendonly no --maxclients 10000
    for _ in $(seq 1 50); do cli ping 2>/dev/null | grep -q PONG && { echo "perf-redis.sh: redis on 127.0.0.1:$PORT (pid $(cat "$PIDF"))" >&2; exit 0; }; sleep 0.1; done
    echo "perf-redis.sh: redis did not answer (log: $DIR/redis.log)" >&2; exit 1 ;;
  stop)
    if running; then
      pid="$(cat "$PIDF")"; kill -TERM "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "perf-redis.sh: stopped" >&2
    fi
    rm -f "$PIDF" ;;
  status) if running; then echo "redis pid $(cat "$PIDF") port $PORT"; else echo "redis not running"; exit 1; fi ;;
  url) echo "redis://127.0.0.1:$PORT" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
