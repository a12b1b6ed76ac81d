#!/bin/bash
# container-test.sh: build deploy/Dockerfile with podman, run it, and check it
# the way a user would: a completion through the published port, the image's
# HEALTHCHECK, and a clean stop on SIGTERM (exit 0 within the timeout).
#
#   deploy/container-test.sh [--work DIR] [--port N] [--random-model] [--keep]
#
# This machine reaches Debian's apt mirror but no image registry, so the
# debian:bookworm-slim base is made here (debootstrap --variant=minbase from
# the host's mirror, `podman import`, tagged docker.io/library/debian:bookworm-slim
# so the Dockerfile's FROM resolves unchanged); it is cached in podman's store
# and made only when missing. Podman is configured through CONTAINERS_CONF
# (a file under the work dir; /etc is not touched) for a sandbox without spare
# privileges: runc, cgroupfs, and default_ulimits below the host's hard limits.
#
# Needs root (apt-get for missing tools, rootful podman). Exit 0 pass, 1 fail,
# 77 skipped (not root and tools missing). Takes minutes the first time (base
# image + build stage); later runs reuse podman's layer cache.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${MFS_CONTAINER_WORK:-$REPO/build-dep/container}
PORT=0
RANDOM_MODEL=0
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --work) WORK=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --random-model) RANDOM_MODEL=1; shift ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--work DIR] [--port N] [--random-model] [--keep]" >&2; exit 2 ;;
  esac
done

BASE=docker.io/library/debian:bookworm-slim
IMAGE=localhost/mfaserve:ctest
NAME=mfaserve-ctest-$$
STOP_TIMEOUT=90   # podman stop -t: SIGKILL after this; must exceed --shutdown-timeout
SHUTDOWN_TIMEOUT=45

log() { printf '[container-test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { log "FAIL: $*"; exit 1; }

# ---------------------------------------------------------------- tools
need=()
for t in podman:podman runc:runc debootstrap:debootstrap curl:curl iptables:iptables; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "SKIP: missing ${need[*]} and not root"; exit 77; fi
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
[ "$(id -u)" = 0 ] || { log "SKIP: rootful podman needs root"; exit 77; }

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
# Below the host's hard limit (raising it needs CAP_SYS_RESOURCE, which this
# sandbox lacks); runc because it is what Debian ships for podman here.
cat > "$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$WORK/containers.conf

cleanup() {
  local rc=$?
  if [ "$KEEP" = 0 ]; then
    podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK/context" "$WORK/rootfs"
  fi
  exit $rc
}
trap cleanup EXIT

# ---------------------------------------------------------------- base image
apt_mirror() {
  # The host's Debian mirror: the first URIs/deb line that is not -security.
  local f u
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    u=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' "$f" | grep -v -- '-security' | grep -E '/debian/?$' | head -1)
    [ -n "$u" ] && { echo "${u%/}"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    u=$(awk '$1 == "deb" && $3 ~ /^bookworm/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f" \
        | grep -v -- '-security' | head -1)
    [ -n "$u" ] && { echo "${u%/}"; return; }
  done
  echo http://deb.debian.org/debian
}

if podman image exists "$BASE"; then
  log "base $BASE present (cached)"
else
  MIRROR=$(apt_mirror)
  log "making $BASE: debootstrap --variant=minbase bookworm from $MIRROR"
  ROOTFS=$WORK/rootfs
  rm -rf "$ROOTFS"
  debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
  # Like the real slim image: deb822 sources for the same mirror, no docs,
  # man pages or locales, an empty apt cache.
  rm -f "$ROOTFS/etc/apt/sources.list"
  cat > "$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat > "$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  cat > "$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
         "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
         "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/*
  tar --numeric-owner -C "$ROOTFS" -cf - . \
    | podman import --change 'CMD ["bash"]' --message "debootstrap --variant=minbase bookworm ($MIRROR)" - "$BASE" >/dev/null \
    || fail "podman import"
  rm -rf "$ROOTFS"
  log "base image made: $(podman image inspect --format '{{.Size}}' "$BASE") bytes"
fi

# ---------------------------------------------------------------- context
# The working tree's files as git sees them (tracked + untracked, not
# ignored), plus the bundled model; .dockerignore still applies on top.
CTX=$WORK/context
rm -rf "$CTX"; mkdir -p "$CTX"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
     | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
     | tar --null -T - -cf - ) | tar -C "$CTX" -xf -
else  # not a git checkout: everything but build output
  tar -C "$REPO" --exclude='./build*' --exclude='./.git' --exclude='*/node_modules' --exclude='./.corpus' \
      --exclude='./tests/artifacts' -cf - . | tar -C "$CTX" -xf -
fi
if [ "$RANDOM_MODEL" = 0 ] && [ -e "$REPO/models/default/config.json" ]; then
  rm -rf "$CTX/models"
  cp -a "$REPO/models" "$CTX/models"
  log "bundling models/ ($(du -sh "$CTX/models" | cut -f1), default -> $(readlink "$REPO/models/default" || echo dir))"
else
  rm -rf "$CTX/models"; mkdir -p "$CTX/models"
  /usr/bin/python3 "$REPO/tools/make_model.py" --attention mfa-kr --dtype bf16 --hidden-size 64 --layers 2 \
    --heads 4 --head-dim 16 --vocab 300 --out "$CTX/models/mfa-kr-random" >/dev/null
  /usr/bin/python3 "$REPO/tests/server/make_tokenizer.py" "$CTX/models/mfa-kr-random" >/dev/null
  ln -s mfa-kr-random "$CTX/models/default"
  log "no models/default (or --random-model): bundling a random MFA-KR model"
fi
HAS_TOKENIZER=0
[ -e "$CTX/models/default/tokenizer.json" ] && HAS_TOKENIZER=1

# ---------------------------------------------------------------- build
log "podman build (--format docker keeps HEALTHCHECK)"
t0=$(date +%s)
podman build --format docker --network host -f "$CTX/deploy/Dockerfile" -t "$IMAGE" "$CTX" \
  > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "podman build (log: $WORK/build.log)"; }
log "built $IMAGE in $(( $(date +%s) - t0 ))s, $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"
hc=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE")
case "$hc" in *mfaserve-healthcheck*) ;; *) fail "image has no HEALTHCHECK: $hc" ;; esac
user=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
case "$user" in ""|0|0:*|root|root:*) fail "image runs as root ($user)" ;; esac

# ---------------------------------------------------------------- run
if [ "$PORT" = 0 ]; then
  PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
# --health-interval disable: no systemd timer (this sandbox has no systemd);
# the image's HEALTHCHECK is run below with `podman healthcheck run`.
run_args=(-d --name "$NAME" -p "127.0.0.1:$PORT:8000" --health-interval disable
          -e MFASERVE_SHUTDOWN_TIMEOUT=$SHUTDOWN_TIMEOUT -e MFASERVE_KV_CACHE_MEMORY=256M)
log "podman run -p 127.0.0.1:$PORT:8000"
if ! podman run "${run_args[@]}" "$IMAGE" > "$WORK/run.log" 2>&1; then
  # The CNI bridge needs iptables NAT; fall back to slirp4netns where it is missing.
  cat "$WORK/run.log"; podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  log "bridge network failed; retrying with slirp4netns"
  podman run --network slirp4netns:port_handler=slirp4netns "${run_args[@]}" "$IMAGE" > "$WORK/run.log" 2>&1 \
    || { cat "$WORK/run.log"; fail "podman run"; }
fi

BASEURL=http://127.0.0.1:$PORT
deadline=$(( $(date +%s) + 180 ))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASEURL/health" || true)" = 200 ]; do
  state=$(podman inspect --format '{{.State.Status}}' "$NAME" 2>/dev/null || echo gone)
  if [ "$state" != running ] || [ "$(date +%s)" -gt "$deadline" ]; then
    podman logs "$NAME" 2>&1 | tail -30
    fail "server not healthy on $BASEURL (container $state)"
  fi
  sleep 1
done
log "healthy on $BASEURL after $(( $(date +%s) - deadline + 180 ))s"

pid1=$(podman exec "$NAME" cat /proc/1/comm)
uid=$(podman exec "$NAME" id -u)
log "PID 1 = $pid1, uid = $uid"
[ "$pid1" = mfaserve ] || fail "PID 1 is $pid1, not mfaserve"
[ "$uid" != 0 ] || fail "server runs as root"

model=$(curl -sf "$BASEURL/v1/models" | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])') \
  || fail "GET /v1/models"
if [ "$HAS_TOKENIZER" = 1 ]; then prompt='"The capital of France is"'; else prompt='[1, 2, 3, 4, 5]'; fi
body="{\"model\": \"$model\", \"prompt\": $prompt, \"max_tokens\": 8, \"temperature\": 0}"
resp=$(curl -sf -H 'Content-Type: application/json' -d "$body" "$BASEURL/v1/completions") \
  || fail "POST /v1/completions ($body)"
echo "$resp" | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
c = r["choices"][0]
assert r["object"] == "text_completion", r
assert c["finish_reason"] in ("stop", "length"), c
assert r["usage"]["completion_tokens"] >= 1, r["usage"]
print("[container-test] completion:", json.dumps(c["text"]), "usage", r["usage"])
' || fail "bad completion response: $resp"

# The image's own HEALTHCHECK, run by podman inside the container.
podman healthcheck run "$NAME" > "$WORK/health.log" 2>&1 || { cat "$WORK/health.log"; fail "podman healthcheck run"; }
status=$(podman inspect --format '{{.State.Healthcheck.Status}}' "$NAME" 2>/dev/null \
         || podman inspect --format '{{.State.Health.Status}}' "$NAME")
log "healthcheck: $(cat "$WORK/health.log") status=$status"
[ "$status" = healthy ] || fail "health status $status"

# ---------------------------------------------------------------- stop
# A request in flight when SIGTERM arrives must still finish (drain): 100 tokens
# take seconds on two shared cores, well within --shutdown-timeout ($SHUTDOWN_TIMEOUT s).
body="{\"model\": \"$model\", \"prompt\": $prompt, \"max_tokens\": 100, \"ignore_eos\": true}"
curl -s -o "$WORK/inflight.json" -w '%{http_code}' -H 'Content-Type: application/json' -d "$body" \
  "$BASEURL/v1/completions" > "$WORK/inflight.code" &
inflight=$!
sleep 0.3
log "podman stop (SIGTERM, SIGKILL after ${STOP_TIMEOUT}s) with a 100-token request in flight"
t0=$(date +%s)
# (podman 4.3 without systemd logs "Removing timer ... healthcheck" here: harmless)
podman stop -t "$STOP_TIMEOUT" "$NAME" > "$WORK/stop.log" 2>&1 || { cat "$WORK/stop.log"; fail "podman stop"; }
took=$(( $(date +%s) - t0 ))
code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
podman logs "$NAME" > "$WORK/server.log" 2>&1 || true
log "stopped in ${took}s, exit code $code (server log: $WORK/server.log)"
[ "$code" = 0 ] || { tail -20 "$WORK/server.log"; fail "exit code $code (137 = SIGKILL after the stop timeout)"; }
[ "$took" -lt "$STOP_TIMEOUT" ] || fail "stop took ${took}s"
wait "$inflight" || true
[ "$(cat "$WORK/inflight.code")" = 200 ] || fail "in-flight request: HTTP $(cat "$WORK/inflight.code") $(cat "$WORK/inflight.json")"
/usr/bin/python3 -c 'import json, sys; u = json.load(open(sys.argv[1]))["usage"]; assert u["completion_tokens"] == 100, u' \
  "$WORK/inflight.json" || fail "in-flight request cut short: $(cat "$WORK/inflight.json")"
grep -q 'SIGTERM' "$WORK/server.log" || fail "server log has no SIGTERM drain"
log "in-flight request finished during the drain; $(grep -m1 -o 'SIGTERM.*' "$WORK/server.log")"

# ---------------------------------------------------------------- another model
# A model from a read-only volume through MFASERVE_MODEL instead of the bundled one.
VOL=$WORK/volume-model/mfa-kr-volume
rm -rf "$WORK/volume-model"
/usr/bin/python3 "$REPO/tools/make_model.py" --attention mfa-kr --dtype bf16 --hidden-size 64 --layers 2 \
  --heads 4 --head-dim 16 --vocab 300 --seed 7 --out "$VOL" >/dev/null
/usr/bin/python3 "$REPO/tests/server/make_tokenizer.py" "$VOL" >/dev/null
chmod -R a+rX "$WORK/volume-model"
podman rm -f -t 0 "$NAME" >/dev/null 2>&1
podman run -d --name "$NAME" -p "127.0.0.1:$PORT:8000" --health-interval disable -v "$VOL:/models/custom:ro" -e MFASERVE_MODEL=/models/custom \
  "$IMAGE" > "$WORK/run.log" 2>&1 || { cat "$WORK/run.log"; fail "podman run with a model volume"; }
deadline=$(( $(date +%s) + 120 ))
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$BASEURL/health" || true)" = 200 ]; do
  [ "$(date +%s)" -le "$deadline" ] || { podman logs "$NAME" 2>&1 | tail -20; fail "not healthy with MFASERVE_MODEL=/models/custom"; }
  sleep 1
done
served=$(curl -sf "$BASEURL/v1/models" | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])')
log "MFASERVE_MODEL=/models/custom (volume) serves '$served'"
[ "$served" = custom ] || [ "$served" = mfa-kr-volume ] || fail "volume model served as '$served'"
podman stop -t "$STOP_TIMEOUT" "$NAME" > "$WORK/stop.log" 2>&1 || { cat "$WORK/stop.log"; fail "podman stop"; }
[ "$(podman inspect --format '{{.State.ExitCode}}' "$NAME")" = 0 ] || fail "exit code after the volume run"
rm -rf "$WORK/volume-model"
log "PASS"
