#!/bin/bash
# The real training run on one H200 (see README.md), run from the repository root with the
# corpus (and optionally a tokenizer) under .corpus/transport/.
#   CONFIGS=B   one configuration with the whole GPU: train.py writes straight into $OUT, and
#               re-exports its best-so-far model there during training, so a run cut short by
#               the device's time limit still brings back the best model it had (the shards,
#               meta.tar, train.log; bundled_logits.json only at the end).
#   CONFIGS="A B"  two side by side, each in its own folder; pick_best.py copies the better one
#               (mean per-source held-out loss) to $OUT at the end.
# EXTRA: more train.py arguments, last so they win (a CPU smoke test of this script and device_job.sh).
# BUDGET (seconds, from start to the end of everything) must fit in the device time left
# (the `status` tool's budget_left_s) minus ~60 s for start-up and the transfers.
set -u
OUT=${OUT:-/tmp/mfa_out}
W=/tmp/mfa_runs
rm -rf "$W"; mkdir -p "$W" "$OUT"
TOK=""
[ -f .corpus/transport/tokenizer.json ] && TOK="--tokenizer .corpus/transport/tokenizer.json"
common="--corpus .corpus/transport/corpus.tar.xz $TOK --budget ${BUDGET:-450} --final-reserve 60 --eval-every 30"
# sampling weight multipliers per source (the rest: 1): archaic and dictionary text down, modern narrative up
WEIGHTS=${WEIGHTS:-gcide=0.3,kjv=0.5,web=0.5,mhcc=0.5,tdavid=0.5,scofield=0.5,brown=2,mobydick=2}
cfg_args() {
  case $1 in
    A) echo "--heads 8  --dropout 0.0" ;;   # 26.0M parameters
    B) echo "--heads 16 --dropout ${DROPOUT:-0.1}" ;;   # 29.1M parameters
  esac
}
set -- ${CONFIGS:-B}
if [ $# -eq 1 ]; then
  # progress lines go to stdout too (the device tool returns the tail of it)
  python3 tools/train/train.py $common --out "$OUT" --work $W/work$1 $(cfg_args $1) --weights "$WEIGHTS" ${EXTRA:-} 2>&1 |
    grep --line-buffered -E "EVAL|FINAL|SAMPLE|early stop|training done|all done|exported|Error|error|Traceback"
  exit 0
fi
runs=""
for c in "$@"; do
  python3 tools/train/train.py $common --out $W/$c --work $W/work$c $(cfg_args $c) --weights "$WEIGHTS" > $W/$c.txt 2>&1 &
  runs="$runs $W/$c"
done
wait
for c in "$@"; do tail -n 3 $W/$c.txt | cut -c1-300; done
python3 tools/train/pick_best.py "$OUT" $runs
