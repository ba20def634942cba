#!/usr/bin/env bash
# perf/storm-runs.sh DIR "NAME..." : the 50,000-connection reconnect storm, once per NAME, on the
# running stack (GATEWAYS=4 LOG_LEVEL=warn npm run stack:up). Before each run the node roles
# (relay-1, delivery-1, gateway-1..4, notifier-1, webhooks-1) are stopped and started again;
# PostgreSQL, Kafka and Redis keep running. With VARIANTS=D, a directory D/NAME is copied over
# dist/ first (built files of the variant, same relative paths, e.g. D/B/common/presence.js), so
# builds can be compared on one stack; alternate the names (A B A B): runs drift on one stack.
# Each run: `cluster --connections 50000 --duration 60 --rate 100 --ramp-rate 2000 --engine go
# --storm --storm-rate 5000` into DIR/NAME-i.{json,md,svg}, plus DIR/NAME-i.lapses.txt: the
# gateways' warnings during the run (presence lapses suspected, Redis commands timed out, catch-ups
# failed). The first run on a freshly created database is slower (its plans are made on empty tables).
set -uo pipefail
cd "$(dirname "$0")/.."
dir=$1 names=$2
mkdir -p "$dir"
roles=(relay-1 delivery-1 gateway-1 gateway-2 gateway-3 gateway-4 notifier-1 webhooks-1)
source perf/lib/restart-roles.sh
count() { cat .cache/stack/logs/gateway-*.log 2>/dev/null | grep -c "$1"; }
i=0
for name in $names; do
  i=$((i + 1))
  if [[ -n "${VARIANTS:-}" ]]; then cp -r "$VARIANTS/$name/." dist/; fi
  restart_roles "${roles[@]}" -- GATEWAYS=4 LOG_LEVEL=warn
  sleep 5
  l0=$(count "may have lapsed") t0=$(count "Command timed out") c0=$(count "catch-up failed")
  out="$dir/$name-$i"
  npm run perf -- cluster --connections 50000 --duration 60 --rate 100 --ramp-rate 2000 --engine go --storm --storm-rate 5000 \
    --out "$out" >"/tmp/storm-runs-$name-$i.log" 2>&1 || echo "run $name-$i failed: /tmp/storm-runs-$name-$i.log"
  echo "presence lapses suspected $(($(count "may have lapsed") - l0)), Redis commands timed out $(($(count "Command timed out") - t0)), catch-ups failed $(($(count "catch-up failed") - c0))" >"$out.lapses.txt"
  echo "== $name-$i $(grep -E 'storm: all reconnected' "$out.md") | $(cat "$out.lapses.txt") | $(grep '^| errors' "$out.md")"
done
