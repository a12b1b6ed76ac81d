#!/bin/bash
# Issue 13's speed figures: quantized weights and the int8 KV cache.
#  - bench engine (prefill 512, decode 128: llama-bench's pp512 / tg128) on the
#    74M "small" GQA shape, F16 weights vs --quantize q8_0 vs q4_0, 2 threads,
#    the three interleaved per round so drift hits all alike;
#  - bench batch (aggregate decode at 1..64 sequences) for the same three;
#  - MFA-KR attention at 4096 context with an F16 and an int8 KV cache
#    (decode at mean context 4096 against mean context 48).
#   TAG=run1 PARTS="engine batch attn" LEVELS="avx512-bf16 avx2" tools/bench/quant.sh
# then: /usr/bin/python3 tools/bench/quant_summary.py   (medians over TAGs)
set -u
source "$(dirname "$0")/lib.sh"
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
TAG=${TAG:-run1}
LEVELS=${LEVELS:-$("$BIN" info --cpu --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["supported"][0])')}
SMALL=$(mk_model small-f16 --attention gqa --dtype f16 --hidden-size 512 --layers 8 --heads 8 --head-dim 64 \
          --kv-heads 2 --intermediate 1408 --vocab 50257 --max-pos 4096)
MLONG=$(mk_model long-mfa-kr --attention mfa-kr --dtype bf16 --hidden-size 512 --layers 8 --heads 16 \
          --head-dim 64 --q-rank 256 --intermediate 1408 --vocab 8192 --tie --max-pos 8192)
PARTS=${PARTS:-engine batch attn}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
for lv in $LEVELS; do
  has engine && for q in none q8_0 q4_0; do
    check_load "quant-$lv-engine-$q-$TAG" 30
    "$BIN" bench engine --isa "$lv" --model "$SMALL" --quantize $q --threads 2 --prompt-len 512 --gen-len 128 \
      --reps 3 --json > "$RES/quant-$lv-engine-$q-t2-$TAG.json"
  done
  has batch && for q in none q8_0 q4_0; do
    check_load "quant-$lv-batch-$q-$TAG" 30
    "$BIN" bench batch --isa "$lv" --model "$SMALL" --quantize $q --threads 2 --concurrency 1,4,16,64 \
      --prompt-len 128 --steps 32 --reps 3 --json > "$RES/quant-$lv-batch-$q-t2-$TAG.json"
  done
  has attn && for kv in f16 int8; do
    check_load "quant-$lv-attn-$kv-$TAG" 30
    for ctx in 4064 16; do
      "$BIN" bench engine --isa "$lv" --model "$MLONG" --kv-dtype $kv --threads 2 --prompt-len $ctx --gen-len 64 \
        --reps 3 --json > "$RES/quant-$lv-attn-$kv-$ctx-t2-$TAG.json"
    done
  done
done
