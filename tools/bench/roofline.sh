#!/bin/bash
# Roofline ratios (issue 7 item 4) and issue 4's batch figures.
# Env: TAG (run1) THREADS (0 = all cores)
set -u
source "$(dirname "$0")/lib.sh"
TAG=${TAG:-run1}; TH=${THREADS:-0}
M100=$(mk_model m100 --attention mfa-kr --dtype f32 --hidden-size 768 --layers 14 --heads 12 \
        --head-dim 64 --q-rank 384 --intermediate 2048 --vocab 8192)
MLONG=$(mk_model long-mfa-kr --attention mfa-kr --dtype bf16 --hidden-size 512 --layers 8 --heads 16 \
        --head-dim 64 --q-rank 256 --intermediate 1408 --vocab 8192 --tie --max-pos 8192)
BUNDLED=$ROOT/models/default

# 1. batch-1 decode vs bandwidth ceiling (and prefill vs sgemm), medians of 3 reps
check_load "engine-m100-$TAG" 60
"$BIN" bench engine --model "$M100" --threads $TH --prompt-len 512 --gen-len 128 --reps 3 --json \
   > "$RES/engine-m100-$TAG.json"
check_load "engine-bundled-$TAG" 60
"$BIN" bench engine --model "$BUNDLED" --threads $TH --prompt-len 512 --gen-len 128 --reps 3 --json \
   > "$RES/engine-bundled-$TAG.json"
# 2. aggregate decode at 1,4,16,64 (issue 4) on the bundled model; sgemm ceiling from the run above
check_load "batch-bundled-$TAG" 60
"$BIN" bench batch --model "$BUNDLED" --threads $TH --concurrency 1,2,4,8,16,32,64 --prompt-len 128 \
   --steps 32 --reps 3 --json > "$RES/batch-bundled-$TAG.json"
"$BIN" bench engine --model "$BUNDLED" --threads $TH --prompt-len 512 --gen-len 16 --reps 3 --json \
   > "$RES/engine-bundled-after-batch-$TAG.json"
# 3. attention at 4096 context: decode at mean context 4096 minus decode at mean context 48
check_load "attn-$TAG" 60
"$BIN" bench engine --model "$MLONG" --threads $TH --prompt-len 4064 --gen-len 64 --reps 3 --json \
   > "$RES/attn-4096-$TAG.json"
"$BIN" bench engine --model "$MLONG" --threads $TH --prompt-len 16 --gen-len 64 --reps 3 --json \
   > "$RES/attn-16-$TAG.json"
