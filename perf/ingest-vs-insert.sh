#!/usr/bin/env bash
# Ingest against the database's own limit, side by side in one run, on the same PostgreSQL:
#   1. pgbench: raw INSERTs of message-shaped rows (uuid id, the same two unique indexes, a jsonb
#      payload), one row per transaction as a send is, CONNS connections, DURATION s;
#   2. RealChat: one node (in-process relay) with REALCHAT_DB_POOL_SIZE=CONNS, the `pairs`
#      scenario at RATE msg/s open loop (set it above the node's knee), acked sends per second.
# Writes perf/results/ingest-<stamp>.{json,md}.
#   perf/ingest-vs-insert.sh POSTGRES_ADMIN_URL [CONNS=10] [DURATION=20] [RATE=6000] [CONNECTIONS=2000]
# POSTGRES_ADMIN_URL: a role that may create databases, e.g. postgres://postgres@127.0.0.1:55432/postgres
# (npm run stack:up starts one). Needs `npm run build` and pgbench (PostgreSQL's client binaries).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ADMIN_URL="${1:?usage: perf/ingest-vs-insert.sh POSTGRES_ADMIN_URL [CONNS] [DURATION] [RATE] [CONNECTIONS]}"
CONNS="${2:-10}"
DURATION="${3:-20}"
RATE="${4:-6000}"
CONNECTIONS="${5:-2000}"
PORT="${INGEST_PORT:-9095}"
PGBENCH="$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -1)"
[[ -x "$PGBENCH" ]] || { echo "pgbench not found" >&2; exit 1; }
STAMP="$(date -u +%Y%m%d-%H%M%S)"
OUT="perf/results/ingest-$STAMP"
DB="realchat_ingest_$$"
DB_URL="${ADMIN_URL%/*}/$DB"
SECRET="ingest-bench-secret-ingest-bench-secret-0123"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"
settings="$(psql -Atq "$DB_URL" -c "SELECT current_setting('fsync') || ' ' || current_setting('synchronous_commit')")"

# 1. Raw INSERTs: the messages table's shape and unique constraints, no conversations row to bump.
psql -q "$DB_URL" -c "CREATE TABLE raw_messages (id uuid PRIMARY KEY, conversation_id uuid NOT NULL, sender_id uuid NOT NULL,
  sequence bigint NOT NULL, payload jsonb NOT NULL, idempotency_key text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (conversation_id, sequence), UNIQUE (sender_id, idempotency_key))" >/dev/null
cat >"$WORK/insert.sql" <<'SQL'
INSERT INTO raw_messages (id, conversation_id, sender_id, sequence, payload, idempotency_key)
VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 1, '{"t":1,"id":"x"}', md5(random()::text));
SQL
"$PGBENCH" -n -c "$CONNS" -j 2 -T "$DURATION" -f "$WORK/insert.sql" "$DB_URL" >"$WORK/pgbench.txt" 2>&1
raw_tps="$(awk '/^tps = / {print $3; exit}' "$WORK/pgbench.txt")"
echo "pgbench raw INSERT, $CONNS connections: $raw_tps tps" >&2

# 2. RealChat on the same database, same number of connections.
psql -q "$DB_URL" -c "DROP TABLE raw_messages" >/dev/null
env -u KAFKA_BROKERS -u REDIS_URL DATABASE_URL="$DB_URL" REALCHAT_DB_POOL_SIZE="$CONNS" PORT="$PORT" HOST=127.0.0.1 \
  REALCHAT_JWT_SECRET="$SECRET" REALCHAT_MAX_CONNECTIONS_PER_ADDRESS=1000000 LOG_LEVEL=warn \
  node dist/standalone/main.js >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 60); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 1; done
node dist/perf/run.js pairs --target realchat --url "http://127.0.0.1:$PORT" --no-start-server --jwt-secret "$SECRET" \
  --connections "$CONNECTIONS" --duration "$DURATION" --rate "$RATE" --ramp-rate 500 --drain 5 --engine go --out "$OUT-pairs" >&2

python3 - "$OUT" "$raw_tps" "$CONNS" "$DURATION" "$RATE" "$settings" "$OUT-pairs.json" "$LOADAVG" <<'PY'
import json, sys
out, raw_tps, conns, duration, rate, settings, pairs_file, loadavg = sys.argv[1:]
p = json.load(open(pairs_file))
# Acks are counted until the end of the 5 s drain: divide by sending time + drain (conservative).
sends_per_s = p['acked'] / (p['duration_s'] + 5)
res = {
    'started_at': p['started_at'], 'load_average_at_start': loadavg, 'fsync_synchronous_commit': settings, 'db_connections': int(conns),
    'duration_s': int(duration), 'raw_insert_tps': float(raw_tps), 'offered_rate': int(rate),
    'realchat_acked_per_s': round(sends_per_s, 1), 'ratio': round(sends_per_s / float(raw_tps), 3),
    'realchat_latency_ms': p['latency_ms'], 'pairs_results': pairs_file,
}
json.dump(res, open(out + '.json', 'w'), indent=2)
open(out + '.md', 'w').write(f"""# ingest vs raw INSERT ({p['started_at']})

Load average at start: {loadavg}. PostgreSQL fsync / synchronous_commit: {settings}; {conns} database connections each; {duration} s each.

| what | per second |
| --- | --- |
| pgbench: one message-shaped INSERT per transaction | {float(raw_tps):.0f} |
| RealChat sends acked per second of sending + drain (offered {rate}/s open loop; sequence, message, outbox event, idempotency, delivery) | {sends_per_s:.0f} |
| ratio | **{sends_per_s / float(raw_tps):.2f}** |

RealChat run: `{pairs_file}`.
""")
print(json.dumps(res))
PY
