#!/usr/bin/env bash
# run.sh NAME RATE: one cluster run into this folder, prints the summary lines
cd /work/main
d=perf/results/delivery-handover-20261202
npm run perf -- cluster --connections 2000 --duration 30 --rate "$2" --ramp-rate 500 --engine go --out "$d/$1-r$2" > "/tmp/$1-r$2.log" 2>&1
f="$d/$1-r$2.md"
echo "== $1 r$2"
grep -E "latency ms|sent / acked" "$f"
sed -n '/Per process/,$p' "$f" | grep -E "^\| (gateway|relay|delivery)"
grep -E "^\| (postgres|kafka)" "$f"
