#!/usr/bin/env bash
# Peer: Centrifugo v6 (Go), built from the Go module proxy with the machine's Go and run with the
# memory engine, history + recovery on, HMAC (HS256) connection JWTs, GOMAXPROCS=2, loopback only.
#   perf/peers/centrifugo.sh build          build into <repo>/.cache/bin (idempotent)
#   perf/peers/centrifugo.sh version        print the module version of the built binary
#   perf/peers/centrifugo.sh run [PORT]     build if needed, write the config, exec the server (foreground)
# Env: CENTRIFUGO_PORT (8093), CENTRIFUGO_SECRET (HMAC secret; the load generator uses the same
# default), CENTRIFUGO_GOMAXPROCS (2), CENTRIFUGO_VERSION (latest).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$REPO/.cache"
BIN="$CACHE/bin/centrifugo"
VERSION="${CENTRIFUGO_VERSION:-latest}"
PORT="${2:-${CENTRIFUGO_PORT:-8093}}"
SECRET="${CENTRIFUGO_SECRET:-realchat-perf-secret-not-for-production}"

build() {
  if [ -x "$BIN" ] && [ "$VERSION" = latest ]; then return 0; fi
  mkdir -p "$CACHE/bin"
  echo "building centrifugo/v6@$VERSION with $(go version)" >&2
  GOBIN="$CACHE/bin" GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gobuild" GOFLAGS=-mod=mod \
    go install "github.com/centrifugal/centrifugo/v6@$VERSION"
}

version() {
  go version -m "$BIN" | awk '$1=="mod" && $2 ~ /centrifugo\/v6/ {print $3; exit}'
}

case "${1:-run}" in
  build) build ;;
  version) version ;;
  run)
    build
    CONF="$CACHE/centrifugo-perf-$PORT.json"
    cat > "$CONF" <<JSON
{
  "http_server": { "address": "127.0.0.1", "port": $PORT },
  "log": { "level": "error" },
  "engine": { "type": "memory" },
  "client": {
    "token": { "hmac_secret_key": "$SECRET" },
    "allowed_origins": ["*"],
    "channel_limit": 1024
  },
  "channel": {
    "namespaces": [
      {
        "name": "chat",
        "history_size": 1000,
        "history_ttl": "600s",
        "force_recovery": true,
        "allow_subscribe_for_client": true,
        "allow_publish_for_subscriber": true
      }
    ]
  },
  "prometheus": { "enabled": true },
  "usage_stats": { "disabled": true }
}
JSON
    export GOMAXPROCS="${CENTRIFUGO_GOMAXPROCS:-2}"
    echo "centrifugo $(version) on 127.0.0.1:$PORT GOMAXPROCS=$GOMAXPROCS config=$CONF" >&2
    exec "$BIN" --config "$CONF"
    ;;
  *) echo "usage: $0 build|version|run [PORT]" >&2; exit 2 ;;
esac
