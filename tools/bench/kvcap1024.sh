#!/bin/bash
# Issue 4: how many 1024-token sequences a 1 GiB pool holds, per attention kind
# (bench batch's capacity count; the decode part is cut to one short step).
set -u
source "$(dirname "$0")/lib.sh"
for kind in mfa-kr mfa gqa mha; do
  m=$WORK/models/cap-$kind
  [ -f "$m/config.json" ] || { echo "run capacity.sh first (makes $m)" >&2; exit 1; }
  "$BIN" bench batch --model "$m" --concurrency 1 --prompt-len 8 --steps 1 --reps 1 \
     --pool-bytes 1073741824 --capacity-ctx 1024 --json > "$RES/kvcap1024-$kind.json"
done
