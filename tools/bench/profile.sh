#!/bin/bash
# Profiles for the figures that fall short (see BENCHMARKS.md, "Where it falls short").
set -u
source "$(dirname "$0")/lib.sh"
P=$RES/profile; mkdir -p "$P"
B=$ROOT/models/default
# batch-1 decode: threads 1 vs 2 (synchronisation cost), then where the time goes
check_load "profile" 60
for th in 1 2; do
  for i in 1 2 3; do
    "$BIN" bench engine --model "$B" --threads $th --prompt-len 16 --gen-len 256 --reps 3 --json \
      > "$P/engine-b1-threads$th-$i.json"
  done
done
perf record -F 2000 -g -o "$WORK/perf-b1.data" -- "$BIN" bench engine --model "$B" --prompt-len 16 \
   --gen-len 512 --reps 1 >/dev/null 2>&1
perf report -i "$WORK/perf-b1.data" --no-children --sort symbol --stdio -g none 2>/dev/null | grep -v '^$' | head -40 > "$P/perf-b1-decode.txt"
for c in 4 64; do
  perf record -F 2000 -g -o "$WORK/perf-b$c.data" -- "$BIN" bench batch --model "$B" --concurrency $c \
     --steps 64 --reps 2 >/dev/null 2>&1
  perf report -i "$WORK/perf-b$c.data" --no-children --sort symbol --stdio -g none 2>/dev/null | grep -v '^$' | head -40 > "$P/perf-b$c-decode.txt"
done
# batch 1/4/16/64 with one thread: is the shortfall synchronisation or work?
"$BIN" bench batch --model "$B" --threads 1 --concurrency 1,4,16,64 --steps 32 --reps 3 --json > "$P/batch-threads1.json"
# the front end: where a step goes with 256 streams on the tiny model
TINY=$WORK/models/tiny
start_server 23300 --model "$TINY" --max-num-seqs 256 --max-queued-requests 1024 --kv-cache-memory 256M || exit 1
"$BIN" bench serve --base-url http://127.0.0.1:23300 --num-prompts 768 --max-concurrency 256 \
   --random-input-len 32 --random-output-len 128 --quiet --json "$P/itl-c256-perf.json" > /dev/null &
BPID=$!
sleep 2
perf record -F 2000 -g -p $SRV_PID -o "$WORK/perf-srv.data" -- sleep 8 >/dev/null 2>&1
wait $BPID
stop_server
$PY "$ROOT/tools/bench/trimjson.py" "$P/itl-c256-perf.json"
perf report -i "$WORK/perf-srv.data" --no-children --sort symbol --stdio -g none 2>/dev/null | grep -v '^$' | head -45 > "$P/perf-server-c256.txt"
perf report -i "$WORK/perf-srv.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null | grep -v '^$' | head -25 > "$P/perf-server-c256-threads.txt"
