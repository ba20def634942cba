#!/usr/bin/env bash
# Download Kafka (broker + tools + Connect runtime) and the Debezium Postgres connector
# from Maven Central into <repo>/.cache/kafka/. Idempotent: skips work when a stamp
# matching the pinned versions exists. Usage: infra/kafka/fetch.sh [--force] [--quiet]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$HERE/common.sh"

force=0 quiet=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --quiet) quiet=1 ;;
    *) echo "usage: fetch.sh [--force] [--quiet]" >&2; exit 2 ;;
  esac
done

pom="$HERE/pom.xml"
kver="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
dver="$(sed -n 's:.*<debezium.version>\(.*\)</debezium.version>.*:\1:p' "$pom")"
# The jar set's own version: bump it when pom.xml gains an artifact, so caches fetch again.
set_version=2
stamp="$KAFKA_CACHE/.fetched-kafka-$kver-debezium-$dver-set$set_version"

if [[ $force -eq 0 && -f "$stamp" ]]; then
  [[ $quiet -eq 1 ]] || echo "fetch: kafka $kver + debezium $dver already in $KAFKA_CACHE" >&2
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch: mvn not found (apt-get install maven)" >&2; exit 1; }
mkdir -p "$KAFKA_CACHE"
tmp="$(mktemp -d "$KAFKA_CACHE/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "fetch: resolving kafka $kver (broker, tools, connect) ..." >&2
timeout 900 mvn -q -B -f "$pom" -Pkafka dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$tmp/lib"

echo "fetch: resolving debezium $dver (postgres connector + outbox router) ..." >&2
# Kafka and slf4j classes come from the worker's classpath, never from the plugin dir.
timeout 900 mvn -q -B -f "$pom" -Pdebezium dependency:copy-dependencies \
  -DincludeScope=runtime -DexcludeGroupIds=org.apache.kafka,org.slf4j \
  -DoutputDirectory="$tmp/plugins/debezium-connector-postgres"

rm -rf "$KAFKA_CACHE/lib" "$KAFKA_CACHE/plugins"
mv "$tmp/lib" "$KAFKA_CACHE/lib"
mv "$tmp/plugins" "$KAFKA_CACHE/plugins"
rm -f "$KAFKA_CACHE"/.fetched-*
touch "$stamp"
echo "fetch: done: $(ls "$KAFKA_CACHE/lib" | wc -l) jars in lib/, $(ls "$KAFKA_CACHE/plugins/debezium-connector-postgres" | wc -l) in plugins/" >&2
