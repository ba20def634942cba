#!/usr/bin/env bash
# perf/pg-cost.sh DATABASE_URL OUT -- COMMAND [ARG...]
#
# Where PostgreSQL's CPU goes while COMMAND runs (a cluster run against the stack, say): CPU of
# each server process between the start and the end, grouped by the client's application_name
# (realchat-gateway-1, realchat-relay-relay-1, ...) or the background process's type, and
# pg_stat_statements' calls, total and mean execution time per statement over the same window.
# Writes OUT.md. Needs the pg_stat_statements extension loaded (infra/postgres.sh does) and a
# superuser URL on this machine (it reads /proc of the server's processes). Backends that exit
# during the run are missed; pools that stay open are what it is for.
set -euo pipefail
[[ $# -ge 4 && $3 == -- ]] || {
  echo "usage: $0 DATABASE_URL OUT -- COMMAND [ARG...]" >&2
  exit 2
}
db=$1 out=$2
shift 3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
q() { psql -qAtX -F'|' "$db" -c "$1"; }

q "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
# The checkpointer lives as long as the server: its parent is the postmaster.
postmaster=$(awk '{print $4}' "/proc/$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")/stat")
ticks=$(getconf CLK_TCK)

# pid|label|user ticks|system ticks for the postmaster and its children.
snapshot() {
  q "SELECT pid, coalesce(nullif(application_name, ''), backend_type) FROM pg_stat_activity" >"$tmp/labels"
  for pid in "$postmaster" $(pgrep -P "$postmaster"); do
    local t label
    t=$(awk '{print $14 "|" $15}' "/proc/$pid/stat" 2>/dev/null) || continue
    label=$(awk -F'|' -v p="$pid" '$1 == p {print $2}' "$tmp/labels")
    [[ -n $label ]] || label=$([[ $pid == "$postmaster" ]] && echo postmaster || echo other)
    echo "$pid|$label|$t"
  done
}
statements() {
  psql -qAtX -F$'\t' "$db" -c "SELECT queryid, calls, total_exec_time, left(regexp_replace(query, '\s+', ' ', 'g'), 110) FROM pg_stat_statements WHERE queryid IS NOT NULL"
}

snapshot >"$tmp/cpu0"
statements >"$tmp/st0"
t0=$(date +%s.%N)
status=0
"$@" || status=$?
t1=$(date +%s.%N)
snapshot >"$tmp/cpu1"
statements >"$tmp/st1"

{
  echo "# PostgreSQL cost while a command ran"
  echo
  echo "\`$*\` (exit $status), $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s, $(date -u +%FT%TZ)."
  echo
  echo "## CPU by client (application_name) or background process"
  echo
  echo "| client | processes | CPU s | of which in the kernel | share of a core |"
  echo "| --- | --- | --- | --- | --- |"
  awk -F'|' -v tck="$ticks" -v secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" '
    NR == FNR { u[$1] = $3; s[$1] = $4; next }
    { du = $3 - u[$1]; ds = $4 - s[$1]; cpu[$2] += du + ds; sys[$2] += ds; n[$2]++ }
    END { for (k in cpu) printf "| %s | %d | %.2f | %.2f | %.1f%% |\n", k, n[k], cpu[k] / tck, sys[k] / tck, 100 * cpu[k] / tck / secs }
  ' "$tmp/cpu0" "$tmp/cpu1" | sort -t'|' -k4 -rn
  echo
  echo "## Statements (pg_stat_statements, over the same window; execution time, not planning or commit)"
  echo
  echo "| total ms | calls | mean ms | statement |"
  echo "| --- | --- | --- | --- |"
  awk -F'\t' '
    NR == FNR { c[$1] = $2; t[$1] = $3; next }
    { dc = $2 - c[$1]; dt = $3 - t[$1]; if (dc > 0) printf "| %.1f | %d | %.3f | `%s` |\n", dt, dc, dt / dc, $4 }
  ' "$tmp/st0" "$tmp/st1" | sort -t'|' -k2 -rn | head -25
} >"$out.md"
echo "wrote $out.md"
exit "$status"
