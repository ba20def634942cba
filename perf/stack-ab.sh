#!/usr/bin/env bash
# perf/stack-ab.sh DIR ROUND "RATE..." "NAME [VAR=VALUE...]" "NAME [VAR=VALUE...]" ...
#
# A/B of settings on the running stack (GATEWAYS=2 STACK_NOTIFIERS=0 STACK_WEBHOOKS=0 LOG_LEVEL=warn
# npm run stack:up). For each variant, in the order given: relay-1, delivery-1, gateway-1 and
# gateway-2 are stopped and started again with the variant's environment (e.g. STACK_NODE_ARGS for
# node flags, REALCHAT_* knobs), a 1,000 msg/s warm-up runs, then one cluster run per RATE
# (`cluster --connections 2000 --duration 30 --ramp-rate 500 --engine go`) into
# DIR/<NAME><ROUND>-r<RATE>.{json,md,svg}. Alternate the order between rounds: on one stack the
# variant that runs second is often slower whichever it is (perf/README.md, "Seventh round").
# STACK_NOTIFIERS=1 / STACK_WEBHOOKS=1 (default 0) keep a notifier-1 / webhooks-1 in the stack and
# restart them with the variant's environment too (the full stack, as `npm run stack:up` starts it).
# FRESH=1 empties the chat tables before each variant. A variant's PSQL_FILE=F (not passed to the
# roles) is run by psql against the stack's database right after its restart, so the migrations
# the restart applies cannot replace it: a database function of another version, say (its CREATE
# OR REPLACE FUNCTION statements; sessions already open pick the new definition up on their next call).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1 round=$2 rates=$3
shift 3
mkdir -p "$dir"
db=postgres://postgres@127.0.0.1:${STACK_PG_PORT:-55432}/realchat
notifiers=${STACK_NOTIFIERS:-0} webhooks=${STACK_WEBHOOKS:-0}
roles=(relay-1 delivery-1 gateway-1 gateway-2)
[[ $notifiers == 1 ]] && roles+=(notifier-1)
[[ $webhooks == 1 ]] && roles+=(webhooks-1)

source perf/lib/restart-roles.sh
restart() {
  restart_roles "${roles[@]}" -- "$@" GATEWAYS=2 STACK_NOTIFIERS="$notifiers" STACK_WEBHOOKS="$webhooks" LOG_LEVEL=warn
}

run() {
  local name=$1 rate=$2 out="$dir/$1-r$2"
  npm run perf -- cluster --connections 2000 --duration 30 --rate "$rate" --ramp-rate 500 --engine go --out "$out" \
    >"/tmp/stack-ab-$name-r$rate.log" 2>&1 || echo "run $name r$rate failed: /tmp/stack-ab-$name-r$rate.log"
  echo "== $name r$rate"
  grep -E "latency ms|delivered \(unique\)" "$out.md" || true
  sed -n '/Per process/,$p' "$out.md" | grep -E "^\| (gateway|relay|delivery)" || true
  grep -E "^\| (postgres|kafka-1|notifier-1|webhooks-1) " "$out.md" || true
}

for variant in "$@"; do
  read -r -a words <<<"$variant"
  name=${words[0]}
  if [[ "${FRESH:-0}" == 1 ]]; then
    psql -q "$db" -c "TRUNCATE messages, members, user_conversation_state, conversations, outbox CASCADE; CHECKPOINT" 2>/dev/null
  fi
  env_words=() psql_files=()
  for w in "${words[@]:1}"; do
    if [[ $w == PSQL_FILE=* ]]; then psql_files+=("${w#PSQL_FILE=}"); else env_words+=("$w"); fi
  done
  restart "${env_words[@]}"
  for f in "${psql_files[@]}"; do psql -q -v ON_ERROR_STOP=1 "$db" -f "$f"; done
  run "$name$round-warm" 1000 >/dev/null
  for rate in $rates; do run "$name$round" "$rate"; done
done
