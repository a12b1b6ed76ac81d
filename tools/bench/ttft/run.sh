#!/bin/bash
# Issue 17 item 1: time to first token and throughput with N streaming clients,
# measured as the issue compared mfaserve with llama-server (tools/bench/ttft/load.py:
# closed loop, temperature 0, ignore_eos, max_tokens 64, D seconds).
#
# Model: the 74M "small" GQA shape of BENCHMARKS.md (tools/make_model.py, F16, random
# weights, the bundled tokenizer). Server: `mfaserve serve --threads 2` and otherwise
# its defaults (--max-num-seqs 64, --max-num-batched-tokens as built, the default KV pool).
# For each round, each prompt length, each client count and each binary in BINS (in
# that order, so old and new interleave), one run of D seconds, after check_load.
#
#   BINS="/tmp/old/mfaserve build-bm/mfaserve" TAG=run1 ROUNDS=3 tools/bench/ttft/run.sh
#   /usr/bin/python3 tools/bench/ttft/summary.py tools/bench/results/ttft/*.json
#
# Results: tools/bench/results/ttft/<label>-p<prompt>-c<clients>-<TAG>-r<round>.json,
# label = the binary's directory name (or LABELS="a b", one per binary).
set -u
source "$(dirname "$0")/../lib.sh"
TAG=${TAG:-run1}; PORT=${PORT:-23400}; D=${D:-60}; ROUNDS=${ROUNDS:-1}
CLIENTS=${CLIENTS:-"1 16"}; PROMPTS=${PROMPTS:-"150 16"}; BINS=${BINS:-$BIN}
SERVE_ARGS=${SERVE_ARGS:-}
OUT=$RES/ttft; mkdir -p "$OUT"
SMALL=$(mk_model small-f16 --attention gqa --dtype f16 --hidden-size 512 --layers 8 --heads 8 --head-dim 64 \
          --kv-heads 2 --intermediate 1408 --vocab 50257 --max-pos 4096)
read -r -a bins <<< "$BINS"
read -r -a labels <<< "${LABELS:-}"
for r in $(seq 1 "$ROUNDS"); do
  for pt in $PROMPTS; do
    for c in $CLIENTS; do
      for i in "${!bins[@]}"; do
        b=${bins[$i]}; lab=${labels[$i]:-$(basename "$(dirname "$b")")}
        name="$lab-p$pt-c$c-$TAG-r$r"
        check_load "ttft-$name" 60
        BIN=$b start_server $PORT --model "$SMALL" --threads 2 $SERVE_ARGS || exit 1
        $PY "$ROOT/tools/bench/ttft/load.py" --url "http://127.0.0.1:$PORT" --clients "$c" --duration "$D" \
            --prompt-tokens "$pt" --seed "$r" --label "$name" --json "$OUT/$name.json" > /dev/null
        stop_server
        $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%-40s %7.1f tok/s  TTFT mean %6.1f median %6.1f p99 %6.1f ms  request %.3f s  %s" % (d["label"], d["gen_tok_s"], 1e3*d["ttft_mean_s"], 1e3*d["ttft_median_s"], 1e3*d["ttft_p99_s"], d["request_mean_s"], d.get("server_phases_ms", "")))' "$OUT/$name.json" >&2
      done
    done
  done
done
