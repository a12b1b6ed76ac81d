#!/bin/bash
# quality.sh: held-out bits per byte of a model under each KV-cache dtype and
# weight quantization (issue 13's quality table), with `mfaserve eval` on the
# training corpus's held-out tails and the outside texts (.corpus/text/, made
# by tools/train/gather.sh).
#
#   tools/bench/quality.sh [MODEL_DIR] [OUT_DIR]
#
# Env: MAX_TOKENS (default 30000: the first that many tokens of each file's
# stream; 0 scores everything), BIN (default build/mfaserve; its int8 KV
# group is 64), BIN_G32 (a build with -DENG_KV_I8_GROUP=32, to compare a
# scale per 32 elements; skipped if unset), THREADS. Writes
# OUT_DIR/<config>.json per configuration and
# OUT_DIR/commands.txt; tools/bench/quality_summary.py makes the tables.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODEL=${1:-$ROOT/models/default}
OUT=${2:-$ROOT/tools/bench/results/quality-$(date +%Y%m%d)}
BIN=${BIN:-$ROOT/build/mfaserve}
MAX_TOKENS=${MAX_TOKENS:-30000}
THREADS=${THREADS:-0}
TEXT=$ROOT/.corpus/text
ls "$TEXT"/*.heldout.txt >/dev/null 2>&1 || { echo "no $TEXT/*.heldout.txt: run tools/train/gather.sh first" >&2; exit 2; }
mkdir -p "$OUT"
files=("$TEXT"/*.heldout.txt "$TEXT"/outside-*.txt)
run() { # name, binary, flags...
  local name=$1 bin=$2
  shift 2
  local cmd=("$bin" eval --model "$MODEL" --max-tokens "$MAX_TOKENS" --threads "$THREADS" --json "$@" "${files[@]}")
  echo "${name}: ${cmd[*]}" | sed "s|$ROOT/||g" >>"$OUT/commands.txt"
  echo "== $name" >&2
  "${cmd[@]}" >"$OUT/$name.json"
}
: >"$OUT/commands.txt"
run f16kv "$BIN" --kv-cache-dtype f16
run f32kv "$BIN" --kv-cache-dtype f32
run int8kv "$BIN" --kv-cache-dtype int8
[ -n "${BIN_G32:-}" ] && run int8kv-g32 "$BIN_G32" --kv-cache-dtype int8
run q8_0 "$BIN" --kv-cache-dtype f16 --quantize q8_0
run q4_0 "$BIN" --kv-cache-dtype f16 --quantize q4_0
run q8_0-int8kv "$BIN" --kv-cache-dtype int8 --quantize q8_0
echo "wrote $OUT" >&2
