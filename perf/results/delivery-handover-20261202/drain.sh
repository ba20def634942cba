#!/usr/bin/env bash
# drain.sh NAME A|B VAR=VALUE...: the delivery worker's throughput at saturation. Restarts the roles
# with variant A or B, stops the delivery worker, sends 60,000 messages (2,000 msg/s for 30 s) so
# they wait in the event topic, then starts the worker and measures how fast it works through them
# (perf/drain-probe.ts: events forwarded per second, CPU per 1,000). The cluster run waits up to
# 60 s for every delivery and reports losses as usual.
set -euo pipefail
cd /work/main
d=perf/results/delivery-handover-20261202
name=$1; v=$2; shift 2
$d/restart.sh "$v" "$@" >/dev/null
kill "$(cat .cache/stack/pids/delivery-1.pid)"
sleep 2
npm run perf -- cluster --connections 2000 --duration 30 --rate 2000 --ramp-rate 500 --engine go --drain 60 \
  --out "$d/$name" > "/tmp/$name.log" 2>&1 &
perf=$!
until grep -q 'hold done' "/tmp/$name.log"; do sleep 0.5; kill -0 $perf || { echo "perf ended early"; exit 1; }; done
env "$@" GATEWAYS=2 STACK_NOTIFIERS=0 STACK_WEBHOOKS=0 LOG_LEVEL=warn bash infra/stack.sh up >/dev/null 2>&1
node dist/perf/drain-probe.js --metrics http://127.0.0.1:19200/metrics \
  --series 'realchat_pipeline_seconds_count{node_id="delivery-1",stage="forwarded"}' \
  --pid "$(cat .cache/stack/pids/delivery-1.pid)" --idle 5 | tee "$d/$name.drain.json"
wait $perf || true
grep -E "sent / acked|delivered" "$d/$name.md"
