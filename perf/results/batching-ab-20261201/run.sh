#!/usr/bin/env bash
# run.sh NAME RATE: one cluster run, prints the summary lines
cd /work/main
npm run perf -- cluster --connections 2000 --duration 30 --rate "$2" --ramp-rate 500 --engine go --out "/tmp/bsweep/$1-r$2" > "/tmp/bsweep/$1-r$2.log" 2>&1
f="/tmp/bsweep/$1-r$2.md"
echo "== $1 r$2"
grep -E "latency ms|sent / acked" "$f"
sed -n '/Per process/,$p' "$f" | grep -E "^\| (gateway|relay|delivery)" 
grep -E "^\| (postgres|kafka)" "$f"
