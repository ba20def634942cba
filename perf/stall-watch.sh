#!/usr/bin/env bash
# perf/stall-watch.sh OUT SECONDS : a canary for machine-wide stalls. Every 0.5 s, at nice -20 if
# allowed, it appends the time and /proc/stat's cpu line (user nice system idle iowait irq softirq
# steal, in ticks) and the runnable count to OUT, for at most SECONDS. A stalled machine shows as a
# gap between two lines; the two lines around it say where the CPU went meanwhile (steal: the host
# took the CPUs; softirq/system: the kernel, e.g. tearing connections down; user: our processes).
# `perf/stall-watch.sh --summary OUT` prints the gaps longer than 1 s and that split.
set -uo pipefail
if [[ ${1:-} == --summary ]]; then
  awk '{
    t = $1; split("", d); tot = 0
    for (i = 3; i <= 10; i++) { d[i] = $i - p[i]; tot += d[i]; p[i] = $i }
    if (NR == 1) t0 = t
    if (NR > 1 && t - pt > 1) {
      n++; if (t - pt > longest) longest = t - pt
      printf "gap %.2f s from %.1f s after the start (epoch %.1f): user %.0f%% system %.0f%% idle %.0f%% iowait %.0f%% softirq %.0f%% steal %.0f%%, runnable %s\n",
        t - pt, pt - t0, pt, 100*d[3]/tot, 100*d[5]/tot, 100*d[6]/tot, 100*d[7]/tot, 100*d[9]/tot, 100*d[10]/tot, $13
    }
    pt = t
  } END { printf "samples %d, gaps over 1 s: %d, longest %.2f s\n", NR, n, longest }' "$2"
  exit 0
fi
out=$1 seconds=$2
renice -n -20 $$ >/dev/null 2>&1 || true
end=$((SECONDS + seconds))
while ((SECONDS < end)); do
  echo "$(date +%s.%N) $(head -1 /proc/stat) $(sed -n 's/^procs_running //p' /proc/stat)"
  sleep 0.5
done >>"$out"
