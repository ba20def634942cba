#!/usr/bin/env bash
# ab.sh ROUND: per variant a warm-up at 1,000 msg/s, then 1,000 and 2,000 msg/s.
# A = before, 6 partitions at once (the default); B = after, 6; C = after, 12 (every partition of a fetch at once).
R=$1
d=/work/main/perf/results/delivery-handover-20261202
for v in A B C; do
  case $v in
    A) $d/restart.sh A REALCHAT_DELIVERY_CONCURRENCY=6 ;;
    B) $d/restart.sh B REALCHAT_DELIVERY_CONCURRENCY=6 ;;
    C) $d/restart.sh B REALCHAT_DELIVERY_CONCURRENCY=12 ;;
  esac
  $d/run.sh "$v$R-warm" 1000 >/dev/null
  $d/run.sh "$v$R" 1000
  $d/run.sh "$v$R" 2000
done
