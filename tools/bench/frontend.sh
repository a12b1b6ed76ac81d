#!/bin/bash
# Front end (issue 7 item 5): /health requests/s with wrk (median of 3), and the
# inter-token latency on a tiny model alone (1 stream) vs with 256 concurrent streams:
# first sharing both cores with the load generator, then isolated (the server with one
# engine thread pinned to CPU 0, the load generator pinned to CPU 1), against the
# engine's own step time on CPU 0.
set -u
source "$(dirname "$0")/lib.sh"
TAG=${TAG:-run1}; PORT=${PORT:-23200}; N=${N:-3}
TINY=$(mk_model tiny --attention mfa-kr --dtype f32 --hidden-size 128 --layers 2 --heads 2 \
        --head-dim 64 --q-rank 64 --intermediate 256 --vocab 8192 --tie)
# itl_runs PREFIX PORT NAME: 1 stream, then 256 concurrent streams, N times each
# (PREFIX: a command the load generator runs under, or "")
itl_runs() {
  local prefix=$1 port=$2 name=$3
  for i in $(seq 1 $N); do
    $prefix "$BIN" bench serve --base-url http://127.0.0.1:$port --num-prompts 16 --max-concurrency 1 \
       --random-input-len 32 --random-output-len 128 --seed $i --quiet \
       --metric-percentiles 50,99 --json "$RES/$name-c1-$TAG-$i.json" > /dev/null
    $prefix "$BIN" bench serve --base-url http://127.0.0.1:$port --num-prompts 512 --max-concurrency 256 \
       --random-input-len 32 --random-output-len 128 --seed $i --quiet \
       --metric-percentiles 50,99 --json "$RES/$name-c256-$TAG-$i.json" > /dev/null
  done
}
check_load "frontend-$TAG" 60
start_server $PORT --model "$TINY" --max-num-seqs 256 --max-queued-requests 1024 \
    --kv-cache-memory 256M || exit 1
for i in $(seq 1 $N); do
  wrk -t1 -c64 -d10s http://127.0.0.1:$PORT/health > "$RES/wrk-health-$TAG-$i.txt"
done
itl_runs "" $PORT itl
stop_server
# the engine's own step at 1 and 256 sequences on the same model (no HTTP), for the split
"$BIN" bench batch --model "$TINY" --concurrency 1,256 --prompt-len 96 --steps 64 --reps 3 --json \
   > "$RES/tiny-batch-$TAG.json"
# isolated: server (one engine thread) on CPU 0, load generator on CPU 1
SRV_PREFIX="taskset -c 0" start_server $((PORT + 1)) --model "$TINY" --threads 1 --max-num-seqs 256 \
    --max-queued-requests 1024 --kv-cache-memory 256M || exit 1
itl_runs "taskset -c 1" $((PORT + 1)) itl-iso
stop_server
taskset -c 0 "$BIN" bench batch --model "$TINY" --threads 1 --concurrency 1,256 --prompt-len 96 --steps 64 --reps 3 \
   --json > "$RES/tiny-batch-iso-$TAG.json"
$PY "$ROOT/tools/bench/trimjson.py" "$RES"/itl-*-$TAG-*.json
