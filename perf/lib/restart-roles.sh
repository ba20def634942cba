# Sourced by perf/stack-ab.sh and perf/storm-runs.sh (run from the repository root).
# restart_roles ROLE... -- [VAR=VALUE...]: stops those Node roles of the running stack, waits up to
# 10 s for them to exit, then `infra/stack.sh up` (with VAR=VALUE in its environment) starts again
# whatever is not running; PostgreSQL, Kafka and Redis keep running.
restart_roles() {
  local roles=() r alive
  while [[ $# -gt 0 && $1 != -- ]]; do roles+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  for r in "${roles[@]}"; do kill "$(cat .cache/stack/pids/$r.pid)" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for r in "${roles[@]}"; do kill -0 "$(cat .cache/stack/pids/$r.pid)" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break
    sleep 0.2
  done
  env "$@" bash infra/stack.sh up 2>&1 | grep -E "ready|error" | tail -1
}
