#!/usr/bin/env bash
# test.sh: set up a fresh machine (scripts/setup.sh --test), build, and run
# the whole test suite with CTest; then the same suite under ASan + UBSan,
# the concurrency tests under TSan, every fuzz target for a short time, and
# the aarch64 stage: the tree cross-built for arm64 and its unit and engine
# reference tests run under qemu-user (scripts/test_arm64.sh; at most
# MFS_ARM64_TIMEOUT seconds, default 900; MFS_ARM64=0 skips it).
# With arguments, only the main CTest run, with the arguments passed to
# ctest, e.g.
#   scripts/test.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
if [ $# -gt 0 ]; then
  cd build && exec ctest --output-on-failure --timeout 900 -j2 "$@"
fi
(cd build && ctest --output-on-failure --timeout 900 -j2)
echo "== sanitizers: ASan + UBSan (whole suite), TSan (concurrency tests)"
scripts/sanitize.sh asan --output-on-failure -j2
scripts/sanitize.sh tsan --output-on-failure
echo "== fuzzing: each target for ${MFS_FUZZ_SECONDS:-20} s"
scripts/fuzz.sh "${MFS_FUZZ_SECONDS:-20}"
if [ "${MFS_ARM64:-1}" != 0 ]; then
  echo "== arm64: cross-built for aarch64, unit + engine reference tests under qemu-user" \
       "(at most ${MFS_ARM64_TIMEOUT:-900} s)"
  timeout -k 30 "${MFS_ARM64_TIMEOUT:-900}" scripts/test_arm64.sh
else
  echo "== arm64: skipped (MFS_ARM64=0)"
fi
echo "== all test stages passed"
