#!/bin/bash
# The real training run on one H200 (see README.md): two configurations side by side,
# each inside BUDGET seconds, then the better one (mean per-source held-out loss) goes to $OUT.
# Run from the repository root with the corpus (and tokenizer) under .corpus/transport/.
set -u
W=/tmp/mfa_runs
rm -rf "$W"; mkdir -p "$W"
TOK=""
[ -f .corpus/transport/tokenizer.json ] && TOK="--tokenizer .corpus/transport/tokenizer.json"
common="--corpus .corpus/transport/corpus.tar.xz $TOK --budget ${BUDGET:-510} --final-reserve 60 --eval-every 30"
# CONFIGS picks which of the two run (the final model: CONFIGS=B alone, the whole GPU)
# sampling weight multipliers per source (the rest: 1): archaic and dictionary text down, modern narrative up
WEIGHTS=${WEIGHTS:-gcide=0.3,kjv=0.5,web=0.5,mhcc=0.5,tdavid=0.5,scofield=0.5,brown=2,mobydick=2}
runs=""
for c in ${CONFIGS:-A B}; do
  case $c in
    A) args="--heads 8  --dropout 0.0" ;;   # 26.0M parameters
    B) args="--heads 16 --dropout 0.1" ;;   # 29.1M parameters
  esac
  python3 tools/train/train.py $common --out $W/$c --work $W/work$c $args --weights "$WEIGHTS" > $W/$c.txt 2>&1 &
  runs="$runs $W/$c"
done
wait
for c in ${CONFIGS:-A B}; do tail -n 3 $W/$c.txt | cut -c1-300; done
python3 tools/train/pick_best.py "${OUT:-/tmp/mfa_out}" $runs
