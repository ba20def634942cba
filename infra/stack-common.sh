# Helpers shared by infra/stack.sh and infra/stack-regions.sh (sourced, not run).
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# alive <pid>: running and not a zombie (pid 1 here may reap orphans late)
alive() {
  local st
  [[ -n "${1:-}" ]] || return 1
  st="$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\).*/\1/p' "/proc/$1/stat" 2>/dev/null || true)"
  [[ -n "$st" && "$st" != Z && "$st" != X ]]
}
# json_array <lines>: one JSON object per line, as one JSON array on one line ([] for none)
json_array() { if [[ -z "$1" ]]; then echo '[]'; else echo "[$(paste -sd, <<<"$1")]"; fi; }
