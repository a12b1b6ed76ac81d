#!/bin/bash
# Issue 17 item 1, second half: what 256 concurrent streams add to the
# inter-token latency over the engine's own step, isolated as in
# tools/bench/frontend.sh: the server with one engine thread pinned to CPU 0,
# the load generator (`mfaserve bench serve`) pinned to CPU 1, the tiny MFA-KR
# model of frontend.sh; the engine's step alone from `bench batch` on CPU 0.
# Binaries in BINS interleave round by round.
#
#   BINS="/tmp/old/mfaserve build-bm/mfaserve" TAG=run1 ROUNDS=3 tools/bench/ttft/streams.sh
#
# Results: tools/bench/results/ttft/streams-<label>-c{1,256}-<TAG>-r<round>.json (bench serve)
# and streams-<label>-batch-<TAG>-r<round>.json (bench batch).
set -u
source "$(dirname "$0")/../lib.sh"
TAG=${TAG:-run1}; PORT=${PORT:-23410}; ROUNDS=${ROUNDS:-3}; BINS=${BINS:-$BIN}
OUT=$RES/ttft; mkdir -p "$OUT"
TINY=$(mk_model tiny --attention mfa-kr --dtype f32 --hidden-size 128 --layers 2 --heads 2 \
        --head-dim 64 --q-rank 64 --intermediate 256 --vocab 8192 --tie)
read -r -a bins <<< "$BINS"
read -r -a labels <<< "${LABELS:-}"
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!bins[@]}"; do
    b=${bins[$i]}; lab=${labels[$i]:-$(basename "$(dirname "$b")")}
    check_load "ttft-streams-$lab-$TAG-r$r" 60
    BIN=$b SRV_PREFIX="taskset -c 0" start_server $PORT --model "$TINY" --threads 1 --max-num-seqs 256 \
        --max-queued-requests 1024 --kv-cache-memory 256M || exit 1
    for c in 1 256; do
      n=$([ $c = 1 ] && echo 16 || echo 512)
      curl -s http://127.0.0.1:$PORT/metrics > "$WORK/streams-m0"
      taskset -c 1 "$b" bench serve --base-url http://127.0.0.1:$PORT --num-prompts $n --max-concurrency $c \
         --random-input-len 32 --random-output-len 128 --seed $r --quiet --metric-percentiles 50,99 \
         --json "$OUT/streams-$lab-c$c-$TAG-r$r.json" > /dev/null
      # the server's own step clock over this run (mfaserve:engine_* counters; absent in older binaries)
      curl -s http://127.0.0.1:$PORT/metrics > "$WORK/streams-m1"
      $PY - "$WORK/streams-m0" "$WORK/streams-m1" "$OUT/streams-$lab-c$c-$TAG-r$r.json" <<'PY'
import json, re, sys
def val(path, name):
    m = re.search(r"^mfaserve:%s(?:\{[^}]*\})? (\S+)$" % name, open(path).read(), re.M)
    return float(m.group(1)) if m else None
names = ("engine_steps_total", "engine_step_seconds_total", "engine_forward_seconds_total")
v0 = [val(sys.argv[1], n) for n in names]; v1 = [val(sys.argv[2], n) for n in names]
d = json.load(open(sys.argv[3]))
if None not in v0 + v1 and v1[0] > v0[0]:
    steps = v1[0] - v0[0]
    d["server_steps"] = steps
    d["server_step_ms_mean"] = 1e3 * (v1[1] - v0[1]) / steps
    d["server_forward_ms_mean"] = 1e3 * (v1[2] - v0[2]) / steps
json.dump(d, open(sys.argv[3], "w"), indent=1)
PY
    done
    stop_server
    taskset -c 0 "$b" bench batch --model "$TINY" --threads 1 --concurrency 1,256 --prompt-len 96 --steps 64 \
       --reps 3 --json > "$OUT/streams-$lab-batch-$TAG-r$r.json"
    $PY - "$OUT" "$lab" "$TAG" "$r" <<'PY' >&2
import json, sys
out, lab, tag, r = sys.argv[1:]
c1 = json.load(open(f"{out}/streams-{lab}-c1-{tag}-r{r}.json"))
c256 = json.load(open(f"{out}/streams-{lab}-c256-{tag}-r{r}.json"))
bb = json.load(open(f"{out}/streams-{lab}-batch-{tag}-r{r}.json"))
rows = {row["concurrency"]: row for row in bb.get("decode", [])}
step = 1e3 * 256 / rows[256]["tokens_per_s"] if 256 in rows else float("nan")
inrun = ""
if "server_forward_ms_mean" in c256: # the same run's forward passes (steps of fewer rows in the ramps included)
    inrun = "; in-run: forward %.3f ms/step, step %.3f ms -> +%.3f ms" % (
        c256["server_forward_ms_mean"], c256["server_step_ms_mean"], c256["median_itl_ms"] - c256["server_forward_ms_mean"])
print("%-10s r%s  median ITL 1 stream %.3f ms, 256 streams %.3f ms; engine step at 256 %.3f ms -> +%.3f ms%s"
      % (lab, r, c1["median_itl_ms"], c256["median_itl_ms"], step, c256["median_itl_ms"] - step, inrun))
PY
  done
done
$PY "$ROOT/tools/bench/trimjson.py" "$OUT"/streams-*-c*-$TAG-*.json
