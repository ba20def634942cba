#!/usr/bin/env bash
# The whole distributed RealChat stack on this machine, in the background (no containers).
#
#   stack.sh up              start what is not running, return once everything is ready
#   stack.sh status [--json] table, or one JSON array (one line) of {role,name,pid,port} for
#                            every live process, infrastructure included
#   stack.sh down            stop everything: SIGTERM, bounded wait, SIGKILL
#
# What `up` runs (state in $STACK_DIR, default <repo>/.cache/stack):
#   postgres   infra/postgres.sh, port STACK_PG_PORT (55432), db realchat, wal_level=logical
#   redis      infra/redis.sh, port STACK_REDIS_PORT (16379): the presence registry (REDIS_URL for
#              gateways and delivery workers); skipped when the caller sets REDIS_URL or
#              REDIS_SENTINELS, or STACK_REDIS=0 (then deliveries are broadcast to every gateway)
#   kafka      infra/kafka/kafka.sh start-single, port STACK_KAFKA_PORT (19092; controller +100);
#              topic REALCHAT_EVENTS_TOPIC (realchat.events.v1) with STACK_TOPIC_PARTITIONS (12)
#   (schema)   sql/migrations applied once, before any process starts
#   connect    only with RELAY=debezium: Kafka Connect on STACK_CONNECT_PORT (18083) + the outbox connector
#   relay      node dist/relay/main.js x STACK_RELAYS (1), unless RELAY=debezium;
#              METRICS_PORT = STACK_RELAY_METRICS_PORT (19100) + i - 1
#   delivery   node dist/delivery/main.js x STACK_DELIVERIES (1);
#              METRICS_PORT = STACK_DELIVERY_METRICS_PORT (19200) + i - 1
#   gateway    node dist/gateway/main.js x GATEWAYS (1) on PORT (8080), PORT+1, ...; HOST (127.0.0.1)
#   notifier   node dist/delivery/notifier/main.js x STACK_NOTIFIERS (1) (Web Push);
#              METRICS_PORT = STACK_NOTIFIER_METRICS_PORT (19300) + i - 1
#   webhooks   node dist/delivery/webhooks/main.js x STACK_WEBHOOKS (1) (webhook dispatcher);
#              METRICS_PORT = STACK_WEBHOOKS_METRICS_PORT (19400) + i - 1
#   mirror     node dist/delivery/mirror/main.js, one per region in STACK_MIRROR_SOURCES (none): the
#              mirror applier of that region's stream (REALCHAT_MIRROR_SOURCE);
#              METRICS_PORT = STACK_MIRROR_METRICS_PORT (19500) + i - 1
# REGIONS=a,b[,...]: several regions, each a whole stack like the above, with latency between them
# (infra/stack-regions.sh, which this hands over to; docs/multi-region.md). STACK_SKIP_ROLES=1: `up`
# starts only the infrastructure, applies the migrations and ensures the topic.
# Gateways get REALCHAT_ADMIN_TOKEN (from the environment, else generated once into
# $STACK_DIR/admin-token); gateways and webhook dispatchers get REALCHAT_WEBHOOK_ALLOW_PRIVATE when set.
# Gateways and notifiers get REALCHAT_VAPID_PUBLIC_KEY / REALCHAT_VAPID_PRIVATE_KEY (from the
# environment, else generated once into $STACK_DIR/vapid-keys) and REALCHAT_VAPID_SUBJECT when set.
# Every node process gets DATABASE_URL, KAFKA_BROKERS, REALCHAT_JWT_SECRET (from the environment,
# else generated once into $STACK_DIR/jwt-secret), REALCHAT_NODE_ID=<role>-<i>, LOG_LEVEL (info),
# REALCHAT_EVENTS_TOPIC, REALCHAT_TOPIC_PARTITIONS, REALCHAT_OUTBOX_MODE (table, or wal with
# RELAY=debezium), REALCHAT_SLOT_NAME, plus the caller's environment (other REALCHAT_* knobs pass through).
# STACK_NODE_ARGS: extra node flags for every role, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" (profiles
# are written when the role exits: stack:down).
# Logs: $STACK_DIR/logs/<role>-<i>.log (appended); pid files: $STACK_DIR/pids/<role>-<i>.pid.
# Ready: every node process answers GET /readyz 200 (gateways on their port, relay/delivery on their
# METRICS_PORT); a role's /readyz checks what it needs (docs/operations.md, "Readiness"), so this does
# not depend on LOG_LEVEL. On timeout it names what it still waits for, with each one's last /readyz body.
# Timeouts: STACK_START_TIMEOUT (180 s per wait: a busy 2-core machine starts JVMs slowly),
# STACK_STOP_TIMEOUT (20 s, > the gateway's drain).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=stack-common.sh
source "$HERE/stack-common.sh"
STACK_DIR="${STACK_DIR:-$REPO/.cache/stack}"
PG_PORT="${STACK_PG_PORT:-55432}"
KAFKA_PORT="${STACK_KAFKA_PORT:-19092}"
CONNECT_PORT="${STACK_CONNECT_PORT:-18083}"
TOPIC="${REALCHAT_EVENTS_TOPIC:-realchat.events.v1}"
TOPIC_PARTITIONS="${STACK_TOPIC_PARTITIONS:-${REALCHAT_TOPIC_PARTITIONS:-12}}"
GATEWAYS="${GATEWAYS:-1}"
RELAYS="${STACK_RELAYS:-1}"
DELIVERIES="${STACK_DELIVERIES:-1}"
NOTIFIERS="${STACK_NOTIFIERS:-1}"
WEBHOOKS="${STACK_WEBHOOKS:-1}"
GATEWAY_PORT="${PORT:-8080}"
RELAY_METRICS_PORT="${STACK_RELAY_METRICS_PORT:-19100}"
DELIVERY_METRICS_PORT="${STACK_DELIVERY_METRICS_PORT:-19200}"
NOTIFIER_METRICS_PORT="${STACK_NOTIFIER_METRICS_PORT:-19300}"
WEBHOOKS_METRICS_PORT="${STACK_WEBHOOKS_METRICS_PORT:-19400}"
MIRROR_METRICS_PORT="${STACK_MIRROR_METRICS_PORT:-19500}"
MIRROR_SOURCES=()
[[ -z "${STACK_MIRROR_SOURCES:-}" ]] || IFS=, read -r -a MIRROR_SOURCES <<<"$STACK_MIRROR_SOURCES"
RELAY_MODE="${RELAY:-ts}"
[[ "$RELAY_MODE" == debezium ]] || RELAY_MODE=ts
# table: the TS relay publishes and deletes outbox rows; wal: Debezium reads the INSERTs from the
# WAL and the gateway deletes each outbox row in its own transaction
if [[ "$RELAY_MODE" == debezium ]]; then OUTBOX_MODE=wal; else OUTBOX_MODE=table; fi
SLOT="${OUTBOX_SLOT:-${REALCHAT_SLOT_NAME:-realchat_outbox}}"
START_TIMEOUT="${STACK_START_TIMEOUT:-180}"
STOP_TIMEOUT="${STACK_STOP_TIMEOUT:-20}"
NODE_BIN="${NODE_BIN:-$(command -v node || echo node)}"

PIDS="$STACK_DIR/pids"
LOGS="$STACK_DIR/logs"
NODE_ROLES=(relay delivery gateway notifier webhooks mirror)
# role_main <role>: its entry under dist/ (the notifier and the webhook dispatcher live under delivery/)
role_main() {
  case "$1" in
    notifier | webhooks | mirror) echo "dist/delivery/$1/main.js" ;;
    *) echo "dist/$1/main.js" ;;
  esac
}

die() { echo "stack.sh: $*" >&2; exit 1; }
log() { echo "stack.sh: $*" >&2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
for v in GATEWAYS RELAYS DELIVERIES GATEWAY_PORT PG_PORT KAFKA_PORT CONNECT_PORT TOPIC_PARTITIONS START_TIMEOUT STOP_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done

# drop_stale_pidfile <file>: kafka.sh/connect.sh test liveness with kill -0, which a killed but not
# yet reaped (zombie) JVM passes, so they would not restart it: remove such a pid file first
drop_stale_pidfile() {
  local pid
  [[ -f "$1" ]] || return 0
  pid="$(cat "$1" 2>/dev/null || true)"
  alive "$pid" || rm -f "$1"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# node_pid <name>: pid of the live node process <name> (e.g. gateway-2), or fails
node_pid() {
  local name="$1" pid role="${1%-*}"
  pid="$(cat "$PIDS/$name.pid" 2>/dev/null || true)"
  alive "$pid" || return 1
  # guard against pid reuse
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$(role_main "$role")" || return 1
  echo "$pid"
}

# stored_secret <file> <what>: 32 random bytes (hex) generated once into $STACK_DIR/<file>, then reused
stored_secret() {
  if [[ ! -s "$STACK_DIR/$1" ]]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STACK_DIR/$1")
    log "generated $2 in $STACK_DIR/$1"
  fi
  cat "$STACK_DIR/$1"
}

jwt_secret() {
  if [[ -n "${REALCHAT_JWT_SECRET:-}" ]]; then
    (($(printf '%s' "$REALCHAT_JWT_SECRET" | wc -c) >= 32)) || die "REALCHAT_JWT_SECRET must be at least 32 bytes"
    printf '%s' "$REALCHAT_JWT_SECRET"
    return
  fi
  stored_secret jwt-secret "a JWT secret"
}

# admin_token: REALCHAT_ADMIN_TOKEN from the environment, or generated once (the admin REST routes)
admin_token() {
  if [[ -n "${REALCHAT_ADMIN_TOKEN:-}" ]]; then
    printf '%s' "$REALCHAT_ADMIN_TOKEN"
    return
  fi
  stored_secret admin-token "an admin token"
}

# vapid_keys: "<public> <private>" (base64url), from the environment or generated once (web-push's generator)
vapid_keys() {
  if [[ -n "${REALCHAT_VAPID_PUBLIC_KEY:-}" && -n "${REALCHAT_VAPID_PRIVATE_KEY:-}" ]]; then
    printf '%s %s' "$REALCHAT_VAPID_PUBLIC_KEY" "$REALCHAT_VAPID_PRIVATE_KEY"
    return
  fi
  if [[ ! -s "$STACK_DIR/vapid-keys" ]]; then
    (umask 077 && cd "$REPO" && "$NODE_BIN" -e 'const k = require("web-push").generateVAPIDKeys(); process.stdout.write(k.publicKey + " " + k.privateKey)' >"$STACK_DIR/vapid-keys") ||
      die "could not generate VAPID keys (npm install first)"
    log "generated VAPID keys in $STACK_DIR/vapid-keys"
  fi
  cat "$STACK_DIR/vapid-keys"
}

# start_node <role> <i> <port> [VAR=value ...]: spawn node dist/<role>/main.js unless it runs (with
# the extra environment given); records what to wait for
PENDING=()
start_node() {
  local role="$1" i="$2" port="$3" name="$1-$2" pid offset
  shift 3
  local pidf="$PIDS/$name.pid" logf="$LOGS/$name.log"
  if pid="$(node_pid "$name")"; then
    PENDING+=("$name:$port:running")
    return 0
  fi
  rm -f "$pidf"
  port_open "$port" && die "$name: port $port is already in use by another process"
  touch "$logf"
  offset="$(stat -c %s "$logf")"
  echo "$port" >"$PIDS/$name.port"
  local -a envs=(
    "DATABASE_URL=$DATABASE_URL_STACK"
    "KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
    "REALCHAT_JWT_SECRET=$SECRET"
    "REALCHAT_NODE_ID=$name"
    "REALCHAT_EVENTS_TOPIC=$TOPIC"
    "REALCHAT_TOPIC_PARTITIONS=$TOPIC_PARTITIONS"
    "REALCHAT_OUTBOX_MODE=$OUTBOX_MODE"
    "REALCHAT_SLOT_NAME=$SLOT"
    "LOG_LEVEL=${LOG_LEVEL:-info}"
  )
  envs+=("$@")
  [[ -z "${REDIS_URL:-}" ]] || envs+=("REDIS_URL=$REDIS_URL")
  [[ -z "${REDIS_SENTINELS:-}" ]] || envs+=("REDIS_SENTINELS=$REDIS_SENTINELS" "REDIS_SENTINEL_NAME=${REDIS_SENTINEL_NAME:-realchat}")
  if [[ "$role" == gateway || "$role" == notifier ]]; then
    envs+=("REALCHAT_VAPID_PUBLIC_KEY=${VAPID% *}" "REALCHAT_VAPID_PRIVATE_KEY=${VAPID#* }")
    [[ -z "${REALCHAT_VAPID_SUBJECT:-}" ]] || envs+=("REALCHAT_VAPID_SUBJECT=$REALCHAT_VAPID_SUBJECT")
  fi
  [[ "$role" != gateway ]] || envs+=("REALCHAT_ADMIN_TOKEN=$ADMIN_TOKEN")
  if [[ -n "${REALCHAT_WEBHOOK_ALLOW_PRIVATE:-}" && ("$role" == gateway || "$role" == webhooks) ]]; then
    envs+=("REALCHAT_WEBHOOK_ALLOW_PRIVATE=$REALCHAT_WEBHOOK_ALLOW_PRIVATE")
  fi
  if [[ "$role" == gateway ]]; then
    envs+=("PORT=$port" "HOST=${HOST:-127.0.0.1}")
    # A local stack serves load generators on this machine: every client shares a few loopback
    # addresses. Production sets its own cap (and REALCHAT_TRUSTED_PROXIES behind a proxy).
    envs+=("REALCHAT_MAX_CONNECTIONS_PER_ADDRESS=${REALCHAT_MAX_CONNECTIONS_PER_ADDRESS:-10000000}")
  else
    envs+=("METRICS_PORT=$port")
  fi
  # setsid: own session, survives the caller; bash writes its pid and execs node, so the pid is node's
  # (only the setsid command is backgrounded: no shell stays behind holding the caller's stdout)
  (
    cd "$REPO" || exit 1
    exec 9>&-
    setsid nohup env "${envs[@]}" bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidf" \
      "$NODE_BIN" ${STACK_NODE_ARGS:-} "$(role_main "$role")" </dev/null >>"$logf" 2>&1 &
  )
  local k
  for ((k = 0; k < 50; k++)); do [[ -s "$pidf" ]] && break; sleep 0.1; done
  PENDING+=("$name:$port:$offset")
}

# is_ready <port>: the role's /readyz answers 200 (its last body is kept in READY_BODY)
READY_BODY=""
is_ready() {
  local out code
  out="$(curl -s -w '\n%{http_code}' --max-time 3 "http://127.0.0.1:$1/readyz" 2>/dev/null || true)"
  code="${out##*$'\n'}"
  READY_BODY="${out%$'\n'*}"
  [[ "$out" == *$'\n'* ]] || READY_BODY=""
  [[ -n "$READY_BODY" ]] || READY_BODY="(no answer on port $1)"
  [[ "$code" == 200 ]]
}

wait_pending() {
  local t0 entry name port offset left last_report
  local -A body=()
  t0=$(now_ms)
  last_report=$t0
  while :; do
    left=()
    for entry in "${PENDING[@]}"; do
      IFS=: read -r name port offset <<<"$entry"
      if ! node_pid "$name" >/dev/null; then
        tail -n 40 "$LOGS/$name.log" >&2 2>/dev/null || true
        die "$name exited during startup (log: $LOGS/$name.log)"
      fi
      if is_ready "$port"; then
        [[ "$offset" == running ]] || log "$name ready (pid $(cat "$PIDS/$name.pid"), port $port) after $(($(now_ms) - t0)) ms"
      else
        body[$name]="$READY_BODY"
        left+=("$entry")
      fi
    done
    PENDING=(${left[@]+"${left[@]}"})
    ((${#PENDING[@]} == 0)) && return 0
    if (($(now_ms) - t0 > START_TIMEOUT * 1000)); then
      for entry in "${PENDING[@]}"; do
        name="${entry%%:*}"
        echo "---- $name: last /readyz: ${body[$name]:-}" >&2
        echo "---- $name (last lines of $LOGS/$name.log)" >&2
        tail -n 20 "$LOGS/$name.log" >&2 2>/dev/null || true
      done
      die "not ready after ${START_TIMEOUT}s (STACK_START_TIMEOUT), still waiting for: ${PENDING[*]%%:*}"
    fi
    # a slow start says what it waits for every 15 s
    if (($(now_ms) - last_report > 15000)); then
      last_report=$(now_ms)
      for entry in "${PENDING[@]}"; do
        name="${entry%%:*}"
        log "waiting for $name: ${body[$name]:-}"
      done
    fi
    sleep 0.2
  done
}

any_node_alive() {
  local f
  for f in "$PIDS"/*.pid; do
    [[ -e "$f" ]] || continue
    node_pid "$(basename "$f" .pid)" >/dev/null && return 0
  done
  return 1
}

cmd_up() {
  local t0 i role
  t0=$(now_ms)
  command -v curl >/dev/null || die "curl is required"
  local -A want=([gateway]=$GATEWAYS [delivery]=$DELIVERIES [relay]=$RELAYS [notifier]=$NOTIFIERS [webhooks]=$WEBHOOKS [mirror]=${#MIRROR_SOURCES[@]})
  [[ "$RELAY_MODE" == debezium ]] && want[relay]=0
  for role in gateway delivery relay notifier webhooks mirror; do
    ((want[$role] == 0)) || [[ -f "$REPO/$(role_main "$role")" ]] || die "$(role_main "$role") is missing: run npm run build first"
  done
  mkdir -p "$STACK_DIR" "$PIDS" "$LOGS"
  exec 9>"$STACK_DIR/.lock"
  flock -w 120 9 || die "another stack.sh holds $STACK_DIR/.lock"

  # a running stack keeps its relay mode: mixing the TS relay and Debezium would publish twice
  if [[ -f "$STACK_DIR/relay-mode" ]] && [[ "$(cat "$STACK_DIR/relay-mode")" != "$RELAY_MODE" ]]; then
    if any_node_alive || "$HERE/kafka/connect.sh" status "$STACK_DIR/connect" | grep -q connect; then
      die "the stack runs with RELAY=$(cat "$STACK_DIR/relay-mode"); run stack.sh down first to switch to RELAY=$RELAY_MODE"
    fi
  fi
  echo "$RELAY_MODE" >"$STACK_DIR/relay-mode"
  SECRET="$(jwt_secret)"
  VAPID="$(vapid_keys)"
  ADMIN_TOKEN="$(admin_token)"

  "$HERE/postgres.sh" start "$STACK_DIR/postgres" "$PG_PORT" 9>&-
  # Presence registry: our own Redis unless the caller points at one (REDIS_URL / REDIS_SENTINELS) or opts out.
  if [[ -z "${REDIS_URL:-}" && -z "${REDIS_SENTINELS:-}" && "${STACK_REDIS:-1}" != 0 ]]; then
    STACK_DIR="$STACK_DIR" "$HERE/redis.sh" start 9>&-
    export REDIS_URL="$(STACK_DIR="$STACK_DIR" "$HERE/redis.sh" url)"
  fi
  DATABASE_URL_STACK="postgres://postgres@127.0.0.1:$PG_PORT/realchat"

  if [[ -f "$STACK_DIR/kafka/layout" ]]; then
    local kport
    read -r _ kport _ <"$STACK_DIR/kafka/layout"
    if [[ "$kport" != "$KAFKA_PORT" ]] && "$HERE/kafka/kafka.sh" status "$STACK_DIR/kafka" | grep -q kafka; then
      die "kafka already runs on port $kport, not $KAFKA_PORT (stack.sh down first)"
    fi
  fi
  drop_stale_pidfile "$STACK_DIR/kafka/node-1/pid"
  "$HERE/kafka/kafka.sh" start-single "$STACK_DIR/kafka" "$KAFKA_PORT" 9>&-
  "$NODE_BIN" "$HERE/stack/ensure-topic.mjs" "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$TOPIC_PARTITIONS" 1 "$START_TIMEOUT" >&2 9>&- ||
    die "could not ensure topic $TOPIC"

  "$NODE_BIN" "$HERE/stack/migrate.mjs" "$DATABASE_URL_STACK" "$START_TIMEOUT" >&2 9>&- || die "migrations failed"
  if [[ "${STACK_SKIP_ROLES:-0}" == 1 ]]; then
    log "infrastructure ready in $(($(now_ms) - t0)) ms (STACK_SKIP_ROLES=1: no roles started)"
    return 0
  fi

  if [[ "$RELAY_MODE" == debezium ]]; then
    drop_stale_pidfile "$STACK_DIR/connect/pid"
    "$HERE/kafka/connect.sh" start "$STACK_DIR/connect" "$CONNECT_PORT" "127.0.0.1:$KAFKA_PORT" 9>&-
    OUTBOX_TOPIC="$TOPIC" OUTBOX_TOPIC_PARTITIONS="$TOPIC_PARTITIONS" OUTBOX_SLOT="$SLOT" \
      "$HERE/kafka/connect.sh" register-outbox "http://127.0.0.1:$CONNECT_PORT" 127.0.0.1 "$PG_PORT" realchat postgres postgres 9>&-
  else
    local inactive
    inactive="$(PGCONNECT_TIMEOUT=5 "$(command -v psql || echo /usr/lib/postgresql/15/bin/psql)" -X -h 127.0.0.1 -p "$PG_PORT" -U postgres -d realchat -qtAc \
      "select count(*) from pg_replication_slots where slot_name = '$SLOT' and not active" 2>/dev/null || echo 0)"
    [[ "$inactive" != 1 ]] || log "warning: replication slot $SLOT (from an earlier RELAY=debezium run) is inactive and retains WAL; drop it with: select pg_drop_replication_slot('$SLOT')"
    for ((i = 1; i <= RELAYS; i++)); do start_node relay "$i" $((RELAY_METRICS_PORT + i - 1)); done
  fi
  for ((i = 1; i <= DELIVERIES; i++)); do start_node delivery "$i" $((DELIVERY_METRICS_PORT + i - 1)); done
  for ((i = 1; i <= GATEWAYS; i++)); do start_node gateway "$i" $((GATEWAY_PORT + i - 1)); done
  for ((i = 1; i <= NOTIFIERS; i++)); do start_node notifier "$i" $((NOTIFIER_METRICS_PORT + i - 1)); done
  for ((i = 1; i <= WEBHOOKS; i++)); do start_node webhooks "$i" $((WEBHOOKS_METRICS_PORT + i - 1)); done
  for ((i = 1; i <= ${#MIRROR_SOURCES[@]}; i++)); do
    start_node mirror "$i" $((MIRROR_METRICS_PORT + i - 1)) "REALCHAT_MIRROR_SOURCE=${MIRROR_SOURCES[i - 1]}"
  done
  wait_pending
  log "stack ready (RELAY=$RELAY_MODE) in $(($(now_ms) - t0)) ms"
  cmd_status
}

# one JSON object per line for every live process
status_lines() {
  infra_lines | while IFS= read -r l; do
    if alive "$(sed -E 's/.*"pid":([0-9]+).*/\1/' <<<"$l")"; then printf '%s\n' "$l"; fi
  done
  node_lines
}

infra_lines() {
  "$HERE/postgres.sh" status "$STACK_DIR/postgres" | sed 's/^{/{"name":"postgres",/'
  STACK_DIR="$STACK_DIR" "$HERE/redis.sh" status | sed 's/^{/{"name":"redis",/'
  "$HERE/kafka/kafka.sh" status "$STACK_DIR/kafka" |
    sed -E 's/^\{(.*),"node":([0-9]+)\}$/{"name":"kafka-\2",\1}/'
  "$HERE/kafka/connect.sh" status "$STACK_DIR/connect" | sed 's/^{/{"name":"connect",/'
}

node_lines() {
  local f name pid role port
  for role in "${NODE_ROLES[@]}"; do
    for f in $(ls "$PIDS" 2>/dev/null | grep -E "^$role-[0-9]+\.pid$" | sort -t- -k2 -n); do
      name="${f%.pid}"
      pid="$(node_pid "$name")" || continue
      port="$(cat "$PIDS/$name.port" 2>/dev/null || echo null)"
      if [[ "$role" == gateway && "$port" != null ]]; then
        # where a client on this machine reaches it (HOST 0.0.0.0 listens everywhere, loopback included)
        local host="${HOST:-127.0.0.1}"
        [[ "$host" != 0.0.0.0 ]] || host=127.0.0.1
        printf '{"name":"%s","role":"%s","pid":%s,"port":%s,"url":"http://%s:%s"}\n' "$name" "$role" "$pid" "$port" "$host" "$port"
      else
        printf '{"name":"%s","role":"%s","pid":%s,"port":%s}\n' "$name" "$role" "$pid" "$port"
      fi
    done
  done
}

cmd_status() {
  local lines
  lines="$(status_lines)"
  if [[ "${1:-}" == --json ]]; then
    json_array "$lines"
    return
  fi
  printf '%-10s %-12s %-8s %s\n' ROLE NAME PID PORT
  [[ -n "$lines" ]] || { echo "(nothing running)"; return; }
  sed -E 's/^\{"name":"([^"]*)","role":"([^"]*)","pid":([0-9]+),"port":([0-9a-z]+)[,}].*$/\2 \1 \3 \4/' <<<"$lines" |
    while read -r r n p po; do printf '%-10s %-12s %-8s %s\n' "$r" "$n" "$p" "$po"; done
}

cmd_down() {
  local f name pid t0 k
  local -a names=() pids=()
  t0=$(now_ms)
  mkdir -p "$STACK_DIR"
  exec 9>"$STACK_DIR/.lock"
  flock -w 120 9 || die "another stack.sh holds $STACK_DIR/.lock"
  # node processes first (gateways drain their clients), all at once, then the infrastructure
  for f in "$PIDS"/*.pid; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f" .pid)"
    if pid="$(node_pid "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      names+=("$name"); pids+=("$pid")
    fi
    rm -f "$f"
  done
  for ((k = 0; k < ${#pids[@]}; k++)); do
    while alive "${pids[k]}" && (($(now_ms) - t0 < STOP_TIMEOUT * 1000)); do sleep 0.1; done
    if alive "${pids[k]}"; then
      log "${names[k]} (pid ${pids[k]}) did not exit after ${STOP_TIMEOUT}s, sending SIGKILL"
      kill -KILL "${pids[k]}" 2>/dev/null || true
    fi
  done
  ((${#pids[@]} == 0)) || log "stopped ${names[*]}"
  "$HERE/kafka/connect.sh" stop "$STACK_DIR/connect" 9>&-
  "$HERE/kafka/kafka.sh" stop "$STACK_DIR/kafka" 9>&-
  "$HERE/postgres.sh" stop "$STACK_DIR/postgres" 9>&-
  STACK_DIR="$STACK_DIR" "$HERE/redis.sh" stop 9>&- || true
  log "stack down in $(($(now_ms) - t0)) ms"
}

# secrets: the stack's shared secrets as VAR=value lines (stack-regions.sh gives every region the same)
cmd_secrets() {
  mkdir -p "$STACK_DIR"
  SECRET="$(jwt_secret)"
  VAPID="$(vapid_keys)"
  printf 'REALCHAT_JWT_SECRET=%s\nREALCHAT_ADMIN_TOKEN=%s\nREALCHAT_VAPID_PUBLIC_KEY=%s\nREALCHAT_VAPID_PRIVATE_KEY=%s\n' \
    "$SECRET" "$(admin_token)" "${VAPID% *}" "${VAPID#* }"
  if [[ -n "${REALCHAT_REGION_SECRET:-}" ]]; then
    printf 'REALCHAT_REGION_SECRET=%s\n' "$REALCHAT_REGION_SECRET"
  else
    printf 'REALCHAT_REGION_SECRET=%s\n' "$(stored_secret region-secret "a region secret")"
  fi
}

[[ $# -ge 1 ]] || usage
[[ "$1" != secrets ]] || { cmd_secrets; exit 0; }
# several regions: their own script (it runs this one per region, with REGIONS unset)
if [[ -n "${REGIONS:-}" || -s "$STACK_DIR/regions" ]]; then exec bash "$HERE/stack-regions.sh" "$@"; fi
sub="$1"; shift
case "$sub" in
  up) [[ $# -eq 0 ]] || usage; cmd_up ;;
  status) [[ $# -le 1 ]] || usage; [[ $# -eq 0 || "$1" == --json ]] || usage; cmd_status "${1:-}" ;;
  down) [[ $# -eq 0 ]] || usage; cmd_down ;;
  *) usage ;;
esac
