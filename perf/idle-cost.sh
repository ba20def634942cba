#!/usr/bin/env bash
# perf/idle-cost.sh [WINDOW]: CPU of each role of the running stack (`npm run stack:up`) while no
# client sends, over WINDOW seconds (default 60), as % of a core from /proc (utime + stime; USER_HZ 100).
# What the roles' loops (polls, fetches, heartbeats, lease renewals) cost with no traffic, so
# a run's CPU per message can be read against it (perf/README.md, "Eleventh round").
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-60}
declare -A pids
pids[postgres]=$(pgrep -d' ' -f 'bin/postgres|postgres: ' || true)
pids[kafka-1]=$(pgrep -d' ' -f kafka.Kafka || true)
for r in redis relay-1 delivery-1 gateway-1 gateway-2; do pids[$r]=$(cat ".cache/stack/pids/$r.pid" 2>/dev/null || true); done
[[ -n ${pids[redis]:-} ]] || pids[redis]=$(pgrep -d' ' redis-server || true)
ticks() { local t=0; for p in $1; do [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
declare -A before
for r in "${!pids[@]}"; do before[$r]=$(ticks "${pids[$r]}"); done
sleep "$window"
echo "| role | CPU % of a core at 0 msg/s over ${window} s |"
echo "| --- | --- |"
for r in postgres kafka-1 redis relay-1 delivery-1 gateway-1 gateway-2; do
  a=$(ticks "${pids[$r]}"); echo "| $r | $(awk -v d=$((a - before[$r])) -v w="$window" 'BEGIN{printf "%.1f", d/w}') |"
done
