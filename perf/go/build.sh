#!/usr/bin/env bash
# The Go load generator worker (perf/go/loadgen, `npm run perf -- ... --engine go`), built with the
# machine's Go into <repo>/.cache/bin/realchat-loadgen; modules from the Go module proxy, module and
# build caches under .cache/ (like perf/peers/centrifugo.sh). perf/lib/workers.ts runs this by itself
# when the binary is missing or older than its sources.
#   perf/go/build.sh          build (incremental)
#   perf/go/build.sh test     go vet + go test of the worker
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$REPO/.cache"
export GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gobuild"
cd "$REPO/perf/go/loadgen"
case "${1:-build}" in
  build)
    mkdir -p "$CACHE/bin"
    echo "building realchat-loadgen with $(go version)" >&2
    go build -trimpath -o "$CACHE/bin/realchat-loadgen.tmp" .
    mv -f "$CACHE/bin/realchat-loadgen.tmp" "$CACHE/bin/realchat-loadgen"
    ;;
  test)
    go vet ./...
    go test ./...
    ;;
  *) echo "usage: $0 [build|test]" >&2; exit 2 ;;
esac
