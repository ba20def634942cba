#!/usr/bin/env bash
# drains.sh ROUND: drain.sh for A (before) and B (after), each with 6 and with 12 partitions at once.
d=/work/main/perf/results/delivery-handover-20261202
R=$1
for v in A B; do
  for c in 6 12; do
    echo "== drain $v c$c round $R"
    $d/drain.sh "drain-$v-c$c-$R" $v REALCHAT_DELIVERY_CONCURRENCY=$c
  done
done
