#!/bin/bash
# The capacity table with trained models (issue 15 item 4): each model of the paper replication
# (tools/train/replicate_device.sh with EXPORT=1; MHA, GQA, MQA, MLA, MFA, MFA-KR at one
# parameter count, trained alike) served with the same small KV pool and driven with the same
# long-context, many-client workload (`mfaserve bench serve`); per kind: the pool's capacity from
# /metrics, output tok/s, p99 TTFT, preemptions, and the run's held-out bits per byte
# (RUN/final.json) in one row. The trained weights are not in git: MODELS is a folder with one
# run folder per kind (KIND/model/ the exported model directory, KIND/final.json).
# Env: MODELS (/work/models-trained) KINDS (mha gqa mqa mla mfa mfa-kr) POOL (128M)
#      PROMPTS (64) INPUT (1024) OUTPUT (128) CONC (64) MAXSEQS (64) PORT (23300) TAG (run1)
set -u
source "$(dirname "$0")/lib.sh"
MODELS=${MODELS:-/work/models-trained}; POOL=${POOL:-128M}
PROMPTS=${PROMPTS:-64}; INPUT=${INPUT:-1024}; OUTPUT=${OUTPUT:-128}; CONC=${CONC:-64}; MAXSEQS=${MAXSEQS:-64}
PORT=${PORT:-23300}; TAG=${TAG:-run1}
for kind in ${KINDS:-mha gqa mqa mla mfa mfa-kr}; do
  m=$MODELS/$kind/model
  [ -f "$m/config.json" ] || { log "no model at $m: skipped"; continue; }
  check_load "captrained-$kind-$TAG" 60
  start_server $PORT --model "$m" --kv-cache-memory $POOL --max-num-seqs $MAXSEQS --max-model-len 2048 \
      --block-size 16 --threads 2 || { log "$kind: server did not start"; continue; }
  blocks=$(metric $PORT mfaserve:kv_cache_num_blocks)
  bpt=$(metric $PORT mfaserve:kv_cache_bytes_per_token)
  log "$kind: $blocks blocks of 16 tokens, $bpt bytes/token"
  sample_running $PORT "$WORK/captrained-running-$kind.txt"
  "$BIN" bench serve --base-url http://127.0.0.1:$PORT --num-prompts $PROMPTS \
      --max-concurrency $CONC --random-input-len $INPUT --random-output-len $OUTPUT \
      --vocab-range 1000:4000 --seed 1 --quiet --json "$WORK/captrained-$kind-$TAG.serve.json" \
      > "$WORK/captrained-$kind-$TAG.serve.txt"
  kill $SAMPLER; wait $SAMPLER 2>/dev/null
  preempt=$(metric $PORT mfaserve:num_preemptions_total)
  stop_server
  $PY - "$kind" "$blocks" "$bpt" "$MODELS/$kind" "$WORK/captrained-$kind-$TAG.serve.json" \
      "$RES/captrained-$kind-$TAG.json" "$WORK/captrained-running-$kind.txt" "$preempt" "$INPUT" "$OUTPUT" "$POOL" <<'PYEOF'
import json, sys
kind, blocks, bpt, run, sj, out, runf, preempt, inp, outp, pool = sys.argv[1:]
s = json.load(open(sj))
fin = json.load(open(run + "/final.json"))
keep = {k: s[k] for k in ("completed", "duration", "output_throughput", "request_throughput", "mean_ttft_ms",
                          "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_itl_ms") if k in s}
rows = [l.split() for l in open(runf) if len(l.split()) == 3]
per_seq = int(inp) + int(outp)
ps = fin["per_source"]
json.dump({"kind": kind, "pool": pool, "kv_cache_num_blocks": int(blocks), "block_size": 16,
           "kv_bytes_per_token": int(bpt), "seqs_pool_holds": int(blocks) * 16 // per_seq,
           "server_max_running": max((float(r[0]) for r in rows), default=None),
           "preemptions": float(preempt), "serve": keep,
           "heldout_macro_bpb": fin["heldout_all_sources"]["macro_bpb"],
           "outside_bpb": {k: v["bpb"] for k, v in ps.items() if k.startswith("outside")},
           "train_steps": fin.get("steps"), "total_steps": fin.get("total_steps"), "cut_short": fin.get("cut_short"),
           "params": fin.get("meta", {}).get("params")}, open(out, "w"), indent=1)
print(open(out).read())
PYEOF
done
