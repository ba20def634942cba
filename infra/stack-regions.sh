#!/usr/bin/env bash
# Several regions of RealChat on this machine (docs/multi-region.md). infra/stack.sh hands over to
# this script when REGIONS is set (or $STACK_DIR/regions records a running set):
#
#   REGIONS=a,b stack.sh up       start what is not running, region by region; return once ready
#   stack.sh status [--json]      every live process; JSON entries carry "region" (gateways a "url")
#   stack.sh down                 everything: each region's stack, its MirrorMaker, the links
#   stack.sh link cut [<r> <r>]   cut the link between two regions, both ways (none named: every link)
#   stack.sh link heal [<r> <r>]  heal it (its round trip comes back)
#   stack.sh link rtt <ms>        every link's round trip
#   stack.sh link status          the links, as JSON
#   stack.sh failover --from <lost> --to <region>
#                                 npm run region -- failover, against <region>'s database
#
# Each region is a whole stack (infra/stack.sh with STACK_DIR=$STACK_DIR/region-<r>): PostgreSQL,
# Redis, Kafka, relays, delivery workers, GATEWAYS gateways, notifier, webhook dispatcher, one mirror
# applier per other region, and a MirrorMaker 2 process next to it that mirrors every other region's
# event topic into its Kafka (MM2_TARGETS=<r>). Region k (0-based, in REGIONS order) has every port
# stack.sh would use shifted by 1000*k (region b's first gateway on PORT+1000, its PostgreSQL on
# STACK_PG_PORT+1000, ...). At most 4 regions; RELAY=debezium is not supported with regions.
# Between regions: one process (tests/chaos/link-main.ts) holding a TCP proxy for every way one
# region reaches another (its gateway-1, for forwarded writes and failover probes; its broker, for
# MirrorMaker), with REGION_RTT_MS (60) of round trip; its control port is STACK_LINK_PORT (24000)
# and the proxies take the ports after it. Every address a region is given for another region is
# one of these proxies, so cutting a link cuts everything between the two regions.
# Shared by every region (from the environment, else generated once into $STACK_DIR): the JWT
# secret, the admin token, the VAPID keys and REALCHAT_REGION_SECRET. REGION_FAILOVER_AFTER_MS (0:
# off) turns on the automatic failover of a silent region in every region's mirror appliers.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=stack-common.sh
source "$HERE/stack-common.sh"
STACK_DIR="${STACK_DIR:-$REPO/.cache/stack}"
NODE_BIN="${NODE_BIN:-$(command -v node || echo node)}"
LINK_PORT="${STACK_LINK_PORT:-24000}"
LINK_DIR="$STACK_DIR/links"
LINK_MAIN="$REPO/.cache/chaos-build/tests/chaos/link-main.js"
START_TIMEOUT="${STACK_START_TIMEOUT:-180}"
STOP_TIMEOUT="${STACK_STOP_TIMEOUT:-20}"

die() { echo "stack-regions.sh: $*" >&2; exit 1; }
log() { echo "stack-regions.sh: $*" >&2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

# --- the regions and their ports ---------------------------------------------
if [[ -n "${REGIONS:-}" ]]; then
  REGION_LIST="$REGIONS"
elif [[ -s "$STACK_DIR/regions" ]]; then
  REGION_LIST="$(cat "$STACK_DIR/regions")"
else
  die "REGIONS is not set and no regions run in $STACK_DIR"
fi
IFS=, read -r -a NAMES <<<"$REGION_LIST"
N=${#NAMES[@]}
((N >= 2 && N <= 4)) || die "REGIONS names 2 to 4 regions, got '$REGION_LIST'"
declare -A INDEX=()
for ((k = 0; k < N; k++)); do
  [[ "${NAMES[k]}" =~ ^[a-z][a-z0-9-]{0,31}$ ]] || die "bad region name '${NAMES[k]}' (a-z, 0-9, -; a letter first)"
  [[ -z "${INDEX[${NAMES[k]}]:-}" ]] || die "region '${NAMES[k]}' named twice in REGIONS"
  INDEX[${NAMES[k]}]=$k
done
[[ "${RELAY:-ts}" != debezium ]] || die "RELAY=debezium is not supported with REGIONS (the TS relay runs in every region)"
for v in LINK_PORT START_TIMEOUT STOP_TIMEOUT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done

# base <stack.sh variable> <its default>: region 0's port (the caller's, else stack.sh's default)
base() { local v="${!1:-$2}"; [[ "$v" =~ ^[0-9]+$ ]] || die "$1 must be a port, got '$v'"; echo "$v"; }
PG_BASE="$(base STACK_PG_PORT 55432)"
REDIS_BASE="$(base STACK_REDIS_PORT 16379)"
KAFKA_BASE="$(base STACK_KAFKA_PORT 19092)"
CONNECT_BASE="$(base STACK_CONNECT_PORT 18083)"
GATEWAY_BASE="$(base PORT 8080)"
RELAY_BASE="$(base STACK_RELAY_METRICS_PORT 19100)"
DELIVERY_BASE="$(base STACK_DELIVERY_METRICS_PORT 19200)"
NOTIFIER_BASE="$(base STACK_NOTIFIER_METRICS_PORT 19300)"
WEBHOOKS_BASE="$(base STACK_WEBHOOKS_METRICS_PORT 19400)"
MIRROR_BASE="$(base STACK_MIRROR_METRICS_PORT 19500)"

region_dir() { echo "$STACK_DIR/region-$1"; }
kafka_port() { echo $((KAFKA_BASE + 1000 * INDEX[$1])); }
gateway_port() { echo $((GATEWAY_BASE + 1000 * INDEX[$1])); }
pg_port() { echo $((PG_BASE + 1000 * INDEX[$1])); }
# the proxies of the ordered pair from -> to: region <from> reaches <to>'s gateway-1 / broker there
link_gateway_port() { echo $((LINK_PORT + 1 + 2 * (INDEX[$1] * N + INDEX[$2]))); }
link_broker_port() { echo $(($(link_gateway_port "$1" "$2") + 1)); }
# <to>'s broker has one REMOTE listener per other region, in REGIONS order (kafka.sh)
remote_listener_port() {
  local j=${INDEX[$1]}
  ((INDEX[$1] < INDEX[$2])) || j=$((j - 1))
  echo $(($(kafka_port "$2") + 200 + j))
}
others() {
  local r
  for r in "${NAMES[@]}"; do [[ "$r" == "$1" ]] || echo "$r"; done
}
joined() { local IFS="$1"; shift; echo "$*"; }

# region_env <r>: the environment of region r's stack.sh (every port shifted, its region's settings)
region_env() {
  local r="$1" off=$((1000 * INDEX[$1])) x peers=() adverts=()
  for x in $(others "$r"); do
    peers+=("$x=http://127.0.0.1:$(link_gateway_port "$r" "$x")")
    adverts+=("127.0.0.1:$(link_broker_port "$x" "$r")")
  done
  printf '%s\n' \
    "STACK_DIR=$(region_dir "$r")" \
    "STACK_PG_PORT=$((PG_BASE + off))" "STACK_REDIS_PORT=$((REDIS_BASE + off))" \
    "STACK_KAFKA_PORT=$((KAFKA_BASE + off))" "STACK_CONNECT_PORT=$((CONNECT_BASE + off))" \
    "PORT=$((GATEWAY_BASE + off))" \
    "STACK_RELAY_METRICS_PORT=$((RELAY_BASE + off))" "STACK_DELIVERY_METRICS_PORT=$((DELIVERY_BASE + off))" \
    "STACK_NOTIFIER_METRICS_PORT=$((NOTIFIER_BASE + off))" "STACK_WEBHOOKS_METRICS_PORT=$((WEBHOOKS_BASE + off))" \
    "STACK_MIRROR_METRICS_PORT=$((MIRROR_BASE + off))" \
    "STACK_MIRROR_SOURCES=$(joined , $(others "$r"))" \
    "REALCHAT_REGION=$r" \
    "REALCHAT_REGION_PEERS=$(joined , "${peers[@]}")" \
    "KAFKA_REMOTE_ADVERTISED=$(joined ';' "${adverts[@]}")"
  [[ -z "${REGION_FAILOVER_AFTER_MS:-}" ]] || echo "REALCHAT_REGION_FAILOVER_AFTER_MS=$REGION_FAILOVER_AFTER_MS"
  ((${#SECRETS[@]} == 0)) || printf '%s\n' "${SECRETS[@]}"
}

# in_region <r> <command...>: runs the command with region r's environment (one region's stack, not
# this script again: REGIONS unset; a caller's REDIS_URL would be shared by every region: unset too)
in_region() {
  local r="$1" line
  shift
  local -a envs=()
  while IFS= read -r line; do envs+=("$line"); done < <(region_env "$r")
  env -u REGIONS -u REDIS_URL -u REDIS_SENTINELS -u DATABASE_URL -u KAFKA_BROKERS "${envs[@]}" "$@"
}

SECRETS=()
load_secrets() {
  local line
  while IFS= read -r line; do SECRETS+=("$line"); done < <(env -u REGIONS STACK_DIR="$STACK_DIR" bash "$HERE/stack.sh" secrets)
  ((${#SECRETS[@]} == 5)) || die "could not read the stack's secrets"
}

# --- the links ------------------------------------------------------------------
link_pid() {
  local pid
  pid="$(cat "$LINK_DIR/pid" 2>/dev/null || true)"
  alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q link-main.js || return 1
  echo "$pid"
}

link_call() {
  local method="$1" path="$2" out code
  out="$(curl -s -X "$method" -w '\n%{http_code}' --max-time 5 "http://127.0.0.1:$LINK_PORT$path" 2>/dev/null || true)"
  code="${out##*$'\n'}"
  [[ "$code" == 200 ]] || die "the link process answered $method $path with '${out%$'\n'*}' ($code)"
  echo "${out%$'\n'*}"
}

start_links() {
  local r x specs=() k
  if link_pid >/dev/null; then
    [[ -z "${REGION_RTT_MS:-}" ]] || link_call POST "/rtt?ms=$REGION_RTT_MS" >/dev/null
    return 0
  fi
  # compiled with the chaos harness; built here when missing or older than its sources
  if [[ ! -f "$LINK_MAIN" || "$REPO/tests/chaos/link-main.ts" -nt "$LINK_MAIN" || "$REPO/tests/chaos/proxy.ts" -nt "$LINK_MAIN" ]]; then
    log "building the link process (npm run chaos:build)"
    (cd "$REPO" && npx --no-install tsc -p tests/chaos/tsconfig.json) >&2 || die "npm run chaos:build failed"
  fi
  for r in "${NAMES[@]}"; do
    for x in $(others "$r"); do
      specs+=("$r>$x:$(link_gateway_port "$r" "$x"):$(gateway_port "$x")")
      specs+=("$r>$x:$(link_broker_port "$r" "$x"):$(remote_listener_port "$r" "$x")")
    done
  done
  mkdir -p "$LINK_DIR"
  rm -f "$LINK_DIR/pid"
  (
    cd "$REPO" || exit 1
    exec 9>&-
    setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$LINK_DIR/pid" \
      "$NODE_BIN" "$LINK_MAIN" --control "$LINK_PORT" --rtt "${REGION_RTT_MS:-60}" "${specs[@]}" \
      </dev/null >>"$LINK_DIR/link.log" 2>&1 &
  )
  for ((k = 0; k < 100; k++)); do
    if curl -s --max-time 2 "http://127.0.0.1:$LINK_PORT/links" >/dev/null 2>&1; then
      log "links up (control port $LINK_PORT, round trip ${REGION_RTT_MS:-60} ms)"
      return 0
    fi
    link_pid >/dev/null || { tail -n 20 "$LINK_DIR/link.log" >&2; die "the link process exited (log: $LINK_DIR/link.log)"; }
    sleep 0.1
  done
  die "the link process did not answer on port $LINK_PORT within 10 s (log: $LINK_DIR/link.log)"
}

stop_links() {
  local pid t0
  pid="$(link_pid)" || { rm -f "$LINK_DIR/pid"; return 0; }
  t0=$(now_ms)
  kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid" && (($(now_ms) - t0 < 5000)); do sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$LINK_DIR/pid"
  log "links stopped"
}

# --- MirrorMaker: one per region, mirroring every other region's stream into it ----
mm2_dir() { echo "$(region_dir "$1")/mirror-maker"; }
start_mm2() {
  local r="$1" x clusters=("$1=127.0.0.1:$(kafka_port "$1")")
  for x in $(others "$r"); do clusters+=("$x=127.0.0.1:$(link_broker_port "$r" "$x")"); done
  MM2_TARGETS="$r" MM2_START_TIMEOUT="$START_TIMEOUT" "$HERE/kafka/mirror-maker.sh" start "$(mm2_dir "$r")" "${clusters[@]}" 9>&-
}

# --- commands --------------------------------------------------------------------
take_lock() {
  mkdir -p "$STACK_DIR"
  exec 9>"$STACK_DIR/.regions-lock"
  flock -w 120 9 || die "another stack.sh holds $STACK_DIR/.regions-lock"
}

cmd_up() {
  local t0 r
  t0=$(now_ms)
  command -v curl >/dev/null || die "curl is required"
  take_lock
  if [[ -s "$STACK_DIR/regions" && "$(cat "$STACK_DIR/regions")" != "$REGION_LIST" ]]; then
    die "regions $(cat "$STACK_DIR/regions") run in $STACK_DIR: stack.sh down first to run REGIONS=$REGION_LIST"
  fi
  echo "$REGION_LIST" >"$STACK_DIR/regions"
  load_secrets
  start_links
  # every region's infrastructure first: MirrorMaker needs the other regions' brokers, and a mirror
  # applier needs the topic MirrorMaker creates
  for r in "${NAMES[@]}"; do
    log "region $r: infrastructure"
    in_region "$r" env STACK_SKIP_ROLES=1 bash "$HERE/stack.sh" up 9>&- || die "region $r: infrastructure did not start"
  done
  for r in "${NAMES[@]}"; do start_mm2 "$r" || die "region $r: MirrorMaker did not start"; done
  for r in "${NAMES[@]}"; do
    log "region $r: roles"
    in_region "$r" bash "$HERE/stack.sh" up 9>&- >/dev/null || die "region $r: roles did not start"
  done
  log "regions ${NAMES[*]} ready in $(($(now_ms) - t0)) ms"
  cmd_status
}

# one JSON object per line, each with its region
status_lines() {
  local r json pid
  for r in "${NAMES[@]}"; do
    json="$(in_region "$r" bash "$HERE/stack.sh" status --json)"
    [[ "$json" == "[]" ]] || sed -e 's/^\[//' -e 's/\]$//' -e 's/},{/}\n{/g' <<<"$json" | sed "s/^{/{\"region\":\"$r\",/"
    pid="$(cat "$(mm2_dir "$r")/pid" 2>/dev/null || true)"
    if alive "$pid"; then printf '{"region":"%s","name":"mirror-maker","role":"mirror-maker","pid":%s,"port":null}\n' "$r" "$pid"; fi
  done
  if pid="$(link_pid)"; then
    printf '{"region":null,"regions":["%s"],"name":"links","role":"link","pid":%s,"port":%s,"rtt_ms":%s}\n' \
      "$(joined , "${NAMES[@]}" | sed 's/,/","/g')" "$pid" "$LINK_PORT" \
      "$(link_call GET /links | sed -n 's/.*"rtt_ms":\([0-9.]*\).*/\1/p')"
  fi
}

cmd_status() {
  local lines
  lines="$(status_lines | grep -v '^$' || true)"
  if [[ "${1:-}" == --json ]]; then
    json_array "$lines"
    return
  fi
  printf '%-8s %-12s %-14s %-8s %s\n' REGION ROLE NAME PID PORT
  [[ -n "$lines" ]] || { echo "(nothing running)"; return; }
  sed -E 's/^\{"region":"?([^",]*)"?,("regions":[^]]*\],)?"name":"([^"]*)","role":"([^"]*)","pid":([0-9]+),"port":([0-9a-z]+).*$/\1 \4 \3 \5 \6/' <<<"$lines" |
    while read -r g r n p po; do printf '%-8s %-12s %-14s %-8s %s\n' "$g" "$r" "$n" "$p" "$po"; done
}

cmd_down() {
  local t0 r
  t0=$(now_ms)
  take_lock
  for r in "${NAMES[@]}"; do
    "$HERE/kafka/mirror-maker.sh" stop "$(mm2_dir "$r")" 9>&- || true
    in_region "$r" bash "$HERE/stack.sh" down 9>&- || log "region $r: stack.sh down failed"
  done
  stop_links
  rm -f "$STACK_DIR/regions"
  log "regions down in $(($(now_ms) - t0)) ms"
}

cmd_link() {
  link_pid >/dev/null || die "the links are not running (stack.sh up first)"
  case "${1:-}" in
    cut | heal)
      if [[ $# -eq 1 ]]; then
        link_call POST "/$1" >/dev/null
        log "every link: $1"
      else
        [[ $# -eq 3 && -n "${INDEX[$2]:-}" && -n "${INDEX[$3]:-}" && "$2" != "$3" ]] || die "link $1 takes two of the regions ${NAMES[*]}, or none"
        link_call POST "/$1?a=$2&b=$3" >/dev/null
        log "link $2-$3: $1"
      fi
      ;;
    rtt)
      [[ $# -eq 2 && "$2" =~ ^[0-9]+$ ]] || die "link rtt <ms>"
      link_call POST "/rtt?ms=$2" >/dev/null
      log "every link: round trip $2 ms"
      ;;
    status) link_call GET /links; echo ;;
    *) usage ;;
  esac
}

cmd_failover() {
  local from="" to=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --from) from="${2:-}"; shift 2 || usage ;;
      --to) to="${2:-}"; shift 2 || usage ;;
      *) usage ;;
    esac
  done
  [[ -n "${INDEX[$to]:-}" ]] || die "--to must name one of the regions ${NAMES[*]}"
  [[ -n "${INDEX[$from]:-}" && "$from" != "$to" ]] || die "--from must name another of the regions ${NAMES[*]}"
  load_secrets
  in_region "$to" env "DATABASE_URL=postgres://postgres@127.0.0.1:$(pg_port "$to")/realchat" \
    "$NODE_BIN" "$REPO/dist/delivery/mirror/region-cli.js" failover --from "$from" --to "$to"
}

[[ $# -ge 1 ]] || usage
sub="$1"; shift
case "$sub" in
  up) [[ $# -eq 0 ]] || usage; cmd_up ;;
  status) [[ $# -le 1 ]] || usage; [[ $# -eq 0 || "$1" == --json ]] || usage; cmd_status "${1:-}" ;;
  down) [[ $# -eq 0 ]] || usage; cmd_down ;;
  link) cmd_link "$@" ;;
  failover) cmd_failover "$@" ;;
  *) usage ;;
esac
