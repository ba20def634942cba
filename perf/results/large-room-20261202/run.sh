#!/usr/bin/env bash
# run.sh: one conversation with 200 connected members (100 per gateway) and M members who never
# connect, 100 msg/s for 30 s, per M. Up to REALCHAT_LARGE_ROOM_MEMBERS (1,000) members in all the
# conversation is delivered by member list; past it by room interest (a large room).
# Needs the stack: GATEWAYS=2 STACK_NOTIFIERS=0 STACK_WEBHOOKS=0 LOG_LEVEL=warn npm run stack:up
cd /work/main
d=perf/results/large-room-20261202
for m in ${OFFLINE:-0 800 1800 19800 99800}; do
  npm run perf -- cluster --connections 200 --group-size 200 --conversations 1 --offline-members "$m" \
    --duration 30 --rate "${RATE:-100}" --ramp-rate 200 --engine go --out "$d/offline-$m" > "$d/offline-$m.out.txt" 2>&1
  f="$d/offline-$m.md"
  echo "== offline members $m"
  grep -E "latency ms|sent / acked|delivered|setup:" "$f"
  sed -n '/Per process/,$p' "$f" | grep -E "^\| (gateway|relay|delivery)"
  grep -E "^\| (postgres|kafka|redis)" "$f"
done
