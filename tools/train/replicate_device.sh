#!/bin/bash
# The paper replication (docs/paper-replication.md) on one GPU, run from the repository root
# with the corpus under .corpus/transport/: every attention kind trained alike, all at once on
# the one GPU (small models leave an H100/H200 mostly idle one at a time), so each gets the same
# token count inside the time: the runs agree on it after measuring the slowest one's step
# rate (train.py --sync-dir), then each stops at that step.
#   BUDGET    seconds from now to the end of everything (final evaluations included)
#   KINDS     kind[:seed] ... (default: the six kinds, and MFA-KR again with seed 2)
#   OUT       where results go; results.tar there is rewritten every 15 s (one file: the
#             device tool brings back at most 8), holding per run train.log, history.json
#             (every evaluation so far) and final.json (the end)
#   EXPORT    1: each run also exports its best weights as a model directory (HF names;
#             $W/out/RUN/NAME/), with samples and reference logits; default 0
#   EXTRA     more train.py arguments for every run (a CPU smoke test: --max-docs ... --d 64 ...)
set -u
OUT=${OUT:-/tmp/rep_out}
W=${W:-/tmp/rep_runs}
BUDGET=${BUDGET:-540}
KINDS=${KINDS:-"mha gqa mqa mla mfa mfa-kr mfa-kr:2"}
TARGET=${TARGET:-29142016}   # the bundled MFA-KR model's parameter count (tied embeddings)
RESERVE=${RESERVE:-120}      # seconds kept after training for the float32 final evaluations
T0=$(date +%s)
rm -rf "$W"; mkdir -p "$W/out" "$W/sync" "$OUT"
TOK=models/mfa-kr-29m/tokenizer.json
[ -f .corpus/transport/tokenizer.json ] && TOK=.corpus/transport/tokenizer.json
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TORCHINDUCTOR_COMPILE_THREADS=2 PYTHONUNBUFFERED=1
# sampling weight multipliers per source: the shipped model's
WEIGHTS=${WEIGHTS:-gcide=0.3,kjv=0.5,web=0.5,mhcc=0.5,tdavid=0.5,scofield=0.5,brown=2,mobydick=2}
common="--corpus .corpus/transport/corpus.tar.xz --tokenizer $TOK --cache $W/corpus.pt --weights $WEIGHTS
        --d 512 --layers 8 --heads 16 --head-dim 64 --q-rank 256 --kv-rank 256 --rope-dim 32
        --match-params $TARGET --seq 1024 --batch 64 --accum 2 --lr 1.5e-3 --wd 0.1 --dropout 0.0
        --warmup-steps 100 --min-lr-frac 0.1 --eval-frac 0.1 --export ${EXPORT:-0} --budget 100000 --final-reserve 0"
pack() {  # results.tar: whole files only (tar of a copy, renamed into place); the exported
          # weights (EXPORT=1) stay out, `replicate_job.sh fetch` brings them back 8 at a time
  rm -rf $W/pack; mkdir -p $W/pack
  (cd $W/out && find . -type f ! -name "*.safetensors" ! -name "*.tmp" -print0 | xargs -0 -r cp --parents -t $W/pack) 2>/dev/null
  tar -C $W/pack -cf "$OUT/results.tar.new" . && mv "$OUT/results.tar.new" "$OUT/results.tar"
}
${PY:-python3} tools/train/train.py $common --out $W/prep --work $W/prepwork --prepare-only 1 ${EXTRA:-} > $W/out/prepare.log 2>&1 ||
  { cat $W/out/prepare.log; exit 1; }
set -- $KINDS
N=$#
DEADLINE=$((T0 + BUDGET - RESERVE))
echo "prepared in $(( $(date +%s) - T0 )) s; $N runs, training deadline in $((DEADLINE - $(date +%s))) s"
pids=""
for ks in "$@"; do
  k=${ks%%:*}; seed=1234; run=$k
  case $ks in *:*) s=${ks##*:}; seed=$((1234 + s - 1)); run=${k}_s$s ;; esac
  mkdir -p $W/out/$run
  ${PY:-python3} tools/train/train.py $common --kind $k --seed $seed --out $W/out/$run --work $W/work_$run \
    --sync-dir $W/sync --sync-n $N --deadline $DEADLINE ${EXTRA:-} > $W/out/$run/stdout.log 2>&1 &
  pids="$pids $!"
done
( while :; do sleep 15; pack; done ) &
packer=$!
for p in $pids; do wait $p; done
kill $packer 2>/dev/null; wait $packer 2>/dev/null
pack
for d in $W/out/*/; do
  echo "== $(basename $d): $(grep -h -E "total steps agreed|deadline reached|Traceback" $d/train.log $d/stdout.log 2>/dev/null | head -3 | cut -c1-200)"
  grep -h "FINAL" $d/train.log | cut -c1-200
done
echo "all runs done in $(( $(date +%s) - T0 )) s"
