#!/bin/bash
# Capacity table (issue 7 item 3): four equal-width random models, KV capacity read
# from the running server's /metrics, then one long-context serving run each.
# Env: PROMPTS (64) INPUT (1800) OUTPUT (64) CONC (64) MAXSEQS (64) MAXLEN (2048) PORT (23100)
#      NAME (cap: result files NAME-KIND-TAG.json; capdec for the decode-heavy table)
#      KVDTYPE (f16: the pool's --kv-cache-dtype; int8 adds "-int8" to NAME)
#      CAPONLY (0; 1: read the pool's capacity from /metrics and skip the serving run)
set -u
source "$(dirname "$0")/lib.sh"
PROMPTS=${PROMPTS:-64}; INPUT=${INPUT:-1800}; OUTPUT=${OUTPUT:-64}; CONC=${CONC:-64}
MAXSEQS=${MAXSEQS:-64}; MAXLEN=${MAXLEN:-2048}; NAME=${NAME:-cap}
KVDTYPE=${KVDTYPE:-f16}; CAPONLY=${CAPONLY:-0}
[ "$KVDTYPE" = f16 ] || NAME="$NAME-$KVDTYPE"
PORT=${PORT:-23100}; TAG=${TAG:-run1}
COMMON="--dtype bf16 --hidden-size 512 --layers 8 --head-dim 64 --intermediate 1408 --vocab 8192 --tie"
declare -A ARGS=(
  [mfa-kr]="--attention mfa-kr --heads 16 --q-rank 256"
  [mfa]="--attention mfa --heads 16 --q-rank 256"
  [gqa]="--attention gqa --heads 8 --kv-heads 2"
  [mha]="--attention mha --heads 8 --kv-heads 8"
)
for kind in ${KINDS:-mfa-kr mfa gqa mha}; do
  m=$(mk_model "cap-$kind" ${ARGS[$kind]} $COMMON)
  check_load "$([ "$NAME" = cap ] && echo capacity || echo "$NAME")-$kind-$TAG" 120
  start_server $PORT --model "$m" --kv-cache-memory 1G --max-num-seqs $MAXSEQS \
      --max-model-len $MAXLEN --block-size 16 --kv-cache-dtype $KVDTYPE || exit 1
  blocks=$(metric $PORT mfaserve:kv_cache_num_blocks)
  bpt=$(metric $PORT mfaserve:kv_cache_bytes_per_token)
  log "$kind ($KVDTYPE): $blocks blocks, $bpt bytes/token"
  if [ "$CAPONLY" = 1 ]; then
    echo "{\"kind\": \"$kind\", \"kv_dtype\": \"$KVDTYPE\", \"kv_cache_num_blocks\": $blocks, \"block_size\": 16, \"kv_bytes_per_token\": $bpt, \"seqs_2048\": $((blocks * 16 / 2048))}" > "$RES/$NAME-$kind-$TAG.json"
    stop_server
    continue
  fi
  sample_running $PORT "$WORK/running-$kind.txt"
  "$BIN" bench serve --base-url http://127.0.0.1:$PORT --num-prompts $PROMPTS \
      --max-concurrency $CONC --random-input-len $INPUT --random-output-len $OUTPUT \
      --vocab-range 1000:4000 --seed 1 --quiet --json "$RES/$NAME-$kind-$TAG.serve.json" \
      > "$RES/$NAME-$kind-$TAG.serve.txt"
  mv "$RES/$NAME-$kind-$TAG.serve.json" "$WORK/$NAME-$kind-$TAG.serve.json"
  kill $SAMPLER; wait $SAMPLER 2>/dev/null
  stop_server
  $PY - "$kind" "$blocks" "$bpt" "$m" "$WORK/$NAME-$kind-$TAG.serve.json" "$RES/$NAME-$kind-$TAG.json" "$WORK/running-$kind.txt" "$KVDTYPE" <<'PYEOF'
import json, sys
kind, blocks, bpt, m, sj, out, run, kvdt = sys.argv[1:]
s = json.load(open(sj)); cfg = json.load(open(m + "/config.json"))
for k in ("input_lens", "output_lens", "ttfts", "e2els", "itls", "generated_texts", "errors"):
    s.pop(k, None)
rows = [l.split() for l in open(run) if len(l.split()) == 3]
s["server_max_running"] = max((float(r[0]) for r in rows), default=None)
s["server_preemptions"] = max((float(r[2]) for r in rows), default=None)
json.dump({"kind": kind, "kv_dtype": kvdt,
           "kv_cache_num_blocks": int(blocks), "block_size": 16,
           "kv_bytes_per_token": int(bpt), "seqs_2048": int(blocks) * 16 // 2048,
           "serve": s}, open(out, "w"), indent=1)
PYEOF
done
