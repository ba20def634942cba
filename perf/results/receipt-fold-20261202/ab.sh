#!/usr/bin/env bash
# ab.sh ROUND ORDER RATE...: A/B of the send's receipt (event stream v1.5) on the running stack
# (GATEWAYS=2 STACK_NOTIFIERS=0 STACK_WEBHOOKS=0 LOG_LEVEL=warn npm run stack:up).
# A = before: realchat_send_batch of sql/migrations/0008_timeline.sql (a conversation.read event of
#     its own for a send that reads someone else's message);
# B = after: 0015_send_receipt_on_message.sql's (the receipt rides on the message.created).
# The Node roles run the same build in both (it handles both shapes); only the database function is
# swapped, then relay, delivery and gateways are restarted. Per variant a warm-up at 1,000 msg/s,
# then each RATE, 30 s each, Go generator. ORDER is AB or BA (alternate it between rounds: the
# database grows during a round, so the second variant always runs on more data). FRESH=1 empties
# the chat tables before each variant (rounds 3 and later). Round 5 ran B alone (ORDER B), the knee
# with finer histogram buckets.
set -euo pipefail
cd /work/main
d=perf/results/receipt-fold-20261202
R=$1; ORDER=$2; shift 2
db=postgres://postgres@127.0.0.1:55432/realchat
fn() { sed -n '/^CREATE OR REPLACE FUNCTION realchat_send_batch/,/^\$\$;/p' "$1"; }
restart() {
  for r in relay-1 delivery-1 gateway-1 gateway-2; do kill "$(cat .cache/stack/pids/$r.pid)" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0; for r in relay-1 delivery-1 gateway-1 gateway-2; do kill -0 "$(cat .cache/stack/pids/$r.pid)" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break; sleep 0.2
  done
  GATEWAYS=2 STACK_NOTIFIERS=0 STACK_WEBHOOKS=0 LOG_LEVEL=warn bash infra/stack.sh up 2>&1 | grep -E "ready|error" | tail -2
}
run() {
  npm run perf -- cluster --connections 2000 --duration 30 --rate "$2" --ramp-rate 500 --engine go --out "$d/$1-r$2" > "/tmp/$1-r$2.log" 2>&1 || echo "run $1 r$2 failed: /tmp/$1-r$2.log"
  echo "== $1 r$2"
  grep -E "latency ms|sent / acked" "$d/$1-r$2.md" || true
  sed -n '/Per process/,$p' "$d/$1-r$2.md" | grep -E "^\| (gateway|relay|delivery|postgres|kafka)" || true
}
for v in $(echo "$ORDER" | grep -o .); do
  case $v in
    A) fn sql/migrations/0008_timeline.sql | psql -q "$db" ;;
    B) fn sql/migrations/0015_send_receipt_on_message.sql | psql -q "$db" ;;
  esac
  if [[ "${FRESH:-0}" == 1 ]]; then
    psql -q "$db" -c "TRUNCATE messages, members, user_conversation_state, conversations, outbox CASCADE; CHECKPOINT"
  fi
  restart
  run "$v$R-warm" 1000 >/dev/null
  for rate in "$@"; do run "$v$R" "$rate"; done
done
