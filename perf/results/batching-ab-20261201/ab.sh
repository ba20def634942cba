#!/usr/bin/env bash
# ab.sh ROUND: A = defaults, B = batching (relay linger 20 ms, fetch min 32 KiB / max wait 20 ms); warm 1000, 1000, 2000 each
R=$1
B=(REALCHAT_RELAY_LINGER_MS=20 REALCHAT_KAFKA_FETCH_MIN_BYTES=32768 REALCHAT_KAFKA_FETCH_MAX_WAIT_MS=20)
for v in A B; do
  if [[ $v == A ]]; then /tmp/bsweep/restart.sh FOO=1; else /tmp/bsweep/restart.sh "${B[@]}"; fi
  /tmp/bsweep/run.sh "$v$R-warm" 1000 >/dev/null
  /tmp/bsweep/run.sh "$v$R" 1000
  /tmp/bsweep/run.sh "$v$R" 2000
done
