#!/usr/bin/env bash
# Verification-only Postgres 15 with wal_level=logical (the real one is owned by infra/postgres).
#   pg-logical-dev.sh start <dir> [port=55432]   initdb if new, start, create db "realchat" + public.outbox
#   pg-logical-dev.sh stop  <dir>
#   pg-logical-dev.sh psql  <dir> [psql args...]
# Postgres refuses to run as root, so everything runs as the "postgres" OS user via runuser.
# Socket dir: /tmp/realchat-pg-<port>. Superuser "postgres", password "postgres" (loopback only).
set -euo pipefail
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
cmd="${1:-}"; dir="${2:-}"
[[ -n "$cmd" && -n "$dir" ]] || { sed -n '2,7p' "$0" >&2; exit 2; }
mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
data="$dir/pgdata"
as_pg() { runuser -u postgres -- "$@"; }

case "$cmd" in
  start)
    port="${3:-55432}"; sock="/tmp/realchat-pg-$port"
    echo "$port" >"$dir/port"
    mkdir -p "$sock"; chown postgres:postgres "$sock"
    # the postgres user must be able to traverse to the data dir
    chown postgres:postgres "$dir"; chmod 755 "$dir"
    if [[ ! -f "$data/PG_VERSION" ]]; then
      pwf="$(mktemp)"; echo postgres >"$pwf"; chown postgres "$pwf"
      as_pg "$PGBIN/initdb" -D "$data" -U postgres --pwfile="$pwf" -A scram-sha-256 -E UTF8 >"$dir/initdb.log"
      rm -f "$pwf"
      cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_slot_wal_keep_size = ${PG_MAX_SLOT_WAL_KEEP_SIZE:-1GB}
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
      echo "host replication all 127.0.0.1/32 scram-sha-256" >>"$data/pg_hba.conf"
    fi
    if ! as_pg "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_pg "$PGBIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start >/dev/null
    fi
    PGPASSWORD=postgres "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtAc \
      "select 1 from pg_database where datname='realchat'" | grep -q 1 ||
      PGPASSWORD=postgres "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "create database realchat"
    PGPASSWORD=postgres "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d realchat -qc "
      create table if not exists public.outbox (
        id bigserial primary key,
        event_id uuid not null default gen_random_uuid(),
        aggregatetype text not null default 'conversation',
        aggregateid text not null,
        type text not null,
        payload jsonb not null,
        trace_id text,
        created_at timestamptz not null default now());"
    echo "postgres ready on 127.0.0.1:$port (db realchat, user postgres/postgres)" >&2
    ;;
  stop)
    if [[ -f "$data/PG_VERSION" ]] && as_pg "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
    fi
    ;;
  psql)
    port="$(cat "$dir/port")"; shift 2
    PGPASSWORD=postgres exec "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d realchat "$@"
    ;;
  *) sed -n '2,7p' "$0" >&2; exit 2 ;;
esac
