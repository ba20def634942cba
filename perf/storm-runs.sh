#!/usr/bin/env bash
# perf/storm-runs.sh DIR "NAME..." : the 50,000-connection reconnect storm, once per NAME, on the
# running stack (GATEWAYS=4 LOG_LEVEL=warn npm run stack:up). Before each run the node roles
# (relay-1, delivery-1, gateway-1..4, notifier-1, webhooks-1) are stopped and started again;
# PostgreSQL, Kafka and Redis keep running. With VARIANTS=D, a directory D/NAME is copied over
# dist/ first (built files of the variant, same relative paths, e.g. D/B/common/presence.js), so
# builds can be compared on one stack; alternate the names (A B A B): runs drift on one stack.
# Each run: `cluster --connections 50000 --duration 60 --rate 100 --ramp-rate 2000 --engine go
# --storm --storm-rate 5000` into DIR/NAME-i.{json,md,svg}, plus DIR/NAME-i.lapses.txt: the
# gateways' warnings during the run (presence lapses suspected, Redis commands timed out, other
# calls timed out (withTimeout: the database, Kafka), catch-ups failed, PostgreSQL breaker opened)
# and how the gateways' deliveries arrived (realchat_deliveries_total by via, summed: the roles
# restart before each run, so the counters cover it). With HOGS=n, n busy loops (one core each)
# run beside each run, a neighbour that takes CPU from the stack; they are stopped after the run.
# perf/stall-watch.sh samples the machine during each run (DIR/NAME-i.stat); its gaps over 1 s
# (machine-wide stalls) and where the CPU went in them are in the .lapses.txt line. The first run
# on a freshly created database is slower (its plans are made on empty tables).
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
  w0=$(count "timed out after") b0=$(count "postgres breaker open")
  out="$dir/$name-$i"
  perf/stall-watch.sh "$out.stat" 900 &
  watch=$!
  hogs=()
  for _ in $(seq 1 "${HOGS:-0}"); do
    timeout 900 bash -c 'while :; do :; done' &
    hogs+=($!)
  done
  npm run perf -- cluster --connections 50000 --duration 60 --rate 100 --ramp-rate 2000 --engine go --storm --storm-rate 5000 \
    --out "$out" >"/tmp/storm-runs-$name-$i.log" 2>&1 || echo "run $name-$i failed: /tmp/storm-runs-$name-$i.log"
  if ((${#hogs[@]})); then kill "${hogs[@]}" 2>/dev/null; wait "${hogs[@]}" 2>/dev/null; fi
  kill "$watch" 2>/dev/null
  wait "$watch" 2>/dev/null
  vias=$(for port in 8080 8081 8082 8083; do curl -s -m 5 "http://127.0.0.1:$port/metrics"; done |
    awk -F'[",} ]+' '/^realchat_deliveries_total/ { n[$2] += $NF } END { for (v in n) printf "%s %d, ", v, n[v] }')
  stalls=$(perf/stall-watch.sh --summary "$out.stat")
  echo "presence lapses suspected $(($(count "may have lapsed") - l0)), Redis commands timed out $(($(count "Command timed out") - t0)), other calls timed out $(($(count "timed out after") - w0)), catch-ups failed $(($(count "catch-up failed") - c0)), postgres breaker opened $(($(count "postgres breaker open") - b0)); deliveries ${vias%, }; sampler: $(tail -1 <<<"$stalls")" >"$out.lapses.txt"
  grep '^gap' <<<"$stalls" >>"$out.lapses.txt"
  echo "== $name-$i $(grep -E 'storm: all reconnected' "$out.md") | $(cat "$out.lapses.txt") | $(grep '^| errors' "$out.md")"
done
