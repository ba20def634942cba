#!/usr/bin/env bash
# A long Schemathesis run against the REST API (docs/openapi.yaml). The test suite runs a short,
# seeded one (tests/schemathesis.test.ts); this one explores more, by default for 10 minutes with a
# fresh seed, and reports every failure it finds (not only the first per operation).
#
#   bash tests/fuzz/schemathesis-long.sh                      # in-process server on a real PostgreSQL (as the test)
#   SEED=123 MINUTES=30 bash tests/fuzz/schemathesis-long.sh  # reproduce a seed / run longer
#   REALCHAT_FUZZ_URL=http://127.0.0.1:8080 bash tests/fuzz/schemathesis-long.sh
#                                                             # a server already running, with dev auth on
#                                                             # (npm start, npm run stack:up); it must allow
#                                                             # ~unlimited rates (see FUZZ_ENV in the test)
#
# Needs Schemathesis in .cache/venv (bash infra/setup-debian.sh installs it). Exit status 0: no
# failure beyond the known findings accepted in tests/fuzz/known_findings.py.
set -euo pipefail
cd "$(dirname "$0")/../.."

ST=.cache/venv/bin/st
[[ -x $ST ]] || { echo "schemathesis-long: $ST is missing: run bash infra/setup-debian.sh" >&2; exit 2; }

SEED=${SEED:-$(( (RANDOM << 15) | RANDOM ))}
MINUTES=${MINUTES:-10}
EXAMPLES=${EXAMPLES:-500}
MAX_TIME_S=$(( MINUTES * 60 ))
echo "schemathesis-long: seed $SEED, ${MINUTES} min, ${EXAMPLES} examples per operation per round (reproduce with SEED=$SEED)"

if [[ -z ${REALCHAT_FUZZ_URL:-} ]]; then
  # The same test as in the suite, with a bigger budget.
  exec env \
    REALCHAT_FUZZ_SEED="$SEED" \
    REALCHAT_FUZZ_MAX_EXAMPLES="$EXAMPLES" \
    REALCHAT_FUZZ_TIMEOUT_S=$(( MAX_TIME_S + 300 )) \
    REALCHAT_FUZZ_ARGS="--max-time $MAX_TIME_S --continue-on-failure" \
    npx vitest run tests/schemathesis.test.ts
fi

# A running server: a token and a conversation of its own, then the same settings as the test.
base=${REALCHAT_FUZZ_URL%/}
json() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const v=JSON.parse(s)[process.argv[1]];if(!v){console.error(s);process.exit(1)}console.log(v)})' "$1"; }
REALCHAT_FUZZ_TOKEN=$(curl -sf -X POST "$base/v1/dev/token" -H 'content-type: application/json' -d '{"name":"fuzzer"}' | json token)
REALCHAT_FUZZ_CONVERSATION=$(curl -sf -X POST "$base/v1/conversations" -H "authorization: Bearer $REALCHAT_FUZZ_TOKEN" \
  -H 'content-type: application/json' -d '{"member_ids":[],"title":"fuzzing"}' | json conversation_id)
export REALCHAT_FUZZ_TOKEN REALCHAT_FUZZ_CONVERSATION
export SCHEMATHESIS_HOOKS="$PWD/tests/fuzz/known_findings.py"
export HYPOTHESIS_STORAGE_DIRECTORY="$PWD/.cache/hypothesis"
"$ST" --config-file tests/fuzz/schemathesis.toml run "$base/v1/openapi.json" \
  --phases coverage,fuzzing --max-examples "$EXAMPLES" --seed "$SEED" --max-time "$MAX_TIME_S" \
  --continue-on-failure --workers 2 --request-timeout 10 --no-color
status=0
curl -sf "$base/healthz" >/dev/null || { echo "schemathesis-long: the server does not answer /healthz any more" >&2; status=1; }
exit $status
