#!/usr/bin/env bash
# test.sh: set up a fresh machine (scripts/setup.sh --test), build, and run
# the whole test suite with CTest. Extra arguments go to ctest, e.g.
#   scripts/test.sh -L unit
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
cd build
ctest --output-on-failure --timeout 900 -j2 "$@"
