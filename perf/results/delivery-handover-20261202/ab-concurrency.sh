#!/usr/bin/env bash
# ab-concurrency.sh ROUND: variant A (one hand-over per partition batch) with 6 (D) and 12 (E)
# partitions at once; per variant a warm-up at 1,000 msg/s, then 1,000 and 2,000 msg/s.
R=$1
d=/work/main/perf/results/delivery-handover-20261202
for v in D E; do
  case $v in
    D) $d/restart.sh A REALCHAT_DELIVERY_CONCURRENCY=6 ;;
    E) $d/restart.sh A REALCHAT_DELIVERY_CONCURRENCY=12 ;;
  esac
  $d/run.sh "$v$R-warm" 1000 >/dev/null
  $d/run.sh "$v$R" 1000
  $d/run.sh "$v$R" 2000
done
