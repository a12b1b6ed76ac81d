#!/bin/bash
# Issue 12's figures, once per kernel level this CPU runs: bench engine (prefill
# 512, batch-1 decode) on the 74M "small" GQA shape in F16 / BF16 / F32 and the
# 283M "medium" shape in F16, at 1 and 2 threads; bench batch (aggregate decode
# at 1..64 sequences) on small F16; MFA-KR attention at 4096 context (decode at
# mean context 4096 minus decode at mean context 48, against the attention's
# FLOPs at the level's FMA peak). OPENBLAS_CORETYPE=Haswell, as CI runs: our
# kernels do not use OpenBLAS, only the sgemm ceiling does (its core is named).
#   TAG=run1 LEVELS="avx512-bf16 avx2" PARTS="engine batch attn" tools/bench/levels.sh
# then: /usr/bin/python3 tools/bench/levels_summary.py   (medians over TAGs)
set -u
source "$(dirname "$0")/lib.sh"
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
TAG=${TAG:-run1}
LEVELS=${LEVELS:-$("$BIN" info --cpu --json | $PY -c 'import json,sys; print(" ".join(json.load(sys.stdin)["supported"]))')}
small() { mk_model "small-$1" --attention gqa --dtype "$1" --hidden-size 512 --layers 8 --heads 8 --head-dim 64 \
            --kv-heads 2 --intermediate 1408 --vocab 50257 --max-pos 4096; }
SMALL_F16=$(small f16); SMALL_BF16=$(small bf16); SMALL_F32=$(small f32)
MEDIUM=$(mk_model medium-f16 --attention gqa --dtype f16 --hidden-size 1024 --layers 16 --heads 16 --head-dim 64 \
          --kv-heads 4 --intermediate 2816 --vocab 50257 --max-pos 4096)
MLONG=$(mk_model long-mfa-kr --attention mfa-kr --dtype bf16 --hidden-size 512 --layers 8 --heads 16 \
          --head-dim 64 --q-rank 256 --intermediate 1408 --vocab 8192 --tie --max-pos 8192)
PARTS=${PARTS:-engine batch attn}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
for lv in $LEVELS; do
  has engine && for th in 2 1; do
    for m in small-f16:$SMALL_F16 small-bf16:$SMALL_BF16 small-f32:$SMALL_F32 medium-f16:$MEDIUM; do
      check_load "levels-$lv-engine-${m%%:*}-t$th-$TAG" 30
      "$BIN" bench engine --isa "$lv" --model "${m#*:}" --threads $th --prompt-len 512 --gen-len 128 --reps 3 \
        --json > "$RES/levels-$lv-engine-${m%%:*}-t$th-$TAG.json"
    done
  done
  has batch && check_load "levels-$lv-batch-$TAG" 30 &&
  "$BIN" bench batch --isa "$lv" --model "$SMALL_F16" --threads 2 --concurrency 1,4,8,16,32,64 --prompt-len 128 \
    --steps 32 --reps 3 --json > "$RES/levels-$lv-batch-small-f16-t2-$TAG.json"
  has attn || continue
  check_load "levels-$lv-attn-$TAG" 30
  "$BIN" bench engine --isa "$lv" --model "$MLONG" --threads 2 --prompt-len 4064 --gen-len 64 --reps 3 --json \
    > "$RES/levels-$lv-attn-4096-t2-$TAG.json"
  "$BIN" bench engine --isa "$lv" --model "$MLONG" --threads 2 --prompt-len 16 --gen-len 64 --reps 3 --json \
    > "$RES/levels-$lv-attn-16-t2-$TAG.json"
done
