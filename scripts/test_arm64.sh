#!/usr/bin/env bash
# test_arm64.sh: the aarch64 stage of CI (scripts/test.sh runs it). On an
# x86-64 Debian host: install the cross toolchain, qemu-user and the arm64
# -dev packages if missing and cross-build everything into build-arm64/
# (scripts/setup.sh --arm64, cmake/aarch64-linux-gnu.cmake), then run under
# qemu-aarch64:
#   - ctest -L unit (C unit tests, kernels at every level, fuzz corpus replays;
#     not deploy_*, which use host tools only)
#   - engine_reference_<level> (tests/engine/test_engine_reference.py: every
#     attention kind x weight dtype against the float64 reference) for each
#     kernel level this build has and the emulated CPU runs (neon, generic)
# and print what ran and how long each part took. The node, chromium, soak
# and container tests (labels e2e, faults, soak, container) and the rest of
# `integration` are not run for arm64.
set -euo pipefail
cd "$(dirname "$0")/.."

case "$(uname -m)" in
  aarch64 | arm64)
    echo "test_arm64: this host is aarch64: scripts/test.sh tests it natively; nothing to cross-test"
    exit 0 ;;
esac

now() { date +%s; }
summary=() results=()
t_all=$(now)
phase() { # phase NAME SECONDS
  summary+=("$(printf '  %-52s %4d s' "$1" "$2")")
}
# run_ctest NAME ARGS...: ctest ARGS in build-arm64, timed; each test's result
# line (name, Passed / Skipped / Failed, seconds) is kept for the summary
run_ctest() {
  local name=$1 t log rc=0
  shift
  log=$(mktemp)
  t=$(now)
  ctest "$@" --output-on-failure 2>&1 | tee "$log" || rc=$?
  phase "$name" $(( $(now) - t ))
  while IFS= read -r l; do results+=("$l"); done < <(sed -n 's/^ *[0-9]*\/[0-9]* Test *#[0-9]*: /    /p' "$log")
  rm -f "$log"
  return $rc
}

echo "== arm64: setup and cross build (scripts/setup.sh --arm64)"
t=$(now)
scripts/setup.sh --arm64
phase "setup + configure + build (build-arm64)" $(( $(now) - t ))

emu=$(sed -n 's/^MFS_QEMU_BIN:FILEPATH=//p' build-arm64/CMakeCache.txt)
[ -n "$emu" ] || emu=qemu-aarch64
echo "== arm64: emulator $emu ($($emu --version | head -1))"
$emu build-arm64/mfaserve info --cpu

cd build-arm64
# deploy_config and deploy_kubernetes (label unit) read deploy/ with host
# tools only (python3, promtool, kubectl): nothing of the arm64 build; the
# x86-64 run covers them.
not_arm64='^deploy_'
echo "== arm64: ctest -L unit -E '$not_arm64' under qemu"
run_ctest "ctest -L unit -E '$not_arm64' -j2" -L unit -E "$not_arm64" --timeout 600 -j2

# engine_reference_<level> (tests/engine/CMakeLists.txt) forces each kernel
# level through MFASERVE_ISA; the x86 ones skip here (exit 77), neon and
# generic run, one after the other (-L integration leaves out engine_reference_slow,
# label slow). Without those tests: engine_reference (auto, neon).
ref='^engine_reference_'
[ "$(ctest -N -R "$ref" -L integration | sed -n 's/^Total Tests: //p')" -gt 0 ] || ref='^engine_reference$'
echo "== arm64: ctest -R '$ref' -L integration under qemu (the engine against the float64 reference)"
run_ctest "ctest -R '$ref' -L integration" -R "$ref" -L integration

echo "== arm64 stage passed. Under $emu:"
printf '%s\n' "${results[@]}"
echo "== arm64 stage durations:"
printf '%s\n' "${summary[@]}"
printf '  %-52s %4d s\n' "total" $(( $(now) - t_all ))
