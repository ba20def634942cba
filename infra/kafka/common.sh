# Shared helpers for infra/kafka/*.sh (sourced, not executed).
# Paths are derived from this file's location so the repo can live anywhere.
KAFKA_INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KAFKA_INFRA_DIR/../.." && pwd)"
KAFKA_CACHE="${REALCHAT_KAFKA_CACHE:-$REPO_ROOT/.cache/kafka}"
JAVA_BIN="${JAVA_BIN:-$(command -v java || echo /usr/bin/java)}"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
log() { echo "$(basename "$0"): $*" >&2; }

# fetch.sh returns at once when the cache holds the pinned jar set (its stamp), and fetches again
# when pom.xml changed the set (a cache from before MirrorMaker 2, say).
ensure_jars() {
  "$KAFKA_INFRA_DIR/fetch.sh" --quiet
}

kafka_classpath() { echo "$KAFKA_CACHE/lib/*"; }

# is_alive <pidfile>: true when the pid in the file is a running process. A killed process that
# is not reaped yet (a zombie: pid 1 here may reap late) passes `kill -0`, so read its state too.
is_alive() {
  local f="$1" pid state
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null || true)"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
  [[ -n "$state" && "$state" != "Z" && "$state" != "X" ]]
}

# port_open <port>: something is listening on 127.0.0.1:<port>.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_pidfile <pidfile> <timeout_s>: SIGTERM, bounded wait, then SIGKILL.
stop_pidfile() {
  local f="$1" t="${2:-30}" pid i
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f" 2>/dev/null || true)"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not exit after ${t}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$f"
}

# log4j2 config writing to <logdir>/<name>.log (no console output).
write_log4j2() {
  local file="$1" logdir="$2" name="$3"
  cat >"$file" <<EOF2
Configuration:
  status: warn
  Appenders:
    RollingFile:
      - name: file
        fileName: "$logdir/$name.log"
        filePattern: "$logdir/$name.log.%i"
        PatternLayout:
          pattern: "[%d] %p %m (%c)%n"
        SizeBasedTriggeringPolicy:
          size: 50MB
        DefaultRolloverStrategy:
          max: 3
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
    Logger:
      - name: org.apache.kafka.clients
        level: WARN
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.connect.runtime.rest
        level: WARN
      - name: org.reflections
        level: ERROR
EOF2
}
