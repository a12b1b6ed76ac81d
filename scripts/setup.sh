#!/usr/bin/env bash
# setup.sh: everything a fresh Debian 12 machine needs to build and test
# mfaserve, then a Release build in build/. Idempotent: installs only what is
# missing and rebuilds incrementally. Run as root (or with sudo available).
#
#   scripts/setup.sh            # build deps + build
#   scripts/setup.sh --test     # also the test-only deps (node, npm packages, promtool, chromium)
#   scripts/setup.sh --arm64    # x86-64 host: the aarch64 cross toolchain, qemu-user and the
#                               # arm64 -dev packages, then a Release cross build in build-arm64/
#                               # instead of build/ (scripts/test_arm64.sh runs its tests)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0 want_arm64=0
for a in "$@"; do
  case "$a" in
    --test) want_test=1 ;;
    --arm64) want_arm64=1 ;;
    *) echo "setup.sh: unknown option $a (--test, --arm64)" >&2; exit 2 ;;
  esac
done
if [ $want_arm64 = 1 ] && [ "$(dpkg --print-architecture)" != amd64 ]; then
  echo "setup.sh --arm64 cross-builds from an amd64 host; this one is $(dpkg --print-architecture)" \
       "(on arm64, plain scripts/setup.sh builds natively)" >&2
  exit 2
fi

# Why each package is here:
#   build-essential cmake ninja-build pkg-config: the C toolchain and build
#   libopenblas-dev   BLAS for the projections (sgemm/sgemv)
#   libcjson-dev      config.json, safetensors headers, request/response JSON
#   libmicrohttpd-dev HTTP/1.1 server (driven from our libuv loop)
#   libuv1-dev        the event loop
#   libpcre2-dev      tokenizer pre-tokenizer regexes (Unicode properties)
#   libutf8proc-dev   NFC normalization for tokenizers that ask for it
#   python3-numpy     the float64 reference and the model generator (tests, tools)
#   libcurl4-openssl-dev  `mfaserve bench serve`, the HTTP load generator
#   curl              health checks in scripts and the container
#   libzmq3-dev       ZMQ PUB socket of --kv-events-endpoint (KV-cache events for llm-d)
#   libmsgpack-dev    msgpack-c: those events' encoding (vLLM's wire format)
build_pkgs="build-essential cmake ninja-build pkg-config libopenblas-dev libcjson-dev libmicrohttpd-dev
            libuv1-dev libpcre2-dev libutf8proc-dev libcurl4-openssl-dev libzmq3-dev libmsgpack-dev
            python3-numpy curl"
#   nodejs npm        tokenizer oracles and the official openai client in e2e tests
#   prometheus        promtool checks the /metrics output and the Prometheus config
#   chromium          the dashboard page's end-to-end test
#   python3-yaml      the deploy tests read compose and Kubernetes YAML
#   kubernetes-client kubectl kustomize renders deploy/kubernetes in a test
#   python3-zmq python3-msgpack  the KV-event test subscribes and decodes as a router would
#   clang libclang-rt-14-dev  libFuzzer targets and the sanitizer runtimes
#   python3-matplotlib  tools/train/replication_table.py draws docs/img/paper-replication.png
#   (the container test installs podman, runc and debootstrap itself)
test_pkgs="nodejs npm prometheus chromium python3-yaml kubernetes-client clang libclang-rt-14-dev
           python3-matplotlib python3-zmq python3-msgpack"

#   --arm64 (Debian's arm64 multiarch packages install beside the amd64 ones;
#   each shared library must then be the same version in both architectures,
#   so apt may upgrade an amd64 library, e.g. libssl3, to the archive's version):
#   gcc-aarch64-linux-gnu  the cross compiler (cmake/aarch64-linux-gnu.cmake)
#   qemu-user         qemu-aarch64 runs the arm64 test binaries (no binfmt_misc needed)
#   libc6:arm64       the arm64 loader /lib/ld-linux-aarch64.so.1 and libc, found by qemu in /
#   lib*-dev:arm64    the same libraries as build_pkgs, for arm64
arm64_pkgs="gcc-aarch64-linux-gnu qemu-user libc6:arm64 libc6-dev:arm64 libopenblas-dev:arm64
            libcjson-dev:arm64 libmicrohttpd-dev:arm64 libuv1-dev:arm64 libpcre2-dev:arm64
            libutf8proc-dev:arm64 libcurl4-openssl-dev:arm64 libzmq3-dev:arm64 libmsgpack-dev:arm64"

pkgs="$build_pkgs"
[ $want_test = 1 ] && pkgs="$pkgs $test_pkgs"
[ $want_arm64 = 1 ] && pkgs="$pkgs $arm64_pkgs"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
added_arch=0
if [ $want_arm64 = 1 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "setup: dpkg --add-architecture arm64"
  $SUDO dpkg --add-architecture arm64
  added_arch=1
fi
missing=""
for p in $pkgs; do
  case "$p" in
    # a machine may carry Node.js from elsewhere (with its own npm, which
    # conflicts with Debian's npm package): the commands are what count
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    kubernetes-client) command -v kubectl >/dev/null && continue ;;
    qemu-user) { command -v qemu-aarch64 || command -v qemu-aarch64-static; } >/dev/null && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ] || [ $added_arch = 1 ]; then
  echo "setup: installing:$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ $want_test = 1 ]; then
  # Playwright (the dashboard's browser test) needs Node.js >= 20 and Debian 12 ships 18:
  # then take Node.js's own build from the npm registry (package node-linux-<arch>@20).
  if [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 20 ]; then
    arch=$(uname -m); case "$arch" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; esac
    echo "setup: Node.js $(node --version 2>/dev/null) is older than 20 (Playwright needs 20):" \
         "installing node-linux-$arch@20 from the npm registry as /usr/local/bin/node"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "node-linux-$arch@20" >/dev/null && tar xzf node-linux-*.tgz)
    $SUDO install -m 755 "$tmp/package/bin/node" /usr/local/bin/node
    rm -rf "$tmp"
    hash -r
  fi
  # npm packages for the test oracles and clients (the registry is reachable)
  for d in tools/tokenizer-oracle tests/server tests/deploy tests/grammar; do
    # again when the lock file changed since the last install (npm keeps
    # its own copy in node_modules/.package-lock.json)
    if [ -f "$d/package.json" ] && { [ ! -d "$d/node_modules" ] ||
         [ "$d/package-lock.json" -nt "$d/node_modules/.package-lock.json" ]; }; then
      echo "setup: npm ci in $d"
      (cd "$d" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  done
fi

if [ $want_arm64 = 1 ]; then
  t0=$(date +%s)
  cmake -S . -B build-arm64 -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" >/dev/null
  cmake --build build-arm64
  echo "setup: built build-arm64/mfaserve (aarch64) in $(( $(date +%s) - t0 )) s"
  exit 0
fi
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
echo "setup: built build/mfaserve"
