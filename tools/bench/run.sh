#!/bin/bash
# Reproduces every figure in BENCHMARKS.md.
#   tools/bench/run.sh [build] [capacity] [kvcap] [roofline] [frontend] [summary]   (default: all)
# Env: TAG=run1 (results of runs with different TAGs are combined as medians),
#      WORK=/tmp/mfabench (models, server logs), RES=tools/bench/results, LOADWAIT (s to wait for a
#      quiet machine before each figure; the load seen is logged to results/load.log either way).
# Needs: cmake, ninja, wrk, curl, /usr/bin/python3 (+ python3-matplotlib for the plots).
set -eu
cd "$(dirname "$0")/../.."
steps=${*:-build capacity kvcap roofline frontend summary}
WORK=${WORK:-/tmp/mfabench}; mkdir -p "$WORK"
# what else ran: a sample every 5 s, used by classify.py to mark runs quiet/BUSY
tools/bench/monitor.sh >> "$WORK/monitor.log" 2>/dev/null &
MON=$!
trap 'kill $MON 2>/dev/null' EXIT
for s in $steps; do
  case $s in
    build)    cmake -S . -B build-bm -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build-bm ;;
    capacity) tools/bench/capacity.sh ;;
    kvcap)    tools/bench/kvcap1024.sh ;;
    roofline) tools/bench/roofline.sh ;;
    frontend) tools/bench/frontend.sh ;;
    profile)  tools/bench/profile.sh ;;
    contention) tools/bench/contention.sh ;;
    summary)  /usr/bin/python3 tools/bench/classify.py "$WORK/monitor.log"
              /usr/bin/python3 tools/bench/summarize.py ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
