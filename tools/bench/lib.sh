# Helpers sourced by tools/bench/run.sh.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BIN=${BIN:-$ROOT/build-bm/mfaserve}
WORK=${WORK:-/tmp/mfabench}
RES=${RES:-$ROOT/tools/bench/results}
PY=/usr/bin/python3
mkdir -p "$WORK/models" "$RES"

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Wait (up to $LOADWAIT or $2 s) until no other process uses >= 20% of a CPU over a
# 2-second sample, then log the label, the load average and what was busy to
# $RES/load.log: "quiet" or "BUSY". summarize.py leaves BUSY runs out when a quiet run
# of the same figure exists.
busy_procs() { top -bn2 -d2 | awk '/^top -/{n++} n==2 && $1 ~ /^[0-9]+$/ && $9+0 >= 20 {printf "%s(%s%%) ", $12, $9}'; }
check_load() {
  local label=$1 maxwait=${LOADWAIT:-${2:-120}} waited=0 busy
  while :; do
    busy=$(busy_procs)
    [ -z "$busy" ] || [ "$waited" -ge "$maxwait" ] && break
    sleep 8; waited=$((waited + 10))
  done
  echo "$(date -u +%FT%TZ) $label $([ -z "$busy" ] && echo quiet || echo BUSY) load=$(cut -d' ' -f1-3 /proc/loadavg) waited=${waited}s busy: ${busy:-none}" | tee -a "$RES/load.log" >&2
}

mk_model() {  # mk_model NAME make_model.py-args...
  local name=$1; shift
  local out=$WORK/models/$name
  if [ ! -f "$out/config.json" ]; then
    $PY "$ROOT/tools/make_model.py" "$@" --out "$out" >/dev/null
    cp "$ROOT/models/default/tokenizer.json" "$out/" 2>/dev/null || true
  fi
  echo "$out"
}

SRV_PID=
start_server() {  # start_server PORT serve-args...  (sets SRV_PID; SRV_PREFIX, e.g. "taskset -c 0", runs it under a command)
  local port=$1; shift
  ${SRV_PREFIX:-} "$BIN" serve --port "$port" --log-level warn "$@" >"$WORK/server-$port.log" 2>&1 &
  SRV_PID=$!
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    kill -0 "$SRV_PID" 2>/dev/null || { cat "$WORK/server-$port.log" >&2; return 1; }
    sleep 0.2
  done
  return 1
}
stop_server() {
  [ -n "$SRV_PID" ] || return 0
  kill -TERM "$SRV_PID" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SRV_PID" 2>/dev/null
  wait "$SRV_PID" 2>/dev/null
  SRV_PID=
}
trap stop_server EXIT

metric() {  # metric PORT NAME -> value of the first sample of NAME
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n || index($1, n"{")==1 {print $2; exit}'
}

# sample_running PORT FILE: every 0.5 s, "running waiting preemptions" from the server's
# /metrics into FILE, in the background (sets SAMPLER; kill it when the run ends)
sample_running() {
  ( while :; do
      echo "$(metric $1 mfaserve:num_requests_running) $(metric $1 mfaserve:num_requests_waiting) $(metric $1 mfaserve:num_preemptions_total)"
      sleep 0.5
    done ) > "$2" 2>/dev/null &
  SAMPLER=$!
}
