#!/bin/bash
# replicate_device.sh for longer than one device call (at most 10 minutes each), like
# device_job.sh: `start SECONDS` copies the tree to /tmp/rjob and starts it detached (setsid),
# `poll SECONDS` (issue it within the machine's 30 s warm time) waits on. Both copy the job's
# results.tar to $OUT every 15 s, print each run's last evaluation, and return early when the
# job has finished or a run failed (then the job is stopped: fix it and start again).
#   replicate_job.sh start SECONDS   (needs BUDGET; KINDS, EXTRA pass on)
#   replicate_job.sh poll SECONDS
#   replicate_job.sh fetch RUN...    copies the runs' exported shards (EXPORT=1) to $OUT as
#                                    RUN__model-0000N-of-0000M.safetensors (8 files per call at most)
set -u
J=/tmp/rjob
cmd=${1:?start, poll or fetch}
if [ "$cmd" = fetch ]; then
  shift
  for run in "$@"; do
    for f in /tmp/rep_runs/out/$run/*/model-*.safetensors; do cp "$f" "$OUT/${run}__$(basename "$f")" || exit 1; done
  done
  ls -la "$OUT"; exit 0
fi
limit=${2:?seconds}
if [ "$cmd" = start ]; then
  rm -rf $J; mkdir -p $J/.corpus $J/models/mfa-kr-29m
  cp -r .corpus/transport $J/.corpus/ && mkdir -p $J/tools && cp -r tools/train $J/tools/ && cp models/mfa-kr-29m/tokenizer.json $J/models/mfa-kr-29m/ || exit 1
  (cd $J && setsid nohup env OUT=$J/out BUDGET=${BUDGET:?} bash tools/train/replicate_device.sh \
     > $J/run.log 2>&1 < /dev/null & echo $! > $J/pid)
  sleep 2
fi
end=$((SECONDS + limit))
status=""
while :; do
  sleep 15
  [ -f $J/out/results.tar ] && cp $J/out/results.tar "$OUT"/results.tar
  cp $J/run.log "$OUT"/run.log 2>/dev/null
  if grep -q "all runs done" $J/run.log; then status="job finished"; break; fi
  failed=""  # a run whose last line is a Python error (compile warnings can print tracebacks too)
  for f in /tmp/rep_runs/out/*/stdout.log /tmp/rep_runs/out/prepare.log; do
    [ -f $f ] && tail -n 1 $f | grep -q -E "^[A-Za-z_.]*(Error|Exception)\b" && failed="$failed $f"
  done
  if [ -n "$failed" ]; then
    status="a run failed: job stopped"
    for f in $failed; do echo "== $f"; tail -n 25 $f; done
    kill -- -$(cat $J/pid) 2>/dev/null
    break
  fi
  if ! pgrep -f tools/train/replicate_device.sh > /dev/null; then status="job is not running"; break; fi
  [ $SECONDS -ge $end ] && break
done
cat $J/run.log | cut -c1-300
for f in /tmp/rep_runs/out/*/train.log; do
  echo "-- $f"; grep -E "total steps agreed|EVAL|FINAL" $f | tail -n 1 | cut -c1-160
done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null
echo "$status"
