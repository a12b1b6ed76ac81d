#!/bin/bash
# Logs, every 5 s, the processes other than this benchmark's (build-bm/mfaserve, wrk,
# perf) that use >= 20% of a CPU: the record of what ran beside each figure.
while :; do
  b=$(top -bn2 -d2 -c -w 400 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 >= 20' \
      | grep -v -e build-bm/mfaserve -e 'wrk ' -e 'perf ' -e 'top -' | awk '{printf "%s(%s%%) ", $12 " " $13, $9}')
  echo "$(date -u +%FT%TZ) ${b:-none}"
  sleep 3
done
