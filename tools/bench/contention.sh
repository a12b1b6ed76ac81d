#!/bin/bash
# Batch-1 decode of the bundled model with 1 and 2 worker threads, interleaved, while
# another process holds a core (a shell busy loop started here, or whatever else runs).
set -u
source "$(dirname "$0")/lib.sh"
P=$RES/profile; mkdir -p "$P"; TAG=${TAG:-run1}
check_load "contention-$TAG" 0
if [ "${BUSY:-1}" = 1 ]; then ( while :; do :; done ) & HOG=$!; fi
for i in 1 2 3; do
  for th in 1 2; do
    "$BIN" bench engine --threads $th --prompt-len 16 --gen-len 128 --reps 3 --json \
      > "$P/contention-$TAG-threads$th-$i.json"
  done
done
[ -n "${HOG:-}" ] && kill $HOG
