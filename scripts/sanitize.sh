#!/usr/bin/env bash
# sanitize.sh asan|tsan [ctest args...]: configures, builds and tests one
# sanitizer preset from CMakePresets.json in its own build folder
# (build-asan / build-tsan).
#   asan: the whole suite under ASan + UBSan (+ LeakSanitizer), tests
#         labelled slow or container excluded; any report fails its test.
#   tsan: the concurrency tests (scheduler, kvcache, tokenizer threads)
#         under ThreadSanitizer; OpenBLAS internals are suppressed
#         (tests/sanitize/tsan.supp), nothing else.
# Suppressions live in tests/sanitize/; only third-party code goes there.
# Exit status: ctest's (0 when every selected test passed).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-asan}
shift || true
case $preset in
  asan | tsan) ;;
  *)
    echo "usage: scripts/sanitize.sh asan|tsan [ctest args...]" >&2
    exit 2
    ;;
esac
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset" "$@"
