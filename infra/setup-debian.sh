#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine (as root) for the full test suite, then installs npm
# dependencies and builds. Idempotent: installs only what is missing. Used by the README's test
# command and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[[ -x /usr/lib/postgresql/15/bin/initdb ]] || need+=(postgresql-15)
command -v runuser >/dev/null || need+=(util-linux)
[[ -x /usr/bin/chromium ]] || need+=(chromium)
[[ -x /usr/bin/redis-server ]] || need+=(redis-server)
[[ -x /usr/bin/redis-sentinel ]] || need+=(redis-sentinel)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
# libfaketime: the chaos runner's clock-skew fault (tests/chaos, docs/chaos.md).
command -v faketime >/dev/null || need+=(faketime)
# python3 -m venv needs ensurepip, which Debian ships in python3-venv.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing ${need[*]}; run as root (or install them) and retry" >&2
    exit 1
  fi
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
  # The Debian package starts a cluster of its own; the tests run their own servers.
  if command -v pg_ctlcluster >/dev/null; then pg_ctlcluster 15 main stop 2>/dev/null || true; fi
  # Likewise the Redis services: tests start their own redis-server and sentinels.
  service redis-server stop >/dev/null 2>&1 || true
  service redis-sentinel stop >/dev/null 2>&1 || true
fi

# promtool (tests/prometheus-rules.test.ts) ships in Debian's prometheus package, whose postinst
# would start a Prometheus server (and fail the install if :9090 is taken). A policy-rc.d that
# refuses every start keeps it stopped; one already in place (containers) is left as it is.
if ! command -v promtool >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing promtool (Debian package prometheus); run as root (or install it) and retry" >&2
    exit 1
  fi
  echo "setup: installing prometheus (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  policy_added=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus || install_failed=1
  if ((policy_added)); then rm -f /usr/sbin/policy-rc.d; fi
  [[ -z ${install_failed:-} ]] || { echo "setup: installing prometheus failed" >&2; exit 1; }
  # Whatever the init system did anyway: no Prometheus server runs on behalf of the tests.
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
  service prometheus stop >/dev/null 2>&1 || true
fi

id postgres >/dev/null 2>&1 || { echo "setup: the postgres user is missing (postgresql-15 creates it)" >&2; exit 1; }

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
npm run build
npm run build:web
# Kafka, Kafka Connect and Debezium jars from Maven Central (cached in .cache/kafka).
bash infra/kafka/fetch.sh
# Schemathesis (tests/schemathesis.test.ts fuzzes the REST API against docs/openapi.yaml), pinned,
# from PyPI into a virtual environment in .cache/venv (ignored by git). Reinstalled only when
# missing or at another version.
SCHEMATHESIS_VERSION=4.32.5
if ! .cache/venv/bin/st --version 2>/dev/null | grep -qx "st, version $SCHEMATHESIS_VERSION"; then
  echo "setup: installing schemathesis $SCHEMATHESIS_VERSION in .cache/venv"
  python3 -m venv --clear .cache/venv
  .cache/venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
