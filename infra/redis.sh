#!/usr/bin/env bash
# A single loopback Redis for the presence registry of the local stack (stack.sh starts it and
# hands REDIS_URL to gateways and delivery workers; the Sentinel setup is exercised by the tests).
#
#   redis.sh start | stop | status | url      (status prints {"role":"redis","pid":..,"port":..})
# Port PERF_REDIS_PORT (16379); state in $STACK_DIR/redis (default <repo>/.cache/stack/redis);
# no persistence (save "", appendonly no), 127.0.0.1 only.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
STACK_DIR="${STACK_DIR:-$REPO/.cache/stack}"
PORT="${STACK_REDIS_PORT:-${PERF_REDIS_PORT:-16379}}"
DIR="$STACK_DIR/redis"
PIDF="$DIR/redis.pid"
cli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
running() { [[ -s "$PIDF" ]] && kill -0 "$(cat "$PIDF")" 2>/dev/null; }
case "${1:-}" in
  start)
    command -v redis-server >/dev/null || { echo "redis.sh: redis-server not found (apt-get install redis-server)" >&2; exit 1; }
    mkdir -p "$DIR"
    if running; then echo "redis.sh: already running (pid $(cat "$PIDF"), port $PORT)" >&2; exit 0; fi
    redis-server --port "$PORT" --bind 127.0.0.1 --daemonize yes --pidfile "$PIDF" --dir "$DIR" \
      --logfile "$DIR/redis.log" --save "" --appendonly no --maxclients 10000
    for _ in $(seq 1 50); do cli ping 2>/dev/null | grep -q PONG && { echo "redis.sh: redis on 127.0.0.1:$PORT (pid $(cat "$PIDF"))" >&2; exit 0; }; sleep 0.1; done
    echo "redis.sh: redis did not answer (log: $DIR/redis.log)" >&2; exit 1 ;;
  stop)
    if running; then
      pid="$(cat "$PIDF")"; kill -TERM "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "redis.sh: stopped" >&2
    fi
    rm -f "$PIDF" ;;
  status) if running; then printf '{"role":"redis","pid":%s,"port":%s}\n' "$(cat "$PIDF")" "$PORT"; fi ;;
  url) echo "redis://127.0.0.1:$PORT" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
