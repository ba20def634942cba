#!/usr/bin/env bash
# restart.sh A|B VAR=VALUE...: puts variant A (before: one hand-over per partition batch) or B (after:
# partition batches of a fetch share one hand-over) of dist/delivery in place, then restarts relay,
# delivery and gateways of the running stack with these settings. /tmp/abdel/{A,B} hold the built files.
set -euo pipefail
cd /work/main
v=$1; shift
cp /tmp/abdel/$v/*.js dist/delivery/
for r in relay-1 delivery-1 gateway-1 gateway-2; do kill "$(cat .cache/stack/pids/$r.pid)" 2>/dev/null || true; done
for i in $(seq 50); do
  alive=0; for r in relay-1 delivery-1 gateway-1 gateway-2; do kill -0 "$(cat .cache/stack/pids/$r.pid)" 2>/dev/null && alive=1; done
  [[ $alive == 0 ]] && break; sleep 0.2
done
env "$@" GATEWAYS=2 STACK_NOTIFIERS=0 STACK_WEBHOOKS=0 LOG_LEVEL=warn bash infra/stack.sh up 2>&1 | grep -E "ready|error" | tail -2
