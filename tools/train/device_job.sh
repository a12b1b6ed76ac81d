#!/bin/bash
# A training run longer than one device call (each call is at most 10 minutes): the first call
# starts run_device.sh detached (setsid, so it outlives the call) in /tmp/job, and every call,
# the first included, copies the job's output into $OUT every 15 s until the job has finished
# or SECONDS have passed. The next call must come within the machine's warm time (30 s), or
# the machine goes back and the run with it; what the last call copied is still a whole model
# (train.py renames each export into place).
#   device_job.sh start SECONDS   (needs BUDGET; DROPOUT and WEIGHTS are passed on)
#   device_job.sh poll SECONDS
set -u
J=/tmp/job
cmd=${1:?start or poll}; limit=${2:?seconds}
if [ "$cmd" = start ]; then
  rm -rf $J; mkdir -p $J/.corpus
  cp -r .corpus/transport $J/.corpus/ && cp -r tools $J/ || exit 1
  (cd $J && setsid nohup env CONFIGS=B OUT=$J/out BUDGET=${BUDGET:?} bash tools/train/run_device.sh \
     > $J/run.log 2>&1 < /dev/null &)
  sleep 2
fi
end=$((SECONDS + limit))
while :; do
  sleep 15
  if [ -d $J/out ]; then
    rm -rf "${OUT:?}"/*
    cp -r $J/out/. "$OUT"/ 2>/dev/null
    rm -rf "$OUT"/*.new "$OUT"/*.old "$OUT"/meta.tar.new
  fi
  if grep -q "all done" $J/run.log; then echo "job finished"; break; fi
  if ! pgrep -f tools/train/train.py > /dev/null; then echo "job is not running"; break; fi
  [ $SECONDS -ge $end ] && break
done
tail -n 4 $J/run.log | cut -c1-600
